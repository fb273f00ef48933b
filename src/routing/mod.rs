//! The inbound path after authorization: decide where a request runs and run it.
//!
//! Connection-local methods (health, status, presence, subscriptions…) run on the connection's
//! shard. Session methods run on `owner(sessionKey)`: locally as a plain call, or as a
//! [`Call`] over the mesh; their events and answers come back through [`GatewayShard::deliver`].
//! `agent.wait` runs on `owner(runId)`, where the run directory entry of that run lives.

use std::rc::Rc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::addr::{Caller, ReplyTo};
use crate::clock::now_ms;
use crate::delivery::JobKind;
use crate::protocol::error::GatewayError;
use crate::protocol::params::{field_of, is_submission, FieldRef, Params};
use crate::protocol::SessionKey;
use crate::queue::{self, Submit};
use crate::shard::{Call, GatewayShard, MeshMsg};

mod info;
mod session_ops;
pub mod watchers;

pub use info::health as health_snapshot;

fn str_param<'a>(p: &'a Value, k: &str) -> Option<&'a str> {
    p.get(k).and_then(|v| v.as_str())
}

/// The string parameter `k`, which must be there and not blank.
fn required<'a>(p: &'a Params, k: &str) -> Result<&'a str, GatewayError> {
    non_blank(p.field(k), k)
}

/// `field` (the parameter `k`) as a string that is not blank.
fn non_blank<'a>(field: FieldRef<'a>, k: &str) -> Result<&'a str, GatewayError> {
    match field {
        FieldRef::Str(s) if !s.trim().is_empty() => Ok(s),
        FieldRef::Str(_) | FieldRef::Other => Err(GatewayError::InvalidParams(format!(
            "invalid params: {k} must be a non-empty string"
        ))),
        FieldRef::Missing => Err(GatewayError::InvalidParams(format!(
            "invalid params: missing {k}"
        ))),
    }
}

/// The session key a session method acts on.
fn session_key_for(
    shard: &GatewayShard,
    method: &str,
    p: &Params,
) -> Result<SessionKey, GatewayError> {
    let default_agent = shard.config().agents.default_agent.as_str();
    let parse = |raw: &str| {
        SessionKey::parse(raw, default_agent)
            .map_err(|e| GatewayError::InvalidParams(format!("invalid params: {e}")))
    };
    match method {
        "agent" => {
            if let Some(k) = p.str("sessionKey") {
                return parse(k);
            }
            let agent = p
                .str("agentId")
                .unwrap_or(default_agent)
                .to_ascii_lowercase();
            if !crate::protocol::session_key::valid_agent_id(&agent) {
                return Err(GatewayError::InvalidParams(format!(
                    "invalid params: invalid agentId {agent:?}"
                )));
            }
            Ok(SessionKey::main(&agent))
        }
        "send" => {
            if let Some(k) = p.str("sessionKey") {
                return parse(k);
            }
            let to = required(p, "to")?;
            let ch = p.str("channel").unwrap_or("log");
            parse(&format!("agent:{default_agent}:{ch}:direct:{to}"))
        }
        "sessions.create" => match p.str("key").or_else(|| p.str("sessionKey")) {
            Some(k) => parse(k),
            None => {
                let agent = p.str("agentId").unwrap_or(default_agent);
                parse(&format!("agent:{agent}:{}", uuid::Uuid::new_v4()))
            }
        },
        m if m.starts_with("sessions.") => {
            let k = p.str("key").or_else(|| p.str("sessionKey"));
            parse(
                k.ok_or_else(|| GatewayError::InvalidParams("invalid params: missing key".into()))?,
            )
        }
        _ => parse(required(p, "sessionKey")?),
    }
}

/// Runs an authorized request from a connection on `shard`. Synchronous: most methods answer
/// (or admit their message) at once, and only those that wait (cluster-wide reads, a durable
/// queue's journal write) spawn a task, so a request costs no task of its own.
pub fn dispatch(
    shard: Rc<GatewayShard>,
    caller: Caller,
    reply: ReplyTo,
    method: String,
    params: Params,
) {
    if shard
        .shared
        .shutdown
        .load(std::sync::atomic::Ordering::Relaxed)
        && is_submission(&method)
    {
        shard.reply_err(&reply, &GatewayError::ShuttingDown);
        return;
    }
    match method.as_str() {
        "agent" | "send" | "chat.send" | "chat.history" | "chat.abort" | "sessions.get"
        | "sessions.create" | "sessions.send" | "sessions.abort" | "sessions.reset"
        | "sessions.delete" | "sessions.describe" | "sessions.patch" | "sessions.compact" => {
            route_session(shard, caller, reply, method, params)
        }
        _ => dispatch_local(shard, caller, reply, method, params.into_json()),
    }
}

