// Logging WebSocket proxy: node proxy.mjs <listenPort> <upstreamUrl> [logFile]
// Prints every frame in both directions (one JSON line per frame) to stdout or logFile.
// Resolves the `ws` package from $OPENCLAW_NODE_MODULES (openclaw's node_modules).
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
const nm = process.env.OPENCLAW_NODE_MODULES;
const require = createRequire(path.join(nm || process.cwd(), "noop.js"));
const { WebSocketServer, WebSocket } = require("ws");
const [port, upstream, logFile] = process.argv.slice(2);
const out = logFile ? fs.createWriteStream(logFile, { flags: "a" }) : process.stdout;
let connSeq = 0;
const log = (c, dir, data) => {
  let body = data;
  try { body = JSON.parse(data); } catch {}
  out.write(JSON.stringify({ t: Date.now(), c, dir, frame: body }) + "\n");
};
const safeClose = (ws, code, reason) => {
  try {
    if (code === 1005 || code === 1006 || code === 1015 || !code) ws.close(1000);
    else ws.close(code, reason);
  } catch { try { ws.terminate(); } catch {} }
};
process.on("uncaughtException", (e) => console.error("proxy error", e));
const wss = new WebSocketServer({ port: Number(port), host: process.env.PROXY_HOST || "127.0.0.1" });
wss.on("connection", (client, req) => {
  const c = ++connSeq;
  log(c, "open", { url: req.url, headers: req.headers });
  const headers = {};
  for (const h of ["origin", "user-agent", "x-forwarded-for"]) if (req.headers[h]) headers[h] = req.headers[h];
  const up = new WebSocket(upstream + (req.url && req.url !== "/" ? req.url : ""), { headers });
  const pending = [];
  up.on("open", () => { for (const m of pending) up.send(m); pending.length = 0; });
  client.on("message", (d, isBinary) => {
    const s = isBinary ? d : d.toString();
    log(c, "C->S", s.toString());
    if (up.readyState === WebSocket.OPEN) up.send(s); else pending.push(s);
  });
  up.on("message", (d, isBinary) => {
    const s = isBinary ? d : d.toString();
    log(c, "S->C", s.toString());
    client.send(s);
  });
  up.on("close", (code, reason) => { log(c, "S-close", { code, reason: reason.toString() }); safeClose(client, code, reason); });
  client.on("close", (code, reason) => { log(c, "C-close", { code, reason: reason.toString() }); safeClose(up, code, reason); });
  up.on("error", (e) => log(c, "S-error", String(e)));
  client.on("error", (e) => log(c, "C-error", String(e)));
});
wss.on("listening", () => console.error(`proxy listening ${port} -> ${upstream}`));
