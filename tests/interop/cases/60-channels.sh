# Cases: `openclaw channels status` against a gateway holding Telegram channels. Sourced by
# run.sh (helpers: interop_bg_start, interop_wait_log, interop_json, check, check_text).
#
# The main gateway has no channels (24-status-commands.sh checks that answer). These cases
# start a second shardgate with two Telegram channels: `telegram`, long-polling a tiny
# stand-in Bot API (node, empty `getUpdates` answers), and `backup`, whose API port has no
# listener, so it is reconnecting with a network error. The CLI renders each as an account of
# the Telegram channel, as it renders OpenClaw's own Telegram accounts (same fields: enabled,
# configured, running, connected, error, mode:polling, token:<source>, which the CLI masks).
# Skipped against an external gateway (SHARDGATE_INTEROP_URL).

if [[ -z "${SHARDGATE_INTEROP_URL:-}" ]]; then
  free_port() { "$NODE" -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'; }
  TG_PORT="$(free_port)"
  DEAD_PORT="$(free_port)"
  CH_PORT="$(free_port)"
  # The stand-in: getUpdates held 1 s then answered empty, as Telegram does with nothing new.
  cat >"$WORK/tg-standin.js" <<'JS'
const http = require("http");
http.createServer((req, res) => {
  const reply = (code, body) => { res.writeHead(code, {"Content-Type": "application/json"}); res.end(JSON.stringify(body)); };
  if (!req.url.startsWith("/bot123:interop/")) return reply(401, {ok: false, error_code: 401, description: "Unauthorized"});
  if (req.url.includes("/getUpdates")) return setTimeout(() => reply(200, {ok: true, result: []}), 1000);
  reply(200, {ok: true, result: {message_id: 1}});
}).listen(Number(process.argv[2]), "127.0.0.1", () => console.log("stand-in ready"));
JS
  "$NODE" "$WORK/tg-standin.js" "$TG_PORT" >"$WORK/tg-standin.log" 2>&1 </dev/null &
  INTEROP_BG_PIDS+=("$!")
  interop_wait_log tg-standin "stand-in ready" 30 || true
  mkdir -p "$WORK/chgw-state"
  cat >"$WORK/chgw.json5" <<JSON5
{ channels: {
    telegram: { kind: "telegram", token: "123:interop", apiBase: "http://127.0.0.1:$TG_PORT", pollTimeout: "1s" },
    backup: { kind: "telegram", tokenEnv: "CH_BACKUP_TOKEN", apiBase: "http://127.0.0.1:$DEAD_PORT", reconnectInterval: "10s" },
} }
JSON5
  CH_BACKUP_TOKEN=456:other "$SHARDGATE_BIN" serve --config "$WORK/chgw.json5" --port "$CH_PORT" \
    --token "$TOKEN" --state-dir "$WORK/chgw-state" >"$WORK/chgw.log" 2>&1 </dev/null &
  INTEROP_BG_PIDS+=("$!")
  interop_wait_log chgw "shardgate ready" 30 || true
  # Both channels have made their first call once the backup one reports its error.
  for _ in $(seq 1 40); do grep -q "telegram getUpdates failed" "$WORK/chgw.log" && break; sleep 0.25; done

  MAIN_URL="$URL"
  URL="ws://127.0.0.1:$CH_PORT"
  openclaw_remote ch-status channels status
  openclaw_remote ch-status-json channels status --json
  URL="$MAIN_URL"

  check_text ch-status 0 '
    if (!/^Gateway reachable\.$/m.test(text)) fail("no \"Gateway reachable.\" line");
    // The CLI masks what follows "token:" in its output (the source name too).
    if (!/^- Telegram telegram: enabled, configured, running, connected, mode:polling, token:\*\*\*, url:http:\/\/127\.0\.0\.1:\d+$/m.test(text))
      fail("no connected line for the telegram account");
    if (!/^- Telegram backup: enabled, configured, error:network: connect 127\.0\.0\.1:\d+: .*running, disconnected, mode:polling, token:\*\*\*, url:http:\/\/127\.0\.0\.1:\d+$/m.test(text))
      fail("no reconnecting line with its error for the backup account");
    has("Warnings:");
    if (!/^- telegram backup: reconnecting in \d+ ms \(attempt 2\): network: /m.test(text)) fail("no warning for the backup account");
    lacks("123:interop");
    lacks("456:other");
  ' || true

  check ch-status-json 0 '
    const accts = (out.channelAccounts || {}).telegram || [];
    const by = Object.fromEntries(accts.map((a) => [a.accountId, a]));
    if (JSON.stringify(out.channelOrder) !== "[\"telegram\"]") fail(`channelOrder ${JSON.stringify(out.channelOrder)}`);
    if (out.channelLabels?.telegram !== "Telegram") fail("no Telegram label");
    if (out.channelDefaultAccountId?.telegram !== "telegram") fail("default account is not telegram");
    const t = by.telegram, b = by.backup;
    if (!t || t.connected !== true || t.running !== true || t.state !== "connected") fail(`telegram account ${JSON.stringify(t)}`);
    if (!b || b.connected !== false || b.state !== "reconnecting" || !(b.nextAttemptInMs > 0) || !/^network: /.test(b.lastError || ""))
      fail(`backup account ${JSON.stringify(b)}`);
    if (out.channels?.telegram?.configured !== true) fail("no telegram summary");
  ' || true
fi
