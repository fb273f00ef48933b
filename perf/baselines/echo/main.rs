//! `baseline-echo`: the conventional stack the gateway is measured against — tokio
//! current-thread runtime + tokio-tungstenite with default settings, one task per connection,
//! `ws.send(reply).await` per frame (one write per frame, no coalescing) — speaking just enough
//! of the OpenClaw protocol for `shardgate-load` to drive it unchanged:
//!
//! - on open: `connect.challenge` (no seq);
//! - `connect` → a minimal `res ok` `hello-ok` (no auth check, no device verification);
//! - any other `req` → one immediate `res ok` with the same id and `{"status":"ok"}`.
//!
//! So for `agent` the baseline answers with ONE frame where shardgate answers with
//! `res accepted`, `agent` events and the final `res`; for `chat` it answers with one `res`
//! where shardgate sends `res started`, one `chat` delta per word and the `final` event. The
//! load generator counts a request complete at its final answer either way, so requests/s are
//! comparable: the baseline is the cost of a raw WebSocket request/response round trip.
//!
//! `--read-buffer BYTES` sets tungstenite's per-connection read buffer (default 128 KiB,
//! allocated eagerly: it dominates idle memory per connection).
//!
//! `--pad BYTES` adds a `"pad"` string of BYTES spaces to every answer but `connect`'s, so the
//! one frame carries as many bytes as the gateway's several (`agent`: about 1 100 bytes in five
//! frames). A loopback send costs more with more bytes (the kernel copies them and the reader
//! copies them again), so this is the like-for-like echo when the question is what the
//! gateway's own work costs beyond moving the protocol's bytes.
//!
//! Prints `baseline-echo ready listen=ADDR pid=PID` on stdout once listening.

use std::borrow::Cow;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Deserialize)]
struct Req<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn reply(text: &str, conn: u64, pad: &str) -> Option<String> {
    let req: Req<'_> = serde_json::from_str(text).ok()?;
    if req.kind != "req" {
        return None;
    }
    let id = json_str(req.id.as_deref().unwrap_or("invalid"));
    Some(match req.method.as_deref() {
        Some("connect") => format!(
            r#"{{"type":"res","id":{id},"ok":true,"payload":{{"type":"hello-ok","protocol":4,"server":{{"version":"baseline-echo","connId":"c{conn}"}},"features":{{"methods":[],"events":[]}},"snapshot":{{}},"policy":{{"maxPayload":26214400,"maxBufferedBytes":52428800,"tickIntervalMs":30000}}}}}}"#
        ),
        _ if pad.is_empty() => {
            format!(r#"{{"type":"res","id":{id},"ok":true,"payload":{{"status":"ok"}}}}"#)
        }
        _ => format!(
            r#"{{"type":"res","id":{id},"ok":true,"payload":{{"status":"ok","pad":"{pad}"}}}}"#
        ),
    })
}

async fn serve(stream: TcpStream, conn: u64, cfg: WebSocketConfig, pad: Arc<str>) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(cfg)).await else {
        return;
    };
    let challenge = format!(
        r#"{{"type":"event","event":"connect.challenge","payload":{{"nonce":"n{conn}","ts":{}}}}}"#,
        now_ms()
    );
    if ws.send(Message::text(challenge)).await.is_err() {
        return;
    }
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) => {
                if let Some(r) = reply(t.as_str(), conn, &pad) {
                    if ws.send(Message::text(r)).await.is_err() {
                        return;
                    }
                }
            }
            Ok(Message::Close(_)) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn main() {
    let mut port: u16 = 0;
    // tungstenite's default (128 KiB, allocated eagerly per connection) unless told otherwise.
    let mut cfg = WebSocketConfig::default();
    let mut pad = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => {
                port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("--port needs a number")
            }
            "--read-buffer" => {
                cfg = cfg.read_buffer_size(
                    args.next()
                        .and_then(|p| p.parse().ok())
                        .expect("--read-buffer needs a byte count"),
                )
            }
            "--pad" => {
                pad = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("--pad needs a byte count")
            }
            "-h" | "--help" => {
                println!("baseline-echo [--port P] [--read-buffer BYTES] [--pad BYTES]   (127.0.0.1; 0 = any free port)");
                return;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        println!(
            "baseline-echo ready listen={addr} pid={}",
            std::process::id()
        );
        let _ = std::io::stdout().flush();
        let mut conn = 0u64;
        let pad: Arc<str> = " ".repeat(pad).into();
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    conn += 1;
                    tokio::spawn(serve(s, conn, cfg, pad.clone()));
                }
                // EMFILE and friends: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::reply;

    #[test]
    fn a_padded_answer_is_valid_json_carrying_the_pad() {
        let req = r#"{"type":"req","id":"7","method":"agent","params":{}}"#;
        let plain = reply(req, 1, "").expect("an answer");
        let pad = " ".repeat(1000);
        let padded = reply(req, 1, &pad).expect("an answer");
        let v: serde_json::Value = serde_json::from_str(&padded).expect("valid JSON");
        assert_eq!(v["id"], "7");
        assert_eq!(v["payload"]["status"], "ok");
        assert_eq!(v["payload"]["pad"].as_str().map(str::len), Some(1000));
        assert!(padded.len() >= plain.len() + 1000);
        // `connect` stays minimal: the handshake is not what is measured.
        let hello = reply(r#"{"type":"req","id":"c","method":"connect"}"#, 1, &pad).unwrap();
        assert!(!hello.contains("pad"));
    }
}
