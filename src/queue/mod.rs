//! The delivery driver on a session's owner shard: it feeds the sans-IO core
//! ([`crate::delivery`]) with what arrives and applies the effects it returns — replies and
//! events to connections, records to the queue backend ([`backend`]), jobs into sessions'
//! lanes (`lane`), timers (ordering gaps, retry backoff) — with glommio and the clock.
//!
//! Guarantees kept here (the core decides; this module must not reorder its effects):
//! - The acknowledgement of a message goes out before its lane can emit anything for it, and
//!   with a durable backend only once its admission record is written ([`submit`]).
//! - One active run per session, in arrival order (and `sessionSeq` order when given); a
//!   retry keeps its place at the head of the lane, so later messages of the session wait.
//! - Whatever changes the core's count of jobs (`depth`) changes the gateway-wide count
//!   (`Shared::queued`, bounded by `queue.maxSize`) by as much (`with_core`).

pub mod backend;
pub mod channel;
pub mod journal;
mod lane;
mod replay;
mod runs;
mod submit;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use serde_json::Value;

pub use crate::delivery::{DeadLetter, Delivery, Job, JobKind};
#[cfg(test)]
pub(crate) use lane::drive_lane;
pub use lane::enqueue;
pub use replay::{open_journal, readmit, snapshot};
pub use runs::{reply_final, run_directory, trace};
pub use submit::{submit, Journaled, Submit};

use crate::config::Config;
use crate::shard::GatewayShard;

/// One shard's queue: the delivery core's state and what only the driver can hold.
#[derive(Debug)]
pub struct QueueState {
    /// Dedup ring, dead letters, counters, pending jobs: the sans-IO core.
    pub core: RefCell<Delivery>,
    /// Run slots per capped agent on this shard (`agents.bindings.<id>.maxConcurrent`).
    pub agent_slots: RefCell<HashMap<String, Rc<glommio::sync::Semaphore>>>,
    /// The durable backend, when `queue.backend = "journal"`.
    pub journal: RefCell<Option<Rc<journal::Journal>>>,
}

impl QueueState {
    /// An empty queue for `cfg`.
    pub fn new(cfg: &Config) -> QueueState {
        QueueState {
            core: RefCell::new(Delivery::new(cfg)),
            agent_slots: RefCell::default(),
            journal: RefCell::new(None),
        }
    }

    /// Counters as JSON.
    pub fn stats_json(&self) -> Value {
        let core = self.core.borrow();
        let mut v = core.stats.to_json();
        v["depth"] = core.depth.into();
        v["deadLetters"] = core.dead.len().into();
        v["journal"] = self
            .journal
            .borrow()
            .as_ref()
            .map(|j| j.stats_json())
            .unwrap_or(Value::Null);
        v
    }

    fn journal(&self) -> Option<Rc<journal::Journal>> {
        self.journal.borrow().clone()
    }
}

/// Runs `f` on the shard's delivery core, then moves the gateway-wide count of queued
/// messages by as much as `f` moved the core's (admissions, completions, redrives).
#[inline(always)]
pub(crate) fn with_core<R>(shard: &GatewayShard, f: impl FnOnce(&mut Delivery) -> R) -> R {
    let mut core = shard.queue.core.borrow_mut();
    let before = core.depth;
    let r = f(&mut core);
    let after = core.depth;
    drop(core);
    let queued = &shard.shared.queued;
    if after > before {
        queued.fetch_add(after - before, Ordering::Relaxed);
    } else if before > after {
        queued.fetch_sub(before - after, Ordering::Relaxed);
    }
    r
}

/// Re-admits dead letters owned by this shard (`id` or all). Returns how many.
pub fn redrive(shard: &Rc<GatewayShard>, id: Option<&str>) -> usize {
    let now = crate::clock::now_ms();
    let (n, mut effects) = with_core(shard, |d| d.redrive(id, now));
    runs::apply(shard, "", &mut None, now, &mut effects);
    n
}

/// Drops dead letters older than `deadLetter.maxAge`.
pub fn purge_dead(shard: &Rc<GatewayShard>, now: i64) {
    let (purged, mut effects) = with_core(shard, |d| d.purge(now));
    runs::apply(shard, "", &mut None, now, &mut effects);
    if purged > 0 {
        tracing::info!(shard = %shard.id, purged, "purged expired dead letters");
    }
}
