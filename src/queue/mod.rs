//! The delivery driver on a session's owner shard: it feeds the sans-IO core
//! ([`crate::delivery`]) with what arrives and applies the effects it returns — replies and
//! events to connections, records to the queue backend ([`backend`]), jobs into sessions'
//! lanes (`lane`), timers (ordering gaps, retry backoff) — with glommio and the clock.
//!
//! Guarantees kept here (the core decides; this module must not reorder its effects):
//! - The acknowledgement of a message goes out before its lane can emit anything for it, and
//!   with a durable backend only once its admission record is written ([`submit`]).
//! - One active run per session, in arrival order (and `sessionSeq` order when given); a
//!   retry keeps its place at the head of the lane, so later messages of the session wait.
//! - Whatever changes the core's count of jobs (`depth`) changes the gateway-wide count
//!   (`Shared::queued`, bounded by `queue.maxSize`) by as much
//!   ([`state::QueueState::with_core`]).

pub mod backend;
pub mod channel;
pub mod journal;
mod lane;
pub mod redis;
mod replay;
mod runs;
pub mod state;
mod submit;
pub mod takeover;

#[cfg(test)]
pub(crate) use lane::drive_lane;
pub use lane::enqueue;
pub use replay::{open_journal, open_redis, purge_dead, readmit, redrive, snapshot};
pub use runs::{ended_elsewhere, reply_final, run_directory, trace};
pub use submit::{submit, Journaled, Submit};
