//! Start-up with a durable backend: the journal is opened and replayed into the core
//! ([`Delivery::restore`](crate::delivery::Delivery::restore)), pending jobs are re-admitted
//! on their sessions' owners, and the journal is given the core's snapshot for compaction.
//! Also the redrive and purge of dead letters, which re-admit or drop jobs the same way.

use std::rc::Rc;

use super::journal;
use super::lane::apply;
use crate::clock::now_ms;
use crate::delivery::{Job, Record};
use crate::shard::GatewayShard;

/// The live state of a shard's queue as journal records (compaction).
pub fn snapshot(shard: &GatewayShard) -> Vec<Record> {
    shard.queue.core.borrow().snapshot(now_ms())
}

/// Re-admits a job read back from the journal (or forwarded by another shard).
pub fn readmit(shard: &Rc<GatewayShard>, job: Job) {
    let now = now_ms();
    let run_id = job.run_id.clone();
    let mut effects = shard
        .queue
        .with_core(&shard.shared.queued, |d| d.readmit(job, now));
    apply(shard, &run_id, &mut None, now, &mut effects);
}

/// Opens this shard's journal, restores its state, and starts writing.
pub fn open_journal(shard: &Rc<GatewayShard>) -> Result<(), String> {
    let cfg = shard.config();
    let state_dir = cfg.state_dir();
    let cipher = match cfg.storage.encryption.as_deref() {
        Some("aes-256-gcm") => Some(journal::load_key(&state_dir).map_err(|e| e.to_string())?),
        _ => None,
    };
    let dir = state_dir
        .join("journal")
        .join(format!("shard-{}", shard.id.0));
    let (j, fold) = journal::Journal::open(&dir, cipher).map_err(|e| e.to_string())?;
    *shard.queue.journal.borrow_mut() = Some(j.clone());
    let restored = {
        let mut core = shard.queue.core.borrow_mut();
        core.durable = true;
        core.restore(&fold, now_ms())
    };
    let pending = restored.pending.len();
    for job in restored.pending {
        let owner = shard.owner(&job.session_key);
        shard.on_shard(owner, move |s| readmit(s, job));
    }
    tracing::info!(shard = %shard.id, records = fold.records, pending, done = restored.done,
        dead = restored.dead, dir = %dir.display(), "journal replayed");
    let weak = Rc::downgrade(shard);
    j.set_snapshot(Box::new(move || {
        weak.upgrade().map(|s| snapshot(&s)).unwrap_or_default()
    }));
    j.start();
    Ok(())
}

/// Re-admits dead letters owned by this shard (`id` or all). Returns how many.
pub fn redrive(shard: &Rc<GatewayShard>, id: Option<&str>) -> usize {
    let now = now_ms();
    let (n, mut effects) = shard
        .queue
        .with_core(&shard.shared.queued, |d| d.redrive(id, now));
    apply(shard, "", &mut None, now, &mut effects);
    n
}

/// Drops dead letters older than `deadLetter.maxAge`.
pub fn purge_dead(shard: &Rc<GatewayShard>, now: i64) {
    let (purged, mut effects) = shard
        .queue
        .with_core(&shard.shared.queued, |d| d.purge(now));
    apply(shard, "", &mut None, now, &mut effects);
    if purged > 0 {
        tracing::info!(shard = %shard.id, purged, "purged expired dead letters");
    }
}
