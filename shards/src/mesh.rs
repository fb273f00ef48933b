//! The full mesh of SPSC channels between shards, with per-peer ordered outboxes.
//!
//! glommio's `channel_mesh` gives one bounded shared channel per ordered pair of shards. On top
//! of it, [`Mesh::send`] is synchronous and never loses a message: when the channel to a peer
//! is full (or an earlier message to that peer is still waiting), the message waits in that
//! peer's outbox and a drain task moves it over as the peer consumes. Messages from one shard to
//! another therefore arrive in the order they were sent.
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

/// One shard's handle on the mesh: send to any peer, in order, without waiting.
pub struct Mesh<T: Send + 'static> {
    me: ShardId,
    shards: usize,
    senders: Rc<Senders<T>>,
    outboxes: Vec<Option<Outbox<T>>>,
}

struct Outbox<T> {
    /// Messages accepted by [`Mesh::send`] that are not yet in the SPSC channel.
    pending: Rc<Cell<usize>>,
    tx: LocalSender<T>,
}

impl<T: Send + 'static> std::fmt::Debug for Mesh<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("me", &self.me)
            .field("shards", &self.shards)
            .finish()
    }
}

impl<T: Send + 'static> Mesh<T> {
    /// Wraps the joined sending half and spawns, on the current executor, one outbox drain per
    /// peer. Nothing is received until [`Mesh::receive`].
    pub fn new(senders: Senders<T>) -> Rc<Self> {
        let me = ShardId(senders.peer_id());
        let shards = senders.nr_consumers();
        let senders = Rc::new(senders);
        let mut outboxes = Vec::with_capacity(shards);
        for peer in 0..shards {
            if peer == me.0 {
                outboxes.push(None);
                continue;
            }
            let (tx, rx) = local_channel::new_unbounded::<T>();
            let pending = Rc::new(Cell::new(0usize));
            let drain_pending = pending.clone();
            let drain_senders = senders.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    // A closed peer (shutdown) drops the message: nothing left to deliver to.
                    let _ = drain_senders.send_to(peer, msg).await;
                    drain_pending.set(drain_pending.get().saturating_sub(1));
                }
            })
            .detach();
            outboxes.push(Some(Outbox { pending, tx }));
        }
        Rc::new(Mesh {
            me,
            shards,
            senders,
            outboxes,
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
    /// to `to`. Returns the message back only when `to` is the local shard or out of range.
    pub fn send(&self, to: ShardId, msg: T) -> Result<(), T> {
        let Some(Some(outbox)) = self.outboxes.get(to.0) else {
            return Err(msg);
        };
        let msg = if outbox.pending.get() == 0 {
            match self.senders.try_send_to(to.0, msg) {
                Ok(()) => return Ok(()),
                Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(m))) => m,
                // The peer is gone (shutting down): nothing will consume it.
                Err(_) => return Ok(()),
            }
        } else {
            msg
        };
        outbox.pending.set(outbox.pending.get() + 1);
        match outbox.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(_) => {
                outbox.pending.set(outbox.pending.get().saturating_sub(1));
                Ok(())
            }
        }
    }

    /// Messages waiting in outboxes (not yet in a channel), for metrics.
    pub fn backlog(&self) -> usize {
        self.outboxes
            .iter()
            .flatten()
            .map(|o| o.pending.get())
            .sum()
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
                let mesh = Mesh::new(ctx.senders);
                let echo = mesh.clone();
                let (done_tx, done_rx) = local_channel::new_bounded::<()>(1);
                let done_tx = Rc::new(done_tx);
                mesh.receive(ctx.receivers, move |from, msg: u64| {
                    let _ = echo.send(from, msg + 1);
                    let _ = done_tx.try_send(());
                });
                let _ = done_rx.recv().await;
                return None;
            }
            let mesh = Mesh::new(ctx.senders);
            let (tx, rx) = local_channel::new_bounded::<u64>(1);
            let tx = Rc::new(tx);
            mesh.receive(ctx.receivers, move |_, msg| {
                let _ = tx.try_send(msg);
            });
            mesh.send(ShardId(1), 41).expect("peer in range");
            glommio::timer::timeout(Duration::from_secs(20), async { Ok(rx.recv().await) })
                .await
                .ok()
                .flatten()
        })
        .expect("pool starts");
        assert_eq!(got, vec![Some(42), None]);
    }
}
