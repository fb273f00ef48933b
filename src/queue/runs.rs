//! A run's entries outside its session: its pipeline trace on this shard, its run directory
//! record on `owner(runId)` (for `agent.wait`), and the application of the core's effects that
//! write them or answer the run's callers.
//!
//! Each stage finds the run's entry by the handle of the last one (`Job::found`) when it still
//! can, so a run hashes its id once per shard rather than once per stage.

use std::rc::Rc;

use serde_json::json;
use shards::dedup::Handle;

use crate::addr::ReplyTo;
use crate::clock::now_ms;
use crate::delivery::trace::{Detail, Stage, Step};
use crate::protocol::frame::{self, JsonText};
use crate::shard::{GatewayShard, Out, RunEntry, RunRecord};

/// Appends a pipeline stage to the trace of `run_id` on this shard (at most 64 per message).
pub fn trace(shard: &GatewayShard, run_id: &str, step: Step, detail: Detail) {
    trace_found(shard, &mut None, run_id, step, detail, now_ms());
}

/// [`trace`] at `now` (ms) through the handle `found` when it still finds the trace;
/// otherwise by `run_id`, leaving the handle in `found` for the next stage.
pub(super) fn trace_found(
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
        shard: shard.id().0 as u32,
    };
    let mut runs = shard.runs().borrow_mut();
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

/// Sends a finished call's answer (or replays a cached one) to `reply`.
pub fn reply_final(
    shard: &GatewayShard,
    reply: &ReplyTo,
    payload: Option<&JsonText>,
    error: Option<&serde_json::Value>,
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
pub(super) fn run_directory_found(
    shard: &Rc<GatewayShard>,
    found: &mut Option<Handle>,
    run_id: &str,
    now: i64,
    f: impl FnOnce(&mut RunRecord) + Send + 'static,
) {
    let owner = shard.owner(run_id);
    if owner == shard.id() {
        let mut runs = shard.runs().borrow_mut();
        if let Some(e) = found.and_then(|h| runs.by_handle(h, now)) {
            return update(shard, run_id, &mut e.record, f);
        }
        let (h, e) = runs.entry(run_id, now, RunEntry::default);
        *found = Some(h);
        return update(shard, run_id, &mut e.record, f);
    }
    let id = run_id.to_string();
    shard.on_shard(owner, move |s| update_run(s, &id, now, f));
}

fn update_run(shard: &GatewayShard, run_id: &str, now: i64, f: impl FnOnce(&mut RunRecord)) {
    let mut runs = shard.runs().borrow_mut();
    update(
        shard,
        run_id,
        &mut runs
            .get_or_insert_with(run_id, now, RunEntry::default)
            .record,
        f,
    );
}

/// Applies `f` to a run's entry, waking its `agent.wait`ers once the run has ended (those
/// of other gateways of a cluster too, see [`crate::relay::Relay::wait_remote`]).
fn update(shard: &GatewayShard, run_id: &str, r: &mut RunRecord, f: impl FnOnce(&mut RunRecord)) {
    f(r);
    if r.ended() {
        for w in r.waiters.drain(..) {
            let _ = w.send(());
        }
        if shard.shared().cluster.is_some() {
            if let Some(relay) = shard.relay() {
                relay.run_ended(run_id, r);
            }
        }
    }
}

/// On the run id's owner shard: a run of another gateway of the cluster ended (what this
/// gateway's `agent.wait`ers asked it for): its record here takes the outcome, which wakes
/// them. A run nobody waits for here leaves no record.
pub fn ended_elsewhere(shard: &GatewayShard, run_id: &str, ended: RunRecord) {
    let mut runs = shard.runs().borrow_mut();
    let Some(e) = runs.get_mut(run_id, now_ms()) else {
        return;
    };
    if e.record.status.is_empty() {
        let RunRecord {
            status,
            started_at,
            ended_at,
            error,
            ..
        } = ended;
        update(shard, run_id, &mut e.record, |r| {
            r.status = status;
            r.started_at = started_at;
            r.ended_at = ended_at;
            r.error = error;
        });
    }
}
