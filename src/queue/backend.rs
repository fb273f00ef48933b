//! Where admitted messages are kept so that they survive a restart: the queue backend.
//!
//! The delivery core says what to keep as [`Record`]s ([`crate::delivery::Effect::Journal`]);
//! a backend stores them in order and, on start, reads them back for the core to restore
//! ([`Fold`](crate::delivery::record::Fold)). The journal ([`super::journal`], segment files on this shard) implements it
//! today; a Redis backend (a stream per shard) is the next. Without a backend (`memory`) the
//! queue keeps nothing and acknowledges at once.
//!
//! Contract: an admission is acknowledged only after [`QueueBackend::append`] has resolved
//! `Ok` (the record is durable); records appended from one shard are read back in the order
//! they were appended; replaying a record twice changes nothing ([`Fold::apply`](crate::delivery::record::Fold::apply)).

use std::future::Future;

use serde_json::Value;

use super::journal::Journal;
use crate::delivery::record::Record;

/// A durable store of one shard's delivery records.
pub trait QueueBackend {
    /// Appends `r` and resolves once it is durable (admissions wait for this).
    fn append(&self, r: &Record) -> impl Future<Output = Result<(), String>>;

    /// Appends `r` without waiting (outcomes, redrives, purges: replay tolerates losing the
    /// last ones, which only makes a finished message run again).
    fn append_nowait(&self, r: &Record);

    /// Gives the backend the source of the live state, for compaction.
    fn set_snapshot(&self, snapshot: Box<dyn Fn() -> Vec<Record>>);

    /// Counters for `queue.stats`.
    fn stats_json(&self) -> Value;
}

impl QueueBackend for Journal {
    fn append(&self, r: &Record) -> impl Future<Output = Result<(), String>> {
        Journal::append(self, r)
    }

    fn append_nowait(&self, r: &Record) {
        Journal::append_nowait(self, r)
    }

    fn set_snapshot(&self, snapshot: Box<dyn Fn() -> Vec<Record>>) {
        Journal::set_snapshot(self, snapshot)
    }

    fn stats_json(&self) -> Value {
        Journal::stats_json(self)
    }
}
