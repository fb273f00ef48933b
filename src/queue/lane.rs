//! A session's lane, driven, and the effects of the delivery core applied (the two recurse:
//! a finished job's effects may start the next one). The lane: its jobs run one at a time in arrival order, each through its
//! attempts (dispatch to the echo agent, a worker or a channel; the backoff the core asks for
//! between them), and end in the core's [`Delivery::finish`](crate::delivery::Delivery::finish).
//!
//! Hot path: a run that never waits (the echo agent without a per-word delay) starts and ends
//! in its caller's turn without a task of its own; the lane's future is sized for that case
//! (its rare branches are boxed; see the budget test in `src/lib.rs`).

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use super::runs::{reply_final, run_directory_found, trace_found};
use shards::dedup::Handle;

use super::backend::QueueBackend;
use super::channel;
use crate::agent::echo::{self, Outcome};
use crate::clock::now_ms;
use crate::delivery::trace::{Detail, Step};
use crate::delivery::{effects, Answer, Effect, Effects, Finished, Job, JobKind, Ran, RunInfo};
use crate::protocol::frame::{self};
use crate::protocol::SessionKey;
use crate::session::{HistoryEntry, RunCtl, Session};
use crate::shard::GatewayShard;
use crate::shard::Out;

/// Puts a job at the back of its session's lane and makes sure the lane is being driven.
pub fn enqueue(shard: &Rc<GatewayShard>, session: &Rc<Session>, job: Job) {
    shard.inflight().set(shard.inflight().get() + 1);
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
            let fail_first = binding.map_or(0, |b| b.dangerously_fail_first_attempts);
            if job.attempts <= fail_first {
                return Err(format!(
                    "agent {agent} failed (test failure {} of {fail_first})",
                    job.attempts
                ));
            }
            let timeout = Duration::from_millis(cfg.agents.run_timeout_ms);
            let on_worker = binding.and_then(|b| b.kind) == Some(crate::config::AgentKind::Worker);
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
        .queue()
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
        shard
            .inflight()
            .set(shard.inflight().get().saturating_sub(1));
        glommio::yield_if_needed().await;
    }
    session.running.set(false);
}

/// Runs `job` through its attempts to its end.
async fn run_job(shard: &Rc<GatewayShard>, session: &Rc<Session>, job: &mut Job) {
    let ctl = Rc::new(RunCtl {
        run_id: job.run_id.clone(),
        aborted: Cell::new(false),
    });
    *session.current.borrow_mut() = Some(ctl.clone());
    let started = now_ms();
    shard.metrics().record_latency(
        "stage:queue_wait",
        ((started - job.accepted_at).max(0) as u64) * 1000,
    );
    run_directory_found(shard, &mut job.found, &job.run_id, started, move |r| {
        r.status = "running";
        r.started_at = Some(started);
    });
    if !matches!(job.kind, JobKind::Send { .. }) {
        session.push_history(
            HistoryEntry::new("user", &job.message, job.accepted_at, &job.run_id),
            shard.config().history_limit(),
        );
    }
    let agent = session.key.agent_id();
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
        let t0 = shard.shared().mono_us();
        let r = dispatch(shard, session, job, &ctl, at).await;
        shard.metrics().record_latency(
            "stage:dispatch",
            shard.shared().mono_us().saturating_sub(t0),
        );
        drop(slot);
        match r {
            Ok(o) => break Some(o),
            Err(e) => match attempt_failed(shard, job, e, ctl.aborted.get()) {
                Some(wait) => glommio::timer::sleep(Duration::from_millis(wait)).await,
                None => break None,
            },
        }
    };
    complete(shard, session, job, outcome, started);
}

/// A failed attempt, told to the core: the backoff before the next one, or `None` when the
/// run is out of attempts.
fn attempt_failed(
    shard: &Rc<GatewayShard>,
    job: &mut Job,
    error: String,
    aborted: bool,
) -> Option<u64> {
    tracing::warn!(shard = %shard.id(), run = %job.run_id, attempt = job.attempts, error = %error, "dispatch failed");
    let now = now_ms();
    let mut effects = shard.queue().with_core(&shard.shared().queued, |d| {
        d.attempt_failed(job, error, aborted, rand::random::<f64>(), now)
    });
    let wait = effects::retry_delay(&effects);
    apply(shard, &job.run_id, &mut job.found, now, &mut effects);
    wait
}

/// The run ended (`None`: out of attempts): the session is free, the core completes it, and
/// its answers go out.
fn complete(
    shard: &Rc<GatewayShard>,
    session: &Rc<Session>,
    job: &mut Job,
    outcome: Option<Outcome>,
    started: i64,
) {
    let ended = now_ms();
    *session.current.borrow_mut() = None;
    session.updated_at.set(ended);
    // A platform chat's answer goes back to the chat as a reply job (queued before the run's
    // outcome is written, so a durable backend never has the outcome without the reply).
    if let Some(Outcome::Ok(text)) = &outcome {
        if !matches!(job.kind, JobKind::Send { .. }) {
            queue_reply(shard, job, text, ended);
        }
    }
    let ran = match outcome {
        Some(Outcome::Ok(text)) => {
            if !matches!(job.kind, JobKind::Send { .. }) {
                session.push_history(
                    HistoryEntry::new("assistant", &text, ended, &job.run_id),
                    shard.config().history_limit(),
                );
            }
            Ran::Ok(text)
        }
        Some(Outcome::TimedOut) => Ran::TimedOut,
        Some(Outcome::Aborted(_)) => Ran::Aborted,
        None => Ran::Failed,
    };
    let failed = ran == Ran::Failed;
    let info = RunInfo {
        agent_id: session.key.agent_id(),
        started,
    };
    let finished = shard.queue().with_core(&shard.shared().queued, |d| {
        d.finished(job, ran, info, ended)
    });
    shard.metrics().run_done(failed);
    shard.metrics().record_latency(
        "stage:end_to_end",
        ((ended - job.accepted_at).max(0) as u64) * 1000,
    );
    apply_finished(shard, &job.run_id, &mut job.found, finished);
}

