//! Where admitted messages are kept so that they survive a restart: the queue backend.
//!
//! The delivery core says what to keep as [`Record`]s ([`crate::delivery::Effect::Journal`]);
//! a backend stores them in order and, on start, reads them back for the core to restore
//! ([`Fold`](crate::delivery::record::Fold)). The journal ([`super::journal`], segment files
//! on this shard) and Redis ([`super::redis`], a stream per slot) implement it ([`Durable`]).
//! Without a backend (`memory`) the queue keeps nothing and acknowledges at once.
//!
//! Contract: an admission is acknowledged only after [`QueueBackend::append`] has resolved
//! `Ok` (the record is durable); records appended from one shard are read back in the order
//! they were appended; replaying a record twice changes nothing ([`Fold::apply`](crate::delivery::record::Fold::apply)).

use std::future::Future;
use std::rc::Rc;

use serde_json::Value;

use super::journal::Journal;
use super::redis::RedisQueue;
use crate::delivery::record::Record;

/// Why an admission could not be made durable.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendError {
    /// What went wrong (for the log; the wire gets a generic message).
    pub why: String,
    /// The store is unreachable for now (Redis down): the client is told to retry
    /// (`UNAVAILABLE`, `retryAfterMs`) and the dedup entry is dropped so the retry is taken.
    pub transient: bool,
}

impl AppendError {
    /// A failure worth retrying soon.
    pub fn transient(why: &str) -> AppendError {
        AppendError {
            why: why.to_string(),
            transient: true,
        }
    }

    /// A failure of the store itself (a disk error).
    pub fn failed(why: &str) -> AppendError {
        AppendError {
            why: why.to_string(),
            transient: false,
        }
    }
}

/// A durable store of one shard's delivery records.
pub trait QueueBackend {
    /// Appends `r` and resolves once it is durable (admissions wait for this).
    fn append(&self, r: &Record) -> impl Future<Output = Result<(), AppendError>>;

    /// Appends `r` without waiting (outcomes, redrives, purges: replay tolerates losing the
    /// last ones, which only makes a finished message run again).
    fn append_nowait(&self, r: &Record);

    /// Gives the backend the source of the live state, for compaction.
    fn set_snapshot(&self, snapshot: Box<dyn Fn() -> Vec<Record>>);

    /// Counters for `queue.stats`.
    fn stats_json(&self) -> Value;
}

impl QueueBackend for Journal {
    async fn append(&self, r: &Record) -> Result<(), AppendError> {
        Journal::append(self, r)
            .await
            .map_err(|e| AppendError::failed(&e))
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

/// The durable backend a shard was configured with.
#[derive(Debug, Clone)]
pub enum Durable {
    /// `queue.backend: "journal"`.
    Journal(Rc<Journal>),
    /// `queue.backend: "redis"`.
    Redis(Rc<RedisQueue>),
}

impl QueueBackend for Durable {
    async fn append(&self, r: &Record) -> Result<(), AppendError> {
        match self {
            Durable::Journal(j) => QueueBackend::append(&**j, r).await,
            Durable::Redis(q) => q
                .admit(r)
                .await
                .map_err(|e| AppendError::transient(e.as_str())),
        }
    }

    fn append_nowait(&self, r: &Record) {
        match self {
            Durable::Journal(j) => j.append_nowait(r),
            Durable::Redis(q) => {
                q.write(r);
            }
        }
    }

    fn set_snapshot(&self, snapshot: Box<dyn Fn() -> Vec<Record>>) {
        match self {
            Durable::Journal(j) => j.set_snapshot(snapshot),
            // Redis needs no compaction: finished entries leave their stream.
            Durable::Redis(_) => {}
        }
    }

    fn stats_json(&self) -> Value {
        match self {
            Durable::Journal(j) => j.stats_json(),
            Durable::Redis(q) => q.stats_json(),
        }
    }
}
