//! Idempotency: what the dedup ring remembers of a message (`method:idempotencyKey`) for the
//! dedup window, and how a duplicate is answered from it.
//!
//! Invariant: inside the window a message has at most one effect. A duplicate of a message
//! still running joins it (an `agent` duplicate gets the same final answer when it comes); a
//! duplicate of a finished one gets the finished answer replayed, failures included.

use serde_json::{json, Value};

use super::effects::{trace, Answer, Effect, Effects};
use super::job::{JobKind, Submission};
use super::wire::ack_for;
use crate::addr::ReplyTo;
use crate::delivery::trace::{Detail, Step};
use crate::protocol::frame::JsonText;

/// What the ring keeps of a message.
#[derive(Debug, Clone)]
pub enum Cached {
    /// Still running: duplicates join it.
    InFlight {
        /// Duplicates of an `agent` call waiting for its final answer.
        joiners: Vec<ReplyTo>,
    },
    /// Done: duplicates get this final payload (or error) again.
    Done {
        /// `res` ok payload of the final answer, serialized once.
        payload: Option<JsonText>,
        /// `error` object of a failed final answer.
        error: Option<Value>,
    },
}

impl Cached {
    /// A message just admitted (or replayed): running.
    pub fn in_flight() -> Cached {
        Cached::InFlight {
            joiners: Vec::new(),
        }
    }

    /// Marks the message done with its final answer; returns the duplicates that joined it.
    /// A message already done keeps its first answer.
    pub fn finish(&mut self, payload: &JsonText, error: Option<&Value>) -> Vec<ReplyTo> {
        match self {
            Cached::InFlight { joiners } => {
                let joiners = std::mem::take(joiners);
                *self = Cached::Done {
                    payload: Some(payload.clone()),
                    error: error.cloned(),
                };
                joiners
            }
            Cached::Done { .. } => Vec::new(),
        }
    }
}

impl shards::dedup::Prefetch for Cached {
    fn prefetch(&self) {
        match self {
            Cached::InFlight { joiners } => joiners.prefetch(),
            Cached::Done { payload, .. } => payload.prefetch(),
        }
    }
}

/// The ring of one shard: `method:idempotencyKey` → [`Cached`].
pub type Ring = shards::dedup::DedupRing<String, Cached>;

/// Answers `s`, a duplicate of the message `c` remembers, at `now`.
pub(crate) fn answer(c: &mut Cached, s: Submission<'_>, now: i64) -> Effects {
    let state = match c {
        Cached::InFlight { .. } => "in_flight",
        Cached::Done { .. } => "done",
    };
    let mut out = Effects::new();
    out.push(trace(
        Step::Deduped,
        Detail::json(json!({ "state": state })),
    ));
    let dup_ack = |s: &Submission<'_>| {
        let mut ack = ack_for(&s.kind, &s.idem, s.key, now);
        ack.duplicate = true;
        Answer::Ok(JsonText::of(&ack))
    };
    match (c, &s.kind) {
        (Cached::InFlight { joiners }, JobKind::Agent) => {
            joiners.push(s.reply.clone());
            let answer = dup_ack(&s);
            out.push(Effect::Reply {
                to: s.reply,
                answer,
            });
        }
        (Cached::InFlight { .. }, JobKind::Chat) => {
            let answer = Answer::Ok(JsonText::of(
                &json!({"runId": s.idem, "status": "in_flight"}),
            ));
            out.push(Effect::Reply {
                to: s.reply,
                answer,
            });
        }
        (Cached::InFlight { .. }, JobKind::Send { .. }) => {
            let answer = dup_ack(&s);
            out.push(Effect::Reply {
                to: s.reply,
                answer,
            });
        }
        (Cached::Done { payload, error }, JobKind::Agent) => {
            let answer = dup_ack(&s);
            out.push(Effect::Reply {
                to: s.reply.clone(),
                answer,
            });
            out.push(Effect::Reply {
                to: s.reply,
                answer: Answer::Final {
                    payload: payload.clone(),
                    error: error.clone(),
                },
            });
        }
        (Cached::Done { payload, error }, _) => {
            // `chat.send` and `send` answer once: the finished answer marked as a duplicate.
            let mut ack = match payload {
                Some(p) => p.to_value(),
                None => json!(ack_for(&s.kind, &s.idem, s.key, now)),
            };
            if let Value::Object(m) = &mut ack {
                if error.is_none() && !matches!(s.kind, JobKind::Send { .. }) {
                    m.insert("status".into(), json!("ok"));
                }
                m.insert("duplicate".into(), json!(true));
            }
            out.push(Effect::Reply {
                to: s.reply,
                answer: Answer::Ok(JsonText::of(&ack)),
            });
        }
    }
    out
}
