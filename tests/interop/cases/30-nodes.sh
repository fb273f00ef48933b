# Cases: the headless node host (`openclaw node run`) against the gateway, and `openclaw nodes …`
# as an operator sees them: a new node's command surface waits for approval (nothing runs on
# it before), `nodes approve` makes it usable, and a paired node stays listed after it exits.
# Sourced by run.sh, which defines openclaw/check/check_text, the background helpers
# (interop_bg_start/stop, interop_wait_log, interop_json, interop_poll), URL, TOKEN, COMMON,
# WORK, NODE, OPENCLAW_MJS. The texts asserted are what OpenClaw 2026.9.6's gateway makes the CLI print
# (captured side by side, see README.md "Cases").

GW_HOSTPORT="${URL#*://}"; GW_HOSTPORT="${GW_HOSTPORT%%/*}"
GW_HOST="${GW_HOSTPORT%:*}"; GW_PORT="${GW_HOSTPORT##*:}"
CONN=(--url "$URL" --token "$TOKEN")

# ---------------------------------------------------------------- a new node host connects
interop_bg_start nodehost node run --host "$GW_HOST" --port "$GW_PORT"
NODEHOST_PID=$BG_PID
if ! interop_wait_log nodehost "node host gateway connected" 120; then
  echo "FAIL node-host-connects"; FAILS=$((FAILS + 1))
