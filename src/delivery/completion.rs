//! The end of a run's attempts: a failed attempt is retried after its backoff or gives up;
//! a run that ended completes (`ok`, `timeout`, `aborted`) or, out of attempts, is
//! dead-lettered. Either way its final answer goes to its caller and every duplicate that
//! joined it, and replaces the in-flight entry of the dedup ring.

use serde_json::{json, Value};

use super::dead_letter::{dead_error, DeadLetter};
use super::effects::{trace, Answer, Effect, Effects};
use super::job::{Job, JobKind};
use super::record::Record;
use super::{wire, Delivery};
use crate::addr::ReplyTo;
use crate::delivery::trace::{Detail, Step};
use crate::protocol::frame::JsonText;

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ran {
    /// Completed with this text.
    Ok(String),
    /// Stopped by `agents.runTimeoutMs` (not retried).
    TimedOut,
    /// Stopped by an abort.
    Aborted,
    /// Every attempt failed (their errors are in the job).
    Failed,
}

/// What the final answer says of the run besides its job.
#[derive(Debug, Clone, Copy)]
pub struct RunInfo<'a> {
    /// The session's agent.
    pub agent_id: &'a str,
    /// When its first attempt started, ms.
    pub started: i64,
}

impl Delivery {
    /// Attempt `job.attempts` of `job` failed with `error` at `now`: recorded in the job's
    /// error history; [`Effect::Retry`] with the backoff when attempts remain and the run was
    /// not `aborted` (`rand01`: the jitter draw), otherwise nothing more (the driver then
    /// [`Delivery::finish`]es it as [`Ran::Failed`]).
    pub fn attempt_failed(
        &mut self,
        job: &mut Job,
        error: String,
        aborted: bool,
        rand01: f64,
        now: i64,
    ) -> Effects {
        self.stats.failed_attempts += 1;
        let mut out = Effects::new();
        out.push(trace(
            Step::AttemptFailed,
            Detail::json(json!({"attempt": job.attempts, "error": error})),
        ));
        job.errors
            .push(json!({"attempt": job.attempts, "at": now, "error": error}));
        if let Some(delay_ms) = self.policy.retry.next_delay(job.attempts, aborted, rand01) {
            self.stats.retries += 1;
            out.push(trace(
                Step::RetryScheduled,
                Detail::json(json!({"attempt": job.attempts + 1, "delayMs": delay_ms})),
            ));
            out.push(Effect::Retry { delay_ms });
        }
        out
    }

    /// `job`'s run ended at `now` as `ran`: counts it, keeps a dead letter, writes the
    /// outcome to a durable backend, answers the caller and the duplicates that joined it,
    /// and remembers the answer for later duplicates. Takes `job.reply` (answered here).
    pub fn finish(&mut self, job: &mut Job, ran: Ran, info: RunInfo<'_>, now: i64) -> Effects {
        self.finished(job, ran, info, now).into_effects()
    }

