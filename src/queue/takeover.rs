//! What a gateway of a cluster does when the cluster driver ([`crate::cluster`]) hands it a
//! slot or takes one away: the queue side of a lease.
//!
//! - **Gained** (`slot`, `epoch`): every shard reads the slot's records back from Redis
//!   (the sessions it owns), restores them into its delivery core, re-admits what has no
//!   outcome (the runs the previous owner had not finished: acknowledged work is never
//!   lost), and only then serves the slot under `epoch`. Until then admissions to the slot
//!   answer `UNAVAILABLE` (retryable) and a resend meets the restored dedup entry.
//! - **Drain** (before a voluntary handover): every shard stops admitting to the slot and
//!   the driver waits until the slot's runs here have finished, so the next owner does not
//!   run them again.
//! - **Lost** (the lease expired or was taken): every shard stops admitting to the slot.
//!   Runs still going here cannot record their end (the scripts check the epoch); the new
//!   owner runs them again and dedup keeps one answer.

use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::Duration;

use serde_json::json;

use super::replay::readmit;
use crate::clock::now_ms;
use crate::cluster::{ClusterHost, SlotOwner};
use crate::delivery::record::Fold;
use crate::shard::GatewayShard;

/// The cluster host of one gateway, on the shard that runs the driver.
pub struct Takeover {
    shard: Weak<GatewayShard>,
}

impl Takeover {
    /// The host for the gateway `shard` belongs to.
    pub fn new(shard: &Rc<GatewayShard>) -> Rc<Takeover> {
        Rc::new(Takeover {
            shard: Rc::downgrade(shard),
        })
    }
}

impl ClusterHost for Takeover {
    fn gained(&self, slot: u32, epoch: u64) {
        let Some(shard) = self.shard.upgrade() else {
            return;
        };
        shard.broadcast(move |s| {
            let s = s.clone();
            glommio::spawn_local(read_and_serve(s, slot, epoch)).detach();
        });
    }

    fn lost(&self, slot: u32) {
        let Some(shard) = self.shard.upgrade() else {
            return;
        };
        shard.broadcast(move |s| {
            if let Some(q) = s.queue().redis.borrow().as_ref() {
                q.stop_serving(slot);
            }
        });
    }

    fn drain(&self, slot: u32) -> Pin<Box<dyn Future<Output = ()>>> {
        let shard = self.shard.clone();
        Box::pin(async move {
            let Some(shard) = shard.upgrade() else {
                return;
            };
            shard.broadcast(move |s| {
                if let Some(q) = s.queue().redis.borrow().as_ref() {
                    q.stop_serving(slot);
                }
            });
            loop {
                let per = shard
                    .gather(move |s| {
                        json!(s
                            .queue()
                            .redis
                            .borrow()
                            .as_ref()
                            .map_or(0, |q| q.in_flight(slot)))
                    })
                    .await;
                if per.iter().all(|v| v.as_u64() == Some(0)) {
                    return;
                }
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
        })
    }
}

/// Reads `slot` back on this shard and serves it under `epoch`, retrying while Redis is
/// unreachable, for as long as this gateway still holds the slot at that epoch.
async fn read_and_serve(shard: Rc<GatewayShard>, slot: u32, epoch: u64) {
    let Some(q) = shard.queue().redis.borrow().clone() else {
        return;
    };
    let still_mine = |shard: &GatewayShard| {
        shard.relay().is_none_or(
            |r| matches!(r.ownership().owner(slot), SlotOwner::Mine { epoch: e } if e == epoch),
        )
    };
    let me = shard.id();
    let mut attempt = 0u32;
    while still_mine(&shard) {
        let mut fold = Fold::default();
        match q
            .read_slot(slot, &|s: &str| shard.owner(s) == me, &mut fold)
            .await
        {
            Ok(()) => {
                let restored = shard
                    .queue()
                    .with_core(&shard.shared().queued, |d| d.restore(&fold, now_ms()));
                let pending = restored.pending.len();
                q.serve(slot, epoch);
                for job in restored.pending {
                    readmit(&shard, job);
                }
                tracing::info!(shard = %shard.id(), slot, epoch, records = fold.records, pending,
                    "cluster: slot taken over");
                return;
            }
            Err(e) => {
                if attempt.is_multiple_of(20) {
                    tracing::warn!(shard = %shard.id(), slot, "cluster: cannot read the slot back yet: {e}");
                }
                attempt += 1;
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
