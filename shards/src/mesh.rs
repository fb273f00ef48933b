//! The full mesh of SPSC channels between shards, with bounded per-peer ordered outboxes.
//!
//! glommio's `channel_mesh` gives one bounded shared channel per ordered pair of shards. On top
//! of it, [`Mesh::try_send`] is synchronous: when the channel to a peer is full (or an earlier
//! message to that peer is still waiting), the message waits in that peer's outbox and a drain
//! task moves it over as the peer consumes, so messages from one shard to another arrive in the
//! order they were sent.
//!
//! The outbox is bounded: a peer that stops draining cannot make its senders grow without
//! limit. A send the mesh cannot take hands the message back ([`SendError::Full`],
//! [`SendError::Closed`]) so the caller decides what the refusal means (a request is answered
//! `UNAVAILABLE` with a retry hint); the mesh itself never drops a message it accepted, except
//! one still in an outbox when its peer closes at shutdown, which [`MeshStats::lost_on_close`]
//! counts. Two classes share the bound: new work ([`Class::Work`]) is refused at the outbox
//! limit, while answers to work already admitted ([`Class::Answer`]) may use
//! [`ANSWER_HEADROOM`] times as much, so a busy peer sheds new requests long before it has to
//! refuse an answer it owes.
//!
//! The mesh must be joined by every shard before any of them sends (joining blocks until all
//! peers are connected), which [`crate::pool`] does at start.
//!
//! Starting takes two steps, [`Mesh::new`] then [`Mesh::receive`], because glommio runs a
//! spawned task at once, inside `spawn_local`: a receive loop started while a faster peer's
//! messages already wait in the channel handles them before `spawn_local` returns. Whatever
//! those handlers need (above all this very `Mesh`, to answer) must be in place first.

use std::cell::Cell;
use std::rc::Rc;

use futures_lite::StreamExt;
use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::channels::local_channel::{self, LocalSender};

use crate::ShardId;

/// How many times the outbox limit an answer may use (see the module notes).
pub const ANSWER_HEADROOM: usize = 4;

/// What a message is, for the outbox bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// New work (a request, a control call): refused first when a peer falls behind.
    Work,
    /// An answer owed for work already admitted: refused only at [`ANSWER_HEADROOM`] times the
    /// limit.
    Answer,
}

/// A message the mesh did not take, handed back to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError<T> {
    /// The peer's outbox is at its bound: it is not draining fast enough. Try again later.
    Full(T),
    /// The peer has closed its channel (it is stopping): nothing will consume the message.
    Closed(T),
    /// The destination is this shard or out of range: a bug in the caller.
    NotAPeer(T),
}

impl<T> SendError<T> {
    /// The message that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(m) | SendError::Closed(m) | SendError::NotAPeer(m) => m,
        }
    }
}

/// Counters of one shard's sends, for metrics. Monotonic except `backlog`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MeshStats {
    /// Messages accepted (straight into a channel or into an outbox).
    pub sent: u64,
    /// Messages waiting in outboxes now.
    pub backlog: usize,
    /// Sends refused because the peer's outbox was full.
    pub refused_full: u64,
    /// Sends refused because the peer had closed.
    pub refused_closed: u64,
    /// Messages accepted into an outbox whose peer closed before taking them.
    pub lost_on_close: u64,
}

/// One shard's handle on the mesh: send to any peer, in order, without waiting.
pub struct Mesh<T: Send + 'static> {
    me: ShardId,
    shards: usize,
    senders: Rc<Senders<T>>,
    outboxes: Vec<Option<Outbox<T>>>,
    limit: usize,
    sent: Cell<u64>,
    refused_full: Cell<u64>,
    refused_closed: Cell<u64>,
    lost_on_close: Rc<Cell<u64>>,
}

struct Outbox<T> {
    /// Messages accepted by [`Mesh::try_send`] that are not yet in the SPSC channel.
    pending: Rc<Cell<usize>>,
    /// Set by the drain task once the peer refused a message as closed.
    closed: Rc<Cell<bool>>,
    tx: LocalSender<T>,
}

impl<T: Send + 'static> std::fmt::Debug for Mesh<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("me", &self.me)
            .field("shards", &self.shards)
            .field("limit", &self.limit)
            .finish()
    }
}

