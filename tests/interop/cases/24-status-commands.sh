# Cases: the read-only commands a person runs first (`openclaw health`, `status`, `doctor
# --non-interactive`, `channels status`), each pointed at the gateway by openclaw.json
# (gateway.mode remote). Each asserts the lines OpenClaw's own gateway gives (captured side by
# side; only latencies, paths and heartbeat cadence differ) and no "undefined", no version
# warning, no "unknown method".
# Sourced by run.sh, which defines openclaw_remote/check_text, URL, TOKEN.

# What no command may show: a missing field, a version skew, a method the gateway lacks.
I20_CLEAN='
  const all = text + "\n" + err;
  for (const bad of ["undefined", "unknown method", "Warning: this OpenClaw command is version", "version mismatch", "NaN"])
    if (all.includes(bad)) fail(`shows ${JSON.stringify(bad)}`);
'

openclaw_remote st-health health
check_text st-health 0 "$I20_CLEAN"'
  if (!/^Gateway probe duration: \d+ms$/m.test(text)) fail("no \"Gateway probe duration: Nms\" line");
  has("Agents: main (default)");
  if (!/^Heartbeat interval: (disabled|\d+[smh]) \(main\)$/m.test(text)) fail("no \"Heartbeat interval: … (main)\" line");
  if (!/^Session store \(main\): \S+ \(\d+ entries\)$/m.test(text)) fail("no \"Session store (main): PATH (N entries)\" line");
' || true

openclaw_remote st-status status
check_text st-status 0 "$I20_CLEAN"'
  has("OpenClaw status");
  const row = (name) => (text.match(new RegExp("^│ " + name + " +│ (.*?) +│$", "m")) || [])[1];
  const gw = row("Gateway");
  if (!gw || !/^remote · ws:\/\/\S+ \(config gateway\.remote\.url\) · reachable \d+ms · auth token$/.test(gw)) fail(`Gateway row is ${JSON.stringify(gw)}`);
  if (!/^1 · no workspaces bootstrapping · sessions \d+ · default main active/.test(row("Agents") || "")) fail(`Agents row is ${JSON.stringify(row("Agents"))}`);
  if (!row("Heartbeat")) fail("no Heartbeat row");
  if (!/^\d+ stored · /.test(row("Sessions") || "")) fail(`Sessions row is ${JSON.stringify(row("Sessions"))}`);
  if (!/^Channels\nNo channels configured$/m.test(text)) fail("Channels section is not \"No channels configured\"");
  lacks("unreachable");
' || true

openclaw_remote st-doctor doctor --non-interactive
check_text st-doctor 0 "$I20_CLEAN"'
  has("OpenClaw doctor");
  const sections = [...text.matchAll(/^◇  ([A-Za-z][A-Za-z /()-]*?)(?: ─|$)/gm)].map((m) => m[1].trim());
  for (const s of ["Doctor", "State integrity", "Gateway", "Security", "Skills", "Memory search", "Workspace"])
    if (!sections.includes(s)) fail(`no "${s}" section (sections: ${sections.join(", ")})`);
  has("Doctor complete.");
  lacks("memory probe for default agent is not ready");
' || true

openclaw_remote st-channels channels status
check_text st-channels 0 "$I20_CLEAN"'
  has("Checking channel status…");
  if (!/^Gateway reachable\.$/m.test(text)) fail("no \"Gateway reachable.\" line");
  has("- no configured chat channels (run `openclaw channels list --all` to see installable channels)");
' || true
