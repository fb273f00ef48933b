//! What one shard's queue holds: the delivery core's state and what only the driver can hold
//! (agent run slots, the journal). The driver that moves it is [`super`].

use std::cell::RefCell;
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
}

impl QueueState {
    /// Runs `f` on the shard's delivery core, then moves the gateway-wide count of queued
    /// messages by as much as `f` moved the core's (admissions, completions, redrives).
    #[inline(always)]
    pub fn with_core<R>(&self, queued: &AtomicUsize, f: impl FnOnce(&mut Delivery) -> R) -> R {
        let mut core = self.core.borrow_mut();
        let before = core.depth;
        let r = f(&mut core);
        let after = core.depth;
        drop(core);
        if after > before {
            queued.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            queued.fetch_sub(before - after, Ordering::Relaxed);
        }
        r
    }

    /// An empty queue for `cfg`.
    pub fn new(cfg: &Config) -> QueueState {
        QueueState {
            core: RefCell::new(Delivery::new(cfg)),
            agent_slots: RefCell::default(),
            journal: RefCell::new(None),
            redis: RefCell::new(None),
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
