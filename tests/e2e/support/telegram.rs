//! A stand-in Telegram Bot API server for the channel tests: real HTTP/1.1 on a local port,
//! the real wire shapes (`{"ok":true,"result":[…]}`, `getUpdates` with `offset` and
//! `timeout` held open as a long poll, `sendMessage`), and faults injected on demand: 429
//! with `retry_after`, a connection dropped mid long poll, an update delivered twice, a
//! restart (the listener closed and opened again on the same port, its updates kept).
//!
//! Like Telegram, it forgets an update only once a `getUpdates` offset passes it, so a test
//! sees what the gateway acknowledged and when.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The token the stand-in accepts.
pub(crate) const BOT_TOKEN: &str = "123456:TEST-token_abc";

/// A fault applied to the next `getUpdates` (or `sendMessage`) call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fault {
    /// Answer 429 with `parameters.retry_after` seconds.
    TooMany(u64),
    /// Hold the long poll until an update is there, then close without answering.
    Drop,
    /// Answer with every pending update twice.
    Duplicate,
    /// Answer this HTTP status with an error envelope.
    Status(u16),
}

/// One `getUpdates` call as received.
#[derive(Debug, Clone)]
pub(crate) struct Poll {
    /// Its `offset`.
    pub(crate) offset: Option<i64>,
    /// When it came.
    pub(crate) at: Instant,
    /// What it was answered: `ok`, `429`, `dropped`, …
    pub(crate) answer: String,
}

#[derive(Debug, Default)]
struct State {
    /// Updates not yet acknowledged, by update_id.
    pending: Vec<Value>,
    next_id: i64,
    /// The highest offset received.
    confirmed: i64,
    polls: Vec<Poll>,
    sent: Vec<Value>,
    poll_faults: VecDeque<Fault>,
    send_faults: VecDeque<Fault>,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
}

/// The running stand-in.
pub(crate) struct FakeTelegram {
    pub(crate) port: u16,
    inner: Arc<Inner>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeTelegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeTelegram")
            .field("port", &self.port)
            .finish()
    }
}

impl FakeTelegram {
    /// Starts on a free port.
    pub(crate) fn start() -> FakeTelegram {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                next_id: 1000,
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stand-in");
        let port = listener.local_addr().unwrap().port();
        let mut t = FakeTelegram {
            port,
            inner,
            stop: Arc::new(AtomicBool::new(false)),
            accept: None,
        };
        t.serve(listener);
        t
    }

    /// `http://127.0.0.1:<port>`, for `apiBase`.
    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = stop.clone();
        let inner = self.inner.clone();
        self.accept = Some(std::thread::spawn(move || {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (inner, stop) = (inner.clone(), stop.clone());
                        conns.push(std::thread::spawn(move || handle(s, &inner, &stop)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            drop(listener);
            inner.changed.notify_all();
            for c in conns {
                let _ = c.join();
            }
        }));
    }

    /// Stops listening (open connections are dropped unanswered), then listens again on the
    /// same port with the same updates, as a restarted server.
    pub(crate) fn restart(&mut self, down_for: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        self.inner.changed.notify_all();
        if let Some(a) = self.accept.take() {
            a.join().unwrap();
        }
        std::thread::sleep(down_for);
        let l = TcpListener::bind(("127.0.0.1", self.port)).expect("rebind stand-in");
        self.serve(l);
    }

    /// Queues a private text message from user `from` in chat `chat`; returns its update_id.
    pub(crate) fn push_text(&self, chat: i64, from: i64, text: &str) -> i64 {
        let mut s = self.inner.state.lock().unwrap();
        let id = s.next_id;
        s.next_id += 1;
        let kind = if chat < 0 { "supergroup" } else { "private" };
        s.pending.push(json!({"update_id": id, "message": {
            "message_id": id, "date": 1_700_000_000,
            "from": {"id": from, "is_bot": false, "first_name": "U", "username": format!("user{from}")},
            "chat": {"id": chat, "type": kind}, "text": text}}));
        self.inner.changed.notify_all();
        id
    }

    /// Injects a fault into the next `getUpdates`.
    pub(crate) fn fault_poll(&self, f: Fault) {
        self.inner.state.lock().unwrap().poll_faults.push_back(f);
    }

    /// Injects a fault into the next `sendMessage`.
    pub(crate) fn fault_send(&self, f: Fault) {
        self.inner.state.lock().unwrap().send_faults.push_back(f);
    }

    /// The `getUpdates` calls so far.
    pub(crate) fn polls(&self) -> Vec<Poll> {
        self.inner.state.lock().unwrap().polls.clone()
    }

    /// The `sendMessage` bodies accepted so far.
    pub(crate) fn sent(&self) -> Vec<Value> {
        self.inner.state.lock().unwrap().sent.clone()
    }

    /// The highest `offset` received (everything below is acknowledged).
    pub(crate) fn confirmed(&self) -> i64 {
        self.inner.state.lock().unwrap().confirmed
    }

    /// Waits until `pred` holds of the state's sent messages and polls.
    pub(crate) fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Value], &[Poll]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        let mut s = self.inner.state.lock().unwrap();
        loop {
            if pred(&s.sent, &s.polls) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "stand-in: {what} not seen within {timeout:?}; sent={:?} polls={:?}",
                s.sent,
                s.polls
                    .iter()
                    .map(|p| (p.offset, p.answer.clone()))
                    .collect::<Vec<_>>()
            );
            s = self.inner.changed.wait_timeout(s, left).unwrap().0;
        }
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.inner.changed.notify_all();
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

