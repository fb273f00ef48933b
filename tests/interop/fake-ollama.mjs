import http from "node:http";
const log = (...a) => console.log(new Date().toISOString(), ...a);
http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    log(req.method, req.url, body.slice(0, 300));
    const json = (o) => { res.writeHead(200, { "content-type": "application/json" }); res.end(JSON.stringify(o)); };
    if (req.url === "/api/version") return json({ version: "0.12.0" });
    if (req.url === "/api/tags") return json({ models: [{ name: "fake", model: "fake", modified_at: new Date().toISOString(), size: 1, digest: "x", details: { family: "llama", parameter_size: "1B" } }] });
    if (req.url === "/api/show") return json({ modelfile: "", parameters: "", template: "", details: { family: "llama" }, model_info: { "llama.context_length": 8192 }, capabilities: ["completion", "tools"] });
    if (req.url === "/api/chat") {
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      const now = new Date().toISOString();
      res.write(JSON.stringify({ model: "fake", created_at: now, message: { role: "assistant", content: "Hello " }, done: false }) + "\n");
      res.write(JSON.stringify({ model: "fake", created_at: now, message: { role: "assistant", content: "there!" }, done: false }) + "\n");
      res.end(JSON.stringify({ model: "fake", created_at: now, message: { role: "assistant", content: "" }, done: true, done_reason: "stop", total_duration: 1000, prompt_eval_count: 5, eval_count: 2 }) + "\n");
      return;
    }
    res.writeHead(404); res.end("{}");
  });
}).listen(11499, "127.0.0.1", () => log("fake ollama on 11499"));
