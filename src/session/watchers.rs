//! Who sees a session's runs besides the caller.
//!
//! OpenClaw sends every run's `agent` and `chat` events to every operator connection with
//! `operator.read`, whoever started the run: a second TUI on the same session sees the first
//! one's runs (it keeps what matches its session). A broadcast per streamed word over every
//! connection of every shard would not hold at 10k+ connections, so shardgate keeps, per
//! session key, the connections that showed interest in that session — they read its history
//! (`chat.history`, what a TUI does when it opens a session) or sent to it (`chat.send`,
//! `agent`) — and sends each run event to those: O(watchers) per event. An operator that
//! never touched the session does not get its runs (OpenClaw's broadcast would reach it).
//!
//! Invariants a reader must keep:
//! - A key's watcher set lives on the key's owner shard ([`Watchers`]), next to its runs; the
//!   connection's own shard keeps which keys it watches ([`Watching`]), so that closing the
//!   connection removes it from each set (FIFO mesh order: the watch, carried by the request
//!   itself, always reaches the owner before that removal).
//! - Bounded: a connection watches at most [`MAX_KEYS_PER_CONN`] keys (a new one drops the
//!   oldest) and a key has at most [`MAX_WATCHERS_PER_KEY`] watchers (a new one drops the
//!   oldest), so neither a client nor a crowd can grow them without limit.
//! - Delivery holds no borrow of the tables while it sends (a send can close a connection,
//!   which edits them).
// Hot path: `send_open` runs for every event of every run: one lookup, no allocation besides
// the frame copy each extra watcher needs (and a list past four watchers), no lock.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use smallvec::SmallVec;

use crate::addr::ConnRef;

/// Keys one connection watches at most; watching another forgets the oldest.
pub const MAX_KEYS_PER_CONN: usize = 8;
/// Connections one key has at most; another one replaces the oldest.
pub const MAX_WATCHERS_PER_KEY: usize = 256;

type Map<V> = HashMap<String, V, ahash::RandomState>;

/// On a key's owner shard: the connections watching each key it owns.
#[derive(Debug, Default)]
pub struct Watchers {
    map: RefCell<Map<Vec<ConnRef>>>,
    /// Bumped by every change of a set, so that a run can keep the targets it looked up
    /// while nothing changed (see [`Watchers::generation`]).
    generation: Cell<u64>,
}

impl Watchers {
    /// Adds `conn` to `key`'s watchers (once).
    pub fn watch(&self, key: &str, conn: ConnRef) {
        let mut m = self.map.borrow_mut();
        // The common case (the caller already watches) allocates no key.
        let set = match m.get_mut(key) {
            Some(set) if set.contains(&conn) => return,
            Some(set) => set,
            None => m.entry(key.to_owned()).or_default(),
        };
        if set.len() == MAX_WATCHERS_PER_KEY {
            set.remove(0);
        }
        set.push(conn);
        self.bump();
    }

    /// Changes with every change of the table: targets read at one generation are still the
    /// targets while it has not moved.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    fn bump(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
    }

    /// Removes `conn` from `key`'s watchers; a key nobody watches is forgotten.
    pub fn unwatch(&self, key: &str, conn: ConnRef) {
        let mut m = self.map.borrow_mut();
        if let Some(set) = m.get_mut(key) {
            set.retain(|c| *c != conn);
            self.bump();
            if set.is_empty() {
                m.remove(key);
            }
        }
    }

    /// `key`'s watchers but `except`, copied out (one lookup; no heap for a few), so that no
    /// borrow is held while they are sent to (see the module doc).
    pub fn others_of(&self, key: &str, except: Option<ConnRef>) -> SmallVec<[ConnRef; 4]> {
        self.map.borrow().get(key).map_or_else(SmallVec::new, |s| {
            s.iter().copied().filter(|c| Some(*c) != except).collect()
        })
    }

    /// Whether anyone but `except` watches `key`.
    pub fn others(&self, key: &str, except: Option<ConnRef>) -> bool {
        self.map
            .borrow()
            .get(key)
            .is_some_and(|s| s.iter().any(|c| Some(*c) != except))
    }
}

/// On a connection's shard: the keys each of its connections watches, oldest first.
#[derive(Debug, Default)]
pub struct Watching {
    map: RefCell<HashMap<u64, Vec<Box<str>>, ahash::RandomState>>,
}

impl Watching {
    /// Notes that connection `conn` watches `key`; the key it stopped watching to make room,
    /// if any.
    pub fn note(&self, conn: u64, key: &str) -> Option<Box<str>> {
        let mut m = self.map.borrow_mut();
        let keys = m.entry(conn).or_default();
        if keys.iter().any(|k| &**k == key) {
            return None;
        }
        let dropped = (keys.len() == MAX_KEYS_PER_CONN).then(|| keys.remove(0));
        keys.push(key.into());
        dropped
    }

    /// Forgets connection `conn`; the keys it watched.
    pub fn forget(&self, conn: u64) -> Vec<Box<str>> {
        self.map.borrow_mut().remove(&conn).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shards::ShardId;

    fn c(id: u64) -> ConnRef {
        ConnRef::local(ShardId(0), id)
    }

    #[test]
    fn watchers_are_unique_bounded_and_forgotten_when_empty() {
        let w = Watchers::default();
        w.watch("k", c(1));
        w.watch("k", c(1));
        w.watch("k", c(2));
        assert_eq!(w.others_of("k", None).as_slice(), &[c(1), c(2)]);
        assert_eq!(w.others_of("k", Some(c(1))).as_slice(), &[c(2)]);
        assert!(w.others("k", Some(c(1))));
        w.unwatch("k", c(2));
        assert!(!w.others("k", Some(c(1))), "only the caller is left");
        w.unwatch("k", c(1));
        assert!(w.map.borrow().is_empty());
        for i in 0..=MAX_WATCHERS_PER_KEY as u64 {
            w.watch("k", c(i));
        }
        assert_eq!(w.map.borrow()["k"].len(), MAX_WATCHERS_PER_KEY);
        assert_eq!(w.others_of("k", None)[0], c(1), "the oldest made room");
    }

    #[test]
    fn the_generation_moves_with_every_change_and_only_then() {
        let w = Watchers::default();
        let g0 = w.generation();
        w.watch("k", c(1));
        let g1 = w.generation();
        assert_ne!(g1, g0, "a new watcher");
        w.watch("k", c(1));
        assert_eq!(w.generation(), g1, "watching again changes nothing");
        w.watch("other", c(1));
        let g2 = w.generation();
        assert_ne!(g2, g1, "a new key");
        w.unwatch("k", c(1));
        assert_ne!(w.generation(), g2, "a watcher gone");
    }

    #[test]
    fn a_connection_watches_a_bounded_number_of_keys() {
        let w = Watching::default();
        for i in 0..MAX_KEYS_PER_CONN {
            assert_eq!(w.note(7, &format!("k{i}")), None);
        }
        assert_eq!(w.note(7, "k0"), None, "already watched");
        assert_eq!(w.note(7, "new").as_deref(), Some("k0"));
        let keys = w.forget(7);
        assert_eq!(keys.len(), MAX_KEYS_PER_CONN);
        assert!(w.forget(7).is_empty());
    }
}
