//! The delivery pipeline on a session's owner shard: dedup → admission (queue bound) → the
//! session's ordered lane → dispatch with retry and backoff → completion or dead letter.
//!
//! Guarantees kept here:
//! - A message is acknowledged only after it is admitted (and, with the journal backend, after
//!   its record is durable); from then on it is either completed, or dead-lettered with its
//!   error history. Nothing admitted is dropped silently.
//! - One active run per session, in arrival order; a retry keeps its place at the head of the
//!   lane, so later messages of the session wait for it.
//! - A duplicate (`method:idempotencyKey`) inside the dedup window joins the in-flight call or
//!   replays the finished answer, failures included.

pub mod channel;
pub mod journal;
pub mod trace;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::agent::echo::{self, Outcome};
use crate::protocol::error::GatewayError;
use crate::protocol::frame::{self, JsonText};
use crate::protocol::SessionKey;
use crate::session::{Cached, HistoryEntry, RunCtl, Session};
use crate::shard::{now_ms, ConnRef, GatewayShard, Out, ReplyTo, RunEntry, RunRecord};
use shards::dedup::Handle;
pub use trace::{Detail, Stage, Step, Trace};

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

/// Counters of one shard's queue (merged on read).
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Messages admitted.
    pub accepted: Cell<u64>,
    /// Messages completed.
    pub completed: Cell<u64>,
    /// Failed attempts.
    pub failed_attempts: Cell<u64>,
    /// Retries scheduled.
    pub retries: Cell<u64>,
    /// Messages dead-lettered.
    pub dead_lettered: Cell<u64>,
    /// Dead letters redriven.
    pub redriven: Cell<u64>,
    /// Refused with QUEUE_FULL (queue or lane).
    pub rejected_full: Cell<u64>,
    /// Duplicates answered from the dedup ring.
    pub dedup_hits: Cell<u64>,
    /// Dead letters purged by age.
    pub purged: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// One shard's queue state.
#[derive(Debug, Default)]
pub struct QueueState {
    /// Dead letters owned here, oldest first.
    pub dead: RefCell<VecDeque<DeadLetter>>,
    /// Counters.
    pub stats: QueueStats,
    /// Jobs admitted here and not finished (lanes + running).
    pub depth: Cell<usize>,
    /// Run slots per capped agent on this shard (`agents.bindings.<id>.maxConcurrent`).
    pub agent_slots: RefCell<std::collections::HashMap<String, Rc<glommio::sync::Semaphore>>>,
    /// Jobs admitted here and not finished, by runId (journal snapshots).
    pub pending: RefCell<std::collections::HashMap<String, Job>>,
    /// The durable backend, when `queue.backend = "journal"`.
    pub journal: RefCell<Option<Rc<journal::Journal>>>,
}

impl QueueState {
    /// Counters as JSON.
    pub fn stats_json(&self) -> Value {
        let s = &self.stats;
        json!({"accepted": s.accepted.get(), "completed": s.completed.get(),
               "failedAttempts": s.failed_attempts.get(), "retries": s.retries.get(),
               "deadLettered": s.dead_lettered.get(), "redriven": s.redriven.get(),
               "rejectedFull": s.rejected_full.get(), "dedupHits": s.dedup_hits.get(),
               "purged": s.purged.get(), "depth": self.depth.get(),
               "deadLetters": self.dead.borrow().len(),
               "journal": self.journal.borrow().as_ref().map(|j| j.stats_json())})
    }

    fn journal(&self) -> Option<Rc<journal::Journal>> {
        self.journal.borrow().clone()
    }
}

