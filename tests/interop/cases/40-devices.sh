# Cases: `openclaw devices …` and setup codes: `devices join-code` mints a single-use join URL,
# `openclaw connect <joinUrl>` pairs a new machine as a node with it, a used join URL or setup
# code is refused, and devices list|approve|reject|rotate|revoke|remove as the CLI shows them.
# Sourced by run.sh (which defines the background helpers: interop_bg_start, interop_wait_log,
# interop_json, interop_poll, interop_pass_fail).
#
# Join URLs need a gateway URL other machines can reach; a loopback gateway without one
# refuses (as OpenClaw does). So these cases start a second shardgate on a known port with
# `gateway.pairing.publicUrl` set, and loopback devices left to an operator
# (`policies.localhost.autoApprove: false`) so that devices approve/reject have requests.
# Against an external gateway (SHARDGATE_INTEROP_URL, e.g. OpenClaw's own with
# plugins.entries.device-pair.config.publicUrl set) that gateway is used as is and the
# pending-device cases are skipped (OpenClaw pairs loopback devices silently).

# ---------------------------------------------------------------- the gateway for join codes
DEV_EXTERNAL=0
if [[ -n "${SHARDGATE_INTEROP_URL:-}" ]]; then
  DEV_EXTERNAL=1
  DEV_URL="$URL"
else
  # The main gateway is loopback-only: no join URL (OpenClaw's refusal, same first sentence).
  openclaw devices-join-code-loopback devices join-code --url "$URL" --token "$TOKEN"
  check_text devices-join-code-loopback 1 '
    if (!err.includes("Gateway is only bound to loopback.")) fail(`stderr lacks the loopback refusal: ${err.slice(0, 300)}`);
  ' || true

  DEV_PORT="$("$NODE" -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')"
  mkdir -p "$WORK/devgw-state"
  cat >"$WORK/devgw.json5" <<JSON5
{ gateway: { pairing: { publicUrl: "ws://127.0.0.1:$DEV_PORT",
    policies: { localhost: { autoApprove: false, requireToken: false } } } } }
JSON5
  "$SHARDGATE_BIN" serve --config "$WORK/devgw.json5" --port "$DEV_PORT" --token "$TOKEN" \
    --state-dir "$WORK/devgw-state" >"$WORK/devgw.log" 2>&1 </dev/null &
  INTEROP_BG_PIDS+=("$!")
  interop_wait_log devgw "shardgate ready" 30 || true
  DEV_URL="ws://127.0.0.1:$DEV_PORT"
fi
DEV=(--url "$DEV_URL" --token "$TOKEN")
DEV_COMMON=(--url "$DEV_URL" --token "$TOKEN" --json --timeout "$CALL_TIMEOUT_MS")

# ---------------------------------------------------------------- join-code + connect <joinUrl>
openclaw devices-join-code-text devices join-code "${DEV[@]}"
check_text devices-join-code-text 0 '
  if (!/^https?:\/\/\S+\/j\/[A-Za-z0-9_-]{22}$/m.test(text)) fail("no join URL line (…/j/<22-character code>)");
  has("npx openclaw connect ");
' || true

openclaw devices-join-code devices join-code "${DEV[@]}" --json
check devices-join-code 0 '
  if (!/^https?:\/\/[^/]+\/j\/[A-Za-z0-9_-]{22}$/.test(out.joinUrl || "")) fail(`joinUrl ${JSON.stringify(out.joinUrl)}`);
  if (out.command !== `npx openclaw connect ${out.joinUrl}`) fail(`command ${JSON.stringify(out.command)}`);
' || true
JOIN_URL="$(interop_json devices-join-code 'out.joinUrl')"

interop_bg_start connect-join connect "$JOIN_URL"
CONNECT_PID=$BG_PID
if interop_wait_log connect-join "node host gateway connected" 120; then
  echo "PASS connect-join-url"
  # The machine is a node now: device paired, its surface approved by the join code.
  JOINED="$(interop_poll devices-node-list 20 0.5 \
    '(out.nodes || []).filter((n) => n.connected && n.clientId === "node-host").map((n) => n.nodeId)[0]' \
    gateway call node.list "${DEV_COMMON[@]}")"
  export JOINED
  openclaw devices-joined-status nodes status "${DEV[@]}"
  check_text devices-joined-status 0 '
    has(process.env.JOINED.slice(0, 20)); has("paired · connected"); has("· approved"); lacks("approval pending");
  ' || true
  openclaw devices-list-joined devices list "${DEV[@]}" --json
  check devices-list-joined 0 '
    const d = (out.paired || []).find((x) => x.deviceId === process.env.JOINED);
    if (!d) return fail("the joined machine is not a paired device");
    if (!(d.roles || [d.role]).includes("node")) fail(`roles ${JSON.stringify(d.roles)}, want node`);
  ' || true
  openclaw devices-list-joined-text devices list "${DEV[@]}"
  check_text devices-list-joined-text 0 '
    has("Paired ("); has(process.env.JOINED); has("node");
  ' || true
else
  echo "FAIL connect-join-url"; FAILS=$((FAILS + 1))
fi
interop_bg_stop "$CONNECT_PID"

# The join URL served once: a second machine is told it is gone.
openclaw connect-join-reused connect "$JOIN_URL"
check_text connect-join-reused 1 '
  if (!(text + err).includes("Gateway join code was not found or has expired.")) fail("no \"Gateway join code was not found or has expired.\"");
' || true

# ---------------------------------------------------------------- a setup code is single-use
openclaw devices-setup-code gateway call device.pair.setupCode "${DEV_COMMON[@]}" \
  --params '{"bootstrapProfile":"node","includeQr":false}'
