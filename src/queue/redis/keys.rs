//! The Redis backend's key names and the session → slot hash. Stable: every gateway of a
//! cluster (and every restart) must put a session in the same slot and name its keys alike.

/// Key names under one prefix, for `slots` slots.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// Number of slots.
    pub slots: u32,
}

impl Keys {
    /// Keys under `prefix` for `slots` slots (at least 1).
    pub fn new(prefix: &str, slots: u32) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            slots: slots.max(1),
        }
    }

    /// The slot of a session key: CRC-32 (IEEE) of its bytes mod `slots` — fixed by the data,
    /// not by this build (no per-process hash seed).
    pub fn slot(&self, session_key: &str) -> u32 {
        slot_of(session_key, self.slots)
    }

    /// The work stream of admissions not yet finished.
    pub fn work(&self, slot: u32) -> String {
        format!("{}:q:{slot}", self.prefix)
    }

    /// Hash runId → work stream entry id.
    pub fn ids(&self, slot: u32) -> String {
        format!("{}:ids:{slot}", self.prefix)
    }

    /// The dedup key of an admission (expires with the dedup window).
    pub fn dedup(&self, slot: u32, dedup_key: &str) -> String {
        format!("{}:dd:{slot}:{dedup_key}", self.prefix)
    }

    /// Hash runId → final answer (JSON), kept for the dedup window.
    pub fn results(&self, slot: u32) -> String {
        format!("{}:res:{slot}", self.prefix)
    }

    /// Sorted set runId → when its answer expires (ms).
    pub fn results_expiry(&self, slot: u32) -> String {
        format!("{}:rx:{slot}", self.prefix)
    }

    /// The dead-letter stream (trimmed by age).
    pub fn dead(&self, slot: u32) -> String {
        format!("{}:dead:{slot}", self.prefix)
    }

    /// Hash runId → dead-letter stream entry id.
    pub fn dead_ids(&self, slot: u32) -> String {
        format!("{}:dids:{slot}", self.prefix)
    }

    /// The slot's fencing epoch (absent = 0; slice 3 raises it when ownership moves).
    pub fn epoch(&self, slot: u32) -> String {
        format!("{}:epoch:{slot}", self.prefix)
    }

    /// The KEYS of the dead-letter and redrive scripts, in their order: the work stream, its
    /// run ids, the dead-letter stream, its run ids, the epoch.
    pub fn dead_letter_keys(&self, slot: u32) -> [String; 5] {
        [
            self.work(slot),
            self.ids(slot),
            self.dead(slot),
            self.dead_ids(slot),
            self.epoch(slot),
        ]
    }
}

/// The slot of a session key among `slots` (see [`Keys::slot`]): the queue's streams and
/// the cluster's leases (`crate::cluster`) both cut the sessions this way.
pub fn slot_of(session_key: &str, slots: u32) -> u32 {
    crc32fast::hash(session_key.as_bytes()) % slots.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_and_in_range() {
        let k = Keys::new("sg", 64);
        // CRC-32 of "agent:main:main" is fixed; a change here moves every session's data.
        assert_eq!(
            k.slot("agent:main:main"),
            crc32fast::hash(b"agent:main:main") % 64
        );
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert!((0..1000).all(|i| k.slot(&format!("s{i}")) < 64));
        assert_eq!(k.work(3), "sg:q:3");
        assert_eq!(k.dedup(3, "agent:x"), "sg:dd:3:agent:x");
        assert_eq!(Keys::new("p", 0).slot("x"), 0);
    }
}
