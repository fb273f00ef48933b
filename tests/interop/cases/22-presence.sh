# Cases: the gateway's own presence entry as the CLI prints it (`openclaw system presence`).
# OpenClaw's self entry names its version as the app version ("· app 2026.9.6 ·"), which the
# CLI shows as "app VERSION" (`gateway probe`, `status` "Gateway self"); shardgate reports the
# OpenClaw version it is wire-compatible with there, and its own in `shardgateVersion`.
# Sourced by run.sh, which defines openclaw/check/check_text, URL, TOKEN.

openclaw presence-self system presence --url "$URL" --token "$TOKEN"
check presence-self 0 '
  if (!Array.isArray(out)) return fail("not an array");
  const self = out.find((e) => e.mode === "gateway" && e.reason === "self");
  if (!self) return fail("no self entry (mode gateway, reason self)");
  if (self.version !== "2026.9.6") fail(`self version is ${JSON.stringify(self.version)}, want "2026.9.6"`);
  if (!/^Gateway: \S+ \(\S+\) · app 2026\.9\.6 · mode gateway · reason self$/.test(self.text || "")) fail(`self text is ${JSON.stringify(self.text)}`);
  if (!/^linux \S+/.test(self.platform || "")) fail(`platform is ${JSON.stringify(self.platform)}, want "linux <release>"`);
  for (const k of ["host", "ip", "deviceFamily", "instanceId", "ts"]) if (self[k] === undefined) fail(`self lacks ${k}`);
' || true
openclaw presence-text system presence --url "$URL" --token "$TOKEN"
check_text presence-text 0 '
  lacks("app 0.1.0");
  lacks("shardgate 0.1.0");
  has("· app 2026.9.6 ·");
' || true
