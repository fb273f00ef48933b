//! The load itself: one task per connection on a current-thread runtime, closed loop (keep
//! `inflight` requests outstanding per connection) or open loop (a fixed schedule of intended
//! send times; latency is measured from the intended time, so a stalled server is charged for
//! every request it delayed — the coordinated-omission correction).
//!
//! Measurement window: connections are opened first, then `warmup` passes, then the window
//! `[start, end)` is measured. Throughput counts completions inside the window; latency counts
//! every request *sent* (or intended) inside the window, including the ones that finish during
//! the drain after `end`. Requests still unanswered when the drain ends are recorded at the
//! drain deadline (a lower bound) and reported as `incomplete`.
//!
//! Cost on the client side is kept low so the client is not what is measured: frames are built
//! with `write!` into a reused buffer, inbound frames are parsed into a borrowed struct that
//! skips payloads, requests queued in one turn leave in one flush, and every frame already
//! buffered is handled before the next send.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::client::Ws;

/// What each request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Workload {
    /// `health {}`: one `res`.
    Health,
    /// `agent {message, idempotencyKey, sessionKey}`: `res accepted`, `agent` events, final `res`.
    Agent,
    /// `chat.send {sessionKey, message, idempotencyKey}`: `res started`, `chat` deltas, `final`.
    Chat,
    /// Fan-out: every connection subscribes (`sessions.subscribe`) and creates its session,
    /// then each request is `sessions.reset` of it, which sends `sessions.changed` to every
    /// subscribed connection (N events per request with N connections, all shards).
    Fanout,
    /// `node.invoke {nodeId, command}`: connection i invokes built-in node client i (a node
    /// connection of its own, answering every `node.invoke.request` with
    /// `node.invoke.result`); one `res` when the node answered.
    Invoke,
}

/// Where a connection's session lives relative to the connection (see `--placement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Placement {
    /// `perf-<n>`: wherever it hashes.
    Any,
    /// Owned by the shard that holds the connection: no mesh hop.
    Same,
    /// Owned by another shard: every request and event crosses the mesh.
    Cross,
}

/// The session key connection `idx` uses. `same`/`cross` search `agent:main:perf-<idx>-<j>`
/// for the first key whose owner (`shards::route::owner`, as the gateway computes it) is, or
/// is not, the connection's shard; they fall back to `any` when the server did not say.
pub(crate) fn session_key(
    idx: usize,
    shard: Option<usize>,
    placement: Placement,
    shards: usize,
) -> String {
    let (Some(mine), true) = (shard, placement != Placement::Any && shards > 1) else {
        return format!("perf-{idx}");
    };
    (0..)
        .map(|j| format!("agent:main:perf-{idx}-{j}"))
        .find(|k| (shards::route::owner(k, shards).0 == mine) == (placement == Placement::Same))
        .expect("an unbounded search over keys finds one")
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Keep `inflight` requests outstanding per connection.
    Closed,
    /// Send at a fixed total rate whatever the answers do.
    Open,
}

/// Everything a connection task needs to know; shared read-only.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) workload: Workload,
    pub(crate) mode: Mode,
    pub(crate) inflight: usize,
    /// Open loop: time between two sends on one connection.
    pub(crate) interval: Duration,
    pub(crate) connections: usize,
    /// Open loop: the schedule starts here (before `start`, so the window sees a steady state).
    pub(crate) open_from: Instant,
    /// Measurement window.
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    /// Give up on outstanding requests at this instant.
    pub(crate) drain_until: Instant,
    /// The `message` text (words separated by spaces).
    pub(crate) message: String,
    /// Unique per process run, so idempotency keys never repeat across runs.
    pub(crate) tag: String,
}

