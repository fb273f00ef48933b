//! A stand-in Discord for the channel tests: a Gateway (WebSocket, tungstenite's server on a
//! local port: Hello, heartbeats and ACKs, Identify → READY with a `resume_gateway_url`,
//! Resume → the missed events replayed then RESUMED, MESSAGE_CREATE dispatches with
//! sequence numbers) and the REST API (`POST /api/v10/channels/{id}/messages` with
//! `Authorization: Bot <token>` and rate-limit headers), speaking the real wire shapes.
//!
//! Faults on demand: a dropped connection (an event logged but never sent, so only a Resume
//! with the right sequence gets it), withheld heartbeat ACKs, op 7, op 9, a close code, a
//! duplicate MESSAGE_CREATE, and a 429 with `retry_after` on REST. Everything the gateway did
//! is recorded (connections and their paths, Identify and Resume payloads, heartbeats, the
//! client's close codes, the posts) for the tests to count.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

/// The bot token the stand-in accepts.
pub(crate) const DISCORD_TOKEN: &str = "MTE2.discord-test_token";

/// The heartbeat interval the stand-in's Hello asks for, ms (short, so a withheld ACK shows
/// within a second).
pub(crate) const HEARTBEAT_MS: u64 = 400;

/// A fault applied to the current Gateway connection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GwFault {
    /// Log the next message's event (it takes a sequence number) but drop the connection
    /// instead of sending it: only a Resume with the sequence before it gets it.
    DropBeforeNext,
    /// Stop acknowledging heartbeats on this connection.
    WithholdAck,
    /// Send op 7 Reconnect.
    Reconnect,
    /// Send op 9 Invalid Session with this `d`.
    InvalidSession(bool),
    /// Close with this code.
    Close(u16),
    /// Dispatch the next message twice (two sequence numbers, one message id).
    DuplicateNext,
}

/// One Gateway connection as it came.
#[derive(Debug, Clone)]
pub(crate) struct GwConn {
    /// The request path with its query.
    pub(crate) path: String,
    /// When it was opened.
    pub(crate) at: Instant,
}

/// One REST post as received.
#[derive(Debug, Clone)]
pub(crate) struct Post {
    /// The channel id of the path.
    pub(crate) channel: String,
    /// The JSON body.
    pub(crate) body: Value,
    /// When it came.
    pub(crate) at: Instant,
    /// The status it was answered.
    pub(crate) status: u16,
}

/// What the stand-in has seen and holds.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Gateway connections, in order.
    pub(crate) connections: Vec<GwConn>,
    /// Identify payloads' `d`.
    pub(crate) identifies: Vec<Value>,
    /// Resume payloads' `d`.
    pub(crate) resumes: Vec<Value>,
    /// Heartbeats received (their `d`).
    pub(crate) heartbeats: Vec<Value>,
    /// Close codes the client sent.
    pub(crate) client_closes: Vec<Option<u16>>,
    /// Posts (accepted and refused).
    pub(crate) posts: Vec<Post>,
    session: Option<String>,
    sessions_made: u32,
    seq: u64,
    /// Every dispatched event of the current session (for replay on Resume).
    events: Vec<Value>,
    /// Messages waiting to be dispatched.
    pending: VecDeque<Value>,
    next_id: u64,
    gw_faults: VecDeque<GwFault>,
    rest_faults: VecDeque<(f64, bool)>,
}

