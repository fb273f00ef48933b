//! The delivery core, sans-IO: dedup → admission → (the driver's lane) → attempts with retry
//! and backoff → completion or dead letter, as state and decisions only.
//!
//! [`Delivery`] owns one shard's delivery state (the dedup ring, dead letters, counters, the
//! jobs a durable backend must be able to snapshot) and answers each event of a message's life
//! with [`Effects`]: replies, events, backend records, jobs to enqueue, timers to set. It reads
//! no clock (`now` is passed in, ms), touches no socket or file and spawns nothing, so every
//! rule here is tested with a fake clock (`tests`). The driver, `crate::queue`, owns the
//! sessions and their lanes, the runs, the backend and the shard, and applies the effects.
//!
//! Guarantees kept here:
//! - A message is acknowledged only after it is admitted (with a durable backend, after its
//!   record is written); from then on it completes or is dead-lettered with its error history.
//!   Nothing admitted is dropped silently.
//! - A duplicate (`method:idempotencyKey`) inside the dedup window joins the in-flight call or
//!   replays the finished answer, failures included ([`dedup`]).
//! - A refusal is retryable and says when to retry ([`admission`]).
//!
//! Reading order: [`job`], [`admission`], [`dedup`], [`ordering`], [`retry`],
//! [`dead_letter`], `completion`, [`effects`], [`record`].

pub mod admission;
mod completion;
pub mod dead_letter;
pub mod dedup;
pub mod effects;
pub mod job;
pub mod ordering;
pub mod record;
pub mod retry;
pub mod stats;
pub mod trace;
pub(crate) mod wire;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use serde_json::json;

pub use admission::{Bounds, Load, Refusal};
pub use completion::{Finished, Ran, RunInfo};
pub use dead_letter::{DeadLetter, DeadLetters};
pub use dedup::Cached;
pub use effects::{Admission, Answer, Effect, Effects, Submitted};
pub use job::{Job, JobKind, Submission};
pub use ordering::{Gap, Offer, SeqOrder};
pub use record::Record;
pub use retry::RetryPolicy;
pub use stats::Stats;

use crate::addr::ReplyTo;
use crate::config::Config;
use crate::delivery::trace::{Detail, Step};
use crate::protocol::error::GatewayError;
use crate::protocol::frame::JsonText;
use crate::protocol::SessionKey;
use effects::trace;

/// The configuration delivery decides by (fixed for the process).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Admission bounds.
    pub bounds: Bounds,
    /// Attempts and backoff.
    pub retry: RetryPolicy,
    /// `queue.deadLetter.enabled`: keep messages out of attempts.
    pub dead_letters: bool,
    /// `queue.deadLetter.maxAge`, ms.
    pub dead_max_age_ms: i64,
    /// `agents.runTimeoutMs` (reported when a run times out).
    pub run_timeout_ms: u64,
    /// `deduplication.window`, ms.
    pub dedup_window_ms: i64,
}

impl Policy {
    /// From the configuration.
    pub fn of(cfg: &Config) -> Policy {
        Policy {
            bounds: Bounds {
                lane_size: cfg.ordering.buffer_size,
            },
            retry: RetryPolicy::of(cfg),
            dead_letters: cfg.queue.dead_letter.enabled,
            dead_max_age_ms: cfg.queue.dead_letter.max_age.0 as i64,
            run_timeout_ms: cfg.agents.run_timeout_ms,
            dedup_window_ms: cfg.deduplication.window.0 as i64,
        }
    }
}

/// One shard's delivery state.
#[derive(Debug)]
pub struct Delivery {
    /// What it decides by.
    pub policy: Policy,
    /// Idempotency ring (`method:idempotencyKey`), fixed capacity, entries live for the
    /// dedup window.
    pub dedup: dedup::Ring,
    /// Messages out of attempts, oldest first.
    pub dead: DeadLetters,
    /// Counters.
    pub stats: Stats,
    /// Jobs admitted here and not finished (lanes, held, running).
    pub depth: usize,
    /// Jobs admitted here and not finished, by runId, kept only when `durable` (for the
    /// backend's snapshots; the in-memory queue skips the copy).
    pub pending: HashMap<String, Job>,
    /// A durable backend is attached: admissions wait for their record, and every change of
    /// state is written ([`Effect::Journal`]).
    pub durable: bool,
}

impl Delivery {
    /// Empty state for `cfg`.
    pub fn new(cfg: &Config) -> Delivery {
        Delivery {
            policy: Policy::of(cfg),
            dedup: dedup::Ring::new(
                cfg.deduplication.capacity,
                cfg.deduplication.window.0 as i64,
            ),
            dead: DeadLetters::default(),
            stats: Stats::default(),
            depth: 0,
            pending: HashMap::new(),
            durable: false,
        }
    }

