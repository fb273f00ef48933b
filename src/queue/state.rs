//! What one shard's queue holds: the delivery core's state and what only the driver can hold
//! (agent run slots, the journal). The driver that moves it is [`super`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::backend::Durable;
use super::{journal, redis};
use crate::config::Config;
use crate::delivery::Delivery;

/// One shard's queue: the delivery core's state and what only the driver can hold.
#[derive(Debug)]
pub struct QueueState {
    /// Dedup ring, dead letters, counters, pending jobs: the sans-IO core.
    pub core: RefCell<Delivery>,
    /// Run slots per capped agent on this shard (`agents.bindings.<id>.maxConcurrent`).
    pub agent_slots: RefCell<HashMap<String, Rc<glommio::sync::Semaphore>>>,
    /// The durable backend, when `queue.backend = "journal"`.
    pub journal: RefCell<Option<Rc<journal::Journal>>>,
    /// The durable backend, when `queue.backend = "redis"`.
    pub redis: RefCell<Option<Rc<redis::RedisQueue>>>,
    /// This shard's credits under `queue.maxSize`.
    pub credits: Credits,
}

/// This shard's share of `queue.maxSize`, so that admitting a message does not write a
/// gateway-wide counter. The gateway-wide count ([`crate::shared::Shared::queued`]) is of
/// credits *taken*: each shard takes them in chunks (one write per chunk, never past
/// `maxSize`, by compare-and-swap), spends one per message and gives back what it holds
/// over a chunk when messages finish. So the messages queued never pass `maxSize`, and at
/// worst `shards × chunk` credits (≤ 1/8 of `maxSize`) sit idle on shards that hold them: a
/// shard may answer `QUEUE_FULL` that much early. A chunk of 1 (a queue under 16 × shards)
/// is exact: nothing is held back.
#[derive(Debug)]
pub struct Credits {
    held: Cell<usize>,
    chunk: usize,
    max: usize,
    enabled: bool,
}

impl Credits {
    /// Credits for one of `shards` shards sharing `cfg.queue.maxSize`.
    pub fn new(cfg: &Config, shards: usize) -> Credits {
        let max = cfg.queue.max_size;
        Credits {
            held: Cell::new(0),
            chunk: (max / (shards.max(1) * 8)).clamp(1, 64),
            max,
            enabled: cfg.queue.enabled,
        }
    }

    /// Whether a new message fits under `maxSize`: this shard holds a credit, or took more
    /// from `taken`. Without a queue there is no bound.
    pub fn room(&self, taken: &AtomicUsize) -> bool {
        !self.enabled || self.held.get() > 0 || self.take(taken, 1)
    }

