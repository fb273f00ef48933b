//! `shardgate worker`: an agent worker that runs the echo behaviour on another host.
//!
//! It connects as a node in worker mode (`client.id: "openclaw-worker"`, `mode: "worker"`,
//! `agents: [...]`) with an Ed25519 device identity kept in its state dir, answers
//! `worker.ping` with `worker.pong`, and for each `worker.run.request` streams the message back
//! word by word (`worker.run.event`) and finishes with `worker.run.result`. One run at a time.

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::auth::device::DeviceIdentity;

/// `shardgate worker`
#[derive(Debug, Parser)]
pub struct WorkerArgs {
    /// Gateway URL.
    #[arg(long, default_value = "ws://127.0.0.1:18789")]
    pub url: String,
    /// Shared token (also OPENCLAW_GATEWAY_TOKEN).
    #[arg(long, env = "OPENCLAW_GATEWAY_TOKEN")]
    pub token: Option<String>,
    /// Agent ids this worker serves (repeatable).
    #[arg(long = "agent", default_value = "main")]
    pub agents: Vec<String>,
    /// Where the worker's device identity is kept. Default ~/.shardgate-worker.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Worker name (client.displayName).
    #[arg(long, default_value = "worker")]
    pub name: String,
    /// Delay before each streamed word, ms.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
}

fn identity(dir: &std::path::Path) -> Result<DeviceIdentity, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("identity.key");
    if let Ok(b) = std::fs::read(&path) {
        let secret: [u8; 32] = b
            .try_into()
            .map_err(|_| format!("{}: not a 32-byte key", path.display()))?;
        return Ok(DeviceIdentity::from_secret(secret));
    }
    let id = DeviceIdentity::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, &id.secret()).map_err(|e| e.to_string())?;
    Ok(id)
}

fn recv(ws: &mut WebSocket<TcpStream>) -> Result<Value, String> {
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

fn send(
    ws: &mut WebSocket<TcpStream>,
    id: &mut u64,
    method: &str,
    params: Value,
) -> Result<(), String> {
    *id += 1;
    let f = json!({"type": "req", "id": format!("w{id}"), "method": method, "params": params});
    ws.send(Message::text(f.to_string()))
        .map_err(|e| e.to_string())
}

fn run(a: &WorkerArgs) -> Result<(), String> {
    let dir = a.state_dir.clone().unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".shardgate-worker")
    });
    let me = identity(&dir)?;
    let rest = a
        .url
        .strip_prefix("ws://")
        .ok_or("only ws:// URLs are supported")?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let stream =
        TcpStream::connect(hostport).map_err(|e| format!("cannot reach {}: {e}", a.url))?;
    let (mut ws, _) =
        tungstenite::client(a.url.as_str(), stream).map_err(|e| format!("upgrade failed: {e}"))?;
    let challenge = recv(&mut ws)?;
    let nonce = challenge["payload"]["nonce"]
        .as_str()
        .ok_or("no challenge nonce")?
        .to_string();
    let ts = challenge["payload"]["ts"]
        .as_i64()
        .ok_or("no challenge ts")?;
    let token = a.token.clone().unwrap_or_default();
    let platform = std::env::consts::OS;
    let device = me.sign_connect(
        &nonce,
        ts,
        "openclaw-worker",
        "worker",
        "node",
        &[],
        &token,
        Some(platform),
        None,
    );
    let mut params = json!({"minProtocol": 3, "maxProtocol": 4,
        "client": {"id": "openclaw-worker", "displayName": a.name, "version": env!("CARGO_PKG_VERSION"),
                   "platform": platform, "mode": "worker"},
        "role": "node", "scopes": [], "caps": ["agent-worker"], "commands": [], "agents": a.agents,
        "device": device});
    if !token.is_empty() {
        params["auth"] = json!({"token": token});
    }
    ws.send(Message::text(
        json!({"type": "req", "id": "c1", "method": "connect", "params": params}).to_string(),
    ))
    .map_err(|e| e.to_string())?;
    loop {
        let f = recv(&mut ws)?;
        if f["id"] == "c1" {
            if f["ok"] != true {
                return Err(format!("connect refused: {}", f["error"]));
            }
            break;
        }
    }
    eprintln!(
        "shardgate worker {} ready: agents {:?}",
        me.device_id(),
        a.agents
    );
    let mut id = 0u64;
    loop {
        let f = recv(&mut ws)?;
        match f["event"].as_str() {
            Some("worker.ping") => send(
                &mut ws,
                &mut id,
                "worker.pong",
                json!({"id": f["payload"]["id"]}),
            )?,
            Some("worker.run.request") => {
                let p = &f["payload"];
                let run = p["runId"].clone();
                let message = p["message"].as_str().unwrap_or("");
                for word in message.split_whitespace() {
                    if a.delay_ms > 0 {
                        std::thread::sleep(Duration::from_millis(a.delay_ms));
                    }
                    send(
                        &mut ws,
                        &mut id,
                        "worker.run.event",
                        json!({"runId": run, "delta": word}),
                    )?;
                }
                let text = message.split_whitespace().collect::<Vec<_>>().join(" ");
                send(
                    &mut ws,
                    &mut id,
                    "worker.run.result",
                    json!({"runId": run, "ok": true, "text": text}),
                )?;
            }
            Some("shutdown") => return Ok(()),
            _ => {}
        }
    }
}

/// Runs the worker until the gateway closes; the exit code.
pub(super) fn main(a: WorkerArgs) -> i32 {
    match run(&a) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shardgate worker: {e}");
            1
        }
    }
}