    /// A message submitted at `now`: answers a duplicate from the ring, refuses it (with a
    /// retryable error), or admits it ([`Submitted::Admitted`]: the driver acknowledges and
    /// enqueues it).
    #[inline]
    pub fn submit(&mut self, s: Submission<'_>, now: i64) -> Submitted {
        let method = s.kind.method();
        let dedup_key = job::dedup_key(method, &s.idem);
        if let Some(c) = self.dedup.get_mut(&dedup_key, now) {
            self.stats.dedup_hits += 1;
            return Submitted::Answered(dedup::answer(c, s, now));
        }
        if let Err(r) = admission::check(s.load, self.policy.bounds) {
            self.stats.rejected_full += 1;
            let mut out = Effects::new();
            out.push(trace(
                Step::Rejected,
                Detail::json(json!({"reason": r.reason()})),
            ));
            out.push(Effect::Reply {
                to: s.reply,
                answer: Answer::Err(r.error()),
            });
            return Submitted::Answered(out);
        }
        // A `send`'s answer is its acknowledgement: remembered as done at once.
        let entry = match &s.kind {
            JobKind::Send { .. } => Cached::Done {
                payload: Some(JsonText::of(&wire::ack_for(&s.kind, &s.idem, s.key, now))),
                error: None,
            },
            _ => Cached::in_flight(),
        };
        let job = Job {
            reply: matches!(s.kind, JobKind::Agent).then(|| s.reply.clone()),
            watcher: (!matches!(s.kind, JobKind::Send { .. })).then_some(s.reply.conn),
            run_id: s.idem,
            session_key: s.key.as_str().to_string(),
            message: s.message,
            kind: s.kind,
            dedup_key: dedup_key.clone(),
            accepted_at: now,
            attempts: 0,
            errors: Vec::new(),
            found: None,
        };
        self.dedup.insert(dedup_key, entry, now);
        self.depth += 1;
        self.stats.accepted += 1;
        self.remember(&job);
        Submitted::Admitted(Admission {
            job,
            reply: s.reply,
            seq: s.seq,
        })
    }

    /// The durable backend could not write `job`'s admission record: the admission is undone,
    /// the caller (and any duplicate inside the window) gets the error.
    pub fn journal_failed(&mut self, job: &Job, reply: ReplyTo, error: &str, now: i64) -> Effects {
        self.pending.remove(&job.run_id);
        let e = GatewayError::AgentFailed(format!("journal write failed: {error}"));
        self.dedup.insert(
            job.dedup_key.clone(),
            Cached::Done {
                payload: None,
                error: Some(e.wire().to_json()),
            },
            now,
        );
        self.depth = self.depth.saturating_sub(1);
        let mut out = Effects::new();
        out.push(Effect::Reply {
            to: reply,
            answer: Answer::Err(e),
        });
        out
    }

    /// The backend could not take an admission for now (Redis unreachable): the caller, and
    /// any duplicate that joined it meanwhile, are told to retry; nothing is remembered, so
    /// the retry (same idempotency key) is admitted afresh.
    pub fn backend_unavailable(
        &mut self,
        job: &Job,
        reply: ReplyTo,
        retry_after_ms: u64,
        now: i64,
    ) -> Effects {
        self.pending.remove(&job.run_id);
        let e = GatewayError::BackendUnavailable { retry_after_ms };
        let mut out = Effects::new();
        if let Some(Cached::InFlight { joiners }) = self.dedup.get_mut(&job.dedup_key, now) {
            for to in std::mem::take(joiners) {
                out.push(Effect::Reply {
                    to,
                    answer: Answer::Err(e.clone()),
                });
            }
        }
        // Out of the window at once: the next submission of this key is a new admission.
        let expired = now - self.policy.dedup_window_ms - 1;
        self.dedup
            .insert(job.dedup_key.clone(), Cached::in_flight(), expired);
        self.depth = self.depth.saturating_sub(1);
        out.push(Effect::Reply {
            to: reply,
            answer: Answer::Err(e),
        });
        out
    }

    /// Takes back a job admitted before (read from the backend on start, or handed over by
    /// another shard): remembered as running, written again, enqueued without an answer.
    pub fn readmit(&mut self, job: Job, now: i64) -> Effects {
        let mut out = Effects::new();
        let Ok(key) = SessionKey::parse(&job.session_key, "main") else {
            return out;
        };
        let entry = match &job.kind {
            JobKind::Send { .. } => Cached::Done {
                payload: Some(JsonText::of(&wire::ack_for(
                    &job.kind,
                    &job.run_id,
                    &key,
                    job.accepted_at,
                ))),
                error: None,
            },
            _ => Cached::in_flight(),
        };
        self.dedup.insert(job.dedup_key.clone(), entry, now);
        self.depth += 1;
        if self.durable {
            out.push(Effect::Journal(Box::new(Record::admission(&job))));
        }
        self.remember(&job);
        out.push(trace(Step::Replayed, Detail::Empty));
        out.push(Effect::Enqueue(Box::new(job)));
        out
    }