/// A method that acts on a session: run on the session's owner, here or over the mesh.
fn route_session(
    shard: Rc<GatewayShard>,
    caller: Caller,
    reply: ReplyTo,
    method: String,
    params: Params,
) {
    let key = match session_key_for(&shard, &method, &params) {
        Ok(k) => k,
        Err(e) => return shard.reply_err(&reply, &e),
    };
    let owner = shard.owner(key.as_str());
    if crate::session::watchers::watches(&method) {
        watchers::note(&shard, caller.conn, key.as_str());
    }
    if method == "send" {
        let ch = params.str("channel").unwrap_or("log");
        if queue::channel::lookup(&shard, ch).is_none() {
            return shard.reply_err(
                &reply,
                &GatewayError::InvalidParams(format!("invalid params: unknown channel {ch:?}")),
            );
        }
    }
    let call = Call {
        reply,
        caller,
        method,
        params,
        key,
        received_at: now_ms(),
        received_shard: shard.id.0,
    };
    if owner == shard.id {
        run_owned(shard, call);
    } else {
        match shard.send_mesh(owner, MeshMsg::Call(Box::new(call))) {
            Ok(()) => {}
            Err(refused) => refuse_call(&shard, refused),
        }
    }
}

/// Answers a request the owner shard's mesh outbox did not take: retry later when the owner
/// is behind, or the gateway is stopping when it has closed.
fn refuse_call(shard: &GatewayShard, refused: shards::mesh::SendError<MeshMsg>) {
    use shards::mesh::SendError;
    let err = match &refused {
        SendError::Full(_) => GatewayError::ShardBusy {
            retry_after_ms: SHARD_BUSY_RETRY_MS,
        },
        SendError::Closed(_) | SendError::NotAPeer(_) => GatewayError::ShuttingDown,
    };
    if let MeshMsg::Call(call) = refused.into_inner() {
        shard.metrics.mesh_lost("call_refused");
        shard.reply_err(&call.reply, &err);
    }
}

/// The retry hint of a request refused because its owner shard is behind: about the time an
/// owner takes to drain a full outbox at its usual rate (tens of thousands a second).
const SHARD_BUSY_RETRY_MS: u64 = 50;

/// Any other method: answered on this shard.
fn dispatch_local(
    shard: Rc<GatewayShard>,
    caller: Caller,
    reply: ReplyTo,
    method: String,
    params: Value,
) {
    match method.as_str() {
        "agent.wait" => agent_wait(&shard, reply, &params),
        "gateway.audit" => shard.reply_ok(&reply, &crate::ops::audit::report(shard.config())),
        m if crate::auth::device_methods::handles(m) => {
            match crate::auth::device_methods::call(&shard, &caller, m, &params) {
                Ok(v) => shard.reply_ok(&reply, &v),
                Err(e) => shard.reply_err(&reply, &e),
            }
        }
        m if crate::node::pair_methods::handles(m) => {
            match crate::node::pair_methods::call(&shard, &caller, m, &params) {
                Ok(v) => shard.reply_ok(&reply, &v),
                Err(e) => shard.reply_err(&reply, &e),
            }
        }
        "node.invoke" => crate::node::invoke(&shard, reply, &params),
        "worker.run.event" | "worker.run.result" | "worker.pong" => {
            let r = match method.as_str() {
                "worker.run.event" => crate::node::worker::run_event(&shard, caller.conn, &params),
                "worker.run.result" => {
                    crate::node::worker::run_result(&shard, caller.conn, &params)
                }
                _ => crate::node::worker::pong(&shard, &params),
            };
            match r {
                Ok(v) => shard.reply_ok(&reply, &v),
                Err(e) => shard.reply_err(&reply, &e),
            }
        }
        "node.invoke.result"
        | "node.event"
        | "node.runnerInventory.update"
        | "node.skills.update"
        | "node.pluginTools.update" => {
            let me = caller.auth.actor();
            let r = match method.as_str() {
                "node.event" => crate::node::event(&shard, me, &params),
                "node.invoke.result" => crate::node::result(&shard, me, &params),
                m => crate::node::host_update(&shard, me, m, &params),
            };
            match r {
                Ok(v) => shard.reply_ok(&reply, &v),
                Err(e) => shard.reply_err(&reply, &e),
            }
        }
        _ => {
            glommio::spawn_local(local_call(shard, caller, reply, method, params)).detach();
        }
    }
}

/// A connection-local method ([`info::local`]), in a task of its own: some of them wait for
/// every shard's answer.
pub(crate) async fn local_call(
    shard: Rc<GatewayShard>,
    caller: Caller,
    reply: ReplyTo,
    method: String,
    params: Value,
) {
    let r = info::local(&shard, &caller, &method, &params).await;
    shard.metrics.latency(
        &method,
        shard.shared.mono_us().saturating_sub(caller.received_us),
    );
    match r {
        Ok(v) => shard.reply_ok(&reply, &v),
        Err(e) => shard.reply_err(&reply, &e),
    }
}

/// Handles a message from another shard (the mesh's receive loop calls it).
pub fn on_mesh(shard: &Rc<GatewayShard>, msg: MeshMsg) {
    match msg {
        MeshMsg::Call(call) => run_owned(shard.clone(), *call),
        MeshMsg::Deliver(conn, out) => shard.deliver_local(conn, out),
        MeshMsg::Control(f) => f(shard),
    }
}

