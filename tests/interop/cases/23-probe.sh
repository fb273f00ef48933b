# Cases: `openclaw gateway probe --url --token` (a fresh HOME: no device identity). The probe
# connects as client cli/probe asking for operator.read; OpenClaw clears a device-less
# operator's scopes unless it is its CLI (cli/cli) or local backend, so the probe is
# "connect-only" and its read calls are refused with missing scope operator.read.
# Sourced by run.sh, which defines openclaw/check/check_text, URL, TOKEN.

openclaw probe-url gateway probe --url "$URL" --token "$TOKEN"
check_text probe-url 0 '
  has("Reachable: yes");
  has("Capability: connected-no-operator-scope");
  has("Read-probe diagnostics are limited by gateway scopes (missing operator.read)");
  if (!/URL \(explicit\) \S+\n\s+Connect: ok \(\d+ms\) · Capability: connect-only · Read probe: limited - missing scope: operator\.read$/m.test(text))
    fail("target line is not \"Connect: ok (Nms) · Capability: connect-only · Read probe: limited - missing scope: operator.read\"");
  lacks("Capability: read-only");
  lacks("app 0.1.0");
' || true
openclaw probe-json gateway probe --url "$URL" --token "$TOKEN" --json
check probe-json 0 '
  if (out.capability !== "connected_no_operator_scope") fail(`capability is ${out.capability}`);
  if (!(out.warnings || []).some((w) => w.code === "probe_scope_limited")) fail("no probe_scope_limited warning");
  const t = (out.targets || []).find((x) => x.id === "explicit");
  if (!t) return fail("no explicit target");
  if (t.connect?.scopeLimited !== true) fail(`connect.scopeLimited is ${t.connect?.scopeLimited}`);
  if (t.connect?.ok !== true) fail(`connect.ok is ${t.connect?.ok}`);
  if (t.auth?.capability !== "connected_no_operator_scope") fail(`auth.capability is ${t.auth?.capability}`);
  if (JSON.stringify(t.auth?.scopes) !== "[]") fail(`auth.scopes is ${JSON.stringify(t.auth?.scopes)}, want []`);
' || true
# The CLI's own connect (cli/cli, no device) keeps its scopes: `gateway call status` works.
openclaw probe-cli-call gateway call status --url "$URL" --token "$TOKEN" --json
check probe-cli-call 0 '
  if (typeof out !== "object" || out === null || !("sessions" in out)) fail("status was not answered");
' || true
