# Cases: `openclaw gateway call` of the core methods (health, status, presence, agent, bad token).
# Sourced by run.sh, which defines openclaw/check/check_text, URL, TOKEN, COMMON, K1, K2.


openclaw health gateway call health "${COMMON[@]}"
check health 0 '
  if (!isObj(out)) return fail("payload is not an object");
  if (out.ok !== true) fail("payload.ok is not true");
  if (typeof out.ts !== "number") fail("payload.ts is not a number");
  for (const k of ["durationMs", "channels", "defaultAgentId", "agents", "sessions"]) if (!(k in out)) warn(`health payload lacks ${k} (OpenClaw has it)`);
' || true

openclaw status gateway call status "${COMMON[@]}"
check status 0 '
  if (!isObj(out)) return fail("payload is not an object");
  if (Object.keys(out).length === 0) fail("payload is an empty object");
  for (const k of ["runtimeVersion", "heartbeat", "channelSummary", "queuedSystemEvents", "sessions"]) if (!(k in out)) warn(`status payload lacks ${k} (OpenClaw has it)`);
' || true

openclaw system-presence gateway call system-presence "${COMMON[@]}"
check system-presence 0 '
  if (!Array.isArray(out)) return fail("payload is not a JSON array (OpenClaw returns a bare array of presence entries)");
  if (out.length === 0) warn("presence list is empty (OpenClaw always lists the gateway itself, reason \"self\")");
  out.forEach((e, i) => {
    if (!isObj(e)) return fail(`entry ${i} is not an object`);
    if (typeof e.ts !== "number") fail(`entry ${i}: ts is not a number`);
    if (typeof e.text !== "string") fail(`entry ${i}: text is not a string`);
    for (const k of ["host", "version", "platform", "mode", "reason"]) if (!(k in e)) warn(`entry ${i} lacks ${k}`);
  });
' || true

openclaw agent gateway call agent --expect-final --params "{\"message\":\"hi\",\"idempotencyKey\":\"$K1\"}" "${COMMON[@]}"
check agent 0 '
  if (!isObj(out)) return fail("final payload is not an object");
  if (out.status !== "ok") fail(`final status is ${JSON.stringify(out.status)}, want "ok"`);
  if (out.runId !== process.env.K1) fail(`runId is ${JSON.stringify(out.runId)}, want ${process.env.K1} (runId = idempotencyKey)`);
  if (typeof out.summary !== "string") warn("final payload lacks summary (OpenClaw: \"completed\")");
  if (!("result" in out)) warn("final payload lacks result");
' || true

openclaw agent-accepted gateway call agent --params "{\"message\":\"hi again\",\"idempotencyKey\":\"$K2\"}" "${COMMON[@]}"
check agent-accepted 0 '
  if (!isObj(out)) return fail("payload is not an object");
  if (out.status !== "accepted") fail(`status is ${JSON.stringify(out.status)}, want "accepted" (first res of agent)`);
  if (out.runId !== process.env.K2) fail(`runId is ${JSON.stringify(out.runId)}, want ${process.env.K2}`);
  if (typeof out.acceptedAt !== "number") warn("acceptedAt is not a number");
' || true

openclaw bad-token gateway call health --url "$URL" --token "not-$TOKEN" --json --timeout "$CALL_TIMEOUT_MS"
check bad-token 1 '
  if (!isObj(out) || out.ok !== false || !isObj(out.error)) return fail("want {ok:false,error:{…}} on stdout");
  if (out.error.type !== "gateway_request_error") fail(`error.type ${JSON.stringify(out.error.type)}, want "gateway_request_error" (a res ok:false to connect, not a dropped socket)`);
  if (out.error.code !== "INVALID_REQUEST") fail(`error.code ${JSON.stringify(out.error.code)}, want "INVALID_REQUEST"`);
  if (!isObj(out.error.details) || out.error.details.code !== "AUTH_TOKEN_MISMATCH") fail("error.details.code is not AUTH_TOKEN_MISMATCH");
' || true

