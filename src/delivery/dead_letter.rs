//! Dead letters: messages that ran out of attempts, kept with their error history for
//! `deadLetter.maxAge` so an operator can inspect them (`queue.inspect`) and send them round
//! again (`queue.redrive`).
//!
//! Invariant: a message is in at most one place: a lane (or running), or here. Redrive takes
//! it out before it is queued again; a purge by age is written to the backend so replay does
//! not bring it back.

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::job::Job;
use crate::protocol::error::GatewayError;

/// A message that exhausted its attempts.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Dead letter id.
    pub id: String,
    /// The job as it was when it died.
    pub job: Job,
    /// When it was dead-lettered, ms.
    pub at: i64,
}

impl DeadLetter {
    /// The `queue.inspect` row.
    pub fn row(&self, shard: usize) -> Value {
        json!({"id": self.id, "messageId": self.job.run_id, "method": self.job.kind.method(),
               "sessionKey": self.job.session_key, "message": self.job.message,
               "attempts": self.job.attempts, "errors": self.job.errors,
               "acceptedAt": self.job.accepted_at, "deadLetteredAt": self.at, "shard": shard})
    }
}

/// One shard's dead letters, oldest first.
#[derive(Debug, Default)]
pub struct DeadLetters(VecDeque<DeadLetter>);

impl DeadLetters {
    /// Keeps `d` (the newest).
    pub fn push(&mut self, d: DeadLetter) {
        self.0.push_back(d);
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// None kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &DeadLetter> {
        self.0.iter()
    }

    /// Takes out the dead letter `id` (by its id or its message's runId), or all of them.
    pub fn take(&mut self, id: Option<&str>) -> Vec<DeadLetter> {
        let (take, keep): (Vec<_>, Vec<_>) = self
            .0
            .drain(..)
            .partition(|d| id.is_none_or(|i| d.id == i || d.job.run_id == i));
        self.0.extend(keep);
        take
    }

    /// Drops those dead-lettered `max_age_ms` or longer before `now`; returns their runIds.
    pub fn purge(&mut self, now: i64, max_age_ms: i64) -> Vec<String> {
        let mut gone = Vec::new();
        self.0.retain(|d| {
            let keep = now - d.at < max_age_ms;
            if !keep {
                gone.push(d.job.run_id.clone());
            }
            keep
        });
        gone
    }
}

/// The answer a caller gets for a dead-lettered run: `AGENT_FAILED`-shaped with the last
/// attempt's error, `details.code: "DEAD_LETTERED"` and where to find it.
pub fn dead_error(job: &Job, dl_id: &str) -> Value {
    let last = job
        .errors
        .last()
        .and_then(|e| e["error"].as_str())
        .unwrap_or("dispatch failed");
    let mut e = GatewayError::AgentFailed(format!(
        "delivery failed after {} attempts: {last}",
        job.attempts
    ))
    .wire()
    .to_json();
    e["details"] =
        json!({"code": "DEAD_LETTERED", "deadLetterId": dl_id, "attempts": job.attempts});
    e["retryable"] = json!(false);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::job::JobKind;

    fn dl(id: &str, run: &str, at: i64) -> DeadLetter {
        DeadLetter {
            id: id.into(),
            at,
            job: Job {
                run_id: run.into(),
                session_key: "agent:main:main".into(),
                message: "m".into(),
                kind: JobKind::Chat,
                reply: None,
                watcher: None,
                dedup_key: format!("chat.send:{run}"),
                accepted_at: 0,
                attempts: 2,
                errors: vec![json!({"attempt": 2, "at": 1, "error": "last one"})],
                found: None,
            },
        }
    }

    #[test]
    fn take_finds_by_dead_letter_id_or_run_id_and_keeps_the_rest_in_order() {
        let mut d = DeadLetters::default();
        for (i, r, at) in [("d1", "r1", 1), ("d2", "r2", 2), ("d3", "r3", 3)] {
            d.push(dl(i, r, at));
        }
        assert_eq!(d.take(Some("d2")).len(), 1);
        assert_eq!(d.take(Some("r3"))[0].id, "d3");
        assert!(d.take(Some("nope")).is_empty());
        assert_eq!(
            d.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
            vec!["d1"]
        );
    }

    #[test]
    fn the_dead_error_names_the_last_failure_and_is_not_retryable() {
        let e = dead_error(&dl("d1", "r1", 0).job, "d1");
        assert_eq!(e["details"]["deadLetterId"], "d1");
        assert_eq!(e["details"]["attempts"], 2);
        assert_eq!(e["retryable"], false);
        assert!(e["message"]
            .as_str()
            .unwrap()
            .ends_with("after 2 attempts: last one"));
    }
}
