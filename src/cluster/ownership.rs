//! Who owns each slot, as this member knows it: read on every request by every shard.
//!
//! One `AtomicU64` per slot packs the state, the owner's member index and the fencing epoch,
//! so [`Ownership::owner`] is one relaxed load — no lock on the request path. Member names are
//! interned append-only: an index, once given, always names the same member (never reused),
//! so a caller may cache `MemberIdx → name`.
//!
//! Only the cluster driver writes (one thread, shard 0); any thread reads. A reader may see a
//! state one tick old: the view is advisory, the fencing epoch in Redis is what protects the
//! data (a write with a stale epoch is refused by the queue's scripts).
//!
//! The rarely read parts (live members, last error) sit behind a mutex touched once per tick
//! and per status request, never per request.
#![expect(
    clippy::disallowed_types,
    reason = "status fields written once per tick and read by status/metrics only"
)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Most distinct member ids one process can name (append-only; ids are stable per member,
/// so this bounds restarts under new ids, not restarts).
pub const MAX_MEMBERS: usize = 1024;

/// A member's index in [`Ownership::member_name`]; stable for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberIdx(pub u16);

/// Who owns a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotOwner {
    /// This member holds the lease, with this fencing epoch (every queue write of the slot
    /// passes it; a newer owner's epoch fences this one).
    Mine {
        /// The slot's fencing epoch under this member's lease.
        epoch: u64,
    },
    /// Another member holds the lease (it may have died and its lease not yet expired).
    Member(MemberIdx),
    /// This member holds the lease but is draining the slot before handing it over: finish
    /// what is running (with this epoch), accept nothing new.
    Releasing {
        /// The epoch to complete in-flight work with.
        epoch: u64,
    },
    /// Nobody holds it, or not known yet (before the first tick, while Redis is down).
    Unknown,
}

const TAG_SHIFT: u32 = 62;
const IDX_SHIFT: u32 = 48;
const EPOCH_MASK: u64 = (1 << IDX_SHIFT) - 1;
const IDX_MASK: u64 = (1 << (TAG_SHIFT - IDX_SHIFT)) - 1;
const UNKNOWN: u64 = 0;
const MINE: u64 = 1;
const MEMBER: u64 = 2;
const RELEASING: u64 = 3;

fn pack(o: SlotOwner) -> u64 {
    match o {
        SlotOwner::Unknown => UNKNOWN << TAG_SHIFT,
        SlotOwner::Mine { epoch } => (MINE << TAG_SHIFT) | (epoch & EPOCH_MASK),
        SlotOwner::Releasing { epoch } => (RELEASING << TAG_SHIFT) | (epoch & EPOCH_MASK),
        SlotOwner::Member(MemberIdx(i)) => {
            (MEMBER << TAG_SHIFT) | ((u64::from(i) & IDX_MASK) << IDX_SHIFT)
        }
    }
}

fn unpack(v: u64) -> SlotOwner {
    let epoch = v & EPOCH_MASK;
    match v >> TAG_SHIFT {
        MINE => SlotOwner::Mine { epoch },
        RELEASING => SlotOwner::Releasing { epoch },
        MEMBER => SlotOwner::Member(MemberIdx(((v >> IDX_SHIFT) & IDX_MASK) as u16)),
        _ => SlotOwner::Unknown,
    }
}

/// What status and metrics show besides the slots (written by the driver once per tick).
#[derive(Debug, Default, Clone)]
pub(super) struct Health {
    /// Live members by heartbeat, as of the last successful tick (sorted).
    pub(super) live: Vec<String>,
    /// When the last successful renew round started.
    pub(super) last_renew: Option<Instant>,
    /// Round trip of the last renew/heartbeat round, µs.
    pub(super) rtt_us: u64,
    /// The last Redis error (never holds a secret: errors name addresses, not passwords).
    pub(super) last_error: Option<String>,
    /// True once the driver has left the cluster.
    pub(super) left: bool,
}

/// The slot → owner view of this process (see the module docs). `Send + Sync`; share it as
/// an `Arc`.
#[derive(Debug)]
pub struct Ownership {
    me: String,
    expected: Vec<String>,
    slots: Box<[AtomicU64]>,
    names: Box<[OnceLock<String>]>,
    named: AtomicUsize,
    pub(super) renew_failures: AtomicU64,
    pub(super) lost_total: AtomicU64,
    pub(super) gained_total: AtomicU64,
    pub(super) redis_errors: AtomicU64,
    pub(super) health: Mutex<Health>,
}

