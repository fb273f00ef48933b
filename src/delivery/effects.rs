//! What the delivery core asks its driver to do. The core changes only its own state; every
//! effect on the world (a frame to a connection, a backend write, a lane to run, a timer) is
//! returned as an [`Effect`], applied by the driver in order.
//!
//! Order matters and is kept: a message's acknowledgement is applied before its lane can emit
//! anything for it, and a duplicate's acknowledgement before its replayed final answer.

use serde_json::Value;
use smallvec::SmallVec;

use super::job::Job;
use super::record::Record;
use crate::addr::{ConnRef, ReplyTo};
use crate::delivery::trace::{Detail, Step};
use crate::protocol::error::GatewayError;
use crate::protocol::frame::JsonText;

/// A `res` to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `ok: true` with this payload.
    Ok(JsonText),
    /// `ok: false` with this error.
    Err(GatewayError),
    /// A run's final answer, or its replay: `ok` with the payload, or the error (with the
    /// payload, when there is one). Neither: nothing to send.
    Final {
        /// The payload.
        payload: Option<JsonText>,
        /// The error object.
        error: Option<Value>,
    },
}

/// One thing for the driver to do.
#[derive(Debug)]
pub enum Effect {
    /// Answer a request.
    Reply {
        /// Where.
        to: ReplyTo,
        /// What.
        answer: Answer,
    },
    /// Send an event (never droppable: the ends of runs).
    Event {
        /// The watching connection.
        to: ConnRef,
        /// `agent` or `chat`.
        name: &'static str,
        /// Its payload.
        payload: Value,
    },
    /// Record a pipeline stage of a run: `run` (`None`: the run of the call that returned
    /// this effect).
    Trace {
        /// Another run than the call's own.
        run: Option<String>,
        /// The stage.
        step: Step,
        /// Its detail.
        detail: Detail,
    },
    /// Append a record to the queue backend (without waiting for it to be durable). Boxed,
    /// like [`Effect::Enqueue`]'s job: both are rare, and every [`Effects`] is sized for its
    /// largest effect.
    Journal(Box<Record>),
    /// Put a job at the back of its session's lane, acknowledged already or never
    /// (replayed, redriven).
    Enqueue(Box<Job>),
    /// Wait `delay_ms`, then make the next attempt of the run.
    Retry {
        /// How long, ms.
        delay_ms: u64,
    },
    /// The run's directory entry (for `agent.wait`) changes status.
    RunStatus {
        /// `ok`, `error`, `timeout`, `aborted`.
        status: &'static str,
        /// When, ms.
        at: i64,
        /// The error's message.
        error: Option<String>,
    },
}

/// A call's effects, in order (inline: most calls have one to three).
pub type Effects = SmallVec<[Effect; 3]>;

/// What a submission came to.
#[derive(Debug)]
pub enum Submitted {
    /// Answered at once: a duplicate (joined or replayed) or a refusal.
    Answered(Effects),
    /// Admitted: the driver places the job in its session (created if need be), makes it
    /// durable when the backend is, then acknowledges it and puts it in the lane in
    /// `sessionSeq` order. Not an [`Effect`]: a job is large (264 B), and an [`Effects`]
    /// sized for one was 968 B, moved on every call (+600 instructions per request).
    Admitted(Admission),
}

/// An admitted message, for the driver to place.
#[derive(Debug)]
pub struct Admission {
    /// The job.
    pub job: Job,
    /// Who gets the acknowledgement.
    pub reply: ReplyTo,
    /// Its `sessionSeq`.
    pub seq: Option<u64>,
}

/// The delay of a [`Effect::Retry`] among `effects`, if any.
pub fn retry_delay(effects: &[Effect]) -> Option<u64> {
    effects.iter().find_map(|e| match e {
        Effect::Retry { delay_ms } => Some(*delay_ms),
        _ => None,
    })
}

/// A trace effect of the call's own run.
pub(crate) fn trace(step: Step, detail: Detail) -> Effect {
    Effect::Trace {
        run: None,
        step,
        detail,
    }
}
