// Hot path: every outbound frame is queued here and written by the connection's task.
//! One connection's outbound side: a bounded send buffer with per-connection `seq`, drained
//! into the socket by the connection's task, many frames per write ("corking").
//!
//! Invariants: `seq` is assigned when an event is accepted into the buffer, so a skipped
//! droppable event never burns a number and the client sees 1, 2, 3, … without gaps. Only
//! droppable events are ever skipped; anything else over the bound closes 1008 "slow consumer".
//! Frames leave in the order they were queued; a [`Fence`] only delays, never reorders.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::auth::pairing::may_pair;
use crate::protocol::connect::ConnAuth;
use crate::protocol::error::GatewayError;
use crate::protocol::frame;

/// A queued outbound frame.
#[derive(Debug)]
pub enum Outbound {
    /// A text message (every gateway frame).
    Text(String),
    /// A binary message (the `/echo` route only).
    Binary(Vec<u8>),
    /// The answer to a ping.
    Pong(Vec<u8>),
    /// A broadcast event: the frame up to its payload, shared by every connection it reaches
    /// (no copy per connection), and this connection's `seq` and state versions.
    Shared {
        /// [`frame::open_event_raw`].
        open: std::rc::Rc<str>,
        /// This connection's `seq`.
        seq: u64,
        /// `stateVersion` (presence, health), if the event carries it.
        state_version: Option<(u64, u64)>,
    },
}

impl Outbound {
    /// Payload bytes, as counted against the send buffer bound.
    pub fn len(&self) -> usize {
        match self {
            Outbound::Text(t) => t.len(),
            Outbound::Binary(b) | Outbound::Pong(b) => b.len(),
            // Counted with the most its tail can take, the same when queued and when written.
            Outbound::Shared { open, .. } => open.len() + frame::EVENT_TAIL_MAX,
        }
    }

