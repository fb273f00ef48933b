//! `shardgate call METHOD`: connect, call one method, print the answer (the final one with
//! `--expect-final`), exit non-zero on an error answer.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// `shardgate call`
#[derive(Debug, Parser)]
pub struct CallArgs {
    /// Method name, e.g. `health`, `status`, `agent`.
    pub method: String,
    /// Parameters as a JSON object.
    #[arg(long, default_value = "{}")]
    pub params: String,
    /// Gateway URL.
    #[arg(long, default_value = "ws://127.0.0.1:18789")]
    pub url: String,
    /// Shared token (also OPENCLAW_GATEWAY_TOKEN).
    #[arg(long, env = "OPENCLAW_GATEWAY_TOKEN")]
    pub token: Option<String>,
    /// Scopes to request.
    #[arg(long, default_value = "operator.admin")]
    pub scopes: String,
    /// Wait for the final answer of a two-phase call (`agent`).
    #[arg(long)]
    pub expect_final: bool,
    /// Print events as they arrive (to stderr).
    #[arg(long)]
    pub events: bool,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout: u64,
}

fn recv_json(ws: &mut WebSocket<TcpStream>) -> Result<Value, String> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                return serde_json::from_str(t.as_str()).map_err(|e| e.to_string())
            }
            Ok(Message::Close(f)) => return Err(format!("gateway closed the connection: {f:?}")),
            Ok(_) => continue,
            Err(e) => return Err(format!("connection error: {e}")),
        }
    }
}

fn call(a: &CallArgs) -> Result<Value, String> {
    let params: Value =
        serde_json::from_str(&a.params).map_err(|e| format!("--params is not JSON: {e}"))?;
    let rest = a
        .url
        .strip_prefix("ws://")
        .ok_or("only ws:// URLs are supported")?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let stream = TcpStream::connect(hostport)
        .map_err(|e| format!("cannot reach {}: {e} (is the gateway running?)", a.url))?;
    stream
        .set_read_timeout(Some(Duration::from_millis(a.timeout)))
        .ok();
    let (mut ws, _) = tungstenite::client(a.url.as_str(), stream)
        .map_err(|e| format!("websocket upgrade failed: {e}"))?;
    let deadline = Instant::now() + Duration::from_millis(a.timeout);
    let challenge = recv_json(&mut ws)?;
    if challenge["event"] != "connect.challenge" {
        return Err(format!("expected connect.challenge, got {challenge}"));
    }
    let scopes: Vec<&str> = a.scopes.split(',').filter(|s| !s.is_empty()).collect();
    let mut connect = json!({"type": "req", "id": "c1", "method": "connect", "params": {
        "minProtocol": 4, "maxProtocol": 4,
        "client": {"id": "cli", "version": env!("CARGO_PKG_VERSION"), "platform": std::env::consts::OS, "mode": "cli"},
        "role": "operator", "scopes": scopes, "caps": []}});
    if let Some(t) = &a.token {
        connect["params"]["auth"] = json!({"token": t});
    }
    ws.send(Message::text(connect.to_string()))
        .map_err(|e| e.to_string())?;
    let hello = recv_json(&mut ws)?;
    if hello["ok"] != true {
        return Err(format!("connect refused: {}", hello["error"]));
    }
    let req = json!({"type": "req", "id": "r1", "method": a.method, "params": params});
    ws.send(Message::text(req.to_string()))
        .map_err(|e| e.to_string())?;
    while Instant::now() < deadline {
        let f = recv_json(&mut ws)?;
        if f["type"] == "event" {
            if a.events {
                eprintln!("{f}");
            }
            continue;
        }
        if f["id"] != "r1" {
            continue;
        }
        if a.expect_final && f["ok"] == true && f["payload"]["status"] == "accepted" {
            continue;
        }
        let _ = ws.close(None);
        return if f["ok"] == true {
            Ok(f["payload"].clone())
        } else {
            Err(f["error"].to_string())
        };
    }
    Err("timed out".into())
}

/// Runs the command; the exit code.
pub(super) fn run(a: CallArgs) -> i32 {
    match call(&a) {
        Ok(v) => {
            use std::io::Write;
            // A closed stdout (`| head`) is not an error worth a panic.
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            );
            0
        }
        Err(e) => {
            eprintln!("shardgate call: {e}");
            1
        }
    }
}
