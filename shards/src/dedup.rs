//! A fixed-capacity dedup ring: "have I seen this key within the window?" in O(1).
//!
//! Entries live in a ring of `capacity` slots in insertion order, indexed by a hash map from
//! key to slot. Inserting into a full ring evicts the oldest entry (counted when it was still
//! inside its window: that is capacity pressure, visible in metrics). Lookups treat entries
//! older than the window as absent; they are reclaimed when their slot comes round again or by
//! [`DedupRing::expire`].

use std::borrow::Borrow;
use std::hash::Hash;

struct Slot<K, V> {
    key: K,
    /// The key's hash, kept so that evicting or rehashing never hashes a key again (and what
    /// a [`Handle`] checks).
    hash: u64,
    at_ms: i64,
    value: V,
}

/// Where an entry was put, to find it again without hashing or comparing its key: it finds
/// its slot while that holds the same key (by its 64-bit hash, keyed per process) within the
/// window, checked on every use — not once the entry is replaced, evicted or expired. It
/// names its ring too, so a handle shown to another ring finds nothing. (Slots keep no
/// insertion number for this: 8 more bytes in each of 3 × 65 536 slots per shard showed as
/// ~170 B more RSS per idle connection in `perf/run --idle 19000`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle {
    ring: u32,
    slot: u32,
    /// The key's hash with its low bit set: never zero, so an `Option<Handle>` is no larger.
    hash: std::num::NonZeroU64,
}

/// The slot index: open addressing with linear probing over one array of `u64`, each entry
/// the key hash's upper 32 bits above `slot + 1` (0: empty). One probe reads the slot number
/// and 32 bits of the hash from the same cache line, a key that is not there is told without
/// reading any slot, and the entry an eviction removes has an address known in advance, so
/// [`DedupRing::prefetch_ahead`] can load it early (`hashbrown`'s table, used before, keeps
/// control bytes and slot numbers in two arrays and does not expose where an entry lives).
/// Kept at most half full, so probe runs stay short; the hash is keyed per process, so
/// clients cannot aim keys at one run. Removal shifts the rest of the run back (no
/// tombstones). The array is zeroed memory, not resident until used.
struct Index {
    entries: Vec<u64>,
    mask: usize,
    len: usize,
}

impl Index {
    const TAG: u64 = 0xffff_ffff_0000_0000;

    fn with_capacity(capacity: usize) -> Index {
        let size = (capacity * 2).next_power_of_two().max(8);
        Index {
            entries: vec![0; size],
            mask: size - 1,
            len: 0,
        }
    }

    /// Where the probe for a hash (or an entry, which keeps the same upper bits) starts.
    fn home(&self, hash: u64) -> usize {
        (hash >> 32) as usize & self.mask
    }

    /// The first slot in `hash`'s probe run for which `is(slot)` holds.
    fn find(&self, hash: u64, is: impl Fn(usize) -> bool) -> Option<usize> {
        let tag = hash & Self::TAG;
        let mut b = self.home(hash);
        loop {
            let e = self.entries[b];
            if e == 0 {
                return None;
            }
            let slot = (e & !Self::TAG) as usize - 1;
            if e & Self::TAG == tag && is(slot) {
                return Some(slot);
            }
            b = (b + 1) & self.mask;
        }
    }

    /// Adds `slot` under `hash` (the caller has made sure it is not there yet).
    fn insert(&mut self, hash: u64, slot: usize) {
        let mut b = self.home(hash);
        while self.entries[b] != 0 {
            b = (b + 1) & self.mask;
        }
        self.entries[b] = (hash & Self::TAG) | (slot as u64 + 1);
        self.len += 1;
    }

