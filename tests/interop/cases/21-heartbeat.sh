# Cases: `openclaw system heartbeat enable|disable|last` (set-heartbeats / last-heartbeat).
# OpenClaw 2026.9.6 answers set-heartbeats with {ok: true, enabled} (operator.admin) and keeps
# last-heartbeat null until a heartbeat has run; shardgate runs none, so null either way.
# Sourced by run.sh, which defines openclaw/check/check_text, URL, TOKEN.

openclaw hb-disable system heartbeat disable --url "$URL" --token "$TOKEN"
check hb-disable 0 '
  if (out.ok !== true || out.enabled !== false) fail(`want {ok: true, enabled: false}, got ${JSON.stringify(out)}`);
  if (Object.keys(out).length !== 2) fail(`extra keys: ${Object.keys(out)}`);
' || true
openclaw hb-last-off system heartbeat last --url "$URL" --token "$TOKEN"
check_text hb-last-off 0 '
  if (text.trim() !== "null") fail(`last after disable is ${JSON.stringify(text.trim())}, want null`);
' || true
openclaw hb-enable system heartbeat enable --url "$URL" --token "$TOKEN" --json
check hb-enable 0 '
  if (out.ok !== true || out.enabled !== true) fail(`want {ok: true, enabled: true}, got ${JSON.stringify(out)}`);
' || true
openclaw hb-last-on system heartbeat last --url "$URL" --token "$TOKEN"
check_text hb-last-on 0 '
  lacks("unknown method");
  const v = JSON.parse(text);
  if (v !== null && (typeof v.ts !== "number" || typeof v.status !== "string")) fail(`neither null nor a heartbeat event {ts, status}: ${text.trim()}`);
' || true
# A non-boolean is refused with OpenClaw's message.
openclaw hb-bad gateway call set-heartbeats --params '{"enabled":"yes"}' --url "$URL" --token "$TOKEN"
check_text hb-bad 1 '
  if (!(text + err).includes("invalid set-heartbeats params: enabled (boolean) required")) fail("no \"enabled (boolean) required\" refusal");
' || true