check devices-setup-code 0 '
  if (typeof out.setupCode !== "string" || !/^[A-Za-z0-9_-]+$/.test(out.setupCode)) return fail("no base64url setupCode");
  const p = JSON.parse(Buffer.from(out.setupCode, "base64url").toString("utf8"));
  if (typeof p.bootstrapToken !== "string" || typeof p.url !== "string") fail("payload lacks url/bootstrapToken");
  if (p.expiresAtMs !== out.expiresAtMs) fail("payload expiresAtMs differs from the answer");
  if (out.access !== "node") fail(`access ${out.access}, want node`);
' || true
SETUP_CODE="$(interop_json devices-setup-code 'out.setupCode')"
interop_bg_start connect-code connect "$SETUP_CODE"
if interop_wait_log connect-code "node host gateway connected" 120; then
  echo "PASS connect-setup-code"
else
  echo "FAIL connect-setup-code"; FAILS=$((FAILS + 1))
fi
interop_bg_stop "$BG_PID"
interop_bg_start connect-code-reused connect "$SETUP_CODE"
REUSED_PID=$BG_PID
interop_wait_log connect-code-reused "setup code invalid, expired, revoked, or already used" 120 \
  && interop_pass_fail connect-code-reused yes || interop_pass_fail connect-code-reused no
interop_wait_log connect-code-reused "detail=AUTH_BOOTSTRAP_TOKEN_INVALID" 30 \
  && interop_pass_fail connect-code-reused-detail yes || interop_pass_fail connect-code-reused-detail no
interop_bg_stop "$REUSED_PID"

# ---------------------------------------------------------------- rotate, revoke, remove
if [[ -n "${JOINED:-}" ]]; then
  openclaw devices-rotate devices rotate --device "$JOINED" --role node "${DEV[@]}" --json
  check devices-rotate 0 '
    if (out.deviceId !== process.env.JOINED || out.role !== "node") fail("deviceId/role");
    if ("token" in out) fail("the rotated token of another device reached this operator");
    if (out.tokenDelivery !== "withheld-cross-device") fail(`tokenDelivery ${out.tokenDelivery}, want withheld-cross-device`);
    if (typeof out.rotatedAtMs !== "number") fail("rotatedAtMs");
  ' || true
  openclaw devices-revoke devices revoke --device "$JOINED" --role node "${DEV[@]}" --json
  check devices-revoke 0 '
    if (out.deviceId !== process.env.JOINED || out.role !== "node") fail("deviceId/role");
    if (typeof out.revokedAtMs !== "number") fail("revokedAtMs");
  ' || true
  openclaw devices-remove devices remove "$JOINED" "${DEV[@]}"
  check_text devices-remove 0 '
    has(`Removed ${process.env.JOINED}`);
  ' || true
  openclaw devices-list-removed devices list "${DEV[@]}" --json
  check devices-list-removed 0 '
    if ((out.paired || []).some((x) => x.deviceId === process.env.JOINED)) fail("still paired after devices remove");
  ' || true
fi

openclaw devices-approve-unknown devices approve 00000000-0000-0000-0000-000000000000 "${DEV[@]}"
check_text devices-approve-unknown 1 '
  if (!err.includes("No pending device request matches 00000000-0000-0000-0000-000000000000.")) fail(`stderr: ${err.slice(0, 300)}`);
' || true
openclaw devices-reject-unknown devices reject 00000000-0000-0000-0000-000000000000 "${DEV[@]}"
check_text devices-reject-unknown 1 '
  if (!err.includes("unknown requestId")) fail(`stderr: ${err.slice(0, 300)}`);
' || true

# ---------------------------------------------------------------- pending devices: approve, reject
if (( DEV_EXTERNAL == 0 )); then
  DEV_HOSTPORT="${DEV_URL#ws://}"
  interop_bg_start pending-a node run --host "${DEV_HOSTPORT%:*}" --port "${DEV_HOSTPORT##*:}"
  interop_bg_start pending-b node run --host "${DEV_HOSTPORT%:*}" --port "${DEV_HOSTPORT##*:}"
  REQS="$(interop_poll devices-pending-poll 120 1 \
    '(out.pending || []).length >= 2 ? out.pending.map((r) => r.requestId).join(" ") : undefined' \
    devices list "${DEV[@]}" --json)"
  read -r REQ_A REQ_B <<<"$REQS"
  export REQ_A REQ_B
  openclaw devices-list-pending devices list "${DEV[@]}"
  check_text devices-list-pending 0 '
    has("Pending ("); has(process.env.REQ_A || "<no request>"); has(process.env.REQ_B || "<no request>");
  ' || true
  openclaw devices-approve devices approve "$REQ_A" "${DEV[@]}"
  check_text devices-approve 0 '
    if (!/^Approved [0-9a-f]{64} \(/m.test(text)) fail("no \"Approved <deviceId> (<requestId>)\" line");
    has(`(${process.env.REQ_A})`);
  ' || true
  openclaw devices-reject devices reject "$REQ_B" "${DEV[@]}"
  check_text devices-reject 0 '
    if (!/^Rejected [0-9a-f]{64}$/m.test(text)) fail("no \"Rejected <deviceId>\" line");
  ' || true
  openclaw devices-list-after devices list "${DEV[@]}" --json
  check devices-list-after 0 '
    const pending = (out.pending || []).map((r) => r.requestId);
    if (pending.includes(process.env.REQ_A) || pending.includes(process.env.REQ_B)) fail("approved/rejected requests still pending");
    if (!(out.paired || []).some((d) => (d.roles || []).includes("node"))) fail("the approved device is not paired");
  ' || true
fi
interop_bg_stop_all
