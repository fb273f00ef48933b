//! Start-up with a durable backend: the journal is opened and replayed into the core
//! ([`Delivery::restore`](crate::delivery::Delivery::restore)), pending jobs are re-admitted
//! on their sessions' owners, and the journal is given the core's snapshot for compaction.
//! With Redis ([`open_redis`]) each shard reads back the sessions it owns, once Redis answers.
//! Also the redrive and purge of dead letters, which re-admit or drop jobs the same way.

use std::rc::Rc;

use super::journal;
use super::lane::apply;
use crate::clock::now_ms;
use crate::delivery::{Job, Record};
use crate::shard::GatewayShard;

/// The live state of a shard's queue as journal records (compaction).
pub fn snapshot(shard: &GatewayShard) -> Vec<Record> {
    shard.queue().core.borrow().snapshot(now_ms())
}

/// Re-admits a job read back from the journal (or forwarded by another shard).
pub fn readmit(shard: &Rc<GatewayShard>, job: Job) {
    let now = now_ms();
    let run_id = job.run_id.clone();
    let mut effects = shard
        .queue()
        .with_core(&shard.shared().queued, |d| d.readmit(job, now));
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
        .join(format!("shard-{}", shard.id().0));
    let (j, fold) = journal::Journal::open(&dir, cipher).map_err(|e| e.to_string())?;
    *shard.queue().journal.borrow_mut() = Some(j.clone());
    let restored = {
        let mut core = shard.queue().core.borrow_mut();
        core.durable = true;
        core.restore(&fold, now_ms())
    };
    let pending = restored.pending.len();
    for job in restored.pending {
        let owner = shard.owner(&job.session_key);
        shard.on_shard(owner, move |s| readmit(s, job));
    }
    tracing::info!(shard = %shard.id(), records = fold.records, pending, done = restored.done,
        dead = restored.dead, dir = %dir.display(), "journal replayed");
    let weak = Rc::downgrade(shard);
    j.set_snapshot(Box::new(move || {
        weak.upgrade().map(|s| snapshot(&s)).unwrap_or_default()
    }));
    j.start();
    Ok(())
}

/// Starts this shard's Redis backend: connects in the background and, once Redis answers,
/// reads back the sessions this shard owns, restores them into the core, re-admits what has
/// no outcome, and only then takes admissions (until then they answer `UNAVAILABLE`).
pub fn open_redis(shard: &Rc<GatewayShard>) -> Result<(), String> {
    let q = super::redis::RedisQueue::new(shard.config(), shard.id().0)?;
    *shard.queue().redis.borrow_mut() = Some(q.clone());
    shard.queue().core.borrow_mut().durable = true;
    let weak = Rc::downgrade(shard);
    glommio::spawn_local(async move {
        let mut attempt = 0u32;
        loop {
            let Some(shard) = weak.upgrade() else { return };
            let me = shard.id();
            // In a cluster a slot is read back when its lease is gained (`super::takeover`).
            if shard.shared().cluster.is_some() {
                let _ = q
                    .client()
                    .wait_connected(std::time::Duration::from_secs(1))
                    .await;
                match q.load_scripts().await {
                    Ok(()) => return,
                    Err(e) => {
                        if attempt.is_multiple_of(20) {
                            tracing::warn!(shard = %shard.id(), "redis queue: cannot load scripts yet: {e}");
                        }
                        attempt += 1;
                        drop(shard);
                        glommio::timer::sleep(std::time::Duration::from_millis(250)).await;
                        continue;
                    }
                }
            }
            let fold = q.read_back(|s| shard.owner(s) == me).await;
            match fold {
                Ok(fold) => {
                    let restored = shard.queue().core.borrow_mut().restore(&fold, now_ms());
                    let pending = restored.pending.len();
                    for job in restored.pending {
                        readmit(&shard, job);
                    }
                    q.set_ready();
                    tracing::info!(shard = %shard.id(), records = fold.records, pending,
                        done = restored.done, dead = restored.dead, "redis queue read back");
                    return;
                }
                Err(e) => {
                    if attempt.is_multiple_of(20) {
                        tracing::warn!(shard = %shard.id(), "redis queue: cannot read back yet: {e}");
                    }
                    attempt += 1;
                    drop(shard);
                    // The link reconnects by itself; wait for it rather than spin.
                    let _ = q
                        .client()
                        .wait_connected(std::time::Duration::from_secs(1))
                        .await;
                    glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    })
    .detach();
    Ok(())
}

/// Re-admits dead letters owned by this shard (`id` or all). Returns how many.
pub fn redrive(shard: &Rc<GatewayShard>, id: Option<&str>) -> usize {
    let now = now_ms();
    let (n, mut effects) = shard
        .queue()
        .with_core(&shard.shared().queued, |d| d.redrive(id, now));
    apply(shard, "", &mut None, now, &mut effects);
    n
}

/// Drops dead letters older than `deadLetter.maxAge`.
pub fn purge_dead(shard: &Rc<GatewayShard>, now: i64) {
    let (purged, mut effects) = shard
        .queue()
        .with_core(&shard.shared().queued, |d| d.purge(now));
    apply(shard, "", &mut None, now, &mut effects);
    if purged > 0 {
        tracing::info!(shard = %shard.id(), purged, "purged expired dead letters");
    }
}