    /// A shared event as one text (for the seed dialect's translation, which rewrites it).
    pub fn shared_text(open: &str, seq: u64, state_version: Option<(u64, u64)>) -> String {
        let mut s = String::with_capacity(open.len() + frame::EVENT_TAIL_MAX);
        s.push_str(open);
        frame::close_event(&mut s, Some(seq), state_version);
        s
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the writer takes in one go.
#[derive(Debug, Default)]
pub struct Batch {
    /// Complete frames, in order.
    pub frames: VecDeque<Outbound>,
    /// Close after writing them.
    pub close: Option<(u16, String)>,
}

impl Batch {
    /// Gives the written frames' buffers, and the queue that held them, back to this thread's
    /// pools ([`frame::recycle`], [`take_queue`]): the next frames and batches reuse them.
    pub fn recycle(self) {
        let mut frames = self.frames;
        frame::recycle(frames.drain(..).filter_map(|f| match f {
            Outbound::Text(t) => Some(t),
            _ => None,
        }));
        if frames.capacity() <= QUEUE_KEEP {
            FREE_QUEUES.with_borrow_mut(|free| {
                if free.len() < QUEUES_KEPT {
                    free.push(frames);
                }
            });
        }
    }
}

/// The most frames a pooled queue has room for (a request's answer and events fit).
const QUEUE_KEEP: usize = 64;
/// Emptied queues kept per thread (each with room for at most [`QUEUE_KEEP`] frames).
const QUEUES_KEPT: usize = 256;

thread_local! {
    /// Emptied batch queues of this thread, reused by the next connection that queues a frame.
    static FREE_QUEUES: RefCell<Vec<VecDeque<Outbound>>> = const { RefCell::new(Vec::new()) };
}

/// An empty queue with room for a request's few frames: a pooled one if there is one.
fn take_queue() -> VecDeque<Outbound> {
    FREE_QUEUES
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| VecDeque::with_capacity(8))
}

/// A pause in a connection's output after one response ([`Conn::hold_after_response`]): the
/// response leaves in a write of its own, and whatever was queued after it waits `hold`.
///
/// Why: a client that learns of a run from the response to the request that started it
/// (OpenClaw's TUI and its `chat.send`) must have handled that response before the run's
/// first event. The echo agent answers within the same turn, so without a pause the response
/// and the whole run reach the client in one read, which it handles before the response (a
/// Node client resolves the request's promise only after the read is processed): the TUI then
/// stays "waiting" for a run that already ended. A write of its own is not enough: the client
/// is busy for a few ms after sending (it renders), and frames written meanwhile land in the
/// same read. A model's latency hides this with a real agent; an instant one must wait.
#[derive(Debug)]
struct Fence {
    /// `"id":"<request id>"` as the response spells it, until the response is written.
    id_json: Option<String>,
    /// How long the frames queued after the response wait.
    hold: Duration,
    /// Started when the response is written: later frames wait until it fires.
    timer: Option<glommio::timer::Timer>,
}

/// What a [`Fence`] lets [`Conn::poll_batch`] take.
enum Gate {
    /// Nothing yet: the pause runs.
    Hold,
    /// The frames up to and including this index (the response); the rest waits.
    Upto(usize),
    /// Everything queued (the response is not queued yet; the fence stays).
    All,
    /// Everything, and the fence is done.
    Done,
}

impl Fence {
    fn gate(&mut self, cx: &mut std::task::Context<'_>, q: &VecDeque<Outbound>) -> Gate {
        if let Some(t) = &mut self.timer {
            if Pin::new(t).poll(cx).is_pending() {
                return Gate::Hold;
            }
            self.timer = None;
        }
        let Some(id) = &self.id_json else {
            return Gate::Done;
        };
        // A response is any frame but an event that names the request's id (`res_err`'s keys
        // are sorted, so the id is not at a fixed place).
        let is_response = |f: &Outbound| matches!(f, Outbound::Text(t) if !t.starts_with(EVENT_PREFIX) && t.contains(id.as_str()));
        match q.iter().position(is_response) {
            Some(i) => {
                self.id_json = None;
                self.timer = Some(glommio::timer::Timer::new(self.hold));
                Gate::Upto(i)
            }
            None => Gate::All,
        }
    }
}

/// How every event frame begins ([`frame::open_event`]).
const EVENT_PREFIX: &str = r#"{"type":"event""#;

/// One connection's outbound state, owned by the connection's shard.
pub struct Conn {
    /// Process-unique id (shard in the high bits).
    pub id: u64,
    /// The peer's address.
    pub peer: std::net::SocketAddr,
    /// `hello-ok` connection id.
    pub conn_uuid: uuid::Uuid,
    seq: Cell<u64>,
    queue: RefCell<VecDeque<Outbound>>,
    buffered: Cell<usize>,
    max_buffered: usize,
    waker: Cell<Option<Waker>>,
    seed: Cell<bool>,
    /// permessage-deflate: the agreed compressor window (log2 bytes), 0 when not negotiated.
    /// The compressor itself is the shard's (`transport::deflate`): one byte per connection.
    deflate: Cell<u8>,
    /// Close code and reason once asked to close (boxed: rare, and every connection has one).
    closing: RefCell<Option<Box<(u16, String)>>>,
    /// A pause after a response, when one was asked for (boxed: rare).
    fence: Cell<Option<Box<Fence>>>,
    closed: Cell<bool>,
    /// The peer sent its close frame (ours then ends the close handshake).
    peer_closed: Cell<bool>,
    /// Set after `hello-ok`.
    pub auth: RefCell<Option<std::sync::Arc<ConnAuth>>>,
    /// Receives `sessions.changed`.
    pub sessions_subscribed: Cell<bool>,
    /// Consecutive authorization failures.
    pub unauthorized_streak: Cell<u32>,
    /// Events dropped under backpressure (droppable only).
    pub dropped: Cell<u64>,
    /// When the connection was accepted, ms since the epoch.
    pub opened_at: i64,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("buffered", &self.buffered.get())
            .finish()
    }
}

impl Conn {
    /// Sends the error (as a `res` when there is an id to answer) and closes as the error says.
    pub fn fail(&self, id: Option<&str>, e: &GatewayError) {
        let w = e.wire();
        self.push_frame(frame::res_err(id.unwrap_or("invalid"), &w));
        let (code, reason) = w.close.unwrap_or((1008, "closing"));
        self.close(code, reason);
    }

    /// Whether this connection's caller may act on pairing requests, and so sees their
    /// events ([`may_pair`]).
    pub fn may_pair(&self) -> bool {
        self.auth.borrow().as_deref().is_some_and(may_pair)
    }