fn acc_record(job: &Job) -> journal::Record {
    let (ch, to) = match &job.kind {
        JobKind::Send { channel, to } => (Some(channel.clone()), Some(to.clone())),
        _ => (None, None),
    };
    journal::Record::Acc {
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

fn job_from_record(r: &journal::Record) -> Option<Job> {
    let journal::Record::Acc {
        id,
        k,
        s,
        m,
        method,
        ch,
        to,
        at,
    } = r
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

/// The live state of a shard's queue as journal records (compaction).
pub fn snapshot(shard: &GatewayShard) -> Vec<journal::Record> {
    let now = now_ms();
    let q = &shard.queue;
    let pending = q.pending.borrow();
    let mut out: Vec<journal::Record> = pending.values().map(acc_record).collect();
    for (k, at, v) in shard.sessions.dedup.borrow().iter(now) {
        let id = k.split_once(':').map(|(_, i)| i).unwrap_or(k);
        if let Cached::Done { payload, error } = v {
            if !pending.contains_key(id) {
                out.push(journal::Record::Done {
                    id: id.to_string(),
                    k: k.clone(),
                    p: payload.as_ref().map(JsonText::to_value),
                    e: error.clone(),
                    at,
                });
            }
        }
    }
    for d in q.dead.borrow().iter() {
        out.push(acc_record(&d.job));
        out.push(journal::Record::Dead {
            id: d.job.run_id.clone(),
            dl: d.id.clone(),
            attempts: d.job.attempts,
            errors: d.job.errors.clone(),
            at: d.at,
        });
    }
    out
}

/// Keeps an admitted job for the journal's compaction snapshots (only a durable backend needs
/// them; the in-memory queue skips the copy).
fn remember_pending(shard: &GatewayShard, job: &Job) {
    if shard.queue.journal.borrow().is_some() {
        shard
            .queue
            .pending
            .borrow_mut()
            .insert(job.run_id.clone(), job.clone());
    }
}

/// Re-admits a job read back from the journal (or forwarded by another shard).
pub fn readmit(shard: &Rc<GatewayShard>, job: Job) {
    let now = now_ms();
    let Ok(key) = SessionKey::parse(&job.session_key, "main") else {
        return;
    };
    let (session, _) = shard.sessions.get_or_create(&key, now);
    let entry = match job.kind {
        JobKind::Send { .. } => Cached::Done {
            payload: Some(JsonText::of(&ack_for(
                &job.kind,
                &job.run_id,
                &key,
                job.accepted_at,
            ))),
            error: None,
        },
        _ => Cached::InFlight {
            joiners: Vec::new(),
        },
    };
    shard
        .sessions
        .dedup
        .borrow_mut()
        .insert(job.dedup_key.clone(), entry, now);
    shard.shared.queued.fetch_add(1, Ordering::Relaxed);
    shard.queue.depth.set(shard.queue.depth.get() + 1);
    if let Some(j) = shard.queue.journal() {
        j.append_nowait(&acc_record(&job));
    }
    remember_pending(shard, &job);
    trace(shard, &job.run_id, Step::Replayed, Detail::Empty);
    enqueue(shard, &session, job);
}

/// Opens this shard's journal, restores its state, and starts writing.
pub fn open_journal(shard: &Rc<GatewayShard>) -> Result<(), String> {
    let cfg = shard.config();
    let state_dir = cfg.state_dir();
    let cipher = match cfg.storage.encryption.as_deref() {
        Some("aes-256-gcm") => Some(journal::load_key(&state_dir).map_err(|e| e.to_string())?),
        _ => None,
    };
    let dir = state_dir
        .join("journal")
        .join(format!("shard-{}", shard.id.0));
    let (j, fold) = journal::Journal::open(&dir, cipher).map_err(|e| e.to_string())?;
    *shard.queue.journal.borrow_mut() = Some(j.clone());
    let now = now_ms();
    let window = cfg.deduplication.window.0 as i64;
    let (mut pending, mut done, mut dead) = (0, 0, 0);
    for id in &fold.order {
        let Some(e) = fold.entries.get(id) else {
            continue;
        };
        match &e.state {
            journal::State::Pending => {
                let Some(job) = e.acc.as_ref().and_then(job_from_record) else {
                    continue;
                };
                pending += 1;
                let owner = shard.owner(&job.session_key);
                shard.on_shard(owner, move |s| readmit(s, job));
            }
            journal::State::Done { p, e: err, at } => {
                if now - at < window {
                    done += 1;
                    shard.sessions.dedup.borrow_mut().insert(
                        e.k.clone(),
                        Cached::Done {
                            payload: p.as_ref().map(JsonText::of),
                            error: err.clone(),
                        },
                        *at,
                    );
                }
            }
            journal::State::Dead {
                dl,
                attempts,
                errors,
                at,
            } => {
                let Some(mut job) = e.acc.as_ref().and_then(job_from_record) else {
                    continue;
                };
                dead += 1;
                job.attempts = *attempts;
                job.errors = errors.clone();
                shard.queue.dead.borrow_mut().push_back(DeadLetter {
                    id: dl.clone(),
                    job,
                    at: *at,
                });
            }
        }
    }
    tracing::info!(shard = %shard.id, records = fold.records, pending, done, dead, dir = %dir.display(), "journal replayed");
    let weak = Rc::downgrade(shard);
    j.set_snapshot(Box::new(move || {
        weak.upgrade().map(|s| snapshot(&s)).unwrap_or_default()
    }));
    j.start();
    Ok(())
}

/// Appends a pipeline stage to the trace of `run_id` on this shard (at most 64 per message).
pub fn trace(shard: &GatewayShard, run_id: &str, step: Step, detail: Detail) {
    trace_at(shard, run_id, step, detail, now_ms());
}

/// [`trace`] at `now` (ms), for callers that just read the clock.
fn trace_at(shard: &GatewayShard, run_id: &str, step: Step, detail: Detail, now: i64) {
    trace_found(shard, &mut None, run_id, step, detail, now);
}

/// [`trace_at`] through the handle `found` when it still finds the trace; otherwise by
/// `run_id`, leaving the handle in `found` for the next stage.
fn trace_found(
    shard: &GatewayShard,
    found: &mut Option<Handle>,
    run_id: &str,
    step: Step,
    detail: Detail,
    now: i64,
) {
    let entry = Stage {
        ts: now,
        detail,
        step,
        shard: shard.id.0 as u32,
    };
    let mut runs = shard.runs.borrow_mut();
    let e = match found.and_then(|h| runs.by_handle(h, now)) {
        Some(e) => e,
        None => {
            let (h, e) = runs.entry(run_id, now, RunEntry::default);
            *found = Some(h);
            e
        }
    };
    e.trace.push(entry);
}

/// Exponential backoff with jitter for `attempt` (1-based): `initial × 2^(attempt−1)`, capped
/// at `max`, then a random point in its upper half.
pub fn backoff_ms(attempt: u32, initial: u64, max: u64, exponential: bool, rand01: f64) -> u64 {
    let base = if exponential {
        initial.saturating_mul(1u64 << (attempt.saturating_sub(1)).min(30))
    } else {
        initial
    };
    let d = base.min(max);
    d / 2 + ((d as f64 / 2.0) * rand01.clamp(0.0, 1.0)) as u64
}

/// The answer a caller gets for a dead-lettered `agent` run.
fn dead_error(job: &Job, dl_id: &str) -> Value {
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

/// Sends a finished call's answer (or replays a cached one) to `reply`.
pub fn reply_final(
    shard: &GatewayShard,
    reply: &ReplyTo,
    payload: Option<&JsonText>,
    error: Option<&Value>,
) {
    match (payload, error) {
        (Some(p), None) => {
            shard.deliver(reply.conn, Out::Frame(frame::res_ok_text(&reply.req_id, p)))
        }
        (p, Some(e)) => {
            let mut f = json!({"type": "res", "id": reply.req_id, "ok": false, "error": e});
            if let Some(p) = p {
                f["payload"] = p.to_value();
            }
            shard.deliver(reply.conn, Out::Frame(f.to_string()));
        }
        (None, None) => {}
    }
}

/// Updates the run directory entry of `run_id` on `owner(run_id)` (for `agent.wait`).
/// `now` (ms) is when the caller read the clock.
pub fn run_directory(
    shard: &Rc<GatewayShard>,
    run_id: &str,
    now: i64,
    f: impl FnOnce(&mut RunRecord) + Send + 'static,
) {
    run_directory_found(shard, &mut None, run_id, now, f);
}

/// [`run_directory`] through the handle `found` when it still finds the entry (this shard
/// owns the run id); otherwise by `run_id`, leaving a handle in `found` when the entry is here.
fn run_directory_found(
    shard: &Rc<GatewayShard>,
    found: &mut Option<Handle>,
    run_id: &str,
    now: i64,
    f: impl FnOnce(&mut RunRecord) + Send + 'static,
) {
    let owner = shard.owner(run_id);
    if owner == shard.id {
        let mut runs = shard.runs.borrow_mut();
        if let Some(e) = found.and_then(|h| runs.by_handle(h, now)) {
            return update(&mut e.record, f);
        }
        let (h, e) = runs.entry(run_id, now, RunEntry::default);
        *found = Some(h);
        return update(&mut e.record, f);
    }
    let id = run_id.to_string();
    shard.on_shard(owner, move |s| update_run(s, &id, now, f));
}

fn update_run(shard: &GatewayShard, run_id: &str, now: i64, f: impl FnOnce(&mut RunRecord)) {
    let mut runs = shard.runs.borrow_mut();
    update(
        &mut runs
            .get_or_insert_with(run_id, now, RunEntry::default)
            .record,
        f,
    );
}

/// Applies `f` to a run's entry, waking its `agent.wait`ers once the run has ended.
fn update(r: &mut RunRecord, f: impl FnOnce(&mut RunRecord)) {
    f(r);
    if matches!(r.status, "ok" | "error" | "timeout" | "aborted") {
        for w in r.waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

/// The request side of a submission.
#[derive(Debug)]
pub struct Submit<'a> {
    /// Target session.
    pub key: &'a SessionKey,
    /// What to do.
    pub kind: JobKind,
    /// The message.
    pub message: String,
    /// idempotencyKey.
    pub idem: String,
    /// Caller's answers.
    pub reply: ReplyTo,
    /// When the caller's shard received it, and which shard.
    pub received: (i64, usize),
    /// The client's per-session sequence number (`sessionSeq`), when it orders its messages.
    pub seq: Option<u64>,
    /// When the caller's shard received it ([`crate::shard::Shared::mono_us`]).
    pub received_us: u64,
}

/// The final answer of a completed run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FinalOk<'a> {
    run_id: &'a str,
    status: &'static str,
    summary: &'static str,
    session_key: &'a str,
    result: RunResult<'a>,
}

#[derive(Debug, Serialize)]
struct RunResult<'a> {
    payloads: [TextPart<'a>; 1],
    meta: RunMeta<'a>,
}

#[derive(Debug, Serialize)]
struct TextPart<'a> {
    text: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RunMeta<'a> {
    duration_ms: i64,
    attempts: u32,
    agent_meta: AgentMeta<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentMeta<'a> {
    agent_id: &'a str,
    provider: &'static str,
    model: &'static str,
}

impl FinalOk<'_> {
    /// The payload, written by hand (every completed run sends one; `tests` checks it against
    /// the derived shape).
    fn to_json(&self) -> JsonText {
        JsonText::with(|s| {
            s.push_str(r#"{"runId":"#);
            frame::push_json_str(s, self.run_id);
            s.push_str(r#","status":"#);
            frame::push_json_const(s, self.status);
            s.push_str(r#","summary":"#);
            frame::push_json_const(s, self.summary);
            s.push_str(r#","sessionKey":"#);
            frame::push_json_str(s, self.session_key);
            s.push_str(r#","result":{"payloads":[{"text":"#);
            frame::push_json_str(s, self.result.payloads[0].text);
            let meta = &self.result.meta;
            s.push_str(r#"}],"meta":{"durationMs":"#);
            frame::push_int(s, meta.duration_ms);
            s.push_str(r#","attempts":"#);
            frame::push_int(s, meta.attempts);
            s.push_str(r#","agentMeta":{"agentId":"#);
            frame::push_json_str(s, meta.agent_meta.agent_id);
            s.push_str(r#","provider":"#);
            frame::push_json_const(s, meta.agent_meta.provider);
            s.push_str(r#","model":"#);
            frame::push_json_const(s, meta.agent_meta.model);
            s.push_str("}}}}");
        })
    }
}

/// The acknowledgement of an admitted message: `accepted` (agent), `started` (chat), or a
/// `send`'s answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Ack<'a> {
    run_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accepted_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

impl Ack<'_> {
    /// Written by hand, fields in the derived order (`tests` checks it against the derive).
    fn write_json(&self, s: &mut String) {
        let member = |s: &mut String, key: &str, v: Option<&str>| {
            if let Some(v) = v {
                s.push_str(key);
                frame::push_json_str(s, v);
            }
        };
        s.push_str(r#"{"runId":"#);
        frame::push_json_str(s, self.run_id);
        member(s, r#","sessionKey":"#, self.session_key);
        member(s, r#","agentId":"#, self.agent_id);
        if let Some(status) = self.status {
            s.push_str(r#","status":"#);
            frame::push_json_const(s, status);
        }
        if let Some(at) = self.accepted_at {
            s.push_str(r#","acceptedAt":"#);
            frame::push_int(s, at);
        }
        member(s, r#","messageId":"#, self.message_id);
        member(s, r#","channel":"#, self.channel);
        if self.duplicate {
            s.push_str(r#","duplicate":true"#);
        }
        s.push('}');
    }
}

fn ack_for<'a>(kind: &'a JobKind, idem: &'a str, key: &'a SessionKey, now: i64) -> Ack<'a> {
    let ack = Ack {
        run_id: idem,
        session_key: None,
        agent_id: None,
        status: None,
        accepted_at: None,
        message_id: None,
        channel: None,
        duplicate: false,
    };
    match kind {
        // OpenClaw's `accepted` names the session the run went to.
        JobKind::Agent => Ack {
            session_key: Some(key.as_str()),
            agent_id: Some(key.agent_id()),
            status: Some("accepted"),
            accepted_at: Some(now),
            ..ack
        },
        JobKind::Chat => Ack {
            status: Some("started"),
            ..ack
        },
        JobKind::Send { channel, .. } => Ack {
            message_id: Some(idem),
            channel: Some(channel),
            ..ack
        },
    }
}

/// An admitted job whose acknowledgement waits for its journal record.
pub struct Journaled {
    journal: Rc<journal::Journal>,
    session: Rc<Session>,
    job: Job,
    /// The acknowledgement's payload, written already.
    ack: String,
    reply: ReplyTo,
    method: &'static str,
    received_us: u64,
    seq: Option<u64>,
    now: i64,
}

impl Journaled {
    /// Writes the admission record, then acknowledges and enqueues (or undoes the admission
    /// and answers the error).
    pub async fn finish(self, shard: &Rc<GatewayShard>) {
        let Journaled {
            journal,
            session,
            job,
            ack,
            reply,
            method,
            received_us,
            seq,
            now,
        } = self;
        if let Err(e) = journal.append(&acc_record(&job)).await {
            tracing::error!(shard = %shard.id, run = %job.run_id, "journal append failed: {e}");
            shard.queue.pending.borrow_mut().remove(&job.run_id);
            shard.sessions.dedup.borrow_mut().insert(
                job.dedup_key.clone(),
                Cached::Done {
                    payload: None,
                    error: Some(
                        GatewayError::AgentFailed(format!("journal write failed: {e}"))
                            .wire()
                            .to_json(),
                    ),
                },
                now,
            );
            shard.shared.queued.fetch_sub(1, Ordering::Relaxed);
            shard
                .queue
                .depth
                .set(shard.queue.depth.get().saturating_sub(1));
            shard.reply_err(
                &reply,
                &GatewayError::AgentFailed(format!("journal write failed: {e}")),
            );
            return;
        }
        trace(shard, &job.run_id, Step::Journaled, Detail::Empty);
        let ack = |s: &mut String| s.push_str(&ack);
        accept(shard, &reply, ack, method, received_us, &session, job, seq);
    }
}

/// The acknowledgement goes out before the lane can emit anything for this run.
#[allow(clippy::too_many_arguments)]
fn accept(
    shard: &Rc<GatewayShard>,
    reply: &ReplyTo,
    ack: impl FnOnce(&mut String),
    method: &'static str,
    received_us: u64,
    session: &Rc<Session>,
    job: Job,
    seq: Option<u64>,
) {
    shard.deliver(
        reply.conn,
        Out::Frame(frame::res_ok_with(&reply.req_id, ack)),
    );
    shard
        .metrics
        .record_latency(method, shard.shared.mono_us().saturating_sub(received_us));
    admit_ordered(shard, session, job, seq);
}

/// Admits a message (or answers its duplicate): answers the caller itself, unless the queue
/// is durable and the job is admitted. That one is returned, to be acknowledged once
/// [`Journaled::finish`] has written its admission record. Not `async`: a submission's
/// future is moved whole on each spawn, so only the durable path (boxed by callers) waits.
pub fn submit(shard: &Rc<GatewayShard>, s: Submit<'_>) -> Option<Journaled> {
    // A call received on this shard was stamped a moment ago, in this same turn.
    let now = if s.received.1 == shard.id.0 {
        s.received.0
    } else {
        now_ms()
    };
    let cfg = shard.config();
    let method = s.kind.method();
    let mut dedup_key = String::with_capacity(method.len() + 1 + s.idem.len());
    for part in [method, ":", &s.idem] {
        dedup_key.push_str(part);
    }
    let mut found = None;
    trace_found(
        shard,
        &mut found,
        &s.idem,
        Step::Received,
        Detail::Received {
            method,
            shard: s.received.1 as u32,
            at: s.received.0,
        },
        now,
    );
    // Duplicate? Join the in-flight call or replay the finished one.
    let cached = shard.sessions.dedup.borrow().get(&dedup_key, now).cloned();
    if let Some(c) = cached {
        bump(&shard.queue.stats.dedup_hits);
        trace(
            shard,
            &s.idem,
            Step::Deduped,
            Detail::json(
                json!({"state": match c { Cached::InFlight { .. } => "in_flight", Cached::Done { .. } => "done" }}),
            ),
        );
        match (c, &s.kind) {
            (Cached::InFlight { .. }, JobKind::Agent) => {
                if let Some(Cached::InFlight { joiners }) =
                    shard.sessions.dedup.borrow_mut().get_mut(&dedup_key, now)
                {
                    joiners.push(s.reply.clone());
                }
                let mut ack = ack_for(&s.kind, &s.idem, s.key, now);
                ack.duplicate = true;
                shard.reply_ok(&s.reply, &ack);
            }
            (Cached::InFlight { .. }, JobKind::Chat) => {
                shard.reply_ok(&s.reply, &json!({"runId": s.idem, "status": "in_flight"}));
            }
            (Cached::InFlight { .. }, JobKind::Send { .. }) => {
                let mut ack = ack_for(&s.kind, &s.idem, s.key, now);
                ack.duplicate = true;
                shard.reply_ok(&s.reply, &ack);
            }
            (Cached::Done { payload, error }, JobKind::Agent) => {
                let mut ack = ack_for(&s.kind, &s.idem, s.key, now);
                ack.duplicate = true;
                shard.reply_ok(&s.reply, &ack);
                reply_final(shard, &s.reply, payload.as_ref(), error.as_ref());
            }
            (Cached::Done { payload, error }, _) => {
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
                shard.reply_ok(&s.reply, &ack);
            }
        }
        return None;
    }
    // Admission: memory cap, the queue bound, then the session lane bound.
    if shard.shared.shedding.load(Ordering::Relaxed) {
        bump(&shard.queue.stats.rejected_full);
        trace(
            shard,
            &s.idem,
            Step::Rejected,
            Detail::json(json!({"reason": "OVERLOADED"})),
        );
        shard.reply_err(&s.reply, &GatewayError::Overloaded);
        return None;
    }
    let queued = &shard.shared.queued;
    if cfg.queue.enabled && queued.load(Ordering::Relaxed) >= cfg.queue.max_size {
        bump(&shard.queue.stats.rejected_full);
        trace(
            shard,
            &s.idem,
            Step::Rejected,
            Detail::json(json!({"reason": "QUEUE_FULL"})),
        );
        shard.reply_err(
            &s.reply,
            &GatewayError::QueueFull {
                retry_after_ms: 1000,
            },
        );
        return None;
    }
    let (session, created) = shard.sessions.get_or_create(s.key, now);
    if session.lane.borrow().len() + session.held.borrow().len() >= cfg.ordering.buffer_size {
        bump(&shard.queue.stats.rejected_full);
        trace(
            shard,
            &s.idem,
            Step::Rejected,
            Detail::json(json!({"reason": "LANE_FULL"})),
        );
        shard.reply_err(
            &s.reply,
            &GatewayError::LaneFull {
                retry_after_ms: 500,
            },
        );
        return None;
    }
    let mut job = Job {
        run_id: s.idem.clone(),
        session_key: s.key.as_str().to_string(),
        message: s.message,
        kind: s.kind.clone(),
        reply: matches!(s.kind, JobKind::Agent).then(|| s.reply.clone()),
        watcher: (!matches!(s.kind, JobKind::Send { .. })).then_some(s.reply.conn),
        dedup_key: dedup_key.clone(),
        accepted_at: now,
        attempts: 0,
        errors: Vec::new(),
        found,
    };
    let ack = ack_for(&s.kind, &s.idem, s.key, now);
    // A `send`'s answer is its acknowledgement: cache it as done at once.
    let entry = match s.kind {
        JobKind::Send { .. } => Cached::Done {
            payload: Some(JsonText::of(&ack)),
            error: None,
        },
        _ => Cached::InFlight {
            joiners: Vec::new(),
        },
    };
    shard
        .sessions
        .dedup
        .borrow_mut()
        .insert(dedup_key, entry, now);
    queued.fetch_add(1, Ordering::Relaxed);
    shard.queue.depth.set(shard.queue.depth.get() + 1);
    bump(&shard.queue.stats.accepted);
    trace_found(
        shard,
        &mut job.found,
        &s.idem,
        Step::Queued,
        Detail::Queued {
            session: session.shared_key.clone(),
            lane: session.lane.borrow().len() as u32,
        },
        now,
    );
    if created {
        crate::routing::sessions_changed(shard, s.key, "created");
    }
    run_directory_found(shard, &mut job.found, &s.idem, now, |r| r.status = "queued");
    remember_pending(shard, &job);
    // Durable backend: acknowledge only once the admission record is on disk.
    if let Some(journal) = shard.queue.journal() {
        return Some(Journaled {
            journal,
            session,
            job,
            ack: {
                let mut s = String::new();
                ack.write_json(&mut s);
                s
            },
            reply: s.reply,
            method,
            received_us: s.received_us,
            seq: s.seq,
            now,
        });
    }
    accept(
        shard,
        &s.reply,
        |s| ack.write_json(s),
        method,
        s.received_us,
        &session,
        job,
        s.seq,
    );
    None
}

/// Enqueues in the client's `sessionSeq` order: a message whose predecessor has not arrived
/// waits for it at most `ordering.timeout`; then the gap is logged and skipped.
fn admit_ordered(shard: &Rc<GatewayShard>, session: &Rc<Session>, job: Job, seq: Option<u64>) {
    let Some(seq) = seq else {
        return enqueue(shard, session, job);
    };
    let expected = session.next_seq.get().unwrap_or(seq);
    if seq < expected {
        // Late (its slot was skipped) or a retry: run it now rather than never.
        trace(
            shard,
            &job.run_id,
            Step::Late,
            Detail::json(json!({"sessionSeq": seq, "expected": expected})),
        );
        return enqueue(shard, session, job);
    }
    if seq > expected {
        trace(
            shard,
            &job.run_id,
            Step::Held,
            Detail::json(json!({"sessionSeq": seq, "waitingFor": expected})),
        );
        session.held.borrow_mut().insert(seq, job);
        let (sh, s) = (shard.clone(), session.clone());
        let wait = shard.config().ordering.timeout.duration();
        glommio::spawn_local(async move {
            glommio::timer::sleep(wait).await;
            let still =
                s.held.borrow().contains_key(&seq) && s.next_seq.get().is_some_and(|n| n < seq);
            if still {
                let first = s.held.borrow().keys().next().copied().unwrap_or(seq);
                let missing = s.next_seq.get().unwrap_or(first);
                tracing::warn!(shard = %sh.id, session = %s.key, from = missing, to = first - 1,
                    "ordering gap: predecessors did not arrive within ordering.timeout; skipping");
                s.next_seq.set(Some(first));
                release_held(&sh, &s);
            }
        })
        .detach();
        return;
    }
    session.next_seq.set(Some(seq + 1));
    enqueue(shard, session, job);
    release_held(shard, session);
}

/// Enqueues held jobs that are now next in sequence.
fn release_held(shard: &Rc<GatewayShard>, session: &Rc<Session>) {
    loop {
        let Some(next) = session.next_seq.get() else {
            return;
        };
        let job = session.held.borrow_mut().remove(&next);
        let Some(job) = job else { return };
        session.next_seq.set(Some(next + 1));
        enqueue(shard, session, job);
    }
}

/// Puts a job at the back of its session's lane and makes sure the lane is being driven.
pub fn enqueue(shard: &Rc<GatewayShard>, session: &Rc<Session>, job: Job) {
    shard.inflight.set(shard.inflight.get() + 1);
    session.lane.borrow_mut().push_back(job);
    if !session.running.get() {
        session.running.set(true);
        // The lane's first step runs here, in the caller's turn: a run that never waits (the
        // echo agent without a per-word delay) ends without a task of its own. A run that
        // waits goes on in a task, which polls it again (a future registers the waker of its
        // latest poll, so the throwaway one of this first poll is never relied on).
        let mut lane = Box::pin(drive_lane(shard.clone(), session.clone()));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if lane.as_mut().poll(&mut cx).is_pending() {
            glommio::spawn_local(lane).detach();
        }
    }
}

/// One dispatch attempt, starting at `at` (ms).
async fn dispatch(
    shard: &Rc<GatewayShard>,
    session: &Rc<Session>,
    job: &Job,
    ctl: &Rc<RunCtl>,
    at: i64,
) -> Result<Outcome, String> {
    let cfg = shard.config();
    match &job.kind {
        // Boxed, like the timed branch below: see there.
        JobKind::Send { channel, to } => {
            Box::pin(channel::deliver(shard, session, channel, to, job))
                .await
                .map(Outcome::Ok)
        }
        JobKind::Agent | JobKind::Chat => {
            let agent = session.key.agent_id();
            let binding = cfg.agents.bindings.get(agent);
            let fail_first = binding.map_or(0, |b| b.test_fail_first_attempts);
            if job.attempts <= fail_first {
                return Err(format!(
                    "agent {agent} failed (test failure {} of {fail_first})",
                    job.attempts
                ));
            }
            let timeout = Duration::from_millis(cfg.agents.run_timeout_ms);
            let on_worker = binding.and_then(|b| b.kind.as_deref()) == Some("worker");
            if !on_worker && cfg.agents.echo.delta_delay_ms == 0 {
                // Without a per-word delay the echo agent never yields: it cannot overstay
                // the timeout, so it runs without arming a timer.
                return Ok(echo::run(shard, session, job, ctl, at).await);
            }
            // Boxed: the timer and a worker dispatch would otherwise size every run's future
            // (moved whole on each spawn) for a branch the default echo agent never takes.
            let timed = Box::pin(glommio::timer::timeout(timeout, async {
                if on_worker {
                    Ok(crate::node::worker::dispatch(shard, session, job).await)
                } else {
                    Ok(Ok(echo::run(shard, session, job, ctl, at).await))
                }
            }));
            match timed.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(o)) => Ok(o),
                // A run that overstays `agents.runTimeoutMs` is stopped, not retried.
                Err(_) => Ok(Outcome::TimedOut),
            }
        }
    }
}

/// Takes a run slot of `agent` on this shard, waiting while `maxConcurrent` runs (split
/// evenly over the shards) are already running. `None` when the agent is uncapped.
async fn acquire_agent_slot(
    shard: &Rc<GatewayShard>,
    agent: &str,
) -> Option<glommio::sync::StaticPermit> {
    let cap = shard
        .config()
        .agents
        .bindings
        .get(agent)
        .and_then(|b| b.max_concurrent)
        .map(|m| m.div_ceil(shard.shards()).max(1))?;
    let sem = shard
        .queue
        .agent_slots
        .borrow_mut()
        .entry(agent.to_string())
        .or_insert_with(|| Rc::new(glommio::sync::Semaphore::new(cap as u64)))
        .clone();
    sem.acquire_static_permit(1).await.ok()
}

/// Runs a session's jobs one at a time, in arrival order, until its lane is empty.
pub(crate) async fn drive_lane(shard: Rc<GatewayShard>, session: Rc<Session>) {
    loop {
        let job = session.lane.borrow_mut().pop_front();
        let Some(mut job) = job else { break };
        run_job(&shard, &session, &mut job).await;
        shard.inflight.set(shard.inflight.get().saturating_sub(1));
        glommio::yield_if_needed().await;
    }
    session.running.set(false);
}

async fn run_job(shard: &Rc<GatewayShard>, session: &Rc<Session>, job: &mut Job) {
    let cfg = shard.config();
    let ctl = Rc::new(RunCtl {
        run_id: job.run_id.clone(),
        aborted: Cell::new(false),
    });
    *session.current.borrow_mut() = Some(ctl.clone());
    let started = now_ms();
    shard.metrics.record_latency(
        "stage:queue_wait",
        ((started - job.accepted_at).max(0) as u64) * 1000,
    );
    run_directory_found(shard, &mut job.found, &job.run_id, started, move |r| {
        r.status = "running";
        r.started_at = Some(started);
    });
    let limit = cfg.history_limit();
    if !matches!(job.kind, JobKind::Send { .. }) {
        session.push_history(
            HistoryEntry::new("user", &job.message, job.accepted_at, &job.run_id),
            limit,
        );
    }
    let agent = session.key.agent_id();
    let max_attempts = if cfg.queue.enabled {
        cfg.queue.retry_policy.max_attempts.max(1)
    } else {
        1
    };
    let outcome = loop {
        job.attempts += 1;
        // The first attempt starts now; a retry after its backoff reads the clock again.
        let at = if job.attempts == 1 { started } else { now_ms() };
        trace_found(
            shard,
            &mut job.found,
            &job.run_id,
            Step::Dispatched,
            Detail::Attempt(job.attempts),
            at,
        );
        let slot = acquire_agent_slot(shard, agent).await;
        let t0 = shard.shared.mono_us();
        let r = dispatch(shard, session, job, &ctl, at).await;
        shard
            .metrics
            .record_latency("stage:dispatch", shard.shared.mono_us().saturating_sub(t0));
        drop(slot);
        match r {
            Ok(o) => break Ok(o),
            Err(e) => {
                bump(&shard.queue.stats.failed_attempts);
                tracing::warn!(shard = %shard.id, run = %job.run_id, attempt = job.attempts, error = %e, "dispatch failed");
                job.errors
                    .push(json!({"attempt": job.attempts, "at": now_ms(), "error": e}));
                trace(
                    shard,
                    &job.run_id,
                    Step::AttemptFailed,
                    Detail::json(json!({"attempt": job.attempts, "error": e})),
                );
                if job.attempts >= max_attempts || ctl.aborted.get() {
                    break Err(e);
                }
                let rp = &cfg.queue.retry_policy;
                let wait = backoff_ms(
                    job.attempts,
                    rp.initial_delay.0,
                    rp.max_delay.0,
                    rp.backoff != "fixed",
                    rand::random::<f64>(),
                );
                bump(&shard.queue.stats.retries);
                trace(
                    shard,
                    &job.run_id,
                    Step::RetryScheduled,
                    Detail::json(json!({"attempt": job.attempts + 1, "delayMs": wait})),
                );
                glommio::timer::sleep(Duration::from_millis(wait)).await;
            }
        }
    };
    let ended = now_ms();
    *session.current.borrow_mut() = None;
    session.updated_at.set(ended);
    let (status, payload, error) = match &outcome {
        Ok(Outcome::Ok(text)) => {
            if !matches!(job.kind, JobKind::Send { .. }) {
                session.push_history(
                    HistoryEntry::new("assistant", text, ended, &job.run_id),
                    limit,
                );
            }
            bump(&shard.queue.stats.completed);
            trace_found(
                shard,
                &mut job.found,
                &job.run_id,
                Step::Completed,
                Detail::Attempts(job.attempts),
                ended,
            );
            let done = FinalOk {
                run_id: &job.run_id,
                status: "ok",
                summary: "completed",
                session_key: session.key.as_str(),
                result: RunResult {
                    payloads: [TextPart { text }],
                    meta: RunMeta {
                        duration_ms: ended - started,
                        attempts: job.attempts,
                        agent_meta: AgentMeta {
                            agent_id: session.key.agent_id(),
                            provider: "shardgate",
                            model: "echo",
                        },
                    },
                },
            };
            ("ok", done.to_json(), None)
        }
        Ok(Outcome::TimedOut) => {
            bump(&shard.queue.stats.completed);
            trace(
                shard,
                &job.run_id,
                Step::TimedOut,
                Detail::json(json!({"runTimeoutMs": cfg.agents.run_timeout_ms})),
            );
            if let Some(w) = job.watcher {
                let p = json!({"runId": job.run_id, "seq": 0, "stream": "lifecycle", "ts": ended,
                               "data": {"phase": "end", "startedAt": started, "endedAt": ended, "stopReason": "timeout"},
                               "sessionKey": session.key.as_str(), "agentId": session.key.agent_id()});
                shard.event_to(w, "agent", &p, false);
                if job.kind == JobKind::Chat {
                    let p = json!({"runId": job.run_id, "sessionKey": session.key.as_str(), "state": "aborted",
                                   "stopReason": "timeout"});
                    shard.event_to(w, "chat", &p, false);
                }
            }
            (
                "timeout",
                JsonText::of(
                    &json!({"runId": job.run_id, "status": "timeout", "summary": "aborted", "stopReason": "timeout"}),
                ),
                None,
            )
        }
        Ok(Outcome::Aborted(_)) => {
            bump(&shard.queue.stats.completed);
            trace(shard, &job.run_id, Step::Aborted, Detail::Empty);
            (
                "aborted",
                JsonText::of(
                    &json!({"runId": job.run_id, "status": "timeout", "summary": "aborted", "stopReason": "aborted"}),
                ),
                None,
            )
        }
        Err(_) => {
            let dl_id = uuid::Uuid::new_v4().to_string();
            let err = dead_error(job, &dl_id);
            if cfg.queue.dead_letter.enabled {
                shard.queue.dead.borrow_mut().push_back(DeadLetter {
                    id: dl_id.clone(),
                    job: job.clone(),
                    at: ended,
                });
                bump(&shard.queue.stats.dead_lettered);
                trace(
                    shard,
                    &job.run_id,
                    Step::DeadLettered,
                    Detail::json(json!({"deadLetterId": dl_id, "attempts": job.attempts})),
                );
                tracing::warn!(shard = %shard.id, run = %job.run_id, attempts = job.attempts, "dead-lettered");
            } else {
                trace(
                    shard,
                    &job.run_id,
                    Step::Failed,
                    Detail::json(json!({"attempts": job.attempts})),
                );
            }
            if job.kind == JobKind::Chat {
                if let Some(w) = job.watcher {
                    let p = json!({"runId": job.run_id, "sessionKey": session.key.as_str(), "state": "error",
                                   "errorMessage": err["message"]});
                    shard.event_to(w, "chat", &p, false);
                }
            }
            (
                "error",
                JsonText::of(
                    &json!({"runId": job.run_id, "status": "error", "summary": err["message"]}),
                ),
                Some(err),
            )
        }
    };
    shard
        .queue
        .depth
        .set(shard.queue.depth.get().saturating_sub(1));
    shard.shared.queued.fetch_sub(1, Ordering::Relaxed);
    // Only the journal keeps pending jobs: without one the map is empty, and hashing the run
    // id to find nothing cost ~280 instructions a run.
    let mut pending = shard.queue.pending.borrow_mut();
    if !pending.is_empty() {
        pending.remove(&job.run_id);
    }
    drop(pending);
    shard.metrics.run_done(status == "error");
    shard.metrics.record_latency(
        "stage:end_to_end",
        ((ended - job.accepted_at).max(0) as u64) * 1000,
    );
    if let Some(j) = shard.queue.journal() {
        let dl = shard
            .queue
            .dead
            .borrow()
            .back()
            .filter(|d| d.job.run_id == job.run_id && status == "error")
            .map(|d| d.id.clone());
        match dl {
            Some(dl) => j.append_nowait(&journal::Record::Dead {
                id: job.run_id.clone(),
                dl,
                attempts: job.attempts,
                errors: job.errors.clone(),
                at: ended,
            }),
            None => j.append_nowait(&journal::Record::Done {
                id: job.run_id.clone(),
                k: job.dedup_key.clone(),
                p: Some(payload.to_value()),
                e: error.clone(),
                at: ended,
            }),
        }
    }
    let joiners = match shard
        .sessions
        .dedup
        .borrow_mut()
        .get_mut(&job.dedup_key, ended)
    {
        Some(c @ Cached::InFlight { .. }) => match std::mem::replace(
            c,
            Cached::Done {
                payload: Some(payload.clone()),
                error: error.clone(),
            },
        ) {
            Cached::InFlight { joiners } => joiners,
            Cached::Done { .. } => Vec::new(),
        },
        _ => Vec::new(),
    };
    if job.kind == JobKind::Agent {
        if let Some(r) = &job.reply {
            reply_final(shard, r, Some(&payload), error.as_ref());
        }
        for j in joiners {
            reply_final(shard, &j, Some(&payload), error.as_ref());
        }
    }
    let err_text = error
        .as_ref()
        .and_then(|e| e["message"].as_str().map(str::to_string));
    run_directory_found(shard, &mut job.found, &job.run_id, ended, move |r| {
        r.status = status;
        r.ended_at = Some(ended);
        r.error = err_text;
    });
}

/// Re-admits dead letters owned by this shard (`id` or all). Returns how many.
pub fn redrive(shard: &Rc<GatewayShard>, id: Option<&str>) -> usize {
    let picked: Vec<DeadLetter> = {
        let mut dead = shard.queue.dead.borrow_mut();
        let (take, keep): (Vec<_>, Vec<_>) = dead
            .drain(..)
            .partition(|d| id.is_none_or(|i| d.id == i || d.job.run_id == i));
        dead.extend(keep);
        take
    };
    let n = picked.len();
    for d in picked {
        let mut job = d.job;
        job.attempts = 0;
        job.errors.clear();
        job.reply = None;
        job.watcher = None;
        let key = match SessionKey::parse(&job.session_key, "main") {
            Ok(k) => k,
            Err(_) => continue,
        };
        let (session, _) = shard.sessions.get_or_create(&key, now_ms());
        shard.sessions.dedup.borrow_mut().insert(
            job.dedup_key.clone(),
            Cached::InFlight {
                joiners: Vec::new(),
            },
            now_ms(),
        );
        shard.shared.queued.fetch_add(1, Ordering::Relaxed);
        shard.queue.depth.set(shard.queue.depth.get() + 1);
        if let Some(j) = shard.queue.journal() {
            j.append_nowait(&journal::Record::Redrive {
                id: job.run_id.clone(),
                at: now_ms(),
            });
        }
        remember_pending(shard, &job);
        bump(&shard.queue.stats.redriven);
        trace(
            shard,
            &job.run_id,
            Step::Redriven,
            Detail::json(json!({"deadLetterId": d.id})),
        );
        enqueue(shard, &session, job);
    }
    n
}

/// Drops dead letters older than `deadLetter.maxAge`.
pub fn purge_dead(shard: &GatewayShard, now: i64) {
    let max_age = shard.config().queue.dead_letter.max_age.0 as i64;
    let mut dead = shard.queue.dead.borrow_mut();
    let before = dead.len();
    let journal = shard.queue.journal();
    dead.retain(|d| {
        let keep = now - d.at < max_age;
        if !keep {
            if let Some(j) = &journal {
                j.append_nowait(&journal::Record::Purge {
                    id: d.job.run_id.clone(),
                });
            }
        }
        keep
    });
    let purged = before - dead.len();
    if purged > 0 {
        shard
            .queue
            .stats
            .purged
            .set(shard.queue.stats.purged.get() + purged as u64);
        tracing::info!(shard = %shard.id, purged, "purged expired dead letters");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text a model or a client could send: quotes, backslashes, controls, non-ASCII.
    const AWKWARD: &str = "say \"hi\"\\ \u{1}\ttab \u{2014} na\u{ef}ve \u{1f389}";

    #[test]
    fn hand_written_final_matches_its_serde_shape() {
        let done = FinalOk {
            run_id: "r-\"1",
            status: "ok",
            summary: "completed",
            session_key: "agent:main:k\u{e9}",
            result: RunResult {
                payloads: [TextPart { text: AWKWARD }],
                meta: RunMeta {
                    duration_ms: -3,
                    attempts: 2,
                    agent_meta: AgentMeta {
                        agent_id: "main",
                        provider: "shardgate",
                        model: "echo",
                    },
                },
            },
        };
        // The same text as serde's, keys in the same order.
        assert_eq!(done.to_json(), JsonText::of(&done));
    }

    #[test]
    fn hand_written_acks_match_their_serde_shape() {
        let key = SessionKey::parse("agent:ops:k", "main").unwrap();
        let kinds = [
            JobKind::Agent,
            JobKind::Chat,
            JobKind::Send {
                channel: "log\"".into(),
                to: "x".into(),
            },
        ];
        for kind in &kinds {
            for duplicate in [false, true] {
                let mut ack = ack_for(kind, AWKWARD, &key, 1_700_000_000_123);
                ack.duplicate = duplicate;
                let mut s = String::new();
                ack.write_json(&mut s);
                let hand: Value = serde_json::from_str(&s).unwrap();
                assert_eq!(hand, serde_json::to_value(&ack).unwrap(), "{kind:?}");
                // Same keys in the same order too: clients may compare the text.
                assert_eq!(s, serde_json::to_string(&ack).unwrap(), "{kind:?}");
            }
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        let d = |a, r| backoff_ms(a, 1000, 30_000, true, r);
        assert_eq!(d(1, 1.0), 1000);
        assert_eq!(d(1, 0.0), 500);
        assert_eq!(d(2, 1.0), 2000);
        assert_eq!(d(3, 1.0), 4000);
        assert_eq!(d(10, 1.0), 30_000);
        assert_eq!(d(40, 1.0), 30_000);
        assert_eq!(backoff_ms(5, 1000, 30_000, false, 1.0), 1000);
    }
}