/// Counters of the whole run (all connections), only touched between awaits.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Latency of requests sent in the window, nanoseconds.
    pub(crate) hist: Histogram<u64>,
    /// Open loop: how late requests left compared with their intended time, nanoseconds
    /// (client-side lag; it is included in `hist`, this separates it out).
    pub(crate) send_lag: Histogram<u64>,
    /// Successful completions inside the window.
    pub(crate) completed: u64,
    /// Requests sent (open loop: intended) inside the window.
    pub(crate) sent: u64,
    /// Events received inside the window (all names, `connect.challenge` excluded).
    pub(crate) events: u64,
    /// Frames received inside the window (res + events).
    pub(crate) frames: u64,
    /// `res ok:false` (or a chat `error`/`aborted`) for our requests, whole run.
    pub(crate) errors: u64,
    /// The first error frame seen, verbatim (truncated).
    pub(crate) first_error: Option<String>,
    /// Requests unanswered at the drain deadline.
    pub(crate) incomplete: u64,
    /// Outer `seq` not contiguous on a connection.
    pub(crate) seq_gaps: u64,
    /// Frames we could not parse.
    pub(crate) bad_frames: u64,
    /// Connections the server closed (or that failed) before the end.
    pub(crate) closed_early: u64,
    /// First such close reason.
    pub(crate) first_close: Option<String>,
}

impl Stats {
    /// Writes the failure counters into report `v` (a load report and a fleet child's raw
    /// counts name them alike).
    pub(crate) fn put_counters(&self, v: &mut serde_json::Value) {
        v["errors"] = self.errors.into();
        v["first_error"] = self.first_error.clone().into();
        v["incomplete"] = self.incomplete.into();
        v["seq_gaps"] = self.seq_gaps.into();
        v["bad_frames"] = self.bad_frames.into();
        v["closed_early"] = self.closed_early.into();
        v["first_close"] = self.first_close.clone().into();
    }

    pub(crate) fn new() -> Self {
        Stats {
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds"),
            send_lag: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds"),
            completed: 0,
            sent: 0,
            events: 0,
            frames: 0,
            errors: 0,
            first_error: None,
            incomplete: 0,
            seq_gaps: 0,
            bad_frames: 0,
            closed_early: 0,
            first_close: None,
        }
    }

    fn record(&mut self, d: Duration) {
        let ns = (d.as_nanos() as u64).clamp(1, self.hist.high());
        // Cannot fail: the value is clamped into the histogram's range.
        let _ = self.hist.record(ns);
    }
}

#[derive(Deserialize)]
struct In<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    payload: Option<Payload<'a>>,
}

impl In<'_> {
    /// The same fields as the lean scan reads.
    fn as_frame(&self) -> crate::scan::Frame<'_> {
        let p = self.payload.as_ref();
        crate::scan::Frame {
            kind: &self.kind,
            id: self.id.as_deref(),
            event: self.event.as_deref(),
            ok: self.ok,
            seq: self.seq,
            status: p.and_then(|p| p.status.as_deref()),
            state: p.and_then(|p| p.state.as_deref()),
            run_id: p.and_then(|p| p.run_id.as_deref()),
        }
    }
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    state: Option<Cow<'a, str>>,
    #[serde(rename = "runId", borrow, default)]
    run_id: Option<Cow<'a, str>>,
}

/// One connection's state.
struct Conn {
    idx: usize,
    /// This connection's session key.
    key: String,
    plan: Rc<Plan>,
    stats: Rc<RefCell<Stats>>,
    /// Request id → (intended or actual) send time.
    pending: HashMap<u64, Instant>,
    next_id: u64,
    last_seq: Option<u64>,
    buf: String,
}

impl Conn {
    fn in_window(&self, t: Instant) -> bool {
        t >= self.plan.start && t < self.plan.end
    }