impl State {
    /// The accepted posts' `content`.
    pub(crate) fn contents(&self) -> Vec<String> {
        self.posts
            .iter()
            .filter(|p| p.status == 200)
            .map(|p| p.body["content"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
}

/// The running stand-in.
pub(crate) struct FakeDiscord {
    /// The Gateway's port.
    pub(crate) gw_port: u16,
    /// The REST API's port.
    pub(crate) api_port: u16,
    inner: Arc<Inner>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeDiscord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDiscord")
            .field("gw_port", &self.gw_port)
            .field("api_port", &self.api_port)
            .finish()
    }
}

impl FakeDiscord {
    /// Starts both servers on free ports.
    pub(crate) fn start() -> FakeDiscord {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                next_id: 1_100_000_000_000_000_000,
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let gw = TcpListener::bind("127.0.0.1:0").expect("bind gateway stand-in");
        let api = TcpListener::bind("127.0.0.1:0").expect("bind api stand-in");
        let (gw_port, api_port) = (
            gw.local_addr().unwrap().port(),
            api.local_addr().unwrap().port(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let mut d = FakeDiscord {
            gw_port,
            api_port,
            inner,
            stop,
            threads: Vec::new(),
        };
        d.serve(gw, true);
        d.serve(api, false);
        d
    }

    /// `ws://…/?v=10&encoding=json`, for `gatewayUrl`.
    pub(crate) fn gateway_url(&self) -> String {
        format!("ws://127.0.0.1:{}/?v=10&encoding=json", self.gw_port)
    }

    /// `http://…/api/v10`, for `apiBase`.
    pub(crate) fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/api/v10", self.api_port)
    }

    fn serve(&mut self, listener: TcpListener, gateway: bool) {
        listener.set_nonblocking(true).unwrap();
        let (inner, stop, port) = (self.inner.clone(), self.stop.clone(), self.gw_port);
        self.threads.push(std::thread::spawn(move || {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let (inner, stop) = (inner.clone(), stop.clone());
                        conns.push(std::thread::spawn(move || {
                            if gateway {
                                gateway_conn(s, &inner, &stop, port);
                            } else {
                                rest_conn(s, &inner);
                            }
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        }));
    }

    /// Queues a text message from user `author` in channel `channel` (a guild channel, or a DM
    /// when `guild` is false); returns its message id.
    pub(crate) fn push_message(
        &self,
        channel: &str,
        guild: bool,
        author: &str,
        text: &str,
    ) -> String {
        let mut s = self.inner.state.lock().unwrap();
        s.next_id += 1;
        let id = s.next_id.to_string();
        let mut m = json!({"id": id, "channel_id": channel, "type": 0, "content": text,
            "timestamp": "2026-01-01T00:00:00.000000+00:00", "tts": false, "mentions": [],
            "attachments": [], "embeds": [], "pinned": false, "mention_everyone": false,
            "author": {"id": author, "username": format!("user{author}"), "discriminator": "0",
                       "global_name": null, "avatar": null}});
        if guild {
            m["guild_id"] = json!("900000000000000001");
        }
        s.pending.push_back(m);
        self.inner.changed.notify_all();
        id
    }

    /// Injects a fault into the current (or next) Gateway connection.
    pub(crate) fn fault(&self, f: GwFault) {
        self.inner.state.lock().unwrap().gw_faults.push_back(f);
        self.inner.changed.notify_all();
    }

    /// Answers the next post 429 with `retry_after` seconds (`global` as given).
    pub(crate) fn fault_rest(&self, retry_after: f64, global: bool) {
        self.inner
            .state
            .lock()
            .unwrap()
            .rest_faults
            .push_back((retry_after, global));
    }

    /// Reads the state.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.inner.state.lock().unwrap())
    }

    /// Waits until `pred` holds of the state.
    pub(crate) fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + timeout;
        let mut s = self.inner.state.lock().unwrap();
        loop {
            if pred(&s) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "discord stand-in: {what} not seen within {timeout:?}; connections={:?} \
                 identifies={} resumes={:?} closes={:?} posts={:?}",
                s.connections.iter().map(|c| &c.path).collect::<Vec<_>>(),
                s.identifies.len(),
                s.resumes,
                s.client_closes,
                s.posts
                    .iter()
                    .map(|p| (p.status, &p.body))
                    .collect::<Vec<_>>()
            );
            s = self.inner.changed.wait_timeout(s, left).unwrap().0;
        }
    }
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.inner.changed.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Serves one Gateway connection.
#[expect(
    clippy::result_large_err,
    reason = "tungstenite's handshake callback type returns its error response by value"
)]
fn gateway_conn(s: TcpStream, inner: &Inner, stop: &AtomicBool, port: u16) {
    let raw = s.try_clone().unwrap();
    let mut path = String::new();
    let cb = |req: &tungstenite::handshake::server::Request,
              resp: tungstenite::handshake::server::Response| {
        path = req.uri().to_string();
        Ok(resp)
    };
    let Ok(mut ws) = tungstenite::accept_hdr(s, cb) else {
        return;
    };
    // Short reads: the loop below also sends what the tests queue.
    raw.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    {
        let mut st = inner.state.lock().unwrap();
        st.connections.push(GwConn {
            path: path.clone(),
            at: Instant::now(),
        });
        inner.changed.notify_all();
    }
    let send = |ws: &mut tungstenite::WebSocket<TcpStream>, v: Value| {
        ws.send(Message::Text(v.to_string().into())).is_ok()
    };
    if !send(
        &mut ws,
        json!({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_MS}, "s": null, "t": null}),
    ) {
        return;
    }
    let mut live = false;
    let mut ack = true;
    while !stop.load(Ordering::SeqCst) {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let Ok(p) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                let mut st = inner.state.lock().unwrap();
                match p["op"].as_u64() {
                    Some(1) => {
                        st.heartbeats.push(p["d"].clone());
                        inner.changed.notify_all();
                        drop(st);
                        if ack && !send(&mut ws, json!({"op": 11})) {
                            return;
                        }
                    }
                    Some(2) => {
                        st.identifies.push(p["d"].clone());
                        inner.changed.notify_all();
                        if p["d"]["token"] != DISCORD_TOKEN {
                            drop(st);
                            let _ = ws.close(Some(CloseFrame {
                                code: CloseCode::from(4004),
                                reason: "Authentication failed.".into(),
                            }));
                            let _ = ws.flush();
                            return;
                        }
                        st.sessions_made += 1;
                        let id = format!("session-{}", st.sessions_made);
                        st.session = Some(id.clone());
                        st.events.clear();
                        st.seq += 1;
                        let ready = json!({"op": 0, "s": st.seq, "t": "READY", "d": {
                            "v": 10, "session_id": id,
                            "resume_gateway_url": format!("ws://127.0.0.1:{port}/resume"),
                            "user": {"id": "1000", "username": "bot", "bot": true},
                            "guilds": [], "application": {"id": "1000", "flags": 0}}});
                        st.events.push(ready.clone());
                        drop(st);
                        if !send(&mut ws, ready) {
                            return;
                        }
                        live = true;
                    }
                    Some(6) => {
                        st.resumes.push(p["d"].clone());
                        inner.changed.notify_all();
                        let ok = p["d"]["token"] == DISCORD_TOKEN
                            && st.session.is_some()
                            && p["d"]["session_id"].as_str() == st.session.as_deref();
                        if !ok {
                            drop(st);
                            if !send(&mut ws, json!({"op": 9, "d": false, "s": null, "t": null})) {
                                return;
                            }
                            continue;
                        }
                        // Replay what came after the client's sequence, then RESUMED.
                        let after = p["d"]["seq"].as_u64().unwrap_or(0);
                        let mut out: Vec<Value> = st
                            .events
                            .iter()
                            .filter(|e| e["s"].as_u64().unwrap_or(0) > after)
                            .cloned()
                            .collect();
                        st.seq += 1;
                        out.push(json!({"op": 0, "s": st.seq, "t": "RESUMED", "d": {}}));
                        drop(st);
                        for e in out {
                            if !send(&mut ws, e) {
                                return;
                            }
                        }
                        live = true;
                    }
                    _ => {}
                }
            }
            Ok(Message::Close(f)) => {
                let mut st = inner.state.lock().unwrap();
                st.client_closes.push(f.map(|f| u16::from(f.code)));
                inner.changed.notify_all();
                drop(st);
                let _ = ws.flush();
                return;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                // Gone without a close frame.
                let mut st = inner.state.lock().unwrap();
                st.client_closes.push(None);
                inner.changed.notify_all();
                return;
            }
        }
        if !live {
            continue;
        }
        // Faults, then queued messages.
        let mut st = inner.state.lock().unwrap();
        if let Some(f) = st.gw_faults.pop_front() {
            match f {
                GwFault::DropBeforeNext => {
                    let Some(m) = st.pending.pop_front() else {
                        st.gw_faults.push_front(f);
                        continue;
                    };
                    st.seq += 1;
                    let e = json!({"op": 0, "s": st.seq, "t": "MESSAGE_CREATE", "d": m});
                    st.events.push(e);
                    drop(st);
                    let _ = raw.shutdown(std::net::Shutdown::Both);
                    return;
                }
                GwFault::WithholdAck => ack = false,
                GwFault::Reconnect => {
                    drop(st);
                    if !send(&mut ws, json!({"op": 7, "d": null, "s": null, "t": null})) {
                        return;
                    }
                    continue;
                }
                GwFault::InvalidSession(d) => {
                    if !d {
                        st.session = None;
                    }
                    drop(st);
                    if !send(&mut ws, json!({"op": 9, "d": d, "s": null, "t": null})) {
                        return;
                    }
                    continue;
                }
                GwFault::Close(code) => {
                    drop(st);
                    let _ = ws.close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: "stand-in close".into(),
                    }));
                    let _ = ws.flush();
                    // Read the client's answer (or its drop) before going.
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while Instant::now() < deadline {
                        match ws.read() {
                            Err(tungstenite::Error::Io(e))
                                if matches!(
                                    e.kind(),
                                    ErrorKind::WouldBlock | ErrorKind::TimedOut
                                ) => {}
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    return;
                }
                GwFault::DuplicateNext => {
                    let Some(m) = st.pending.pop_front() else {
                        st.gw_faults.push_front(f);
                        continue;
                    };
                    let mut out = Vec::new();
                    for _ in 0..2 {
                        st.seq += 1;
                        let e = json!({"op": 0, "s": st.seq, "t": "MESSAGE_CREATE", "d": m});
                        st.events.push(e.clone());
                        out.push(e);
                    }
                    drop(st);
                    for e in out {
                        if !send(&mut ws, e) {
                            return;
                        }
                    }
                    continue;
                }
            }
        }
        let mut out = Vec::new();
        while let Some(m) = st.pending.pop_front() {
            st.seq += 1;
            let e = json!({"op": 0, "s": st.seq, "t": "MESSAGE_CREATE", "d": m});
            st.events.push(e.clone());
            out.push(e);
        }
        drop(st);
        for e in out {
            if !send(&mut ws, e) {
                return;
            }
        }
    }
}

