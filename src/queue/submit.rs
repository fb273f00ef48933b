//! The submission side of the driver: a request for a message (`agent`, `chat.send`,
//! `send`…) on its session's owner shard goes through the core ([`Delivery::submit`]); an
//! admitted message is placed in its session, written to a durable backend, acknowledged, and
//! put in its lane in `sessionSeq` order.
//!
//! Not `async`: a submission's future would be moved whole on each spawn, so only the durable
//! path ([`Journaled`], boxed by its callers) waits.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use serde_json::json;

use super::backend::{Durable, QueueBackend};
use super::lane;
use super::lane::apply;
use super::runs::{run_directory_found, trace_found};
use crate::addr::ReplyTo;
use crate::clock::now_ms;
use crate::delivery::trace::{Detail, Step};
use crate::delivery::{wire, Admission, Job, JobKind, Load, Offer, Record, Submission, Submitted};
use crate::protocol::frame;
use crate::protocol::SessionKey;
use crate::session::Session;
use crate::shard::{GatewayShard, Out};

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

/// An admitted job whose acknowledgement waits for its admission record.
#[derive(Debug)]
pub struct Journaled {
    backend: Durable,
    session: Rc<Session>,
    job: Job,
    reply: ReplyTo,
    received_us: u64,
    seq: Option<u64>,
    now: i64,
}

impl Journaled {
    /// Writes the admission record, then acknowledges and enqueues (or undoes the admission
    /// and answers the error).
    pub async fn finish(self, shard: &Rc<GatewayShard>) {
        let Journaled {
            backend,
            session,
            mut job,
            reply,
            received_us,
            seq,
            now,
        } = self;
        if let Err(e) = backend.append(&Record::admission(&job)).await {
            let mut effects = if e.transient {
                tracing::warn!(shard = %shard.id(), run = %job.run_id, "queue backend unavailable: {}", e.why);
                let retry = super::redis::RETRY_AFTER_MS;
                shard.queue().with_core(&shard.shared().queued, |d| {
                    d.backend_unavailable(&job, reply, retry, now)
                })
            } else {
                tracing::error!(shard = %shard.id(), run = %job.run_id, "journal append failed: {}", e.why);
                shard.queue().with_core(&shard.shared().queued, |d| {
                    d.journal_failed(&job, reply, &e.why, now)
                })
            };
            return apply(shard, &job.run_id, &mut job.found, now, &mut effects);
        }
        super::runs::trace(shard, &job.run_id, Step::Journaled, Detail::Empty);
        accept(shard, &reply, received_us, &session, job, seq, now);
    }
}

/// Admits a message (or answers its duplicate): answers the caller itself, unless the queue
/// is durable and the job is admitted. That one is returned, to be acknowledged once
/// [`Journaled::finish`] has written its admission record.
pub fn submit(shard: &Rc<GatewayShard>, s: Submit<'_>) -> Option<Journaled> {
    // A call received on this shard was stamped a moment ago, in this same turn.
    let now = if s.received.1 == shard.id().0 {
        s.received.0
    } else {
        now_ms()
    };
    let mut found = None;
    trace_found(
        shard,
        &mut found,
        &s.idem,
        Step::Received,
        Detail::Received {
            method: s.kind.method(),
            shard: s.received.1 as u32,
            at: s.received.0,
        },
        now,
    );
    let session = shard.sessions().get(s.key.as_str());
    let load = Load {
        shedding: shard.shared().shedding.load(Ordering::Relaxed),
        queue_full: !shard.queue().credits.room(&shard.shared().queued),
        lane: session
            .as_ref()
            .map_or(0, |s| s.lane.borrow().len() + s.held.borrow().len()),
    };
    let sub = Submission {
        key: s.key,
        kind: s.kind,
        message: s.message,
        idem: s.idem,
        reply: s.reply,
        seq: s.seq,
        load,
    };
    let Admission {
        mut job,
        reply,
        seq,
    } = match shard
        .queue()
        .with_core(&shard.shared().queued, |d| d.submit(sub, now))
    {
        Submitted::Admitted(a) => a,
        Submitted::Answered(mut effects) => {
            apply(shard, "", &mut found, now, &mut effects);
            return None;
        }
    };
    job.found = found;
    let session = match session {
        Some(session) => session,
        None => {
            let (session, created) = shard.sessions().get_or_create(s.key, now);
            if created {
                shard.sessions_changed(s.key, "created");
            }
            session
        }
    };
    placed(shard, &session, &mut job, now);
    // Durable backend: acknowledge only once the admission record is on disk.
    if let Some(backend) = shard.queue().backend() {
        return Some(Journaled {
            backend,
            session,
            job,
            reply,
            received_us: s.received_us,
            seq,
            now,
        });
    }
    accept(shard, &reply, s.received_us, &session, job, seq, now);
    None
}