    /// Writes request `id` into `self.buf`.
    fn build(&mut self, id: u64) {
        let p = &self.plan;
        self.buf.clear();
        // Ids, tags and the message are plain ASCII without quotes: no escaping needed.
        let _ = match p.workload {
            Workload::Health => write!(
                self.buf,
                r#"{{"type":"req","id":"{id}","method":"health","params":{{}}}}"#
            ),
            Workload::Agent => write!(
                self.buf,
                r#"{{"type":"req","id":"{id}","method":"agent","params":{{"message":"{}","idempotencyKey":"{}-{}-{id}","sessionKey":"{}"}}}}"#,
                p.message, p.tag, self.idx, self.key
            ),
            Workload::Chat => write!(
                self.buf,
                r#"{{"type":"req","id":"{id}","method":"chat.send","params":{{"sessionKey":"{}","message":"{}","idempotencyKey":"{}-{}-{id}"}}}}"#,
                self.key, p.message, p.tag, self.idx
            ),
            // Requests of one connection are answered in order on its session's shard, so the
            // subscription and the session exist before the first reset.
            Workload::Invoke => write!(
                self.buf,
                r#"{{"type":"req","id":"{id}","method":"node.invoke","params":{{"nodeId":"{}","command":"{}","params":{{"n":{id}}},"idempotencyKey":"{}-{}-{id}"}}}}"#,
                self.key,
                crate::client::NODE_COMMAND,
                p.tag,
                self.idx
            ),
            Workload::Fanout => {
                let method = match id {
                    1 => "sessions.subscribe",
                    2 => "sessions.create",
                    _ => "sessions.reset",
                };
                write!(
                    self.buf,
                    r#"{{"type":"req","id":"{id}","method":"{method}","params":{{"key":"{}"}}}}"#,
                    self.key
                )
            }
        };
    }

    async fn send(&mut self, ws: &mut Ws, at: Instant) -> Result<(), WsError> {
        let id = self.next_id;
        self.next_id += 1;
        self.build(id);
        ws.feed(Message::text(self.buf.as_str())).await?;
        self.pending.insert(id, at);
        if self.in_window(at) {
            let mut s = self.stats.borrow_mut();
            s.sent += 1;
            if self.plan.mode == Mode::Open {
                let lag = (Instant::now().saturating_duration_since(at).as_nanos() as u64)
                    .clamp(1, s.send_lag.high());
                let _ = s.send_lag.record(lag);
            }
        }
        Ok(())
    }

    fn complete(&mut self, id: u64, now: Instant, ok: bool, frame: &str) {
        let Some(t0) = self.pending.remove(&id) else {
            return;
        };
        let mut s = self.stats.borrow_mut();
        if !ok {
            s.errors += 1;
            if s.first_error.is_none() {
                s.first_error = Some(frame.chars().take(300).collect());
            }
            return;
        }
        if self.in_window(t0) {
            s.record(now - t0);
        }
        if self.in_window(now) {
            s.completed += 1;
        }
    }

    fn on_text(&mut self, text: &str, now: Instant) {
        // The lean scan reads nearly every frame; serde reads what it refuses (escapes).
        let parsed: In<'_>;
        let f = match crate::scan::frame(text) {
            Some(f) => f,
            None => match serde_json::from_str(text) {
                Ok(v) => {
                    parsed = v;
                    parsed.as_frame()
                }
                Err(_) => {
                    self.stats.borrow_mut().bad_frames += 1;
                    return;
                }
            },
        };
        let in_window = self.in_window(now);
        match f.kind {
            "res" => {
                if in_window {
                    self.stats.borrow_mut().frames += 1;
                }
                let Some(id) = f.id.and_then(|i| i.parse::<u64>().ok()) else {
                    return;
                };
                if f.ok != Some(true) {
                    self.complete(id, now, false, text);
                    return;
                }
                // The first answer of a two-step call; the run finishes later.
                if matches!(f.status, Some("accepted" | "started" | "in_flight")) {
                    return;
                }
                self.complete(id, now, true, text);
            }
            "event" => {
                if f.event == Some("connect.challenge") {
                    return;
                }
                {
                    let mut s = self.stats.borrow_mut();
                    if in_window {
                        s.frames += 1;
                        s.events += 1;
                    }
                    if let Some(seq) = f.seq {
                        if self.last_seq.is_some_and(|l| seq != l + 1) {
                            s.seq_gaps += 1;
                        }
                        self.last_seq = Some(seq);
                    }
                }
                if f.event == Some("chat") {
                    let ok = match f.state {
                        Some("final") => true,
                        Some("error" | "aborted") => false,
                        _ => return,
                    };
                    // runId = idempotencyKey = "<tag>-<conn>-<id>".
                    if let Some(id) = f
                        .run_id
                        .and_then(|r| r.rsplit('-').next())
                        .and_then(|n| n.parse::<u64>().ok())
                    {
                        self.complete(id, now, ok, text);
                    }
                }
            }
            _ => {}
        }
    }