    /// A new connection with a send buffer bound of `max_buffered` bytes.
    pub fn new(id: u64, peer: std::net::SocketAddr, max_buffered: usize) -> Conn {
        Conn {
            id,
            peer,
            conn_uuid: uuid::Uuid::new_v4(),
            seq: Cell::new(0),
            queue: RefCell::new(VecDeque::new()),
            buffered: Cell::new(0),
            max_buffered,
            waker: Cell::new(None),
            seed: Cell::new(false),
            deflate: Cell::new(0),
            closing: RefCell::new(None),
            fence: Cell::new(None),
            closed: Cell::new(false),
            peer_closed: Cell::new(false),
            auth: RefCell::new(None),
            sessions_subscribed: Cell::new(false),
            unauthorized_streak: Cell::new(0),
            dropped: Cell::new(0),
            opened_at: crate::clock::now_ms(),
        }
    }

    /// Compress this connection's outgoing messages with a window of `bits` (9..=15), as
    /// negotiated on the upgrade.
    pub fn set_deflate(&self, bits: u8) {
        self.deflate.set(bits);
    }

    /// The agreed compressor window, if permessage-deflate was negotiated.
    pub fn deflate_bits(&self) -> Option<u8> {
        Some(self.deflate.get()).filter(|&b| b != 0)
    }

    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// True once a close was requested; nothing more is queued.
    pub fn is_closing(&self) -> bool {
        self.closing.borrow().is_some() || self.closed.get()
    }

    /// Queues a complete frame that must not be dropped (a `res`). Over the bound the
    /// connection is closed 1008 "slow consumer".
    pub fn push_frame(&self, text: String) {
        self.push(Outbound::Text(text));
    }

    /// Queues any frame under the same bound as [`Conn::push_frame`].
    pub fn push(&self, frame: Outbound) {
        if self.is_closing() {
            return;
        }
        if self.buffered.get() + frame.len() > self.max_buffered {
            self.close(1008, "slow consumer");
            return;
        }
        self.append(frame);
    }

    /// The one place a frame joins the queue (its bytes counted, the writer woken). A queue
    /// leaves whole with each batch, so the first frame after one makes room for the few a
    /// request usually adds in the same turn (its answer and events), not just for one.
    fn append(&self, frame: Outbound) {
        self.buffered.set(self.buffered.get() + frame.len());
        let mut q = self.queue.borrow_mut();
        if q.capacity() == 0 {
            *q = take_queue();
        }
        q.push_back(frame);
        drop(q);
        self.wake();
    }

    /// Queues an event, giving it the next `seq`. A droppable event over the bound is skipped
    /// (no seq used); any other event over the bound closes the connection.
    pub fn push_event(
        &self,
        name: &str,
        payload: &str,
        droppable: bool,
        state_version: Option<(u64, u64)>,
    ) {
        if self.is_closing() || !self.admit_event(payload.len() + name.len() + 96, droppable) {
            return;
        }
        let seq = self.next_seq();
        let text = frame::event(name, payload, Some(seq), state_version);
        self.queue_frame(text);
    }

    /// Queues a broadcast event built once for all connections ([`frame::open_event_raw`]),
    /// giving it this connection's next `seq`, under the same bound as [`Conn::push_event`].
    pub fn push_shared_event(
        &self,
        open: &std::rc::Rc<str>,
        droppable: bool,
        state_version: Option<(u64, u64)>,
    ) {
        if self.is_closing() || !self.admit_event(open.len() + frame::EVENT_TAIL_MAX, droppable) {
            return;
        }
        let seq = self.next_seq();
        self.append(Outbound::Shared {
            open: open.clone(),
            seq,
            state_version,
        });
    }

    /// Queues an event begun with [`frame::open_event`]: gives it the next `seq` and closes
    /// it, under the same bound as [`Conn::push_event`].
    pub fn push_open_event(&self, mut open: String, droppable: bool) {
        // seq and the closing brace add < 32 bytes
        if self.is_closing() || !self.admit_event(open.len() + 32, droppable) {
            return;
        }
        let seq = self.next_seq();
        frame::close_event(&mut open, Some(seq), None);
        self.queue_frame(open);
    }

