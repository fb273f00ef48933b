//! Messages to a session's agent and its transcript, on the session's owner: the four
//! submissions (`agent`, `chat.send`, `sessions.send`, `send`: validated here, then
//! deduplicated and queued by [`crate::queue`]), `chat.history`, `chat.abort`; and `agent.wait`
//! on the run's owner.

use std::rc::Rc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::addr::ReplyTo;
use crate::clock::now_ms;
use crate::delivery::JobKind;
use crate::protocol::error::GatewayError;
use crate::protocol::method::{ChatMethod, Method, SubmitKind};
use crate::protocol::params::{field_of, FieldRef};
use crate::protocol::SessionKey;
use crate::queue::{self, Submit};
use crate::shard::{Call, GatewayShard};

/// Runs a chat method on the session's owner (this shard).
pub(super) fn run_owned(shard: Rc<GatewayShard>, call: Call, m: ChatMethod) {
    if let Some(kind) = Method::Chat(m).submit_kind() {
        if let Some(j) = submit_call(&shard, call, kind) {
            glommio::spawn_local(async move { j.finish(&shard).await }).detach();
        }
        return;
    }
    let key = &call.key;
    let params = call.params.into_json();
    let r = match m {
        ChatMethod::ChatHistory => history(&shard, key, &params),
        ChatMethod::ChatAbort => abort(&shard, key, &params),
        // The submissions are queued above; `agent.wait` runs on the run's owner.
        ChatMethod::Agent
        | ChatMethod::ChatSend
        | ChatMethod::SessionsSend
        | ChatMethod::Send
        | ChatMethod::AgentWait => Err(call.method.not_here()),
    };
    shard.answer(&call.reply, r);
}

/// Validates a submission and hands it to the session's queue (the `Journaled` to finish
/// when a durable queue's journal write must be awaited).
fn submit_call(
    shard: &Rc<GatewayShard>,
    mut call: Call,
    kind: SubmitKind,
) -> Option<queue::Journaled> {
    let p = &call.params;
    let invalid = match (
        p.field("message"),
        crate::protocol::params::required(p, "idempotencyKey"),
    ) {
        (FieldRef::Str(_), Ok(_)) => None,
        (FieldRef::Str(_), Err(e)) => Some(e),
        (FieldRef::Other, _) => Some(GatewayError::InvalidParams(
            "invalid params: message must be a string".into(),
        )),
        (FieldRef::Missing, _) => Some(GatewayError::InvalidParams(
            "invalid params: missing message".into(),
        )),
    };
    if let Some(e) = invalid {
        shard.reply_err(&call.reply, &e);
        return None;
    }
    let kind = match kind {
        SubmitKind::Agent => JobKind::Agent,
        SubmitKind::Send => JobKind::Send {
            channel: p.str("channel").unwrap_or("log").to_string(),
            to: p.str("to").unwrap_or_default().to_string(),
        },
        SubmitKind::Chat => JobKind::Chat,
    };
    let seq = p.session_seq();
    // Both checked to be strings above: they move out of the request rather than being copied.
    let message = call.params.take_str("message");
    let idem = call.params.take_str("idempotencyKey");
    let received = (call.received_at, call.received_shard);
    queue::submit(
        shard,
        Submit {
            key: &call.key,
            kind,
            message,
            idem,
            reply: call.reply,
            received,
            seq,
            received_us: call.caller.received_us,
        },
    )
}

/// `chat.history {sessionKey, limit?}`: the newest `limit` messages (default 200, at most 1000).
fn history(shard: &GatewayShard, key: &SessionKey, p: &Value) -> Result<Value, GatewayError> {
    let limit = p
        .get("limit")
        .and_then(|v| v.as_u64())
        .unwrap_or(200)
        .clamp(1, 1000) as usize;
    Ok(match shard.sessions().get(key.as_str()) {
        Some(s) => {
            let h = s.history.borrow();
            let skip = h.len().saturating_sub(limit);
            json!({"sessionKey": key.as_str(), "sessionId": *s.session_id.borrow(),
                   "messages": h.iter().skip(skip).collect::<Vec<_>>()})
        }
        None => json!({"sessionKey": key.as_str(), "messages": []}),
    })
}

/// `chat.abort` / `sessions.abort {…, runId?}`: aborts the session's current run (that run
/// only, when `runId` names it).
pub(super) fn abort(
    shard: &GatewayShard,
    key: &SessionKey,
    p: &Value,
) -> Result<Value, GatewayError> {
    let want = p.get("runId").and_then(Value::as_str);
    let mut ids = Vec::new();
    if let Some(s) = shard.sessions().get(key.as_str()) {
        if let Some(c) = s.current.borrow().as_ref() {
            if want.is_none_or(|w| w == c.run_id) {
                c.aborted.set(true);
                ids.push(c.run_id.clone());
            }
        }
    }
    Ok(json!({"ok": true, "aborted": !ids.is_empty(), "runIds": ids}))
}

/// `agent.wait {runId, timeoutMs?}` on `owner(runId)`.
pub(super) fn agent_wait(shard: &Rc<GatewayShard>, reply: ReplyTo, p: &Value) {
    let run_id = match crate::protocol::params::non_blank(field_of(p, "runId"), "runId") {
        Ok(r) => r.to_string(),
        Err(e) => return shard.reply_err(&reply, &e),
    };
    let timeout_ms = p
        .get("timeoutMs")
        .and_then(|v| v.as_u64())
        .unwrap_or(30_000)
        .min(600_000);
    let owner = shard.owner(&run_id);
    shard.on_shard(owner, move |s| {
        let s = s.clone();
        glommio::spawn_local(async move {
            let rx = {
                let mut runs = s.runs().borrow_mut();
                let r = &mut runs
                    .get_or_insert_with(run_id.as_str(), now_ms(), Default::default)
                    .record;
                if r.ended() {
                    None
                } else {
                    // Not a run of this gateway (as far as it knows): in a cluster, the
                    // member that has it tells when it ends.
                    if r.status.is_empty() && s.shared().cluster.is_some() {
                        if let Some(relay) = s.relay() {
                            relay.ask_run(&run_id);
                        }
                    }
                    let (tx, rx) = futures_channel::oneshot::channel();
                    r.waiters.push(tx);
                    Some(rx)
                }
            };
            let mut timed_out = false;
            if let Some(rx) = rx {
                timed_out = glommio::timer::timeout(Duration::from_millis(timeout_ms), async {
                    let _ = rx.await;
                    Ok(())
                })
                .await
                .is_err();
            }
            let v = {
                let runs = s.runs().borrow();
                let r = runs.get(run_id.as_str(), now_ms()).map(|e| &e.record);
                let status = match r.map(|r| r.status) {
                    _ if timed_out => "timeout",
                    Some("ok") => "ok",
                    Some("aborted") | Some("timeout") => "timeout",
                    Some("error") => "error",
                    _ => "timeout",
                };
                json!({"runId": run_id, "status": status,
                       "startedAt": r.and_then(|r| r.started_at), "endedAt": r.and_then(|r| r.ended_at),
                       "error": r.and_then(|r| r.error.clone())})
            };
            s.reply_ok(&reply, &v);
        })
        .detach();
    });
}