    /// Handles one item of the stream; `false` when the connection is gone.
    fn on_item(&mut self, item: Option<Result<Message, WsError>>) -> bool {
        let why = match item {
            Some(Ok(Message::Text(t))) => {
                self.on_text(t.as_str(), Instant::now());
                return true;
            }
            Some(Ok(Message::Close(c))) => format!("close {c:?}"),
            Some(Ok(_)) => return true,
            Some(Err(e)) => format!("error {e}"),
            None => "eof".to_string(),
        };
        let mut s = self.stats.borrow_mut();
        s.closed_early += 1;
        if s.first_close.is_none() {
            s.first_close = Some(why);
        }
        false
    }
}

impl Plan {
    /// Open loop: when connection `idx` sends its first request. The connections' schedules
    /// are spread evenly over one interval; each then sends every `interval`.
    fn first_send(&self, idx: usize) -> Instant {
        self.open_from
            + self
                .interval
                .mul_f64(idx as f64 / self.connections.max(1) as f64)
    }
}

/// Open loop: rings each connection's bell at its intended send times, from one task.
/// tokio's timer wheel fires up to 1 ms late, so each connection used to wake 1.2 ms early and
/// spin (yielding) until its instant: with 100 connections at 30 000/s a third of them spun at
/// any time, the load generator sat at 1.00 core and its own send lag p99 reached 0.5–1.3 ms,
/// as much as the latency it measures. Now only this task sleeps on the timer and spins
/// through the last stretch, and wakes just the connection due. A send it rings late is still
/// charged from its intended time (coordinated omission): pacing can make a report worse,
/// never better.
pub(crate) fn start_pacer(plan: &Plan) -> Vec<Rc<Notify>> {
    let n = plan.connections.max(1);
    let bells: Vec<Rc<Notify>> = (0..n).map(|_| Rc::new(Notify::new())).collect();
    // Each connection's next send, counted exactly as `drive` counts it (first send, then
    // `interval` more each time).
    let mut due: Vec<Instant> = (0..n).map(|i| plan.first_send(i)).collect();
    let (interval, end, ring) = (plan.interval, plan.end, bells.clone());
    tokio::task::spawn_local(async move {
        // The schedule cycles through the connections in index order.
        let mut i = 0;
        while due[i] < end {
            let at = due[i];
            let now = Instant::now();
            if at > now + TIMER_SLACK {
                tokio::time::sleep_until((at - TIMER_SLACK).into()).await;
            } else if at > now {
                tokio::task::yield_now().await;
            } else {
                ring[i].notify_one();
                due[i] += interval;
                i = (i + 1) % n;
            }
        }
    });
    bells
}

/// How early the pacer wakes before a send: tokio's timer wheel fires up to 1 ms late.
const TIMER_SLACK: Duration = Duration::from_micros(1200);

