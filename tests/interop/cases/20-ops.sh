# Cases: operations commands of the real CLI (issue 20 items 3, 4, 5, 9): health, logs, cron,
# system event / heartbeat, approvals, models, gateway status / health / probe / identity,
# doctor, skills, hooks, tasks. Each asserts what a person sees, and holds against real
# OpenClaw too (SHARDGATE_INTEROP_URL=ws://… of an OpenClaw gateway).
# Sourced by run.sh, which defines openclaw/openclaw_remote/check/check_text, URL, TOKEN, COMMON.

# `openclaw health`: the session store line names a store (OpenClaw: its sqlite path; ours:
# "memory"), never "undefined".
openclaw_remote ops-health health
check_text ops-health 0 '
  if (!/^Session store \(main\): \S+ \(\d+ entries\)$/m.test(text)) fail("no \"Session store (main): PATH (N entries)\" line");
  lacks("undefined");
  has("Agents: main (default)");
' || true

# `openclaw logs`: lines of the gateway's own log file, rendered as TIME LEVEL SUBSYSTEM MESSAGE.
openclaw_remote ops-logs logs --limit 20 --plain
check_text ops-logs 0 '
  has("Log file: ");
  lacks("unknown method");
  const lines = text.split("\n").filter((l) => /^\d{4}-\d\d-\d\dT\S+ (trace|debug|info|warn|error) /.test(l));
  if (lines.length === 0) fail("no rendered log line (TIME LEVEL …)");
' || true

# `openclaw logs --json`: a meta record naming the file, then one record per parsed line.
openclaw_remote ops-logs-json logs --limit 5 --json
check_text ops-logs-json 0 '
  const recs = text.trim().split("\n").map((l) => JSON.parse(l));
  const meta = recs[0];
  if (meta.type !== "meta" || typeof meta.file !== "string" || typeof meta.cursor !== "number") fail(`first record is not meta {file, cursor}: ${JSON.stringify(meta)}`);
  const logs = recs.filter((r) => r.type === "log");
  if (logs.length === 0) fail("no parsed log record (type \"log\"): lines are not JSON with time/level/message");
  for (const r of logs) if (!r.time || !r.level || typeof r.message !== "string") fail(`log record lacks time/level/message: ${JSON.stringify(r).slice(0, 200)}`);
' || true

# `openclaw cron list` / `cron status`: no automations is a valid, empty inventory page.
openclaw_remote ops-cron-list cron list
check_text ops-cron-list 0 '
  lacks("invalid inventory page");
  lacks("unknown method");
  if (!text.includes("No automations.") && !/^ID\s+Declaration/m.test(text)) fail("neither \"No automations.\" nor a job table");
' || true
openclaw_remote ops-cron-status cron status
check ops-cron-status 0 '
  if (typeof out.enabled !== "boolean") fail("enabled is not a boolean");
  if (typeof out.jobs !== "number") fail("jobs is not a number");
' || true

# `openclaw system event`: the gateway accepts the event (wake) and prints "ok"; it is queued.
openclaw_remote ops-sys-event system event --text "ops interop event"
check_text ops-sys-event 0 '
  if (text.trim() !== "ok") fail(`output is ${JSON.stringify(text.trim())}, want "ok"`);
' || true
openclaw ops-queued gateway call status "${COMMON[@]}"
check ops-queued 0 '
  if (!Array.isArray(out.queuedSystemEvents)) return fail("status.queuedSystemEvents is not an array");
  if (!out.queuedSystemEvents.includes("ops interop event")) fail(`queuedSystemEvents lacks the event: ${JSON.stringify(out.queuedSystemEvents)}`);
' || true

# `openclaw system heartbeat last`: null until a heartbeat has run (shardgate runs none, so
# always null; OpenClaw prints its last heartbeat event {ts, status, …} once one ran).
openclaw_remote ops-hb-last system heartbeat last
check_text ops-hb-last 0 '
  const v = JSON.parse(text);
  if (v !== null && (typeof v.ts !== "number" || typeof v.status !== "string")) fail(`output is neither null nor a heartbeat event {ts, status}: ${text.trim()}`);
' || true

# `openclaw approvals get --gateway`: the gateway's exec approvals snapshot as a table.
openclaw_remote ops-approvals approvals get --gateway
check_text ops-approvals 0 '
  has("Approvals");
  if (!/Target\s+│\s+gateway/.test(text)) fail("Target is not gateway");
  has("Effective Policy");
  lacks("unknown method");
' || true

# `openclaw models list`: needs capability published-model-catalog in hello-ok.
openclaw_remote ops-models models list
check_text ops-models 0 '
  lacks("required capability");
  if (!text.includes("No models found.") && !/^Model\s+Input/m.test(text)) fail("neither a model table nor \"No models found.\"");
' || true

# `openclaw gateway status`: the gateway version the CLI compares is its own: no skew warning.
openclaw ops-gw-status gateway status --url "$URL" --token "$TOKEN"
check_text ops-gw-status 0 '
  has("Gateway version: 2026.9.6");
  if (err.includes("Warning: this OpenClaw command is version") || text.includes("Warning: this OpenClaw command is version")) fail("version skew warning");
  has("Connectivity probe: ok");
' || true
openclaw ops-gw-health gateway health --url "$URL" --token "$TOKEN"
check_text ops-gw-health 0 '
  has("Gateway Health");
  if (!/^OK \(\d+ms\)$/m.test(text)) fail("no \"OK (Nms)\" line");
' || true
openclaw_remote ops-gw-probe gateway probe
check_text ops-gw-probe 0 '
  has("Reachable: yes");
  if (!/Remote \(configured\) \S+\n\s+Connect: ok/.test(text)) fail("configured remote is not \"Connect: ok\"");
' || true

# `gateway.identity.get`: the gateway's own Ed25519 identity, {deviceId, publicKey} only.
openclaw ops-identity gateway call gateway.identity.get "${COMMON[@]}"
check ops-identity 0 '
  const keys = Object.keys(out).sort().join(",");
  if (keys !== "deviceId,publicKey") fail(`keys are ${keys}, want deviceId,publicKey`);
  const raw = Buffer.from(out.publicKey || "", "base64url");
  if (raw.length !== 32) fail(`publicKey is ${raw.length} bytes, want a raw 32-byte Ed25519 key`);
  const id = require("crypto").createHash("sha256").update(raw).digest("hex");
  if (id !== out.deviceId) fail("deviceId is not sha256(publicKey)");
' || true

# `openclaw doctor`: no version mismatch, no unknown method behind its probes.
openclaw_remote ops-doctor doctor --non-interactive
check_text ops-doctor 0 '
  has("OpenClaw doctor");
  lacks("OpenClaw version mismatch");
  lacks("unknown method");
  lacks("memory probe for default agent is not ready");
' || true

# `openclaw skills list` / `hooks list` / `tasks list`: answered (empty here), never refused.
openclaw_remote ops-skills skills list
check_text ops-skills 0 '
  lacks("unknown method");
  if (!text.includes("No skills found.") && !/^Skills \(\d+\/\d+ ready\)/m.test(text)) fail("neither a skills table nor \"No skills found.\"");
' || true
openclaw_remote ops-hooks hooks list
check_text ops-hooks 0 '
  lacks("unknown method");
  if (!text.includes("No hooks found.") && !/^Hooks \(\d+\/\d+ ready\)/m.test(text)) fail("neither a hooks table nor \"No hooks found.\"");
' || true
openclaw_remote ops-tasks tasks list
check_text ops-tasks 0 '
  has("Background tasks: ");
' || true