impl<T: Send + 'static> Mesh<T> {
    /// Wraps the joined sending half and spawns, on the current executor, one outbox drain per
    /// peer. At most `outbox_limit` messages of new work wait for one peer (at least 1).
    /// Nothing is received until [`Mesh::receive`].
    pub fn new(senders: Senders<T>, outbox_limit: usize) -> Rc<Self> {
        let me = ShardId(senders.peer_id());
        let shards = senders.nr_consumers();
        let senders = Rc::new(senders);
        let lost_on_close = Rc::new(Cell::new(0u64));
        let mut outboxes = Vec::with_capacity(shards);
        for peer in 0..shards {
            if peer == me.0 {
                outboxes.push(None);
                continue;
            }
            let (tx, rx) = local_channel::new_unbounded::<T>();
            let pending = Rc::new(Cell::new(0usize));
            let closed = Rc::new(Cell::new(false));
            let (drain_pending, drain_closed) = (pending.clone(), closed.clone());
            let drain_senders = senders.clone();
            let lost = lost_on_close.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    if drain_closed.get() || drain_senders.send_to(peer, msg).await.is_err() {
                        // The peer stopped after this message was accepted: counted, and
                        // later sends to it are refused as `Closed`.
                        drain_closed.set(true);
                        lost.set(lost.get() + 1);
                    }
                    drain_pending.set(drain_pending.get().saturating_sub(1));
                }
            })
            .detach();
            outboxes.push(Some(Outbox {
                pending,
                closed,
                tx,
            }));
        }
        Rc::new(Mesh {
            me,
            shards,
            senders,
            outboxes,
            limit: outbox_limit.max(1),
            sent: Cell::new(0),
            refused_full: Cell::new(0),
            refused_closed: Cell::new(0),
            lost_on_close,
        })
    }

    /// Spawns one receive loop per peer, calling `on_msg(from, msg)` for every message. Call it
    /// once, after everything `on_msg` reaches for is set up: messages already waiting are
    /// handled before this returns (see the module notes).
    pub fn receive(
        &self,
        mut receivers: Receivers<T>,
        on_msg: impl Fn(ShardId, T) + Clone + 'static,
    ) {
        for (peer, mut rx) in receivers.streams() {
            let on_msg = on_msg.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = rx.next().await {
                    on_msg(ShardId(peer), msg);
                }
            })
            .detach();
        }
    }

    /// This shard.
    pub fn me(&self) -> ShardId {
        self.me
    }

    /// How many shards the mesh joins.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Sends `msg` to shard `to` (never the local shard), in order after every earlier message
    /// to `to`, or hands it back: see [`SendError`] and [`Class`].
    pub fn try_send(&self, to: ShardId, msg: T, class: Class) -> Result<(), SendError<T>> {
        let Some(Some(outbox)) = self.outboxes.get(to.0) else {
            return Err(SendError::NotAPeer(msg));
        };
        if outbox.closed.get() {
            return Err(self.refuse_closed(msg));
        }
        let msg = if outbox.pending.get() == 0 {
            match self.senders.try_send_to(to.0, msg) {
                Ok(()) => {
                    self.sent.set(self.sent.get() + 1);
                    return Ok(());
                }
                Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(m))) => m,
                Err(glommio::GlommioError::Closed(glommio::ResourceType::Channel(m))) => {
                    outbox.closed.set(true);
                    return Err(self.refuse_closed(m));
                }
                // `try_send_to` reports nothing else for a peer in range; were it to, the
                // message is gone with the error and only the count can say so.
                Err(_) => {
                    outbox.closed.set(true);
                    self.lost_on_close.set(self.lost_on_close.get() + 1);
                    return Ok(());
                }
            }
        } else {
            msg
        };
        let bound = match class {
            Class::Work => self.limit,
            Class::Answer => self.limit.saturating_mul(ANSWER_HEADROOM),
        };
        if outbox.pending.get() >= bound {
            self.refused_full.set(self.refused_full.get() + 1);
            return Err(SendError::Full(msg));
        }
        match outbox.tx.try_send(msg) {
            Ok(()) => {
                outbox.pending.set(outbox.pending.get() + 1);
                self.sent.set(self.sent.get() + 1);
                Ok(())
            }
            // The unbounded local channel refuses only once its drain task is gone, which
            // happens when the executor is stopping.
            Err(glommio::GlommioError::Closed(glommio::ResourceType::Channel(m))) => {
                outbox.closed.set(true);
                Err(self.refuse_closed(m))
            }
            Err(_) => {
                self.lost_on_close.set(self.lost_on_close.get() + 1);
                Ok(())
            }
        }
    }

    fn refuse_closed(&self, msg: T) -> SendError<T> {
        self.refused_closed.set(self.refused_closed.get() + 1);
        SendError::Closed(msg)
    }

    /// The outbox bound for new work.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Messages waiting in outboxes (not yet in a channel).
    pub fn backlog(&self) -> usize {
        self.outboxes
            .iter()
            .flatten()
            .map(|o| o.pending.get())
            .sum()
    }

    /// This shard's send counters.
    pub fn stats(&self) -> MeshStats {
        MeshStats {
            sent: self.sent.get(),
            backlog: self.backlog(),
            refused_full: self.refused_full.get(),
            refused_closed: self.refused_closed.get(),
            lost_on_close: self.lost_on_close.get(),
        }
    }

    /// Closes the channels to every peer; their receive loops end.
    pub fn close(&self) {
        self.senders.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::memlock;
    use crate::pool::{self, PoolConfig, ShardCtx};

    /// Shard 0 sends before shard 1 has even built its mesh. Shard 1's receive loop then meets
    /// the message inside `receive` (glommio runs a spawned task at once), and its answer
    /// needs the `Mesh` it is being started on: the two-step start makes that work.
    #[test]
    fn a_message_waiting_before_the_peer_starts_is_answered() {
        let cfg = PoolConfig {
            shards: 2,
            pin: false,
            mesh_capacity: 16,
            name: "mesh-test".into(),
            spin_before_park: None,
        };
        let plan = memlock::plan(memlock::memlock_limit(), 2);
        let got = pool::run(&cfg, &plan, |ctx: ShardCtx<u64>| async move {
            if ctx.id == ShardId(1) {
                // A slow start: the message from shard 0 arrives meanwhile.
                std::thread::sleep(Duration::from_millis(200));
                let mesh = Mesh::new(ctx.senders, 16);
                let echo = mesh.clone();
                let (done_tx, done_rx) = local_channel::new_bounded::<()>(1);
                let done_tx = Rc::new(done_tx);
                mesh.receive(ctx.receivers, move |from, msg: u64| {
                    let _ = echo.try_send(from, msg + 1, Class::Answer);
                    let _ = done_tx.try_send(());
                });
                let _ = done_rx.recv().await;
                return None;
            }
            let mesh = Mesh::new(ctx.senders, 16);
            let (tx, rx) = local_channel::new_bounded::<u64>(1);
            let tx = Rc::new(tx);
            mesh.receive(ctx.receivers, move |_, msg| {
                let _ = tx.try_send(msg);
            });
            mesh.try_send(ShardId(1), 41, Class::Work)
                .expect("peer in range");
            glommio::timer::timeout(Duration::from_secs(20), async { Ok(rx.recv().await) })
                .await
                .ok()
                .flatten()
        })
        .expect("pool starts");
        assert_eq!(got, vec![Some(42), None]);
    }

    fn two_shards(name: &str) -> PoolConfig {
        PoolConfig {
            shards: 2,
            pin: false,
            mesh_capacity: 4,
            name: name.into(),
            spin_before_park: None,
        }
    }

    /// What shard 0 saw sending to a peer that did not drain, then did.
    #[derive(Debug, Default)]
    struct Flood {
        accepted: Vec<u64>,
        work_refusals: u64,
        answers_over_limit: usize,
        stuck: MeshStats,
        received: Vec<u64>,
    }

    /// A peer that stops draining: new work is refused as `Full` once the outbox holds its
    /// limit (the backlog stays there, so memory is bounded), answers get their headroom, and
    /// every accepted message arrives, in order, once the peer drains again.
    #[test]
    fn a_peer_that_stops_draining_refuses_work_and_loses_nothing_it_accepted() {
        const LIMIT: usize = 8;
        const SENTINEL: u64 = u64::MAX;
        let plan = memlock::plan(memlock::memlock_limit(), 2);
        // Shard 1 blocks its thread here until shard 0 has filled its outbox: until then it
        // receives nothing, like an owner shard stuck in a long handler.
        let filled = std::sync::Arc::new(std::sync::Barrier::new(2));
        let got = pool::run(
            &two_shards("mesh-full"),
            &plan,
            move |ctx: ShardCtx<u64>| {
                let filled = filled.clone();
                async move {
                    let mesh = Mesh::new(ctx.senders, LIMIT);
                    let mut flood = Flood::default();
                    if ctx.id == ShardId(1) {
                        filled.wait();
                        let (tx, rx) = local_channel::new_unbounded::<u64>();
                        let tx = Rc::new(tx);
                        mesh.receive(ctx.receivers, move |_, m| {
                            let _ = tx.try_send(m);
                        });
                        while let Some(m) = rx.recv().await {
                            if m == SENTINEL {
                                break;
                            }
                            flood.received.push(m);
                        }
                        return flood;
                    }
                    let mut n = 0u64;
                    loop {
                        match mesh.try_send(ShardId(1), n, Class::Work) {
                            Ok(()) => flood.accepted.push(n),
                            Err(SendError::Full(m)) => {
                                assert_eq!(m, n, "the refused message is handed back");
                                flood.work_refusals += 1;
                                break;
                            }
                            Err(e) => panic!("unexpected {e:?}"),
                        }
                        n += 1;
                    }
                    // New work stays refused while the peer is stuck.
                    n += 1;
                    assert!(matches!(
                        mesh.try_send(ShardId(1), n, Class::Work),
                        Err(SendError::Full(_))
                    ));
                    flood.work_refusals += 1;
                    while mesh.try_send(ShardId(1), n, Class::Answer).is_ok() {
                        flood.accepted.push(n);
                        flood.answers_over_limit += 1;
                        n += 1;
                    }
                    flood.stuck = mesh.stats();
                    filled.wait();
                    // The peer drains now: the sentinel goes once there is room (a condition
                    // with a deadline, not a guess at how long draining takes).
                    let deadline = std::time::Instant::now() + Duration::from_secs(20);
                    while let Err(SendError::Full(_)) =
                        mesh.try_send(ShardId(1), SENTINEL, Class::Work)
                    {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "the outbox never drained"
                        );
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                    // The outbox drains on this executor: it lives until the outbox is empty.
                    while mesh.backlog() > 0 {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "the outbox never drained"
                        );
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                    flood
                }
            },
        )
        .expect("pool starts");
        let (sender, receiver) = (&got[0], &got[1]);
        // The channel holds `mesh_capacity` messages, the outbox `LIMIT` more.
        assert_eq!(sender.stuck.backlog, LIMIT * ANSWER_HEADROOM);
        assert_eq!(sender.answers_over_limit, LIMIT * (ANSWER_HEADROOM - 1));
        assert_eq!(sender.work_refusals, 2);
        assert_eq!(
            sender.stuck.refused_full, 3,
            "two work refusals, one answer refusal"
        );
        assert_eq!(sender.stuck.sent, sender.accepted.len() as u64);
        assert_eq!(sender.stuck.lost_on_close, 0);
        assert_eq!(
            receiver.received, sender.accepted,
            "every accepted message, in order"
        );
    }

    /// A peer that has gone (its receiving half dropped) refuses a send as `Closed` and hands
    /// the message back, rather than swallowing it.
    #[test]
    fn a_closed_peer_refuses_with_the_message() {
        let plan = memlock::plan(memlock::memlock_limit(), 2);
        let gone = std::sync::Arc::new(std::sync::Barrier::new(2));
        let got = pool::run(
            &two_shards("mesh-closed"),
            &plan,
            move |ctx: ShardCtx<u64>| {
                let gone = gone.clone();
                async move {
                    let mesh = Mesh::new(ctx.senders, 8);
                    if ctx.id == ShardId(1) {
                        drop(ctx.receivers);
                        gone.wait();
                        return None;
                    }
                    gone.wait();
                    let first = mesh.try_send(ShardId(1), 7, Class::Work);
                    let again = mesh.try_send(ShardId(1), 8, Class::Answer);
                    Some((first, again, mesh.stats()))
                }
            },
        )
        .expect("pool starts");
        let (first, again, stats) = got[0].clone().expect("shard 0 reports");
        assert_eq!(first, Err(SendError::Closed(7)));
        assert_eq!(again, Err(SendError::Closed(8)));
        assert_eq!(stats.refused_closed, 2);
        assert_eq!(stats.sent, 0);
    }
}
