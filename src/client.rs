//! A small blocking OpenClaw client: the CLI's `call`, the operator commands and `stress` use
//! it. One request at a time; events that arrive meanwhile go to a callback.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// A connected, authenticated operator session.
#[derive(Debug)]
pub struct Client {
    ws: WebSocket<TcpStream>,
    next: u64,
    timeout: Duration,
    /// The `hello-ok` payload.
    pub hello: Value,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// Could not reach or talk to the gateway.
    Transport(String),
    /// The gateway answered with an error (the `error` object).
    Answer(Value),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transport(e) => f.write_str(e),
            CallError::Answer(e) => write!(
                f,
                "{}: {}",
                e["code"].as_str().unwrap_or("ERROR"),
                e["message"].as_str().unwrap_or("")
            ),
        }
    }
}

fn t(e: impl std::fmt::Display) -> CallError {
    CallError::Transport(e.to_string())
}

impl Client {
    /// Connects to `url` (`ws://host:port`), answers the challenge and authenticates as an
    /// operator with `scopes`.
    pub fn connect(
        url: &str,
        token: Option<&str>,
        scopes: &[&str],
        timeout: Duration,
    ) -> Result<Client, CallError> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| t("only ws:// URLs are supported"))?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        let stream = TcpStream::connect(hostport)
            .map_err(|e| t(format!("cannot reach {url}: {e} (is the gateway running?)")))?;
        stream.set_read_timeout(Some(timeout)).ok();
        let _ = stream.set_nodelay(true);
        let (ws, _) = tungstenite::client(url, stream)
            .map_err(|e| t(format!("websocket upgrade failed: {e}")))?;
        let mut c = Client {
            ws,
            next: 0,
            timeout,
            hello: Value::Null,
        };
        let challenge = c.recv()?;
        if challenge["event"] != "connect.challenge" {
            return Err(t(format!("expected connect.challenge, got {challenge}")));
        }
        let mut params = json!({"minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "cli", "version": env!("CARGO_PKG_VERSION"), "platform": std::env::consts::OS, "mode": "cli"},
            "role": "operator", "scopes": scopes, "caps": []});
        if let Some(tok) = token {
            params["auth"] = json!({"token": tok});
        }
        c.send(&json!({"type": "req", "id": "c0", "method": "connect", "params": params}))?;
        loop {
            let f = c.recv()?;
            if f["id"] == "c0" {
                if f["ok"] != true {
                    return Err(CallError::Answer(f["error"].clone()));
                }
                c.hello = f["payload"].clone();
                return Ok(c);
            }
        }
    }

    fn send(&mut self, v: &Value) -> Result<(), CallError> {
        self.ws.send(Message::text(v.to_string())).map_err(t)
    }

    fn recv(&mut self) -> Result<Value, CallError> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(s)) => return serde_json::from_str(s.as_str()).map_err(t),
                Ok(Message::Close(f)) => {
                    return Err(t(format!(
                        "gateway closed the connection{}",
                        f.map(|f| format!(" ({} {})", u16::from(f.code), f.reason))
                            .unwrap_or_default()
                    )))
                }
                Ok(_) => continue,
                Err(e) => return Err(t(format!("connection error: {e}"))),
            }
        }
    }

    /// Calls `method`; with `expect_final` an `accepted` answer is skipped and the final one
    /// returned. Events seen meanwhile go to `on_event`.
    pub fn request(
        &mut self,
        method: &str,
        params: Value,
        expect_final: bool,
        mut on_event: impl FnMut(&Value),
    ) -> Result<Value, CallError> {
        self.next += 1;
        let id = format!("r{}", self.next);
        self.send(&json!({"type": "req", "id": id, "method": method, "params": params}))?;
        let deadline = Instant::now() + self.timeout;
        while Instant::now() < deadline {
            let f = self.recv()?;
            if f["type"] == "event" {
                on_event(&f);
                continue;
            }
            if f["id"] != id.as_str() {
                continue;
            }
            if expect_final && f["ok"] == true && f["payload"]["status"] == "accepted" {
                continue;
            }
            return if f["ok"] == true {
                Ok(f["payload"].clone())
            } else {
                Err(CallError::Answer(f["error"].clone()))
            };
        }
        Err(t(format!(
            "no answer to {method} within {:?}",
            self.timeout
        )))
    }

    /// Closes the connection politely.
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}
