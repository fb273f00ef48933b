//! A message on its way through delivery: what the caller submitted ([`Submission`]) and the
//! job it becomes once admitted ([`Job`]).
//!
//! Plain data: a job is moved from admission to its session's lane, through its attempts, to
//! completion or a dead letter, and written to (and read back from) a queue backend.

use serde_json::Value;
use shards::dedup::Handle;

use crate::addr::{ConnRef, ReplyTo};
use crate::protocol::SessionKey;

/// What a job does when dispatched.
#[derive(Debug, Clone, PartialEq)]
pub enum JobKind {
    /// `agent`: `accepted`, events, then the final `res`.
    Agent,
    /// `chat.send` / `sessions.send`: `started`, then `chat` events.
    Chat,
    /// `send`: deliver `message` to `to` through `channel`.
    Send {
        /// Channel name.
        channel: String,
        /// Recipient.
        to: String,
    },
}

impl JobKind {
    /// The method name used in dedup keys and traces.
    pub fn method(&self) -> &'static str {
        match self {
            JobKind::Agent => "agent",
            JobKind::Chat => "chat.send",
            JobKind::Send { .. } => "send",
        }
    }
}

/// A message admitted into a session's lane.
#[derive(Debug, Clone)]
pub struct Job {
    /// `runId` = `messageId` = the idempotencyKey.
    pub run_id: String,
    /// The session.
    pub session_key: String,
    /// The user message.
    pub message: String,
    /// What to do with it.
    pub kind: JobKind,
    /// Where the final `res` goes (agent runs), when the caller is still there.
    pub reply: Option<ReplyTo>,
    /// Who receives the run's events.
    pub watcher: Option<ConnRef>,
    /// Dedup key `method:idempotencyKey`.
    pub dedup_key: String,
    /// When it was admitted, ms.
    pub accepted_at: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// One entry per failed attempt: `{attempt, at, error}`.
    pub errors: Vec<Value>,
    /// Where its run entry (trace, and run directory record when this shard owns the run id)
    /// is, once made on this shard: each later stage finds it without hashing the run id (a
    /// handle names its ring, so one that came from another shard finds nothing, and the id is
    /// looked up instead).
    pub found: Option<Handle>,
}

impl Job {
    /// A job read back from a backend or redriven: no caller waits for it, no attempt made.
    pub fn detached(self) -> Job {
        Job {
            attempts: 0,
            errors: Vec::new(),
            reply: None,
            watcher: None,
            ..self
        }
    }
}

/// A message as its caller submitted it, on the session's owner shard.
#[derive(Debug)]
pub struct Submission<'a> {
    /// Target session.
    pub key: &'a SessionKey,
    /// What to do.
    pub kind: JobKind,
    /// The message.
    pub message: String,
    /// idempotencyKey (becomes the runId).
    pub idem: String,
    /// Where the caller's answers go.
    pub reply: ReplyTo,
    /// The client's per-session sequence number (`sessionSeq`), when it orders its messages.
    pub seq: Option<u64>,
    /// What admission weighs it against.
    pub load: super::admission::Load,
}

/// The dedup key of a submission: `method:idempotencyKey`.
pub fn dedup_key(method: &str, idem: &str) -> String {
    let mut k = String::with_capacity(method.len() + 1 + idem.len());
    for part in [method, ":", idem] {
        k.push_str(part);
    }
    k
}