    /// Removes `slot` filed under `hash`; false if it is not there.
    fn remove(&mut self, hash: u64, slot: usize) -> bool {
        let want = (hash & Self::TAG) | (slot as u64 + 1);
        let mut b = self.home(hash);
        loop {
            match self.entries[b] {
                0 => return false,
                e if e == want => break,
                _ => b = (b + 1) & self.mask,
            }
        }
        // Backward shift: each later entry of the run moves into the hole when the hole lies
        // on its probe path (between its home and where it is).
        let mut hole = b;
        let mut j = (b + 1) & self.mask;
        loop {
            let e = self.entries[j];
            if e == 0 {
                break;
            }
            let from_home = j.wrapping_sub(self.home(e)) & self.mask;
            let from_hole = j.wrapping_sub(hole) & self.mask;
            if from_home >= from_hole {
                self.entries[hole] = e;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.entries[hole] = 0;
        self.len -= 1;
        true
    }
}

/// Asks the CPU to bring `p`'s cache line in, without waiting for it.
#[inline(always)]
fn prefetch<T>(p: &T) {
    prefetch_bytes(std::ptr::from_ref(p).cast(), 1);
}

/// Asks the CPU to bring in the cache lines of `len` bytes from `p` (at most 8 lines).
#[inline(always)]
pub fn prefetch_bytes(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..len.min(512)).step_by(64) {
        // SAFETY: a prefetch is a hint: it never faults, whatever the address, and reads
        // nothing the program sees. `wrapping_add` makes no claim about the address either.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// What dropping a value will touch besides itself (its heap blocks), so that a full ring can
/// load it ahead of the eviction that drops it ([`DedupRing::prefetch_ahead`]): freeing a block
/// writes into it, and the allocator hands that block to the next allocation of its size.
/// The default touches nothing (plain values).
pub trait Prefetch {
    /// Starts loading the memory dropping `self` will touch.
    fn prefetch(&self) {}
}

impl Prefetch for String {
    fn prefetch(&self) {
        prefetch_bytes(self.as_ptr(), 1);
    }
}

impl<T> Prefetch for Vec<T> {
    fn prefetch(&self) {
        // Dropping the elements reads each of them.
        prefetch_bytes(self.as_ptr().cast(), self.len() * size_of::<T>());
    }
}

impl<T: ?Sized> Prefetch for std::rc::Rc<T> {
    fn prefetch(&self) {
        // The counts sit just before the value, in the same allocation.
        prefetch_bytes(std::rc::Rc::as_ptr(self).cast::<u8>().wrapping_sub(16), 1);
    }
}

impl<T: Prefetch> Prefetch for Option<T> {
    fn prefetch(&self) {
        if let Some(v) = self {
            v.prefetch();
        }
    }
}

/// Plain values (the criterion bench's ring holds `u64`s).
impl Prefetch for u64 {}

/// Rings made so far in this process (each ring's id).
static RINGS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The ring. `K` is the dedup key (`method:idempotencyKey`), `V` what is remembered.
pub struct DedupRing<K, V> {
    window_ms: i64,
    /// Grown by one per insert until full, then reused in turn: the array is reserved whole
    /// (its untouched pages cost no memory) but a ring holds only what was written to it, so
    /// a gateway of idle connections pays nothing for the rings of its shards.
    slots: Vec<Option<Slot<K, V>>>,
    /// Entries at most.
    capacity: usize,
    /// Next slot to write (the oldest entry when full; `slots.len()` while growing).
    head: usize,
    /// This ring, among all (see [`Handle`]).
    id: u32,
    /// aHash: fast, and keyed per process so clients cannot aim keys at one bucket.
    hasher: ahash::RandomState,
    /// Slot numbers, found by the hash and key of the slot they name: each key is stored
    /// once (in its slot), and an insert neither clones it nor hashes it twice.
    index: Index,
    /// Entries evicted by capacity while still inside the window.
    pub evicted_live: u64,
    /// Entries that expired by the window.
    pub expired: u64,
}

impl<K, V> std::fmt::Debug for DedupRing<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupRing")
            .field("capacity", &self.capacity)
            .field("len", &self.index.len)
            .finish()
    }
}

impl<K: Hash + Eq + Prefetch, V: Prefetch> DedupRing<K, V> {
    /// A ring of `capacity` (≥ 1) entries remembered for `window_ms`.
    pub fn new(capacity: usize, window_ms: i64) -> Self {
        // Slot numbers are stored in 32 bits (see `Index`).
        let capacity = capacity.clamp(1, u32::MAX as usize - 1);
        DedupRing {
            window_ms,
            slots: Vec::with_capacity(capacity),
            capacity,
            head: 0,
            id: RINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            hasher: ahash::RandomState::new(),
            index: Index::with_capacity(capacity),
            evicted_live: 0,
            expired: 0,
        }
    }

