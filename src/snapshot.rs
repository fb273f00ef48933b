//! The other shards' parts of hello-ok's health snapshot, cached on every shard, so a connect
//! never waits for a mesh round trip to every shard (nor for a stalled one). OpenClaw does the
//! same: hello-ok carries the health it last cached, refreshed in the background.
//!
//! Each shard publishes its own part (its connection, session and run counts, and on shard 0
//! the dependency rows) to every shard when the part changed: looked at soon after a local
//! change that moves it (a connection joined or left: presence, a node up or down) and once a
//! period otherwise (the counts move with traffic), so a shard publishes at most once a check
//! interval. A stalled shard's part stays what it last published. The presence list needs no
//! cache: every shard already keeps a replica of it.
//!
//! Sans-IO: the driver (timers, the mesh) is `routing::info::publish_health`.

use std::cell::{Cell, RefCell};

use serde_json::Value;

/// How often a shard looks at whether to publish after a local change, in ms: the bound on
/// how often it publishes, and about how late a joined node shows in another shard's hello-ok.
pub const CHECK_MS: u64 = 100;

/// How often a shard recomputes its part without a local change, in ms (sessions and runs
/// come and go with requests, which do not mark a change).
pub const PERIOD_MS: u64 = 1_000;

/// Every shard's latest published part, as this shard knows them.
#[derive(Debug)]
pub struct HealthParts {
    /// By shard: the part it published last, `None` until one arrives.
    parts: RefCell<Vec<Option<Value>>>,
    /// This shard's part as it last published it.
    published: RefCell<Option<Value>>,
    /// A local change since the last look.
    changed: Cell<bool>,
}

impl HealthParts {
    /// No parts yet, for `shards` shards.
    pub fn new(shards: usize) -> HealthParts {
        HealthParts {
            parts: RefCell::new(vec![None; shards]),
            published: RefCell::new(None),
            changed: Cell::new(true),
        }
    }

    /// Notes a local change that may move this shard's part.
    pub fn mark_changed(&self) {
        self.changed.set(true);
    }

    /// Whether there was a local change since the last call (and forgets it).
    pub fn take_changed(&self) -> bool {
        self.changed.replace(false)
    }

    /// `part` when it differs from what this shard published last (then recorded as
    /// published); `None` when the others already have it.
    pub fn to_publish(&self, part: Value) -> Option<Value> {
        let mut last = self.published.borrow_mut();
        if last.as_ref() == Some(&part) {
            return None;
        }
        *last = Some(part.clone());
        Some(part)
    }

    /// Keeps shard `from`'s part (out of range: ignored).
    pub fn store(&self, from: usize, part: Value) {
        if let Some(slot) = self.parts.borrow_mut().get_mut(from) {
            *slot = Some(part);
        }
    }

    /// Every shard's part in shard order, `own` (computed now) for shard `me`; `None` while
    /// another shard's first part has not arrived.
    pub fn assemble(&self, me: usize, own: Value) -> Option<Vec<Value>> {
        let parts = self.parts.borrow();
        let mut own = Some(own);
        parts
            .iter()
            .enumerate()
            .map(|(s, p)| if s == me { own.take() } else { p.clone() })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_part_is_published_only_when_it_changed() {
        let h = HealthParts::new(2);
        assert!(h.take_changed(), "the first look publishes");
        assert!(!h.take_changed());
        assert_eq!(h.to_publish(json!({"c": 1})), Some(json!({"c": 1})));
        assert_eq!(h.to_publish(json!({"c": 1})), None);
        h.mark_changed();
        assert!(h.take_changed());
        assert_eq!(h.to_publish(json!({"c": 2})), Some(json!({"c": 2})));
    }

    #[test]
    fn assembled_once_every_shard_published_with_the_own_part_fresh() {
        let h = HealthParts::new(3);
        h.store(0, json!("stale own"));
        h.store(2, json!("two"));
        assert_eq!(
            h.assemble(0, json!("own")),
            None,
            "shard 1 has not published"
        );
        h.store(1, json!("one"));
        h.store(7, json!("no such shard"));
        assert_eq!(
            h.assemble(0, json!("own")),
            Some(vec![json!("own"), json!("one"), json!("two")])
        );
        h.store(1, json!("one again"));
        assert_eq!(
            h.assemble(2, json!("own 2")),
            Some(vec![json!("stale own"), json!("one again"), json!("own 2")])
        );
    }
}