    /// Takes at least `need` credits (a chunk when there are that many) from `taken`.
    fn take(&self, taken: &AtomicUsize, need: usize) -> bool {
        let mut cur = taken.load(Ordering::Relaxed);
        loop {
            let free = self.max.saturating_sub(cur);
            if free < need {
                return false;
            }
            let n = free.min(self.chunk.max(need));
            match taken.compare_exchange_weak(cur, cur + n, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.held.set(self.held.get() + n);
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// The shard's queue depth moved from `before` to `after`: spends credits for new
    /// messages (past the hold, it overdraws `taken`: a replayed or redriven message was
    /// admitted once already and is never refused) and gives back those over a chunk.
    fn moved(&self, taken: &AtomicUsize, before: usize, after: usize) {
        let held = self.held.get();
        if after > before {
            let n = after - before;
            if held >= n {
                self.held.set(held - n);
            } else {
                self.held.set(0);
                taken.fetch_add(n - held, Ordering::Relaxed);
            }
        } else {
            let held = held + (before - after);
            let keep = if self.chunk > 1 { self.chunk } else { 0 };
            if held > keep {
                taken.fetch_sub(held - keep, Ordering::Relaxed);
            }
            self.held.set(held.min(keep));
        }
    }
}

impl QueueState {
    /// Runs `f` on the shard's delivery core, then settles this shard's credits
    /// ([`Credits`]) for as much as `f` moved the core's depth (admissions, completions,
    /// redrives).
    #[inline(always)]
    pub fn with_core<R>(&self, taken: &AtomicUsize, f: impl FnOnce(&mut Delivery) -> R) -> R {
        let mut core = self.core.borrow_mut();
        let before = core.depth;
        let r = f(&mut core);
        let after = core.depth;
        drop(core);
        if after != before {
            self.credits.moved(taken, before, after);
        }
        r
    }

    /// An empty queue for `cfg`, on one of `shards` shards.
    pub fn new(cfg: &Config, shards: usize) -> QueueState {
        QueueState {
            core: RefCell::new(Delivery::new(cfg)),
            agent_slots: RefCell::default(),
            journal: RefCell::new(None),
            redis: RefCell::new(None),
            credits: Credits::new(cfg, shards),
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
        if let Some(r) = self.redis.borrow().as_ref() {
            v["redis"] = r.stats_json();
        }
        v
    }

    /// The durable backend, if any.
    pub(crate) fn backend(&self) -> Option<Durable> {
        if let Some(j) = self.journal.borrow().as_ref() {
            return Some(Durable::Journal(j.clone()));
        }
        self.redis.borrow().clone().map(Durable::Redis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credits(max: usize, shards: usize) -> Credits {
        let mut c = Config::default();
        c.queue.max_size = max;
        Credits::new(&c, shards)
    }

    /// Admits one message on `c` as the driver does: room, then the depth moves by one.
    fn admit(c: &Credits, taken: &AtomicUsize, depth: &mut usize) -> bool {
        if !c.room(taken) {
            return false;
        }
        c.moved(taken, *depth, *depth + 1);
        *depth += 1;
        true
    }

    #[test]
    fn a_small_queue_is_exact_across_shards() {
        let taken = AtomicUsize::new(0);
        let (a, b) = (credits(3, 2), credits(3, 2));
        let (mut da, mut db) = (0, 0);
        assert!(admit(&a, &taken, &mut da));
        assert!(admit(&b, &taken, &mut db));
        assert!(admit(&a, &taken, &mut da));
        assert!(!admit(&b, &taken, &mut db), "3 queued: full");
        assert!(!admit(&a, &taken, &mut da));
        // One finishes on `a`: the room is anyone's, not kept by `a`.
        a.moved(&taken, da, da - 1);
        da -= 1;
        assert_eq!(taken.load(Ordering::Relaxed), 2);
        assert!(admit(&b, &taken, &mut db));
        assert_eq!(da + db, 3);
    }

    #[test]
    fn a_large_queue_takes_chunks_and_never_passes_max() {
        let taken = AtomicUsize::new(0);
        let shards: Vec<_> = (0..2).map(|_| credits(10_000, 2)).collect();
        let mut depth = [0usize; 2];
        let mut admitted = 0;
        for i in 0..20_000 {
            let s = i % 2;
            if admit(&shards[s], &taken, &mut depth[s]) {
                admitted += 1;
            }
            assert!(taken.load(Ordering::Relaxed) <= 10_000);
        }
        assert_eq!(admitted, 10_000, "every credit is spent before refusing");
        // The counter was written once per chunk of 64, not once per message.
        assert_eq!(shards[0].chunk, 64);
    }

    #[test]
    fn finishing_gives_back_all_but_a_chunk() {
        let taken = AtomicUsize::new(0);
        let c = credits(10_000, 2);
        let mut d = 0;
        for _ in 0..200 {
            assert!(admit(&c, &taken, &mut d));
        }
        c.moved(&taken, d, 0);
        assert_eq!(c.held.get(), 64);
        assert_eq!(taken.load(Ordering::Relaxed), 64);
    }

    #[test]
    fn a_replayed_message_overdraws_instead_of_being_refused() {
        let taken = AtomicUsize::new(3);
        let c = credits(3, 1);
        c.moved(&taken, 0, 1);
        assert_eq!(taken.load(Ordering::Relaxed), 4);
        c.moved(&taken, 1, 0);
        assert_eq!(taken.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_disabled_queue_has_no_size_bound() {
        let mut cfg = Config::default();
        cfg.queue.enabled = false;
        cfg.queue.max_size = 1;
        let c = Credits::new(&cfg, 2);
        let taken = AtomicUsize::new(1);
        assert!(c.room(&taken));
    }
}