    /// The slot holding `key` (live or not), found with its hash `hash`.
    fn find<Q>(&self, key: &Q, hash: u64) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let slots = &self.slots;
        self.index.find(hash, |i| {
            slots[i]
                .as_ref()
                .is_some_and(|s| s.hash == hash && s.key.borrow() == key)
        })
    }

    /// The slot of `key` if its entry is within the window.
    fn find_live<Q>(&self, key: &Q, now_ms: i64) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.find(key, self.hasher.hash_one(key))?;
        let s = self.slots[i].as_ref()?;
        (now_ms - s.at_ms < self.window_ms).then_some(i)
    }

    /// Removes slot `i` (hash `hash`) from the index.
    fn unindex(&mut self, i: usize, hash: u64) -> bool {
        self.index.remove(hash, i)
    }

    /// The value of `key` if seen within the window.
    pub fn get<Q>(&self, key: &Q, now_ms: i64) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.find_live(key, now_ms)?;
        self.slots[i].as_ref().map(|s| &s.value)
    }

    /// Mutable access to the value of `key` if seen within the window.
    pub fn get_mut<Q>(&mut self, key: &Q, now_ms: i64) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.find_live(key, now_ms)?;
        self.slots[i].as_mut().map(|s| &mut s.value)
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
        self.entry(key, now_ms, make).1
    }

    /// [`DedupRing::get_or_insert_with`], with the entry's [`Handle`] for later visits.
    pub fn entry<Q>(&mut self, key: &Q, now_ms: i64, make: impl FnOnce() -> V) -> (Handle, &mut V)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let found = self.find(key, hash);
        let live = found.filter(|&i| {
            self.slots[i]
                .as_ref()
                .is_some_and(|s| now_ms - s.at_ms < self.window_ms)
        });
        let i = match live {
            Some(i) => i,
            None => self.place(key.to_owned(), hash, make(), now_ms, found),
        };
        let s = self.slots[i].as_mut().expect("an indexed slot is occupied");
        let h = Handle {
            ring: self.id,
            // `new` keeps the capacity below `u32::MAX`.
            slot: i as u32,
            hash: std::num::NonZeroU64::MIN | s.hash,
        };
        (h, &mut s.value)
    }

    /// The value `h` was given for, while that entry is still there and within the window.
    pub fn by_handle(&mut self, h: Handle, now_ms: i64) -> Option<&mut V> {
        if h.ring != self.id {
            return None;
        }
        let window = self.window_ms;
        self.slots
            .get_mut(h.slot as usize)?
            .as_mut()
            .filter(|s| s.hash | 1 == h.hash.get() && now_ms - s.at_ms < window)
            .map(|s| &mut s.value)
    }

    /// Remembers `key` → `value` from `now_ms`, replacing an older entry of the same key.
    pub fn insert(&mut self, key: K, value: V, now_ms: i64) {
        let hash = self.hasher.hash_one(&key);
        let stale = self.find(&key, hash);
        self.place(key, hash, value, now_ms, stale);
    }

    /// Puts `key` (hashed: `hash`) in the head slot and returns that slot. `stale` is the slot
    /// already holding `key`, which the caller has looked up (so a new key costs one probe of
    /// the index, not two); it is emptied first.
    fn place(&mut self, key: K, hash: u64, value: V, now_ms: i64, stale: Option<usize>) -> usize {
        if let Some(i) = stale {
            self.unindex(i, hash);
            self.slots[i] = None;
        }
        let i = self.head;
        let slot = Some(Slot {
            key,
            hash,
            at_ms: now_ms,
            value,
        });
        if i == self.slots.len() {
            self.slots.push(slot);
        } else {
            if let Some(old) = self.slots[i].take() {
                if self.unindex(i, old.hash) {
                    if now_ms - old.at_ms < self.window_ms {
                        self.evicted_live += 1;
                    } else {
                        self.expired += 1;
                    }
                }
            }
            self.slots[i] = slot;
        }
        self.index.insert(hash, i);
        self.head = (i + 1) % self.capacity;
        self.prefetch_ahead();
        i
    }

    /// Starts loading what the next inserts into a full ring will touch, so that those cache
    /// misses overlap the work in between rather than stall the insert: the slot after the
    /// head and, for the head slot (loaded one insert ago), the index entry its eviction
    /// removes and the heap blocks dropping its key and value frees ([`Prefetch`]). On a ring
    /// much larger than the cache all of these are misses: each insert evicts the oldest
    /// entry, untouched for a whole turn of the ring.
    fn prefetch_ahead(&self) {
        if let Some(next) = self.slots.get((self.head + 1) % self.capacity) {
            prefetch_bytes(
                std::ptr::from_ref(next).cast(),
                size_of::<Option<Slot<K, V>>>(),
            );
        }
        if let Some(Some(s)) = self.slots.get(self.head) {
            prefetch(&self.index.entries[self.index.home(s.hash)]);
            s.key.prefetch();
            s.value.prefetch();
        }
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
                    self.unindex(i, s.hash);
                    self.expired += 1;
                }
                Some(_) => break,
            }
        }
    }

    /// Entries held (some may be past the window until expired).
    pub fn len(&self) -> usize {
        self.index.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.index.len == 0
    }

    /// Capacity in entries.
    pub fn capacity(&self) -> usize {
        self.capacity
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

    // The tests' keys and values.
    impl Prefetch for &str {}
    impl Prefetch for i32 {}
    impl Prefetch for u32 {}

    /// A small deterministic random source for the model checks (xorshift64).
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

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
    fn grows_to_capacity_then_reuses_its_slots_oldest_first() {
        let mut r = DedupRing::new(3, 1000);
        r.insert("a", 1, 0);
        r.insert("b", 2, 0);
        assert_eq!((r.slots.len(), r.capacity()), (2, 3));
        fn order(r: &DedupRing<&'static str, i32>) -> Vec<&'static str> {
            r.iter(1).map(|(k, _, _)| *k).collect()
        }
        assert_eq!(order(&r), ["a", "b"]);
        r.insert("c", 3, 0);
        r.insert("d", 4, 0);
        assert_eq!(r.slots.len(), 3);
        assert_eq!(order(&r), ["b", "c", "d"]);
        assert_eq!(r.get(&"a", 1), None);
        r.expire(5000);
        assert!(r.is_empty() && order(&r).is_empty());
        r.insert("e", 5, 5000);
        assert_eq!(order(&r), ["e"]);
        assert_eq!(r.get(&"e", 5001), Some(&5));
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

    /// A handle finds its entry until the entry goes: replaced by a newer one of the same
    /// key, evicted when its slot is reused, or out of the window.
    #[test]
    fn a_handle_finds_its_entry_only_while_it_lasts() {
        let mut r: DedupRing<String, u32> = DedupRing::new(2, 100);
        let (a, v) = r.entry("a", 0, || 1);
        *v += 1;
        assert_eq!(r.by_handle(a, 10).copied(), Some(2));
        let (again, _) = r.entry("a", 10, || 9);
        assert_eq!(again, a, "a live entry keeps its handle");
        assert_eq!(r.by_handle(a, 100), None, "out of the window");
        r.insert("a".into(), 3, 20);
        assert_eq!(r.by_handle(a, 30), None, "replaced by a newer entry");
        let (b, _) = r.entry("b", 30, || 4);
        r.insert("c".into(), 5, 40);
        r.insert("d".into(), 6, 50);
        assert_eq!(r.by_handle(b, 60), None, "its slot was reused");
        // Two rings with the same history: the same slot, another ring.
        let (mut one, mut two) = (
            DedupRing::<String, u32>::new(2, 100),
            DedupRing::new(2, 100),
        );
        let (x, _) = one.entry("x", 0, || 1);
        let (y, _) = two.entry("x", 0, || 2);
        assert_eq!(two.by_handle(y, 0).copied(), Some(2));
        assert_eq!(two.by_handle(x, 0), None, "another ring's handle");
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

    /// Random inserts, get-or-inserts and expiries keep the index exactly the occupied
    /// slots: every occupied slot is found by its key, and nothing else is indexed.
    #[test]
    fn index_matches_the_occupied_slots() {
        let mut next = xorshift(0x9E37_79B9_u64);
        let mut r: DedupRing<String, u64> = DedupRing::new(32, 40);
        let mut now = 0;
        for step in 0..20_000 {
            now += (next() % 3) as i64;
            let key = format!("run-{}", next() % 64);
            match next() % 5 {
                0 => r.expire(now),
                1 | 2 => r.insert(key, step, now),
                _ => *r.get_or_insert_with(key.as_str(), now, || step) += 1,
            }
            let occupied = r.slots.iter().flatten().count();
            assert_eq!(r.len(), occupied, "step {step}");
            for (i, s) in r.slots.iter().enumerate() {
                if let Some(s) = s {
                    assert_eq!(r.find(s.key.as_str(), s.hash), Some(i), "step {step}");
                }
            }
        }
        assert!(r.evicted_live > 0 && r.expired > 0, "both paths exercised");
    }

    /// The index on its own, crowded: every hash starts its probe in the last three buckets
    /// of eight (runs wrap around the end), tags often equal; removals from the middle of a
    /// run must leave every other entry findable.
    #[test]
    fn index_probe_runs_survive_removals() {
        let mut next = xorshift(0xD1B5_4A32_u64);
        let mut ix = Index::with_capacity(4);
        assert_eq!(ix.entries.len(), 8);
        let mut model: Vec<(u64, usize)> = Vec::new();
        for step in 0..20_000 {
            let home = [5u64, 6, 7][(next() % 3) as usize];
            let hash = ((home | ((next() % 4) << 3)) << 32) | (next() & 0xffff_ffff);
            if model.len() < 4 && next().is_multiple_of(2) {
                let slot = (0..4).find(|s| model.iter().all(|(_, m)| m != s)).unwrap();
                ix.insert(hash, slot);
                model.push((hash, slot));
            } else if !model.is_empty() {
                let (h, slot) = model.swap_remove((next() % model.len() as u64) as usize);
                assert!(ix.remove(h, slot), "step {step}");
                assert!(!ix.remove(h, slot), "step {step}: removed twice");
            }
            assert_eq!(ix.len, model.len(), "step {step}");
            for &(h, slot) in &model {
                assert_eq!(ix.find(h, |s| s == slot), Some(slot), "step {step}");
            }
        }
    }

    /// A model check: the ring agrees with a plain map + window + capacity on random ops.
    #[test]
    fn agrees_with_model() {
        let mut next = xorshift(0x1234_5678_u64);
        let cap = 16;
        let window = 50;
        let mut ring = DedupRing::new(cap, window);
        let mut model: Vec<(u64, i64, u64)> = Vec::new(); // insertion order
        let mut now = 0i64;
        for _ in 0..5000 {
            now += (next() % 5) as i64;
            let key = next() % 40;
            if next().is_multiple_of(2) {
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
