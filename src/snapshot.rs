//! The other shards' parts of hello-ok's health snapshot, cached on every shard, so a connect
//! never waits for a mesh round trip to every shard (nor for a stalled one). OpenClaw does the
//! same: hello-ok carries the health it last cached, refreshed in the background.
//!
//! Each shard publishes its own part (its connection, session and run counts, and on shard 0
//! the dependency rows) to every shard when the part changed. It looks [`CHECK_MS`] after a
//! local event that may move it (a connection joined or left: presence, a node up or down; a
//! session request; a dependency check), so it publishes at most once a check interval; after
//! a publication it looks again within [`PERIOD_MS`] (counts also move without an event: a run
//! ending), until a look finds nothing new. An idle shard does not wake for it. A stalled
//! shard's part stays what it last published. The presence list needs no cache: every shard
//! already keeps a replica of it.
//!
//! Sans-IO (std only): the driver (timers, the mesh) is `routing::info::publish_health`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use serde_json::Value;

/// How long after a local event a shard looks at whether to publish, in ms: the bound on how
/// often it publishes, and about how late a joined node shows in another shard's hello-ok.
pub const CHECK_MS: u64 = 100;

/// How soon after a publication a shard looks again without an event, in ms.
pub const PERIOD_MS: u64 = 1_000;

/// Every shard's latest published part, as this shard knows them.
pub struct HealthParts {
    /// By shard: the part it published last, `None` until one arrives.
    parts: RefCell<Vec<Option<Value>>>,
    /// This shard's part as it last published it.
    published: RefCell<Option<Value>>,
    /// A local change since the last look.
    changed: Cell<bool>,
    /// The publisher, parked in [`HealthParts::changed`].
    waiting: Cell<Option<Waker>>,
}

impl std::fmt::Debug for HealthParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthParts")
            .field("parts", &self.parts)
            .field("changed", &self.changed)
            .finish_non_exhaustive()
    }
}

impl HealthParts {
    /// No parts yet, for `shards` shards.
    pub fn new(shards: usize) -> HealthParts {
        HealthParts {
            parts: RefCell::new(vec![None; shards]),
            published: RefCell::new(None),
            changed: Cell::new(true),
            waiting: Cell::new(None),
        }
    }

    /// Notes a local change that may move this shard's part (wakes the publisher when it is
    /// parked). Cheap enough for every request: a flag and an empty slot, no allocation.
    pub fn mark_changed(&self) {
        self.changed.set(true);
        if let Some(w) = self.waiting.take() {
            w.wake();
        }
    }

    /// Resolves once there was a local change since the last [`HealthParts::take_changed`]
    /// (at once when there already was one).
    pub fn changed(&self) -> Changed<'_> {
        Changed(self)
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

    /// Every shard's part in shard order: `own` (computed now) for shard `me`, `unknown(s)`
    /// for a shard whose first part has not arrived (at start).
    pub fn assemble(&self, me: usize, own: Value, unknown: impl Fn(usize) -> Value) -> Vec<Value> {
        let parts = self.parts.borrow();
        let mut own = Some(own);
        parts
            .iter()
            .enumerate()
            .map(|(s, p)| {
                let p = if s == me { own.take() } else { p.clone() };
                p.unwrap_or_else(|| unknown(s))
            })
            .collect()
    }
}

/// The future of [`HealthParts::changed`].
#[derive(Debug)]
pub struct Changed<'a>(&'a HealthParts);

impl Future for Changed<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.changed.get() {
            Poll::Ready(())
        } else {
            self.0.waiting.set(Some(cx.waker().clone()));
            Poll::Pending
        }
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

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn the_publisher_sleeps_until_a_change() {
        let h = HealthParts::new(2);
        let count = std::sync::Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(
            Pin::new(&mut h.changed()).poll(&mut cx).is_ready(),
            "changed at start"
        );
        h.take_changed();
        let mut fut = h.changed();
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        h.mark_changed();
        h.mark_changed();
        assert_eq!(
            count.0.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "woken once"
        );
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
    }

    #[test]
    fn assembled_from_the_last_parts_with_the_own_part_fresh() {
        let h = HealthParts::new(3);
        h.store(0, json!("stale own"));
        h.store(2, json!("two"));
        let unknown = |s: usize| json!(format!("unknown {s}"));
        assert_eq!(
            h.assemble(0, json!("own"), unknown),
            [json!("own"), json!("unknown 1"), json!("two")],
            "shard 1 has not published"
        );
        h.store(1, json!("one"));
        h.store(7, json!("no such shard"));
        assert_eq!(
            h.assemble(0, json!("own"), unknown),
            [json!("own"), json!("one"), json!("two")]
        );
        h.store(1, json!("one again"));
        assert_eq!(
            h.assemble(2, json!("own 2"), unknown),
            [json!("stale own"), json!("one again"), json!("own 2")]
        );
    }
}
