//! Pipeline traces (`gateway.trace`): the stages a message passed on one shard, remembered in
//! the shard's trace ring for the dedup window.
//!
//! Kept compact and off the heap: every message writes one, and the ring holds 65 536 of them
//! per shard by default, so an entry is evicted (and its memory reused) long after it was
//! written, when none of it is in the cache any more. A trace's stages therefore live in its
//! ring slot — written in ring order, which the prefetcher follows — instead of in a heap
//! block of its own, and the session key of `queued` is shared with the session.

use std::rc::Rc;

use serde_json::{json, Value};
use smallvec::SmallVec;

/// Stages kept per message on one shard; later ones are dropped (a message retried that often
/// has its attempts in its dead letter).
const MAX_STAGES: usize = 64;

/// A pipeline stage of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Its caller's shard took the request.
    Received,
    /// A duplicate, answered from the dedup ring.
    Deduped,
    /// Refused at admission.
    Rejected,
    /// Admitted into its session's lane.
    Queued,
    /// Its admission record is durable.
    Journaled,
    /// Re-admitted from the journal.
    Replayed,
    /// Arrived after its `sessionSeq` slot was skipped.
    Late,
    /// Waiting for an earlier `sessionSeq`.
    Held,
    /// An attempt started.
    Dispatched,
    /// An attempt failed.
    AttemptFailed,
    /// A retry is waiting for its backoff.
    RetryScheduled,
    /// Finished.
    Completed,
    /// Stopped by `agents.runTimeoutMs`.
    TimedOut,
    /// Stopped by `chat.abort`.
    Aborted,
    /// Out of attempts, kept as a dead letter.
    DeadLettered,
    /// Out of attempts, dead letters off.
    Failed,
    /// A dead letter sent round again.
    Redriven,
}

impl Step {
    /// The stage's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Received => "received",
            Step::Deduped => "deduped",
            Step::Rejected => "rejected",
            Step::Queued => "queued",
            Step::Journaled => "journaled",
            Step::Replayed => "replayed",
            Step::Late => "late",
            Step::Held => "held",
            Step::Dispatched => "dispatched",
            Step::AttemptFailed => "attempt_failed",
            Step::RetryScheduled => "retry_scheduled",
            Step::Completed => "completed",
            Step::TimedOut => "timed_out",
            Step::Aborted => "aborted",
            Step::DeadLettered => "dead_lettered",
            Step::Failed => "failed",
            Step::Redriven => "redriven",
        }
    }
}

/// One stage as recorded (rendered as JSON only by `gateway.trace`).
#[derive(Debug, Clone)]
pub struct Stage {
    /// When, ms.
    pub ts: i64,
    /// Stage-specific detail.
    pub detail: Detail,
    /// Which stage.
    pub step: Step,
    /// The shard that recorded it.
    pub shard: u32,
}

/// The detail of a [`Stage`]: typed for the stages every message passes, JSON (boxed, to keep
/// every stage small) for the rare ones.
#[derive(Debug, Clone)]
pub enum Detail {
    /// Nothing more to say.
    Empty,
    /// `received`: the method, and where and when the caller's shard took the request.
    Received {
        /// Method name.
        method: &'static str,
        /// The caller's shard.
        shard: u32,
        /// When it was received, ms.
        at: i64,
    },
    /// `queued`: the session and how many jobs were ahead in its lane.
    Queued {
        /// Session key (the session's own, shared).
        session: Rc<str>,
        /// Jobs ahead.
        lane: u32,
    },
    /// `dispatched`: the attempt number.
    Attempt(u32),
    /// `completed`: attempts made.
    Attempts(u32),
    /// Anything else.
    Json(Box<Value>),
}

impl Detail {
    /// A JSON detail.
    pub fn json(v: Value) -> Detail {
        Detail::Json(Box::new(v))
    }
}

impl Stage {
    /// The `gateway.trace` row.
    pub fn to_json(&self) -> Value {
        let detail = match &self.detail {
            Detail::Empty => json!({}),
            Detail::Received { method, shard, at } => {
                json!({"method": method, "shard": shard, "at": at})
            }
            Detail::Queued { session, lane } => {
                json!({"sessionKey": &**session, "lane": lane})
            }
            Detail::Attempt(a) => json!({"attempt": a}),
            Detail::Attempts(a) => json!({"attempts": a}),
            Detail::Json(v) => (**v).clone(),
        };
        json!({"stage": self.step.as_str(), "ts": self.ts, "shard": self.shard, "detail": detail})
    }
}

/// A message's stages on one shard, oldest first: the four of a run that succeeds at its
/// first attempt (`received`, `queued`, `dispatched`, `completed`) in place, more on the heap.
#[derive(Debug, Default)]
pub struct Trace(SmallVec<[Stage; 4]>);

impl Trace {
    /// Appends a stage (up to [`MAX_STAGES`]).
    pub fn push(&mut self, stage: Stage) {
        if self.0.len() < MAX_STAGES {
            self.0.push(stage);
        }
    }

    /// The stages, oldest first.
    pub fn stages(&self) -> &[Stage] {
        &self.0
    }
}

/// Only a trace that outgrew its place has a heap block to prefetch before it is dropped.
impl shards::dedup::Prefetch for Trace {
    fn prefetch(&self) {
        if self.0.spilled() {
            shards::dedup::prefetch_bytes(self.0.as_ptr().cast(), size_of::<Stage>());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(step: Step, ts: i64, detail: Detail) -> Stage {
        Stage {
            ts,
            detail,
            step,
            shard: 1,
        }
    }

    #[test]
    fn stages_render_as_gateway_trace_rows() {
        let q = stage(
            Step::Queued,
            5,
            Detail::Queued {
                session: "agent:main:s".into(),
                lane: 2,
            },
        );
        assert_eq!(
            q.to_json(),
            json!({"stage": "queued", "ts": 5, "shard": 1,
                   "detail": {"sessionKey": "agent:main:s", "lane": 2}})
        );
        let r = stage(
            Step::Received,
            4,
            Detail::Received {
                method: "agent",
                shard: 0,
                at: 3,
            },
        );
        assert_eq!(
            r.to_json()["detail"],
            json!({"method": "agent", "shard": 0, "at": 3})
        );
        let j = stage(
            Step::RetryScheduled,
            6,
            Detail::json(json!({"delayMs": 10})),
        );
        assert_eq!(j.to_json()["stage"], "retry_scheduled");
        assert_eq!(j.to_json()["detail"], json!({"delayMs": 10}));
    }

    #[test]
    fn a_trace_keeps_its_first_stages_in_order_and_stops_at_the_cap() {
        let mut t = Trace::default();
        for i in 0..MAX_STAGES as i64 + 10 {
            t.push(stage(Step::Dispatched, i, Detail::Attempt(i as u32)));
        }
        assert_eq!(t.stages().len(), MAX_STAGES);
        assert!(t.stages().iter().enumerate().all(|(i, s)| s.ts == i as i64));
    }

    #[test]
    fn a_first_time_success_stays_in_place() {
        assert!(size_of::<Stage>() <= 48, "{}", size_of::<Stage>());
        let mut t = Trace::default();
        for step in [
            Step::Received,
            Step::Queued,
            Step::Dispatched,
            Step::Completed,
        ] {
            t.push(stage(step, 0, Detail::Empty));
        }
        assert!(!t.0.spilled());
    }
}
