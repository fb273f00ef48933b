//! The delivery core driven by hand with a fake clock (`now` is just a number here): every
//! rule of dedup, admission, retry, dead letters and completion, without a shard, a socket
//! or a timer. Shared helpers here; [`submission`] covers dedup and admission, [`lifecycle`]
//! attempts, completion, dead letters and the durable backend's records.

mod lifecycle;
mod submission;

use serde_json::Value;
use shards::ShardId;

use super::*;
use crate::addr::{ConnRef, ReplyTo};
use crate::delivery::trace::Step;
use crate::protocol::error::GatewayError;

const T0: i64 = 1_700_000_000_000;

fn cfg() -> Config {
    Config::default()
}

fn key() -> SessionKey {
    SessionKey::parse("agent:main:k", "main").unwrap()
}

fn reply(req: &str) -> ReplyTo {
    ReplyTo {
        conn: ConnRef::local(ShardId(0), 7),
        req_id: req.into(),
    }
}

fn sub<'a>(key: &'a SessionKey, kind: JobKind, idem: &str, req: &str) -> Submission<'a> {
    Submission {
        key,
        kind,
        message: "hello world".into(),
        idem: idem.into(),
        reply: reply(req),
        seq: None,
        load: Load::default(),
    }
}

/// Submits and expects an admission; returns the job.
fn admit(d: &mut Delivery, kind: JobKind, idem: &str, now: i64) -> Job {
    let k = key();
    match d.submit(sub(&k, kind, idem, "req-1"), now) {
        Submitted::Admitted(a) => a.job,
        other => panic!("not admitted: {other:?}"),
    }
}

/// Expects a submission answered at once; returns its effects.
fn answered(s: Submitted) -> Effects {
    match s {
        Submitted::Answered(out) => out,
        other => panic!("admitted: {other:?}"),
    }
}

/// The replies among `effects`: (request id, answer).
fn replies(effects: &[Effect]) -> Vec<(String, Answer)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply { to, answer } => Some((to.req_id.clone(), answer.clone())),
            _ => None,
        })
        .collect()
}

fn steps(effects: &[Effect]) -> Vec<Step> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Trace { step, .. } => Some(*step),
            _ => None,
        })
        .collect()
}

fn ok_json(a: &Answer) -> Value {
    match a {
        Answer::Ok(p) => p.to_value(),
        other => panic!("not ok: {other:?}"),
    }
}

/// Runs `job` to the end of `n` failed attempts (no retry waits: the fake clock moves on).
fn fail_all(d: &mut Delivery, job: &mut Job, now: i64) -> Effects {
    loop {
        job.attempts += 1;
        let out = d.attempt_failed(job, format!("boom {}", job.attempts), false, 0.5, now);
        if effects::retry_delay(&out).is_none() {
            break;
        }
    }
    let info = RunInfo {
        agent_id: "main",
        started: now,
    };
    d.finish(job, Ran::Failed, info, now)
}

fn finish_ok(d: &mut Delivery, job: &mut Job, started: i64, now: i64) -> Effects {
    job.attempts += 1;
    let info = RunInfo {
        agent_id: "main",
        started,
    };
    d.finish(job, Ran::Ok("hello world".into()), info, now)
}

/// Every core call returns its effects by value, and the driver moves them again to apply
/// them: sized for a job (968 B) they cost ~2 000 instructions per `agent` request in
/// `perf/instructions`, mostly memcpy.
#[test]
fn effects_stay_small() {
    assert!(size_of::<Effect>() <= 112, "{}", size_of::<Effect>());
    assert!(size_of::<Effects>() <= 344, "{}", size_of::<Effects>());
    assert!(size_of::<Submitted>() <= 352, "{}", size_of::<Submitted>());
}
