# Cases: `openclaw channels status` against a gateway holding Discord channels. Sourced by
# run.sh (helpers: interop_wait_log, check, check_text).
#
# A second shardgate with two Discord channels: `discord`, connected to a tiny stand-in
# Gateway (node + the `ws` package openclaw ships: Hello, heartbeat ACKs, Identify → READY),
# and `backup`, whose Gateway port has no listener, so it is reconnecting with a connect
# error. The CLI renders each as an account of the Discord channel with the same generic
# account line it uses for OpenClaw's own Discord accounts (enabled, configured, running,
# connected, error, token:<source> masked, url). Skipped against an external gateway.

if [[ -z "${SHARDGATE_INTEROP_URL:-}" ]]; then
  free_port() { "$NODE" -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'; }
  DC_PORT="$(free_port)"
  DC_DEAD_PORT="$(free_port)"
  DCGW_PORT="$(free_port)"
  cat >"$WORK/dc-standin.js" <<'JS'
const { WebSocketServer } = require(process.env.OPENCLAW_NODE_MODULES + "/ws");
const port = Number(process.argv[2]);
const wss = new WebSocketServer({ port, host: "127.0.0.1" }, () => console.log("stand-in ready"));
let seq = 0;
wss.on("connection", (ws) => {
  const send = (v) => ws.send(JSON.stringify(v));
  send({ op: 10, d: { heartbeat_interval: 41250 }, s: null, t: null });
  ws.on("message", (raw) => {
    const p = JSON.parse(String(raw));
    if (p.op === 1) return send({ op: 11 });
    if (p.op === 2) {
      if (p.d.token !== "discord:interop") return ws.close(4004, "Authentication failed.");
      console.log("identified intents=" + p.d.intents);
      return send({ op: 0, s: ++seq, t: "READY", d: { v: 10, session_id: "s1",
        resume_gateway_url: `ws://127.0.0.1:${port}`, user: { id: "1", username: "bot", bot: true } } });
    }
  });
});
JS
  "$NODE" "$WORK/dc-standin.js" "$DC_PORT" >"$WORK/dc-standin.log" 2>&1 </dev/null &
  INTEROP_BG_PIDS+=("$!")
  interop_wait_log dc-standin "stand-in ready" 30 || true
  mkdir -p "$WORK/dcgw-state"
  cat >"$WORK/dcgw.json5" <<JSON5
{ channels: {
    discord: { kind: "discord", token: "discord:interop", gatewayUrl: "ws://127.0.0.1:$DC_PORT/?v=10&encoding=json",
               apiBase: "http://127.0.0.1:$DC_PORT/api/v10" },
    backup: { kind: "discord", tokenEnv: "DC_BACKUP_TOKEN", gatewayUrl: "ws://127.0.0.1:$DC_DEAD_PORT/?v=10&encoding=json",
              reconnectInterval: "10s" },
} }
JSON5
  DC_BACKUP_TOKEN=discord:other "$SHARDGATE_BIN" serve --config "$WORK/dcgw.json5" --port "$DCGW_PORT" \
    --token "$TOKEN" --state-dir "$WORK/dcgw-state" >"$WORK/dcgw.log" 2>&1 </dev/null &
  INTEROP_BG_PIDS+=("$!")
  interop_wait_log dcgw "shardgate ready" 30 || true
  # The live channel is connected once the stand-in saw Identify; the backup one has failed
  # its first connect once the gateway logged it.
  interop_wait_log dc-standin "identified" 30 || true
  for _ in $(seq 1 40); do grep -q "discord gateway connect failed" "$WORK/dcgw.log" && break; sleep 0.25; done

  MAIN_URL="$URL"
  URL="ws://127.0.0.1:$DCGW_PORT"
  openclaw_remote dc-status channels status
  openclaw_remote dc-status-json channels status --json
  URL="$MAIN_URL"

  check_text dc-status 0 '
    if (!/^Gateway reachable\.$/m.test(text)) fail("no \"Gateway reachable.\" line");
    // The CLI masks what follows "token:" in its output (the source name too).
    if (!/^- Discord discord: enabled, configured, running, connected, token:\*\*\*, url:http:\/\/127\.0\.0\.1:\d+\/api\/v10$/m.test(text))
      fail("no connected line for the discord account");
    if (!/^- Discord backup: enabled, configured, error:connect 127\.0\.0\.1:\d+: .*running, disconnected, token:\*\*\*, url:https:\/\/discord\.com\/api\/v10$/m.test(text))
      fail("no reconnecting line with its error for the backup account");
    has("Warnings:");
    if (!/^- discord backup: reconnecting in \d+ ms \(attempt 2\): connect 127\.0\.0\.1:\d+: /m.test(text)) fail("no warning for the backup account");
    lacks("discord:interop");
    lacks("discord:other");
  ' || true

  check dc-status-json 0 '
    const accts = (out.channelAccounts || {}).discord || [];
    const by = Object.fromEntries(accts.map((a) => [a.accountId, a]));
    if (JSON.stringify(out.channelOrder) !== "[\"discord\"]") fail(`channelOrder ${JSON.stringify(out.channelOrder)}`);
    if (out.channelLabels?.discord !== "Discord") fail("no Discord label");
    if (out.channelDefaultAccountId?.discord !== "discord") fail("default account is not discord");
    const d = by.discord, b = by.backup;
    if (!d || d.connected !== true || d.running !== true || d.state !== "connected" || d.sequence !== 1)
      fail(`discord account ${JSON.stringify(d)}`);
    if (!b || b.connected !== false || b.state !== "reconnecting" || !(b.nextAttemptInMs > 0) || !/^connect 127\.0\.0\.1:\d+: /.test(b.lastError || ""))
      fail(`backup account ${JSON.stringify(b)}`);
    if (out.channels?.discord?.configured !== true) fail("no discord summary");
  ' || true
  # Identify carried the default intents (GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT).
  if grep -q "identified intents=37376" "$WORK/dc-standin.log"; then ok=yes; else ok=no; fi
  interop_pass_fail dc-identify-intents "$ok"
fi