/// An admitted job is in its session: traced as queued (behind how many), and its run is
/// known to `agent.wait` as queued.
fn placed(shard: &Rc<GatewayShard>, session: &Session, job: &mut Job, now: i64) {
    trace_found(
        shard,
        &mut job.found,
        &job.run_id,
        Step::Queued,
        Detail::Queued {
            session: session.shared_key.clone(),
            lane: session.lane.borrow().len() as u32,
        },
        now,
    );
    run_directory_found(shard, &mut job.found, &job.run_id, now, |r| {
        r.status = "queued"
    });
}

/// Acknowledges an admitted job, then enqueues it: the acknowledgement goes out before the
/// lane can emit anything for this run.
fn accept(
    shard: &Rc<GatewayShard>,
    reply: &ReplyTo,
    received_us: u64,
    session: &Rc<Session>,
    job: Job,
    seq: Option<u64>,
    now: i64,
) {
    let ack = wire::ack_for(&job.kind, &job.run_id, &session.key, job.accepted_at);
    shard.deliver(
        reply.conn,
        Out::Frame(frame::res_ok_with(&reply.req_id, |s| ack.write_json(s))),
    );
    shard.metrics().record_latency(
        job.kind.method(),
        shard.shared().mono_us().saturating_sub(received_us),
    );
    admit_ordered(shard, session, job, seq, now);
}

/// Enqueues in the client's `sessionSeq` order: a message whose predecessor has not arrived
/// waits for it at most `ordering.timeout`; then the gap is logged and skipped.
fn admit_ordered(
    shard: &Rc<GatewayShard>,
    session: &Rc<Session>,
    job: Job,
    seq: Option<u64>,
    now: i64,
) {
    let Some(seq) = seq else {
        return lane::enqueue(shard, session, job);
    };
    let (mut found, run_id) = (job.found, job.run_id.clone());
    let timeout = shard.config().ordering.timeout;
    let offer = session.held.borrow_mut().offer(seq, job, now, timeout.0);
    match offer {
        Offer::Next(job) => {
            lane::enqueue(shard, session, job);
            release_held(shard, session);
        }
        Offer::Late { item, expected } => {
            // Late (its slot was skipped) or a repeat: run it now rather than never.
            let detail = Detail::json(json!({"sessionSeq": seq, "expected": expected}));
            trace_found(shard, &mut found, &run_id, Step::Late, detail, now_ms());
            lane::enqueue(shard, session, item);
        }
        Offer::Held {
            waiting_for,
            deadline,
        } => {
            let detail = Detail::json(json!({"sessionSeq": seq, "waitingFor": waiting_for}));
            trace_found(shard, &mut found, &run_id, Step::Held, detail, now_ms());
            let (sh, s) = (shard.clone(), session.clone());
            glommio::spawn_local(async move {
                glommio::timer::sleep(timeout.duration()).await;
                // The deadline has passed by the timer's measure, whatever the wall clock says.
                ordering_timeout(&sh, &s, now_ms().max(deadline));
            })
            .detach();
        }
    }
}

/// A held message's wait is over at `now`: skips the gaps that held it (logged), then
/// releases what is next in sequence.
fn ordering_timeout(shard: &Rc<GatewayShard>, session: &Rc<Session>, now: i64) {
    loop {
        let gap = session.held.borrow_mut().expire(now);
        let Some(gap) = gap else { break };
        tracing::warn!(shard = %shard.id(), session = %session.key, from = gap.from, to = gap.to,
            "ordering gap: predecessors did not arrive within ordering.timeout; skipping");
        release_held(shard, session);
    }
    release_held(shard, session);
}

/// Enqueues held jobs that are now next in sequence.
fn release_held(shard: &Rc<GatewayShard>, session: &Rc<Session>) {
    loop {
        let next = session.held.borrow_mut().pop_ready();
        let Some(job) = next else { return };
        lane::enqueue(shard, session, job);
    }
}