/// Serves one connection: one request (the gateway closes after each).
fn handle(s: TcpStream, inner: &Inner, stop: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let Some(rest) = path.strip_prefix(&format!("/bot{BOT_TOKEN}/")) else {
        return answer(
            s,
            401,
            &json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
        );
    };
    match rest {
        "getUpdates" => get_updates(s, inner, stop, query),
        "sendMessage" => send_message(s, inner, &body),
        _ => answer(
            s,
            404,
            &json!({"ok": false, "error_code": 404, "description": "Not Found"}),
        ),
    }
}

fn query_arg(q: &str, k: &str) -> Option<i64> {
    q.split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
        .and_then(|v| v.parse().ok())
}

fn get_updates(s: TcpStream, inner: &Inner, stop: &AtomicBool, query: &str) {
    let offset = query_arg(query, "offset");
    let timeout = Duration::from_secs(query_arg(query, "timeout").unwrap_or(0).max(0) as u64);
    let mut st = inner.state.lock().unwrap();
    if let Some(o) = offset {
        // As Telegram: an offset acknowledges every update below it.
        st.confirmed = st.confirmed.max(o);
        st.pending.retain(|u| u["update_id"].as_i64().unwrap() >= o);
    }
    let fault = st.poll_faults.pop_front();
    let record = |st: &mut State, answer: &str| {
        st.polls.push(Poll {
            offset,
            at: Instant::now(),
            answer: answer.into(),
        });
        inner.changed.notify_all();
    };
    match fault {
        Some(Fault::TooMany(secs)) => {
            record(&mut st, "429");
            drop(st);
            return answer(
                s,
                429,
                &json!({"ok": false, "error_code": 429,
                "description": format!("Too Many Requests: retry after {secs}"),
                "parameters": {"retry_after": secs}}),
            );
        }
        Some(Fault::Status(code)) => {
            record(&mut st, &code.to_string());
            drop(st);
            return answer(
                s,
                code,
                &json!({"ok": false, "error_code": code, "description": "stand-in fault"}),
            );
        }
        Some(Fault::Drop) => {
            // Mid long poll: wait for an update to be there, then hang up without an answer.
            let deadline = Instant::now() + Duration::from_secs(10);
            while st.pending.is_empty() && Instant::now() < deadline && !stop.load(Ordering::SeqCst)
            {
                st = inner
                    .changed
                    .wait_timeout(st, Duration::from_millis(50))
                    .unwrap()
                    .0;
            }
            record(&mut st, "dropped");
            drop(st);
            let _ = s.shutdown(std::net::Shutdown::Both);
            return;
        }
        Some(Fault::Duplicate) | None => {}
    }
    // The long poll: held until an update is there, the timeout, or a restart.
    let deadline = Instant::now() + timeout;
    while st.pending.is_empty() && !stop.load(Ordering::SeqCst) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        st = inner
            .changed
            .wait_timeout(st, left.min(Duration::from_millis(50)))
            .unwrap()
            .0;
    }
    if stop.load(Ordering::SeqCst) {
        record(&mut st, "dropped by restart");
        return;
    }
    let mut result: Vec<Value> = st.pending.clone();
    if fault == Some(Fault::Duplicate) {
        result.extend(st.pending.clone());
        record(&mut st, "ok duplicated");
    } else {
        record(&mut st, "ok");
    }
    drop(st);
    answer(s, 200, &json!({"ok": true, "result": result}));
}

fn send_message(s: TcpStream, inner: &Inner, body: &[u8]) {
    let mut st = inner.state.lock().unwrap();
    match st.send_faults.pop_front() {
        Some(Fault::TooMany(secs)) => {
            drop(st);
            return answer(
                s,
                429,
                &json!({"ok": false, "error_code": 429,
                "description": format!("Too Many Requests: retry after {secs}"),
                "parameters": {"retry_after": secs}}),
            );
        }
        Some(Fault::Status(code)) => {
            drop(st);
            return answer(
                s,
                code,
                &json!({"ok": false, "error_code": code, "description": "stand-in fault"}),
            );
        }
        Some(Fault::Drop) => {
            drop(st);
            let _ = s.shutdown(std::net::Shutdown::Both);
            return;
        }
        Some(Fault::Duplicate) | None => {}
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        drop(st);
        return answer(
            s,
            400,
            &json!({"ok": false, "error_code": 400, "description": "Bad Request: not JSON"}),
        );
    };
    let id = st.sent.len() as i64 + 1;
    st.sent.push(v.clone());
    inner.changed.notify_all();
    drop(st);
    answer(
        s,
        200,
        &json!({"ok": true, "result": {"message_id": id, "date": 1_700_000_000,
        "chat": {"id": v["chat_id"], "type": "private"}, "text": v["text"]}}),
    );
}

fn answer(mut s: TcpStream, status: u16, body: &Value) {
    let b = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        b.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(b.as_bytes());
    let _ = s.flush();
}