/// Drives connection `idx` until the window and the drain are over.
pub(crate) async fn drive(
    mut ws: Ws,
    idx: usize,
    key: String,
    plan: Rc<Plan>,
    stats: Rc<RefCell<Stats>>,
    bell: Rc<Notify>,
) {
    let mut c = Conn {
        idx,
        key,
        plan: plan.clone(),
        stats,
        pending: HashMap::with_capacity(plan.inflight.max(16)),
        next_id: 1,
        last_seq: None,
        buf: String::with_capacity(256),
    };
    let open = plan.mode == Mode::Open;
    let mut next_intended = if open { plan.first_send(idx) } else { plan.end };
    let end_sleep = tokio::time::sleep_until(plan.end.into());
    tokio::pin!(end_sleep);
    let mut stopped = false;
    'outer: loop {
        if !stopped {
            let mut fed = false;
            let res: Result<(), WsError> = async {
                match plan.mode {
                    Mode::Closed => {
                        while c.pending.len() < plan.inflight {
                            c.send(&mut ws, Instant::now()).await?;
                            fed = true;
                        }
                    }
                    Mode::Open => {
                        let now = Instant::now();
                        while next_intended <= now && next_intended < plan.end {
                            c.send(&mut ws, next_intended).await?;
                            next_intended += plan.interval;
                            fed = true;
                        }
                    }
                }
                if fed {
                    ws.flush().await?;
                }
                Ok(())
            }
            .await;
            if let Err(e) = res {
                c.on_item(Some(Err(e)));
                break 'outer;
            }
        } else if c.pending.is_empty() {
            break;
        }
        let sending = open && !stopped && next_intended < plan.end;
        let item = tokio::select! {
            biased;
            m = ws.next() => m,
            _ = bell.notified(), if sending => continue,
            _ = &mut end_sleep => {
                if stopped {
                    break 'outer;
                }
                stopped = true;
                end_sleep.as_mut().reset(plan.drain_until.into());
                continue;
            }
        };
        if !c.on_item(item) {
            break;
        }
        // Everything already buffered is handled before the next send (one flush per batch).
        while let Some(item) = ws.next().now_or_never() {
            if !c.on_item(item) {
                break 'outer;
            }
        }
    }
    // Unanswered requests: charge them up to the drain deadline, count them.
    {
        let mut s = c.stats.borrow_mut();
        let until = plan.drain_until.min(Instant::now().max(plan.end));
        for t0 in c.pending.values() {
            if *t0 >= plan.start && *t0 < plan.end {
                s.incomplete += 1;
                s.record(until.saturating_duration_since(*t0));
            }
        }
    }
    let _ = ws.close(None).await;
}

/// A built-in node client: answers every `node.invoke.request` with `node.invoke.result`
/// (`ok`, the request's params echoed), all answers to one read in one flush, until the
/// gateway closes the connection or `stop` passes.
pub(crate) async fn node_client(mut ws: Ws, node_id: String, stop: Instant) {
    #[derive(Deserialize)]
    struct Ev<'a> {
        #[serde(borrow, default)]
        event: Option<Cow<'a, str>>,
        #[serde(default)]
        payload: Option<Req<'a>>,
    }
    #[derive(Deserialize)]
    struct Req<'a> {
        #[serde(borrow)]
        id: Cow<'a, str>,
        #[serde(rename = "paramsJSON", borrow, default)]
        params_json: Option<Cow<'a, str>>,
    }
    let mut n = 0u64;
    let mut buf = String::with_capacity(256);
    let deadline = tokio::time::sleep_until(stop.into());
    tokio::pin!(deadline);
    loop {
        let item = tokio::select! {
            m = ws.next() => m,
            _ = &mut deadline => break,
        };
        let mut items = vec![item];
        while let Some(more) = ws.next().now_or_never() {
            items.push(more);
        }
        let mut fed = false;
        for item in items {
            let text = match item {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                _ => return,
            };
            let Ok(ev) = serde_json::from_str::<Ev<'_>>(text.as_str()) else {
                continue;
            };
            let (Some("node.invoke.request"), Some(req)) = (ev.event.as_deref(), ev.payload) else {
                continue;
            };
            n += 1;
            buf.clear();
            let params = req.params_json.as_deref().unwrap_or("null");
            // The id is a UUID and the node id hex: no escaping needed; params are JSON.
            let _ = write!(
                buf,
                r#"{{"type":"req","id":"r{n}","method":"node.invoke.result","params":{{"id":"{}","nodeId":"{node_id}","ok":true,"payload":{params}}}}}"#,
                req.id
            );
            if ws.feed(Message::text(buf.as_str())).await.is_err() {
                return;
            }
            fed = true;
        }
        if fed && ws.flush().await.is_err() {
            return;
        }
    }
    let _ = ws.close(None).await;
}