    /// Sends dead letters round again: `id` (a dead letter id or a runId) or all. Returns how
    /// many were taken, and their effects.
    pub fn redrive(&mut self, id: Option<&str>, now: i64) -> (usize, Effects) {
        let picked = self.dead.take(id);
        let n = picked.len();
        let mut out = Effects::new();
        for d in picked {
            let job = d.job.detached();
            if SessionKey::parse(&job.session_key, "main").is_err() {
                continue;
            }
            self.dedup
                .insert(job.dedup_key.clone(), Cached::in_flight(), now);
            self.depth += 1;
            if self.durable {
                out.push(Effect::Journal(Box::new(Record::Redrive {
                    id: job.run_id.clone(),
                    at: now,
                })));
            }
            self.remember(&job);
            self.stats.redriven += 1;
            out.push(Effect::Trace {
                run: Some(job.run_id.clone()),
                step: Step::Redriven,
                detail: Detail::json(json!({"deadLetterId": d.id})),
            });
            out.push(Effect::Enqueue(Box::new(job)));
        }
        (n, out)
    }

    /// Drops dead letters older than `deadLetter.maxAge` at `now`. Returns how many, and the
    /// records that tell the backend.
    pub fn purge(&mut self, now: i64) -> (usize, Effects) {
        let gone = self.dead.purge(now, self.policy.dead_max_age_ms);
        self.stats.purged += gone.len() as u64;
        let n = gone.len();
        let out = if self.durable {
            gone.into_iter()
                .map(|id| Effect::Journal(Box::new(Record::Purge { id })))
                .collect()
        } else {
            Effects::new()
        };
        (n, out)
    }

    /// Restores the state a backend replayed at `now`: finished answers still inside the dedup
    /// window and dead letters. Returns the jobs still pending, in admission order, for their
    /// sessions' owners to [`Delivery::readmit`].
    pub fn restore(&mut self, fold: &record::Fold, now: i64) -> Restored {
        let mut r = Restored::default();
        for id in &fold.order {
            let Some(e) = fold.entries.get(id) else {
                continue;
            };
            match &e.state {
                record::State::Pending => {
                    if let Some(job) = e.acc.as_ref().and_then(Record::to_job) {
                        r.pending.push(job);
                    }
                }
                record::State::Done { p, e: err, at } => {
                    if now - at < self.policy.dedup_window_ms {
                        r.done += 1;
                        self.dedup.insert(
                            e.k.clone(),
                            Cached::Done {
                                payload: p.as_ref().map(JsonText::of),
                                error: err.clone(),
                            },
                            *at,
                        );
                    }
                }
                record::State::Dead {
                    dl,
                    attempts,
                    errors,
                    at,
                } => {
                    let Some(mut job) = e.acc.as_ref().and_then(Record::to_job) else {
                        continue;
                    };
                    r.dead += 1;
                    job.attempts = *attempts;
                    job.errors = errors.clone();
                    self.dead.push(DeadLetter {
                        id: dl.clone(),
                        job,
                        at: *at,
                    });
                }
            }
        }
        r
    }

    /// The live state as backend records at `now` (compaction): pending admissions, finished
    /// answers inside the window, dead letters.
    pub fn snapshot(&self, now: i64) -> Vec<Record> {
        let mut out: Vec<Record> = self.pending.values().map(Record::admission).collect();
        for (k, at, v) in self.dedup.iter(now) {
            let id = k.split_once(':').map(|(_, i)| i).unwrap_or(k);
            if let Cached::Done { payload, error } = v {
                if !self.pending.contains_key(id) {
                    out.push(Record::Done {
                        id: id.to_string(),
                        k: k.clone(),
                        p: payload.as_ref().map(JsonText::to_value),
                        e: error.clone(),
                        at,
                    });
                }
            }
        }
        for d in self.dead.iter() {
            out.push(Record::admission(&d.job));
            out.push(Record::Dead {
                id: d.job.run_id.clone(),
                dl: d.id.clone(),
                attempts: d.job.attempts,
                errors: d.job.errors.clone(),
                at: d.at,
            });
        }
        out
    }

    /// Keeps an admitted job for the backend's snapshots (only a durable one needs it).
    fn remember(&mut self, job: &Job) {
        if self.durable {
            self.pending.insert(job.run_id.clone(), job.clone());
        }
    }
}

/// What [`Delivery::restore`] found.
#[derive(Debug, Default)]
pub struct Restored {
    /// Admitted and not finished: to run again.
    pub pending: Vec<Job>,
    /// Finished answers restored into the dedup ring.
    pub done: usize,
    /// Dead letters restored.
    pub dead: usize,
}
