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
pub mod state;
mod submit;

use std::rc::Rc;
use std::sync::atomic::Ordering;

pub use crate::delivery::{DeadLetter, Delivery, Job, JobKind};
#[cfg(test)]
pub(crate) use lane::drive_lane;
pub use lane::enqueue;
pub use replay::{open_journal, readmit, snapshot};
pub use runs::{reply_final, run_directory, trace};
pub use submit::{submit, Journaled, Submit};

use crate::shard::GatewayShard;

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
