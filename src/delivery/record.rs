//! What a queue backend stores: one [`Record`] per change of a message's state (admitted,
//! done, dead-lettered, redriven, purged), and the [`Fold`] that replays records into the live
//! state on start. Backend-neutral: the journal writes them to segment files, a Redis backend
//! would write the same records to a stream.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One journal record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum Record {
    /// A message was admitted.
    Acc {
        /// runId.
        id: String,
        /// Dedup key.
        k: String,
        /// Session key.
        s: String,
        /// Message.
        m: String,
        /// `agent` | `chat.send` | `send`.
        method: String,
        /// For `send`: channel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ch: Option<String>,
        /// For `send`: recipient.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// Accepted at, ms.
        at: i64,
    },
    /// A message finished (its final answer).
    Done {
        /// runId.
        id: String,
        /// Dedup key.
        k: String,
        /// Final payload.
        #[serde(default)]
        p: Option<Value>,
        /// Final error.
        #[serde(default)]
        e: Option<Value>,
        /// When, ms.
        at: i64,
    },
    /// A message was dead-lettered.
    Dead {
        /// runId.
        id: String,
        /// Dead letter id.
        dl: String,
        /// Attempts made.
        attempts: u32,
        /// Error history.
        errors: Vec<Value>,
        /// When, ms.
        at: i64,
    },
    /// A dead letter was re-queued.
    Redrive {
        /// runId.
        id: String,
        /// When, ms.
        at: i64,
    },
    /// A dead letter was purged by age.
    Purge {
        /// runId.
        id: String,
    },
}

/// Where a message stands after replay.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Admitted, not finished: run it again.
    Pending,
    /// Finished with this answer.
    Done {
        /// Payload.
        p: Option<Value>,
        /// Error.
        e: Option<Value>,
        /// When.
        at: i64,
    },
    /// Dead-lettered.
    Dead {
        /// Dead letter id.
        dl: String,
        /// Attempts.
        attempts: u32,
        /// Errors.
        errors: Vec<Value>,
        /// When.
        at: i64,
    },
}

/// One message's replayed state.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The admission record (absent when only its outcome survived compaction).
    pub acc: Option<Record>,
    /// Dedup key.
    pub k: String,
    /// State.
    pub state: State,
}

/// Folds records, in order, into per-message state. Idempotent: replaying a record twice, or
/// an admission after its outcome, changes nothing.
#[derive(Debug, Default)]
pub struct Fold {
    /// By runId, in first-seen order.
    pub entries: HashMap<String, Entry>,
    /// First-seen order of runIds (replay order of pending work).
    pub order: Vec<String>,
    /// Records read.
    pub records: u64,
}

impl Fold {
    /// Applies one record.
    pub fn apply(&mut self, r: Record) {
        self.records += 1;
        match &r {
            Record::Acc { id, k, .. } => {
                if !self.entries.contains_key(id) {
                    self.order.push(id.clone());
                    self.entries.insert(
                        id.clone(),
                        Entry {
                            k: k.clone(),
                            acc: Some(r.clone()),
                            state: State::Pending,
                        },
                    );
                } else if let Some(e) = self.entries.get_mut(id) {
                    if e.acc.is_none() {
                        e.acc = Some(r.clone());
                    }
                }
            }
            Record::Done { id, k, p, e, at } => {
                if !self.entries.contains_key(id) {
                    self.order.push(id.clone());
                }
                let ent = self.entries.entry(id.clone()).or_insert_with(|| Entry {
                    acc: None,
                    k: k.clone(),
                    state: State::Pending,
                });
                ent.state = State::Done {
                    p: p.clone(),
                    e: e.clone(),
                    at: *at,
                };
            }
            Record::Dead {
                id,
                dl,
                attempts,
                errors,
                at,
            } => {
                if let Some(ent) = self.entries.get_mut(id) {
                    ent.state = State::Dead {
                        dl: dl.clone(),
                        attempts: *attempts,
                        errors: errors.clone(),
                        at: *at,
                    };
                }
            }
            Record::Redrive { id, .. } => {
                if let Some(ent) = self.entries.get_mut(id) {
                    if ent.acc.is_some() {
                        ent.state = State::Pending;
                    }
                }
            }
            Record::Purge { id } => {
                if matches!(
                    self.entries.get(id).map(|e| &e.state),
                    Some(State::Dead { .. })
                ) {
                    self.entries.remove(id);
                }
            }
        }
    }
}

impl Record {
    /// The admission record of `job`.
    pub fn admission(job: &super::job::Job) -> Record {
        use super::job::JobKind;
        let (ch, to) = match &job.kind {
            JobKind::Send { channel, to } => (Some(channel.clone()), Some(to.clone())),
            _ => (None, None),
        };
        Record::Acc {
            id: job.run_id.clone(),
            k: job.dedup_key.clone(),
            s: job.session_key.clone(),
            m: job.message.clone(),
            method: job.kind.method().to_string(),
            ch,
            to,
            at: job.accepted_at,
        }
    }

    /// The job an admission record admitted (no caller waits for it any more); `None` for
    /// other records.
    pub fn to_job(&self) -> Option<super::job::Job> {
        use super::job::{Job, JobKind};
        let Record::Acc {
            id,
            k,
            s,
            m,
            method,
            ch,
            to,
            at,
        } = self
        else {
            return None;
        };
        let kind = match method.as_str() {
            "agent" => JobKind::Agent,
            "send" => JobKind::Send {
                channel: ch.clone().unwrap_or_else(|| "log".into()),
                to: to.clone().unwrap_or_default(),
            },
            _ => JobKind::Chat,
        };
        Some(Job {
            run_id: id.clone(),
            session_key: s.clone(),
            message: m.clone(),
            kind,
            reply: None,
            watcher: None,
            dedup_key: k.clone(),
            accepted_at: *at,
            attempts: 0,
            errors: Vec::new(),
            found: None,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An admission record of run `id` (the journal's tests use it too).
    pub(crate) fn acc(id: &str) -> Record {
        Record::Acc {
            id: id.into(),
            k: format!("agent:{id}"),
            s: "agent:main:main".into(),
            m: "hi".into(),
            method: "agent".into(),
            ch: None,
            to: None,
            at: 1,
        }
    }

    #[test]
    fn fold_is_idempotent_and_ordered() {
        let mut f = Fold::default();
        f.apply(acc("a"));
        f.apply(acc("b"));
        f.apply(Record::Done {
            id: "a".into(),
            k: "agent:a".into(),
            p: None,
            e: None,
            at: 2,
        });
        f.apply(acc("a")); // replayed admission after its outcome: no effect
        f.apply(Record::Dead {
            id: "b".into(),
            dl: "d1".into(),
            attempts: 3,
            errors: vec![],
            at: 3,
        });
        assert!(matches!(f.entries["a"].state, State::Done { .. }));
        assert!(matches!(f.entries["b"].state, State::Dead { .. }));
        f.apply(Record::Redrive {
            id: "b".into(),
            at: 4,
        });
        assert_eq!(f.entries["b"].state, State::Pending);
        f.apply(Record::Dead {
            id: "b".into(),
            dl: "d2".into(),
            attempts: 3,
            errors: vec![],
            at: 5,
        });
        f.apply(Record::Purge { id: "b".into() });
        assert!(!f.entries.contains_key("b"));
        assert_eq!(f.order, vec!["a", "b"]);
    }
}