    /// True when an event of about `estimate` bytes fits the bound; otherwise a droppable one
    /// is counted as dropped and anything else closes the connection.
    fn admit_event(&self, estimate: usize, droppable: bool) -> bool {
        if self.buffered.get() + estimate <= self.max_buffered {
            return true;
        }
        if droppable {
            self.dropped.set(self.dropped.get() + 1);
        } else {
            self.close(1008, "slow consumer");
        }
        false
    }

    fn next_seq(&self) -> u64 {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        seq
    }

    fn queue_frame(&self, text: String) {
        self.append(Outbound::Text(text));
    }

    /// Writes the response to request `req_id` in a write of its own and holds every frame
    /// queued after it back for `hold` ([`Fence`]). Frames queued before the response go with
    /// it. One pause at a time: asked again before the last one's response was written, the
    /// new request gets none. A close ends a pause at once.
    pub fn hold_after_response(&self, req_id: &str, hold: Duration) {
        let mut fence = self.fence.take().unwrap_or_else(|| {
            Box::new(Fence {
                id_json: None,
                hold,
                timer: None,
            })
        });
        if fence.id_json.is_none() {
            let mut id = String::with_capacity(req_id.len() + 8);
            id.push_str(r#""id":"#);
            frame::push_json_str(&mut id, req_id);
            fence.id_json = Some(id);
            fence.hold = hold;
        }
        self.fence.set(Some(fence));
    }

    /// Asks the writer to send what is queued, then close with `code`/`reason`.
    pub fn close(&self, code: u16, reason: &str) {
        let mut c = self.closing.borrow_mut();
        if c.is_none() && !self.closed.get() {
            *c = Some(Box::new((code, reason.to_string())));
        }
        drop(c);
        self.wake();
    }

    /// Nothing more will be written (close sent or socket gone); drop everything queued.
    pub fn mark_closed(&self) {
        self.closed.set(true);
        self.queue.borrow_mut().clear();
        self.buffered.set(0);
        self.wake();
    }

    /// The peer sent its close frame: the close handshake ends when ours is written.
    pub fn set_peer_closed(&self) {
        self.peer_closed.set(true);
    }

    /// True once the peer sent its close frame.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed.get()
    }

    /// The close code asked for, if any.
    pub fn close_code(&self) -> Option<u16> {
        self.closing.borrow().as_deref().map(|(code, _)| *code)
    }

    /// Marks the connection as speaking the seed article's dialect.
    pub fn set_seed(&self) {
        self.seed.set(true);
    }

    /// True for seed-dialect connections (their frames are translated on the way out).
    pub fn is_seed(&self) -> bool {
        self.seed.get()
    }

    /// True after [`Conn::mark_closed`].
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Bytes waiting to be written.
    pub fn buffered(&self) -> usize {
        self.buffered.get()
    }

    /// Waits for frames or a close request and takes them all.
    pub async fn next_batch(&self) -> Batch {
        poll_fn(|cx| self.poll_batch(cx)).await
    }

    /// [`Conn::next_batch`] as a poll.
    pub fn poll_batch(&self, cx: &mut std::task::Context<'_>) -> Poll<Batch> {
        {
            let mut q = self.queue.borrow_mut();
            // Left in place: the connection stays "closing" until it is marked closed (nothing
            // more is written after a batch that carries the close).
            let close = self.closing.borrow().as_deref().cloned();
            // A pause (rare) holds frames back until its timer fires; closing ends it.
            if let Some(mut fence) = self.fence.take() {
                let gate = if close.is_some() || self.closed.get() {
                    Gate::Done
                } else {
                    fence.gate(cx, &q)
                };
                match gate {
                    Gate::Done => {}
                    Gate::All => self.fence.set(Some(fence)),
                    Gate::Hold => {
                        self.fence.set(Some(fence));
                        self.waker.set(Some(cx.waker().clone()));
                        return Poll::Pending;
                    }
                    Gate::Upto(i) => {
                        self.fence.set(Some(fence));
                        let rest = q.split_off(i + 1);
                        let frames = std::mem::replace(&mut *q, rest);
                        return Poll::Ready(Batch {
                            frames,
                            close: None,
                        });
                    }
                }
            }
            if q.is_empty() && close.is_none() {
                if self.closed.get() {
                    return Poll::Ready(Batch {
                        frames: VecDeque::new(),
                        close: Some((1006, String::new())),
                    });
                }
                self.waker.set(Some(cx.waker().clone()));
                return Poll::Pending;
            }
            // The queue's buffer leaves with the batch: an idle connection keeps none.
            let frames = std::mem::take(&mut *q);
            Poll::Ready(Batch { frames, close })
        }
    }