impl Ownership {
    /// A view for member `me` over `slots` slots, every slot `Unknown`; `expected` are the
    /// configured `gateway.clustering.nodes` (reported, not enforced).
    pub fn new(me: impl Into<String>, slots: u32, expected: Vec<String>) -> Ownership {
        Ownership {
            me: me.into(),
            expected,
            slots: (0..slots.max(1)).map(|_| AtomicU64::new(0)).collect(),
            names: (0..MAX_MEMBERS).map(|_| OnceLock::new()).collect(),
            named: AtomicUsize::new(0),
            renew_failures: AtomicU64::new(0),
            lost_total: AtomicU64::new(0),
            gained_total: AtomicU64::new(0),
            redis_errors: AtomicU64::new(0),
            health: Mutex::new(Health::default()),
        }
    }

    /// Who owns `slot` (one atomic load). A slot out of range is `Unknown`.
    pub fn owner(&self, slot: u32) -> SlotOwner {
        self.slots
            .get(slot as usize)
            .map_or(SlotOwner::Unknown, |a| unpack(a.load(Ordering::Acquire)))
    }

    /// Number of slots.
    pub fn slots(&self) -> u32 {
        self.slots.len() as u32
    }

    /// This member's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The configured expected members (`gateway.clustering.nodes`).
    pub fn expected(&self) -> &[String] {
        &self.expected
    }

    /// The name of member `idx` (rare: cache it; an index never changes meaning).
    pub fn member_name(&self, idx: MemberIdx) -> Option<String> {
        self.names.get(idx.0 as usize)?.get().cloned()
    }

    /// Live members (by heartbeat) as of the last successful tick, sorted; empty before
    /// the first one or after leaving.
    pub fn live_members(&self) -> Vec<String> {
        self.health().live
    }

    /// Slots this member holds (`Mine`) with their epochs.
    pub fn owned(&self) -> Vec<(u32, u64)> {
        (0..self.slots())
            .filter_map(|s| match self.owner(s) {
                SlotOwner::Mine { epoch } => Some((s, epoch)),
                _ => None,
            })
            .collect()
    }

    /// When the last successful renew round started (`None`: none yet, or nothing held).
    pub fn last_renew(&self) -> Option<Instant> {
        self.health().last_renew
    }

    pub(super) fn health(&self) -> Health {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }

    pub(super) fn with_health(&self, f: impl FnOnce(&mut Health)) {
        if let Ok(mut h) = self.health.lock() {
            f(&mut h);
        }
    }

    /// Sets `slot`'s owner (the driver only).
    pub(super) fn set(&self, slot: u32, o: SlotOwner) {
        if let Some(a) = self.slots.get(slot as usize) {
            a.store(pack(o), Ordering::Release);
        }
    }

    /// The index of member `name`, if the driver has seen it (any thread may ask).
    pub fn index_of(&self, name: &str) -> Option<MemberIdx> {
        let n = self.named.load(Ordering::Acquire);
        (0..n)
            .find(|&i| self.names[i].get().is_some_and(|m| m == name))
            .map(|i| MemberIdx(i as u16))
    }

    /// The index of member `name`, interned on first sight (the driver only: one writer, so
    /// a name is never given two indexes). `None` once [`MAX_MEMBERS`] are named.
    pub(super) fn intern(&self, name: &str) -> Option<MemberIdx> {
        let n = self.named.load(Ordering::Acquire);
        if let Some(i) = (0..n).find(|&i| self.names[i].get().is_some_and(|m| m == name)) {
            return Some(MemberIdx(i as u16));
        }
        if n >= MAX_MEMBERS {
            return None;
        }
        let _ = self.names[n].set(name.to_string());
        self.named.store(n + 1, Ordering::Release);
        Some(MemberIdx(n as u16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_the_packed_word() {
        for o in [
            SlotOwner::Unknown,
            SlotOwner::Mine { epoch: 1 },
            SlotOwner::Mine { epoch: EPOCH_MASK },
            SlotOwner::Releasing { epoch: 42 },
            SlotOwner::Member(MemberIdx(0)),
            SlotOwner::Member(MemberIdx(MAX_MEMBERS as u16 - 1)),
        ] {
            assert_eq!(unpack(pack(o)), o);
        }
    }

    #[test]
    fn names_are_interned_once_and_slots_default_unknown() {
        let o = Ownership::new("a:1", 4, vec![]);
        assert_eq!(o.owner(0), SlotOwner::Unknown);
        assert_eq!(o.owner(99), SlotOwner::Unknown);
        let b = o.intern("b:1").unwrap();
        let c = o.intern("c:1").unwrap();
        assert_ne!(b, c);
        assert_eq!(o.intern("b:1"), Some(b));
        assert_eq!(o.member_name(c).as_deref(), Some("c:1"));
        assert_eq!(o.member_name(MemberIdx(500)), None);
        o.set(2, SlotOwner::Member(c));
        o.set(3, SlotOwner::Mine { epoch: 9 });
        assert_eq!(o.owner(2), SlotOwner::Member(c));
        assert_eq!(o.owned(), vec![(3, 9)]);
    }

    #[test]
    fn the_view_is_shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Ownership>();
    }
}
