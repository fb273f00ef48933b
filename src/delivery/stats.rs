//! Counters of one shard's delivery (merged over the shards on read: `queue.stats`).

use serde_json::{json, Value};

/// What happened to messages on this shard since start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Messages admitted.
    pub accepted: u64,
    /// Messages completed.
    pub completed: u64,
    /// Failed attempts.
    pub failed_attempts: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Dead letters redriven.
    pub redriven: u64,
    /// Refused with QUEUE_FULL (queue or lane) or OVERLOADED.
    pub rejected_full: u64,
    /// Duplicates answered from the dedup ring.
    pub dedup_hits: u64,
    /// Dead letters purged by age.
    pub purged: u64,
}

impl Stats {
    /// The counters as `queue.stats` members (the caller adds depth and the backend's).
    pub fn to_json(&self) -> Value {
        json!({"accepted": self.accepted, "completed": self.completed,
               "failedAttempts": self.failed_attempts, "retries": self.retries,
               "deadLettered": self.dead_lettered, "redriven": self.redriven,
               "rejectedFull": self.rejected_full, "dedupHits": self.dedup_hits,
               "purged": self.purged})
    }
}