    /// `bytes` of frames were written.
    pub fn written(&self, bytes: usize) {
        self.buffered.set(self.buffered.get().saturating_sub(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(max: usize) -> Conn {
        Conn::new(1, "127.0.0.1:1".parse().unwrap(), max)
    }

    fn seqs(c: &Conn) -> Vec<u64> {
        c.queue
            .borrow()
            .iter()
            .map(|f| {
                let f = match f {
                    Outbound::Text(f) => f.clone(),
                    Outbound::Shared {
                        open,
                        seq,
                        state_version,
                    } => Outbound::shared_text(open, *seq, *state_version),
                    other => panic!("no event: {other:?}"),
                };
                serde_json::from_str::<serde_json::Value>(&f).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn dropped_droppables_do_not_burn_seq() {
        let c = conn(400);
        c.push_event("chat", &format!("\"{}\"", "x".repeat(100)), true, None);
        c.push_event("presence", &format!("\"{}\"", "y".repeat(300)), true, None); // over the bound: skipped
        c.push_event("tick", "{}", false, None);
        assert_eq!(seqs(&c), vec![1, 2]);
        assert_eq!(c.dropped.get(), 1);
        assert!(!c.is_closing());
    }

    #[test]
    fn shared_events_take_the_next_seq_and_the_same_bound() {
        let c = conn(1000);
        let open: std::rc::Rc<str> = frame::open_event_raw("presence", "{}").into();
        c.push_event("tick", "{}", false, None);
        c.push_shared_event(&open, true, Some((1, 2)));
        let big: std::rc::Rc<str> = frame::open_event_raw("presence", &"x".repeat(900)).into();
        c.push_shared_event(&big, true, None); // over the bound: skipped, no seq used
        c.push_shared_event(&open, true, None);
        assert_eq!(seqs(&c), vec![1, 2, 3]);
        assert_eq!(c.dropped.get(), 1);
        let queued: usize = c.queue.borrow().iter().map(Outbound::len).sum();
        assert_eq!(c.buffered(), queued);
    }

    #[test]
    fn non_droppable_over_bound_closes_slow_consumer() {
        let c = conn(200);
        c.push_event("agent", &"x".repeat(300), false, None);
        assert_eq!(
            c.closing.borrow().as_deref().unwrap(),
            &(1008, "slow consumer".to_string())
        );
    }

    #[test]
    fn a_written_batch_gives_its_frame_buffers_and_queue_back() {
        FREE_QUEUES.with_borrow_mut(Vec::clear);
        let c = conn(10_000);
        let mut text = frame::text_buf(64);
        text.push_str(r#"{"type":"res"}"#);
        let ptr = text.as_ptr();
        c.push_frame(text);
        c.push_event("tick", "{}", false, None);
        let mut cx = std::task::Context::from_waker(Waker::noop());
        let Poll::Ready(batch) = c.poll_batch(&mut cx) else {
            panic!("two frames are queued");
        };
        assert_eq!(batch.frames.len(), 2);
        batch.recycle();
        assert_eq!(FREE_QUEUES.with_borrow(Vec::len), 1);
        // The next frames are built in the freed buffers and queued in the freed queue.
        let reused = [frame::text_buf(16), frame::text_buf(16)];
        assert!(
            reused.iter().any(|s| s.as_ptr() == ptr),
            "the frame's buffer is reused"
        );
        c.push_frame("x".into());
        assert_eq!(FREE_QUEUES.with_borrow(Vec::len), 0);
        assert!(c.queue.borrow().capacity() >= 8);
    }

    #[test]
    fn written_frees_budget() {
        let c = conn(10_000);
        c.push_frame("abc".into());
        assert_eq!(c.buffered(), 3);
        c.written(3);
        assert_eq!(c.buffered(), 0);
    }
}