/// Runs a session method on the session's owner (this shard).
pub fn run_owned(shard: Rc<GatewayShard>, call: Call) {
    if crate::session::watchers::watches(&call.method) {
        shard
            .sessions
            .watchers
            .watch(call.key.as_str(), call.caller.conn);
    }
    if is_submission(&call.method) {
        if let Some(j) = submit_call(&shard, call) {
            glommio::spawn_local(async move { j.finish(&shard).await }).detach();
        }
        return;
    }
    let key = &call.key;
    let params = call.params.into_json();
    let r = match call.method.as_str() {
        "chat.history" => history(&shard, key, &params),
        "chat.abort" | "sessions.abort" => abort(&shard, key, &params),
        "sessions.get" => shard
            .sessions
            .get(key.as_str())
            .map(|s| json!({"session": s.row()}))
            .ok_or_else(|| GatewayError::NotFound(format!("session not found: {key}"))),
        "sessions.create" => {
            let (s, created) = shard.sessions.get_or_create(key, now_ms());
            if let Some(l) = str_param(&params, "label") {
                *s.label.borrow_mut() = Some(l.to_string());
            }
            if created {
                shard.sessions_changed(key, "created");
            }
            Ok(
                json!({"ok": true, "key": key.as_str(), "sessionId": *s.session_id.borrow(), "created": created}),
            )
        }
        "sessions.reset" => match shard.sessions.get(key.as_str()) {
            Some(s) => {
                s.history.borrow_mut().clear();
                *s.session_id.borrow_mut() = uuid::Uuid::new_v4().to_string();
                s.updated_at.set(now_ms());
                shard.sessions_changed(key, "reset");
                Ok(json!({"ok": true, "key": key.as_str(), "sessionId": *s.session_id.borrow()}))
            }
            None => Err(GatewayError::NotFound(format!("session not found: {key}"))),
        },
        "sessions.delete" => {
            let removed = shard.sessions.map.borrow_mut().remove(key.as_str());
            match removed {
                Some(s) => {
                    if let Some(c) = s.current.borrow().as_ref() {
                        c.aborted.set(true);
                    }
                    shard.sessions_changed(key, "deleted");
                    Ok(json!({"ok": true, "key": key.as_str(), "deleted": true}))
                }
                None => Ok(json!({"ok": true, "key": key.as_str(), "deleted": false})),
            }
        }
        "sessions.describe" => Ok(session_ops::describe(&shard, key)),
        "sessions.patch" => session_ops::patch(&shard, key, &params),
        "sessions.compact" => session_ops::compact(&shard, key, &params),
        m => Err(GatewayError::UnknownMethod(m.to_string())),
    };
    match r {
        Ok(Value::Null) => {}
        Ok(v) => shard.reply_ok(&call.reply, &v),
        Err(e) => shard.reply_err(&call.reply, &e),
    }
}

fn submit_call(shard: &Rc<GatewayShard>, mut call: Call) -> Option<queue::Journaled> {
    let p = &call.params;
    let invalid = match (p.field("message"), required(p, "idempotencyKey")) {
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
    let kind = match call.method.as_str() {
        "agent" => JobKind::Agent,
        "send" => JobKind::Send {
            channel: p.str("channel").unwrap_or("log").to_string(),
            to: p.str("to").unwrap_or_default().to_string(),
        },
        _ => JobKind::Chat,
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

fn history(shard: &GatewayShard, key: &SessionKey, p: &Value) -> Result<Value, GatewayError> {
    let limit = p
        .get("limit")
        .and_then(|v| v.as_u64())
        .unwrap_or(200)
        .clamp(1, 1000) as usize;
    Ok(match shard.sessions.get(key.as_str()) {
        Some(s) => {
            let h = s.history.borrow();
            let skip = h.len().saturating_sub(limit);
            json!({"sessionKey": key.as_str(), "sessionId": *s.session_id.borrow(),
                   "messages": h.iter().skip(skip).collect::<Vec<_>>()})
        }
        None => json!({"sessionKey": key.as_str(), "messages": []}),
    })
}

fn abort(shard: &GatewayShard, key: &SessionKey, p: &Value) -> Result<Value, GatewayError> {
    let want = str_param(p, "runId");
    let mut ids = Vec::new();
    if let Some(s) = shard.sessions.get(key.as_str()) {
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
fn agent_wait(shard: &Rc<GatewayShard>, reply: ReplyTo, p: &Value) {
    let run_id = match non_blank(field_of(p, "runId"), "runId") {
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
                let mut runs = s.runs.borrow_mut();
                let r = &mut runs
                    .get_or_insert_with(run_id.as_str(), now_ms(), Default::default)
                    .record;
                if matches!(r.status, "ok" | "error" | "timeout" | "aborted") {
                    None
                } else {
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
                let runs = s.runs.borrow();
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