else
  echo "PASS node-host-connects"

  # Its surface is pending: `nodes pending` shows the request the node filed at connect.
  openclaw nodes-pending-json nodes pending "${CONN[@]}" --json
  check nodes-pending-json 0 '
    if (!Array.isArray(out)) return fail("payload is not an array of pending requests");
    const r = out.filter((x) => x.clientId === "node-host").sort((a, b) => b.ts - a.ts)[0];
    if (!r) return fail("no pending request from the node host (clientId node-host)");
    for (const c of ["system.run", "system.which"]) if (!(r.commands || []).includes(c)) fail(`pending commands lack ${c}`);
    // The platform policy withholds the file-transfer/workspace commands (no opt-in given).
    for (const c of ["dir.fetch", "file.write", "workspace.memory"]) if ((r.commands || []).includes(c)) fail(`pending commands include withheld ${c}`);
    if ((r.commands || []).length !== 13) fail(`${(r.commands || []).length} pending commands, OpenClaw files 13 for the Linux node host`);
    if (!(r.caps || []).includes("system")) fail("pending caps lack system");
    if (r.clientMode !== "node") fail(`clientMode ${r.clientMode}, want node`);
    if (typeof r.requestId !== "string" || typeof r.nodeId !== "string") fail("requestId/nodeId missing");
    if (!(r.requiredApproveScopes || []).includes("operator.pairing")) warn("requiredApproveScopes lacks operator.pairing");
  ' || true
  REQ="$(interop_json nodes-pending-json 'out.filter((x) => x.clientId === "node-host").sort((a, b) => b.ts - a.ts)[0].requestId')"
  NODE_ID="$(interop_json nodes-pending-json 'out.filter((x) => x.clientId === "node-host").sort((a, b) => b.ts - a.ts)[0].nodeId')"
  export REQ NODE_ID
  log "node host: node $NODE_ID, request $REQ"

  openclaw nodes-pending nodes pending "${CONN[@]}"
  check_text nodes-pending 0 '
    has("Pending"); has("Requested"); has(process.env.REQ);
  ' || true

  openclaw nodes-list-pending nodes list "${CONN[@]}"
  check_text nodes-list-pending 0 '
    if (!/Pending: [1-9]\d* · Paired: \d+/.test(text)) fail("no \"Pending: N · Paired: M\" summary with a pending request");
    has(process.env.REQ);
  ' || true

  openclaw nodes-status-pending nodes status "${CONN[@]}"
  check_text nodes-status-pending 0 '
    has("paired · connected"); has("approval pending");
    has(`Run openclaw nodes approve ${process.env.REQ}`); lacks("unpaired");
  ' || true

  openclaw nodes-describe-pending nodes describe --node "$NODE_ID" "${CONN[@]}"
  check_text nodes-describe-pending 0 '
    has("node-host/node"); has("paired · connected"); has("approval pending");
    has("(none effective)"); has("Pending commands"); has("- system.run"); has("- system.which");
    lacks("- file.write"); lacks("- dir.fetch");
    has(`openclaw nodes approve ${process.env.REQ}`);
  ' || true

  # Before approval nothing runs on the node: OpenClaw refuses with PAIRING_CHANGED.
  openclaw nodes-invoke-refused nodes invoke --node "$NODE_ID" --command system.which \
    --params '{"bins":["echo"]}' "${CONN[@]}" --json
  check nodes-invoke-refused 1 '
    if (out.ok !== false) return fail("invoke of an unapproved node did not fail");
    if (out.error?.message !== "node pairing changed while invocation was active") fail(`error ${JSON.stringify(out.error?.message)}, want OpenClaw\x27s "node pairing changed while invocation was active"`);
  ' || true

  openclaw node-invoke-refused-wire gateway call node.invoke "${COMMON[@]}" \
    --params "{\"nodeId\":\"$NODE_ID\",\"command\":\"system.which\",\"params\":{\"bins\":[\"echo\"]},\"idempotencyKey\":\"refused-$$\"}"
  check node-invoke-refused-wire 1 '
    const e = out.error || {};
    if (e.code !== "UNAVAILABLE") fail(`code ${e.code}, want UNAVAILABLE`);
    if (e.details?.code !== "PAIRING_CHANGED") fail(`details.code ${e.details?.code}, want PAIRING_CHANGED`);
  ' || true

  # Approved: the node host's surface is effective and it answers.
  openclaw nodes-approve nodes approve "$REQ" "${CONN[@]}"
  check nodes-approve 0 '
    if (out.requestId !== process.env.REQ) fail(`requestId ${out.requestId}`);
    if (out.node?.nodeId !== process.env.NODE_ID) fail(`node.nodeId ${out.node?.nodeId}`);
    if (!(out.node?.commands || []).includes("system.which")) fail("approved commands lack system.which");
    if (typeof out.node?.approvedAtMs !== "number") fail("node.approvedAtMs is not a number");
  ' || true

  openclaw nodes-list-approved nodes list "${CONN[@]}"
  check_text nodes-list-approved 0 '
    has("Paired"); has(process.env.NODE_ID); lacks(process.env.REQ);
  ' || true

  openclaw nodes-status-approved nodes status "${CONN[@]}"
  check_text nodes-status-approved 0 '
    has("paired · connected"); has("· approved"); lacks("approval pending");
  ' || true

  openclaw nodes-describe-approved nodes describe --node "$NODE_ID" "${CONN[@]}"
  check_text nodes-describe-approved 0 '
    has("node-host/node"); has("paired · connected"); has("approved");
    if (!/Caps\s+│[^\n]*system/.test(text)) fail("Caps row does not list system");
    has("- system.which"); has("- system.run"); lacks("(none effective)"); lacks("Caps     │ ?");
  ' || true

  openclaw nodes-invoke-ok nodes invoke --node "$NODE_ID" --command system.which \
    --params '{"bins":["echo"]}' "${CONN[@]}" --json
  check nodes-invoke-ok 0 '
    if (out.ok !== true) return fail("invoke did not succeed");
    if (out.command !== "system.which") fail(`command ${out.command}`);
    const p = out.payload?.bins?.echo;
    if (typeof p !== "string" || !p.endsWith("/echo")) fail(`payload.bins.echo ${JSON.stringify(p)}: the node host did not run it`);
  ' || true

  # The node host exits: the paired node stays listed, disconnected.
  interop_bg_stop "$NODEHOST_PID"
  interop_poll node-list-poll 40 0.5 \
    '(out.nodes || []).some((n) => n.nodeId === process.env.NODE_ID && n.connected === false) ? "yes" : undefined' \
    gateway call node.list "${COMMON[@]}" >/dev/null

  openclaw nodes-list-gone nodes list "${CONN[@]}"
  check_text nodes-list-gone 0 '
    has("Paired"); has(process.env.NODE_ID);
  ' || true

  openclaw nodes-status-gone nodes status "${CONN[@]}"
  check_text nodes-status-gone 0 '
    has("paired · disconnected · approved");
    if (!/Connected: 0/.test(text)) fail("summary does not say Connected: 0");
  ' || true

  openclaw nodes-invoke-gone nodes invoke --node "$NODE_ID" --command system.which \
    --params '{"bins":["echo"]}' "${CONN[@]}" --json
  check nodes-invoke-gone 1 '
    if (out.error?.message !== "node not connected") fail(`error ${JSON.stringify(out.error?.message)}, want "node not connected"`);
  ' || true

  openclaw nodes-remove nodes remove --node "$NODE_ID" "${CONN[@]}"
  check_text nodes-remove 0 '
    has(`Removed paired node ${process.env.NODE_ID}`);
  ' || true

  openclaw nodes-list-removed nodes list "${CONN[@]}"
  check_text nodes-list-removed 0 '
    lacks(process.env.NODE_ID);
  ' || true
fi
interop_bg_stop_all