/// Queues the reply to a platform chat: a `send` job to the channel and chat the session key
/// names ([`crate::channels::route::reply_route`]), on this session, behind the run that answered.
/// Its runId is the run's with `:reply`, so a run replayed after a restart queues it once.
#[cold]
fn queue_reply(shard: &Rc<GatewayShard>, run: &Job, text: &str, now: i64) {
    let Some((channel, to)) = crate::channels::route::reply_route(shard.config(), &run.session_key)
    else {
        return;
    };
    let run_id = format!("{}:reply", run.run_id);
    let kind = JobKind::Send { channel, to };
    let dedup_key = crate::delivery::job::dedup_key(kind.method(), &run_id);
    let reply = Job {
        run_id: run_id.clone(),
        session_key: run.session_key.clone(),
        message: text.to_string(),
        kind,
        reply: None,
        watcher: None,
        dedup_key,
        accepted_at: now,
        attempts: 0,
        errors: Vec::new(),
        found: None,
    };
    let mut effects = shard.queue().with_core(&shard.shared().queued, |d| {
        if d.dedup.get_mut(&reply.dedup_key, now).is_some() {
            return Effects::new();
        }
        d.readmit(reply, now)
    });
    apply(shard, &run_id, &mut None, now, &mut effects);
}

/// Applies the end of a run ([`Finished`], in its order) to `run_id` (its handle: `found`).
pub(super) fn apply_finished(
    shard: &Rc<GatewayShard>,
    run_id: &str,
    found: &mut Option<Handle>,
    f: Finished,
) {
    let (step, detail) = f.stage;
    if step == Step::DeadLettered {
        tracing::warn!(shard = %shard.id(), run = %run_id, "dead-lettered");
    }
    trace_found(shard, found, run_id, step, detail, f.at);
    if !f.events.is_empty() {
        let mut events: Effects = f.events.into_iter().collect();
        apply(shard, run_id, found, f.at, &mut events);
    }
    if let Some(r) = f.journal {
        if let Some(b) = shard.queue().backend() {
            b.append_nowait(&r);
        }
    }
    for to in f.caller.iter().chain(&f.joiners) {
        reply_final(shard, to, Some(&f.payload), f.error.as_ref());
    }
    let (status, at, error) = (f.status, f.at, f.error_text);
    run_directory_found(shard, found, run_id, at, move |r| {
        r.status = status;
        r.ended_at = Some(at);
        r.error = error;
    });
}

/// Applies the core's `effects`, in order, at `now`. `run_id` and `found` are the run of the
/// call that returned them (what an effect without a run of its own refers to).
/// [`Effect::Retry`] belongs to its caller, which reads it first.
pub(super) fn apply(
    shard: &Rc<GatewayShard>,
    run_id: &str,
    found: &mut Option<Handle>,
    now: i64,
    effects: &mut Effects,
) {
    for e in effects.drain(..) {
        match e {
            Effect::Reply { to, answer } => match answer {
                Answer::Ok(p) => {
                    shard.deliver(to.conn, Out::Frame(frame::res_ok_text(&to.req_id, &p)))
                }
                Answer::Err(e) => shard.reply_err(&to, &e),
                Answer::Final { payload, error } => {
                    reply_final(shard, &to, payload.as_ref(), error.as_ref())
                }
            },
            Effect::Event { to, name, payload } => {
                // A run's end (timeout, failure): to its caller and the session's watchers.
                match payload.get("sessionKey").and_then(|k| k.as_str()) {
                    Some(key) => {
                        crate::routing::watchers::send(shard, key, Some(to), name, &payload, false)
                    }
                    None => shard.event_to(to, name, &payload, false),
                }
            }
            Effect::Trace { run, step, detail } => {
                let id = run.as_deref().unwrap_or(run_id);
                if step == Step::DeadLettered {
                    tracing::warn!(shard = %shard.id(), run = %id, "dead-lettered");
                }
                match run {
                    Some(ref r) => trace_found(shard, &mut None, r, step, detail, now),
                    None => trace_found(shard, found, run_id, step, detail, now),
                }
            }
            Effect::Journal(r) => {
                if let Some(b) = shard.queue().backend() {
                    b.append_nowait(&r);
                }
            }
            Effect::Enqueue(job) => {
                let Ok(key) = SessionKey::parse(&job.session_key, "main") else {
                    continue;
                };
                let (session, _) = shard.sessions().get_or_create(&key, now);
                enqueue(shard, &session, *job);
            }
            Effect::RunStatus { status, at, error } => {
                run_directory_found(shard, found, run_id, at, move |r| {
                    r.status = status;
                    r.ended_at = Some(at);
                    r.error = error;
                })
            }
            Effect::Retry { .. } => {}
        }
    }
}