    /// [`Delivery::finish`] as a [`Finished`]: the same effects in fixed places, which the
    /// driver applies without building (and matching) a list: every run ends here.
    #[inline]
    pub fn finished(&mut self, job: &mut Job, ran: Ran, info: RunInfo<'_>, now: i64) -> Finished {
        let mut events = Vec::new();
        let stage;
        let mut dead_letter = None;
        let (status, payload, error) = match ran {
            Ran::Ok(text) => {
                self.stats.completed += 1;
                stage = (Step::Completed, Detail::Attempts(job.attempts));
                let done = wire::final_ok(
                    &job.run_id,
                    &job.session_key,
                    info.agent_id,
                    &text,
                    now - info.started,
                    job.attempts,
                );
                ("ok", done, None)
            }
            Ran::TimedOut => {
                self.stats.completed += 1;
                stage = (
                    Step::TimedOut,
                    Detail::json(json!({"runTimeoutMs": self.policy.run_timeout_ms})),
                );
                if let Some(w) = job.watcher {
                    let p = json!({"runId": job.run_id, "seq": 0, "stream": "lifecycle", "ts": now,
                                   "data": {"phase": "end", "startedAt": info.started, "endedAt": now, "stopReason": "timeout"},
                                   "sessionKey": job.session_key, "agentId": info.agent_id});
                    events.push(Effect::Event {
                        to: w,
                        name: "agent",
                        payload: p,
                    });
                    if job.kind == JobKind::Chat {
                        let p = json!({"runId": job.run_id, "sessionKey": job.session_key, "state": "aborted",
                                       "stopReason": "timeout"});
                        events.push(Effect::Event {
                            to: w,
                            name: "chat",
                            payload: p,
                        });
                    }
                }
                let p = json!({"runId": job.run_id, "status": "timeout", "summary": "aborted", "stopReason": "timeout"});
                ("timeout", JsonText::of(&p), None)
            }
            Ran::Aborted => {
                self.stats.completed += 1;
                stage = (Step::Aborted, Detail::Empty);
                let p = json!({"runId": job.run_id, "status": "timeout", "summary": "aborted", "stopReason": "aborted"});
                ("aborted", JsonText::of(&p), None)
            }
            Ran::Failed => {
                let dl_id = uuid::Uuid::new_v4().to_string();
                let err = dead_error(job, &dl_id);
                if self.policy.dead_letters {
                    self.dead.push(DeadLetter {
                        id: dl_id.clone(),
                        job: job.clone(),
                        at: now,
                    });
                    self.stats.dead_lettered += 1;
                    stage = (
                        Step::DeadLettered,
                        Detail::json(json!({"deadLetterId": dl_id, "attempts": job.attempts})),
                    );
                    dead_letter = Some(dl_id);
                } else {
                    stage = (
                        Step::Failed,
                        Detail::json(json!({"attempts": job.attempts})),
                    );
                }
                if job.kind == JobKind::Chat {
                    if let Some(w) = job.watcher {
                        let p = json!({"runId": job.run_id, "sessionKey": job.session_key, "state": "error",
                                       "errorMessage": err["message"]});
                        events.push(Effect::Event {
                            to: w,
                            name: "chat",
                            payload: p,
                        });
                    }
                }
                let p = json!({"runId": job.run_id, "status": "error", "summary": err["message"]});
                ("error", JsonText::of(&p), Some(err))
            }
        };
        self.depth = self.depth.saturating_sub(1);
        // Only a durable backend keeps pending jobs: without one the map is empty, and
        // hashing the run id to find nothing cost ~280 instructions a run.
        if !self.pending.is_empty() {
            self.pending.remove(&job.run_id);
        }
        let journal = self.durable.then(|| {
            Box::new(match dead_letter {
                Some(dl) => Record::Dead {
                    id: job.run_id.clone(),
                    dl,
                    attempts: job.attempts,
                    errors: job.errors.clone(),
                    at: now,
                },
                None => Record::Done {
                    id: job.run_id.clone(),
                    k: job.dedup_key.clone(),
                    p: Some(payload.to_value()),
                    e: error.clone(),
                    at: now,
                },
            })
        });
        let joiners = match self.dedup.get_mut(&job.dedup_key, now) {
            Some(c) => c.finish(&payload, error.as_ref()),
            None => Vec::new(),
        };
        let (caller, joiners) = if job.kind == JobKind::Agent {
            (job.reply.take(), joiners)
        } else {
            (None, Vec::new())
        };
        let error_text = error
            .as_ref()
            .and_then(|e| e["message"].as_str().map(str::to_string));
        Finished {
            status,
            at: now,
            stage,
            events,
            journal,
            payload,
            error,
            error_text,
            caller,
            joiners,
        }
    }
}

/// How a run ended, as effects in fixed places, applied in this order: the stage, the events,
/// the backend record, the final answer to the caller and then the joined duplicates, the run
/// directory's status.
#[derive(Debug)]
pub struct Finished {
    /// `ok`, `error`, `timeout`, `aborted`.
    pub status: &'static str,
    /// When, ms.
    pub at: i64,
    /// The run's last trace stage.
    pub stage: (Step, Detail),
    /// Events to its watcher ([`Effect::Event`]s: the ends of timed-out runs and failed chats).
    pub events: Vec<Effect>,
    /// The record for a durable backend.
    pub journal: Option<Box<Record>>,
    /// The final payload.
    pub payload: JsonText,
    /// The final error.
    pub error: Option<Value>,
    /// The error's message, for the run directory.
    pub error_text: Option<String>,
    /// The caller waiting for the final answer (`agent`).
    pub caller: Option<ReplyTo>,
    /// Duplicates that joined the run (`agent`).
    pub joiners: Vec<ReplyTo>,
}

impl Finished {
    /// The same as a list of effects.
    pub fn into_effects(self) -> Effects {
        let mut out = Effects::new();
        out.push(trace(self.stage.0, self.stage.1));
        out.extend(self.events);
        if let Some(r) = self.journal {
            out.push(Effect::Journal(r));
        }
        for to in self.caller.into_iter().chain(self.joiners) {
            out.push(Effect::Reply {
                to,
                answer: Answer::Final {
                    payload: Some(self.payload.clone()),
                    error: self.error.clone(),
                },
            });
        }
        out.push(Effect::RunStatus {
            status: self.status,
            at: self.at,
            error: self.error_text,
        });
        out
    }
}
