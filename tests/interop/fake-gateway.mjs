// Minimal fake gateway used to (a) find the smallest frames the real CLI accepts and
// (b) self-test run.sh without shardgate. Mimics `shardgate serve --port 0 --token T`:
// prints "shardgate ready listen=127.0.0.1:PORT shards=1 pid=P" on stdout when listening.
// Usage: node fake-gateway.mjs serve --port 0 --token T [--state-dir D]   (OPENCLAW_NODE_MODULES must point at openclaw's node_modules)
// FAKE_MINIMAL=1 → hello-ok carries only {type:"hello-ok",protocol:4}; payloads trimmed to the bone.
import { createRequire } from "node:module";
import path from "node:path";
import { randomUUID } from "node:crypto";
const require = createRequire(path.join(process.env.OPENCLAW_NODE_MODULES || process.cwd(), "noop.js"));
const { WebSocketServer } = require("ws");
const args = process.argv.slice(2);
const opt = (n, d) => { const i = args.indexOf(n); return i >= 0 ? args[i + 1] : d; };
const token = opt("--token", "T");
const minimal = process.env.FAKE_MINIMAL === "1";
const wss = new WebSocketServer({ port: Number(opt("--port", "0")), host: "127.0.0.1" });
const presence = () => [{ host: "fake", ip: "127.0.0.1", version: "0.0.0", platform: "linux", deviceFamily: "Linux", mode: "gateway", reason: "self", text: "Gateway: fake", ts: Date.now() }];
wss.on("connection", (ws) => {
  let hello = false, seq = 0;
  const send = (o) => ws.send(JSON.stringify(o));
  const nonce = randomUUID();
  send({ type: "event", event: "connect.challenge", payload: { nonce, ts: Date.now() } });
  ws.on("message", (raw) => {
    let f; try { f = JSON.parse(raw.toString()); } catch { return; }
    const res = (ok, payload, error) => send({ type: "res", id: f.id, ok, ...(payload !== undefined ? { payload } : {}), ...(error ? { error } : {}) });
    if (!hello) {
      if (f.method !== "connect") { res(false, undefined, { code: "INVALID_REQUEST", message: "invalid handshake: first request must be connect" }); return ws.close(1008); }
      if (f.params?.auth?.token !== token) { res(false, undefined, { code: "INVALID_REQUEST", message: "unauthorized", details: { code: "AUTH_TOKEN_MISMATCH" } }); return ws.close(1008); }
      hello = true;
      return res(true, minimal ? { type: "hello-ok", protocol: 4 } : {
        type: "hello-ok", protocol: 4, server: { version: "0.0.0", connId: randomUUID() },
        features: { methods: ["health", "status", "system-presence", "agent"], events: ["tick", "agent"], capabilities: [] },
        snapshot: { presence: presence(), health: { ok: true }, stateVersion: { presence: 1, health: 1 }, uptimeMs: 1 },
        auth: { role: "operator", scopes: f.params.scopes ?? [] },
        policy: { maxPayload: 26214400, maxBufferedBytes: 52428800, tickIntervalMs: 30000 },
      });
    }
    switch (f.method) {
      case "health": return res(true, minimal ? {} : { ok: true, ts: Date.now(), durationMs: 0, channels: {}, channelOrder: [], channelLabels: {}, heartbeatSeconds: 0, defaultAgentId: "main", agents: [], sessions: { path: "", count: 0, recent: [] } });
      case "status": return res(true, minimal ? {} : { runtimeVersion: "0.0.0", heartbeat: { defaultAgentId: "main", agents: [] }, channelSummary: [], queuedSystemEvents: [], sessions: { paths: [], count: 0, defaults: { model: null, contextTokens: null }, recent: [], byAgent: [] } });
      case "system-presence": return res(true, presence());
      case "agent": {
        const runId = f.params?.idempotencyKey;
        res(true, { runId, status: "accepted", acceptedAt: Date.now() });
        const ts = Date.now();
        const ev = (stream, data) => send({ type: "event", event: "agent", payload: { runId, seq: 0, stream, ts, data, sessionKey: "agent:main:main" }, seq: ++seq });
        if (!minimal) { ev("lifecycle", { phase: "start" }); ev("assistant", { text: "hello" }); ev("lifecycle", { phase: "end" }); }
        return setTimeout(() => res(true, { runId, status: "ok", summary: "completed", result: { payloads: [{ text: "hello" }], meta: { durationMs: 1 } } }), 50);
      }
      default: return res(false, undefined, { code: "INVALID_REQUEST", message: `unknown method: ${f.method}` });
    }
  });
});
wss.on("listening", () => console.log(`shardgate ready listen=127.0.0.1:${wss.address().port} shards=1 pid=${process.pid}`));