/// Serves one REST connection: one request (the gateway closes after each).
fn rest_conn(s: TcpStream, inner: &Inner) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let (mut len, mut auth) = (0usize, String::new());
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("authorization") {
                auth = v.trim().to_string();
            }
        }
    }
    let mut body = vec![0u8; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    if auth != format!("Bot {DISCORD_TOKEN}") {
        return answer(
            s,
            401,
            &[],
            &json!({"message": "401: Unauthorized", "code": 0}),
        );
    }
    let channel = target
        .strip_prefix("/api/v10/channels/")
        .and_then(|r| r.strip_suffix("/messages"))
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()));
    let (Some(channel), "POST") = (channel, method.as_str()) else {
        return answer(
            s,
            404,
            &[],
            &json!({"message": "404: Not Found", "code": 0}),
        );
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut st = inner.state.lock().unwrap();
    let fault = st.rest_faults.pop_front();
    let status = if fault.is_some() { 429 } else { 200 };
    st.posts.push(Post {
        channel: channel.to_string(),
        body: v.clone(),
        at: Instant::now(),
        status,
    });
    inner.changed.notify_all();
    st.next_id += 1;
    let id = st.next_id.to_string();
    drop(st);
    if let Some((retry, global)) = fault {
        let retry_s = format!("{retry}");
        let mut h = vec![("Retry-After", retry.ceil().to_string())];
        if global {
            h.push(("X-RateLimit-Global", "true".into()));
        } else {
            h.extend([
                ("X-RateLimit-Bucket", "stand-in-bucket".into()),
                ("X-RateLimit-Remaining", "0".into()),
                ("X-RateLimit-Reset-After", retry_s),
                ("X-RateLimit-Scope", "user".into()),
            ]);
        }
        return answer(
            s,
            429,
            &h,
            &json!({"message": "You are being rate limited.", "retry_after": retry, "global": global}),
        );
    }
    answer(
        s,
        200,
        &[
            ("X-RateLimit-Bucket", "stand-in-bucket".into()),
            ("X-RateLimit-Limit", "5".into()),
            ("X-RateLimit-Remaining", "4".into()),
            ("X-RateLimit-Reset-After", "1.000".into()),
        ],
        &json!({"id": id, "channel_id": channel, "content": v["content"], "type": 0,
                "author": {"id": "1000", "username": "bot", "bot": true}}),
    );
}

fn answer(mut s: TcpStream, status: u16, headers: &[(&str, String)], body: &Value) {
    let b = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        b.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(b.as_bytes());
    let _ = s.flush();
}
