//! The inbound path after authorization: decide where a request runs and run it.
//!
//! Connection-local methods (health, status, presence, subscriptions…) run on the connection's
//! shard. Session methods run on `owner(sessionKey)`: locally as a plain call, or as a
//! [`Call`] over the mesh; their events and answers come back through [`GatewayShard::deliver`].
//! `agent.wait` runs on `owner(runId)`, where the run directory entry of that run lives.

use std::rc::Rc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::agent::echo::{self, Outcome};
use crate::protocol::error::GatewayError;
use crate::protocol::SessionKey;
use crate::session::{Cached, Job, RunCtl, RunKind, Session};
use crate::shard::{now_ms, Call, Caller, GatewayShard, MeshMsg, ReplyTo, RunRecord};

mod info;

pub use info::health as health_snapshot;

fn str_param<'a>(p: &'a Value, k: &str) -> Option<&'a str> {
    p.get(k).and_then(|v| v.as_str())
}

fn required<'a>(p: &'a Value, k: &str) -> Result<&'a str, GatewayError> {
    match p.get(k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(GatewayError::InvalidParams(format!(
            "invalid params: {k} must be a non-empty string"
        ))),
        None => Err(GatewayError::InvalidParams(format!(
            "invalid params: missing {k}"
        ))),
    }
}

/// The session key a session method acts on.
fn session_key_for(
    shard: &GatewayShard,
    method: &str,
    p: &Value,
) -> Result<SessionKey, GatewayError> {
    let default_agent = shard.config().agents.default_agent.as_str();
    let parse = |raw: &str| {
        SessionKey::parse(raw, default_agent)
            .map_err(|e| GatewayError::InvalidParams(format!("invalid params: {e}")))
    };
    match method {
        "agent" => {
            if let Some(k) = str_param(p, "sessionKey") {
                return parse(k);
            }
            let agent = str_param(p, "agentId")
                .unwrap_or(default_agent)
                .to_ascii_lowercase();
            if !crate::protocol::session_key::valid_agent_id(&agent) {
                return Err(GatewayError::InvalidParams(format!(
                    "invalid params: invalid agentId {agent:?}"
                )));
            }
            Ok(SessionKey::main(&agent))
        }
        "sessions.create" => match str_param(p, "key").or_else(|| str_param(p, "sessionKey")) {
            Some(k) => parse(k),
            None => {
                let agent = str_param(p, "agentId").unwrap_or(default_agent);
                parse(&format!("agent:{agent}:{}", uuid::Uuid::new_v4()))
            }
        },
        m if m.starts_with("sessions.") => {
            let k = str_param(p, "key").or_else(|| str_param(p, "sessionKey"));
            parse(
                k.ok_or_else(|| GatewayError::InvalidParams("invalid params: missing key".into()))?,
            )
        }
        _ => parse(required(p, "sessionKey")?),
    }
}

/// Runs an authorized request from a connection on `shard`.
pub async fn dispatch(
    shard: Rc<GatewayShard>,
    caller: Caller,
    reply: ReplyTo,
    method: String,
    params: Value,
) {
    if shard
        .shared
        .shutdown
        .load(std::sync::atomic::Ordering::Relaxed)
        && matches!(method.as_str(), "agent" | "chat.send" | "sessions.send")
    {
        shard.reply_err(&reply, &GatewayError::ShuttingDown);
        return;
    }
    match method.as_str() {
        "agent" | "chat.send" | "chat.history" | "chat.abort" | "sessions.get"
        | "sessions.create" | "sessions.send" | "sessions.abort" | "sessions.reset"
        | "sessions.delete" => {
            let key = match session_key_for(&shard, &method, &params) {
                Ok(k) => k,
                Err(e) => return shard.reply_err(&reply, &e),
            };
            let owner = shard.owner(key.as_str());
            let mut params = params;
            params["__key"] = Value::String(key.as_str().to_string());
            let call = Call {
                reply,
                caller,
                method,
                params,
            };
            if owner == shard.id {
                run_owned(shard, call);
            } else {
                shard.send_mesh(owner, MeshMsg::Call(Box::new(call)));
            }
        }
        "agent.wait" => agent_wait(&shard, reply, &params),
        _ => match info::local(&shard, &caller, &method, &params).await {
            Ok(v) => shard.reply_ok(&reply, &v),
            Err(e) => shard.reply_err(&reply, &e),
        },
    }
}

/// Runs a session method on the session's owner (this shard).
pub fn run_owned(shard: Rc<GatewayShard>, call: Call) {
    let key = SessionKey::parse(call.params["__key"].as_str().unwrap_or("main"), "main")
        .unwrap_or_else(|_| SessionKey::main("main"));
    let r = match call.method.as_str() {
        "agent" => submit(&shard, &key, &call, RunKind::Agent),
        "chat.send" | "sessions.send" => submit(&shard, &key, &call, RunKind::Chat),
        "chat.history" => history(&shard, &key, &call.params),
        "chat.abort" | "sessions.abort" => abort(&shard, &key, &call.params),
        "sessions.get" => shard
            .sessions
            .get(key.as_str())
            .map(|s| json!({"session": s.row()}))
            .ok_or_else(|| GatewayError::NotFound(format!("session not found: {key}"))),
        "sessions.create" => {
            let (s, created) = shard.sessions.get_or_create(&key, now_ms());
            if let Some(l) = str_param(&call.params, "label") {
                *s.label.borrow_mut() = Some(l.to_string());
            }
            if created {
                sessions_changed(&shard, &key, "created");
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
                sessions_changed(&shard, &key, "reset");
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
                    sessions_changed(&shard, &key, "deleted");
                    Ok(json!({"ok": true, "key": key.as_str(), "deleted": true}))
                }
                None => Ok(json!({"ok": true, "key": key.as_str(), "deleted": false})),
            }
        }
        m => Err(GatewayError::UnknownMethod(m.to_string())),
    };
    match r {
        Ok(Value::Null) => {}
        Ok(v) => shard.reply_ok(&call.reply, &v),
        Err(e) => shard.reply_err(&call.reply, &e),
    }
}

fn sessions_changed(shard: &Rc<GatewayShard>, key: &SessionKey, reason: &'static str) {
    let payload = json!({"sessionKey": key.as_str(), "reason": reason, "ts": now_ms()}).to_string();
    shard.broadcast(move |s| {
        s.event_local_all("sessions.changed", &payload, true, false, |c| {
            c.sessions_subscribed.get()
        });
    });
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
                   "messages": h.iter().skip(skip).cloned().collect::<Vec<_>>()})
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

fn submit(
    shard: &Rc<GatewayShard>,
    key: &SessionKey,
    call: &Call,
    kind: RunKind,
) -> Result<Value, GatewayError> {
    let p = &call.params;
    let message = match p.get("message") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(GatewayError::InvalidParams(
                "invalid params: message must be a string".into(),
            ))
        }
        None => {
            return Err(GatewayError::InvalidParams(
                "invalid params: missing message".into(),
            ))
        }
    };
    let idem = required(p, "idempotencyKey")?.to_string();
    let method = if kind == RunKind::Agent {
        "agent"
    } else {
        "chat.send"
    };
    let dedup_key = format!("{method}:{idem}");
    let now = now_ms();
    // Duplicate? Join the in-flight call or replay the finished one.
    {
        let mut d = shard.sessions.dedup.borrow_mut();
        if let Some(c) = d.get_mut(&dedup_key, now) {
            match (c, kind) {
                (Cached::InFlight { joiners }, RunKind::Agent) => {
                    joiners.push(call.reply.clone());
                    return Ok(
                        json!({"runId": idem, "agentId": key.agent_id(), "status": "accepted", "acceptedAt": now, "duplicate": true}),
                    );
                }
                (Cached::InFlight { .. }, RunKind::Chat) => {
                    return Ok(json!({"runId": idem, "status": "in_flight"}));
                }
                (Cached::Done { payload, error }, RunKind::Agent) => {
                    let (payload, error) = (payload.clone(), error.clone());
                    drop(d);
                    shard.reply_ok(
                        &call.reply,
                        &json!({"runId": idem, "agentId": key.agent_id(), "status": "accepted", "acceptedAt": now, "duplicate": true}),
                    );
                    replay_final(shard, &call.reply, payload, error);
                    return Ok(Value::Null);
                }
                (Cached::Done { .. }, RunKind::Chat) => {
                    return Ok(json!({"runId": idem, "status": "ok", "duplicate": true}));
                }
            }
        }
    }
    let (session, created) = shard.sessions.get_or_create(key, now);
    let cap = shard.config().ordering.buffer_size;
    if session.lane.borrow().len() >= cap {
        return Err(GatewayError::LaneFull {
            retry_after_ms: 500,
        });
    }
    shard
        .sessions
        .dedup
        .borrow_mut()
        .begin(dedup_key.clone(), now);
    if created {
        sessions_changed(shard, key, "created");
    }
    run_directory(shard, &idem, |r| {
        r.status = "queued".into();
    });
    shard.inflight.set(shard.inflight.get() + 1);
    session.lane.borrow_mut().push_back(Job {
        run_id: idem.clone(),
        message,
        reply: call.reply.clone(),
        watcher: call.caller.conn,
        kind,
        dedup_key,
        accepted_at: now,
    });
    // The acknowledgement goes out before the lane can emit anything for this run.
    let ack = match kind {
        RunKind::Agent => {
            json!({"runId": idem, "agentId": key.agent_id(), "status": "accepted", "acceptedAt": now})
        }
        RunKind::Chat => json!({"runId": idem, "status": "started"}),
    };
    shard.reply_ok(&call.reply, &ack);
    if !session.running.get() {
        session.running.set(true);
        let (sh, s) = (shard.clone(), session.clone());
        glommio::spawn_local(async move { drive_lane(sh, s).await }).detach();
    }
    Ok(Value::Null)
}

fn replay_final(
    shard: &GatewayShard,
    reply: &ReplyTo,
    payload: Option<Value>,
    error: Option<Value>,
) {
    match (payload, error) {
        (Some(p), None) => shard.reply_ok(reply, &p),
        (p, Some(e)) => {
            let mut f = json!({"type": "res", "id": reply.req_id, "ok": false, "error": e});
            if let Some(p) = p {
                f["payload"] = p;
            }
            shard.deliver(reply.conn, crate::shard::Out::Frame(f.to_string()));
        }
        (None, None) => {}
    }
}

/// Updates the run directory entry of `run_id` on `owner(run_id)`.
fn run_directory(
    shard: &Rc<GatewayShard>,
    run_id: &str,
    f: impl FnOnce(&mut RunRecord) + Send + 'static,
) {
    let id = run_id.to_string();
    let owner = shard.owner(run_id);
    shard.on_shard(owner, move |s| {
        let mut runs = s.runs.borrow_mut();
        let r = runs.entry(id).or_default();
        f(r);
        if matches!(r.status.as_str(), "ok" | "error" | "timeout" | "aborted") {
            for w in r.waiters.drain(..) {
                let _ = w.send(());
            }
        }
    });
}

/// Runs a session's jobs one at a time, in arrival order, until its lane is empty.
async fn drive_lane(shard: Rc<GatewayShard>, session: Rc<Session>) {
    loop {
        let job = session.lane.borrow_mut().pop_front();
        let Some(job) = job else { break };
        let ctl = Rc::new(RunCtl {
            run_id: job.run_id.clone(),
            aborted: std::cell::Cell::new(false),
        });
        *session.current.borrow_mut() = Some(ctl.clone());
        let started = now_ms();
        run_directory(&shard, &job.run_id, move |r| {
            r.status = "running".into();
            r.started_at = Some(started);
        });
        let limit = shard.config().agents.history_limit;
        session.push_history(
            json!({"role": "user", "content": [{"type": "text", "text": job.message}], "timestamp": job.accepted_at, "runId": job.run_id}),
            limit,
        );
        let timeout = Duration::from_millis(shard.config().agents.run_timeout_ms);
        let outcome = glommio::timer::timeout(timeout, async {
            Ok(echo::run(&shard, &session, &job, &ctl).await)
        })
        .await;
        let ended = now_ms();
        let (status, payload, error) = match &outcome {
            Ok(Outcome::Ok(text)) => {
                session.push_history(
                    json!({"role": "assistant", "content": [{"type": "text", "text": text}], "timestamp": ended, "runId": job.run_id}),
                    limit,
                );
                (
                    "ok",
                    json!({"runId": job.run_id, "status": "ok", "summary": "completed", "sessionKey": session.key.as_str(),
                           "result": {"payloads": [{"text": text}],
                                      "meta": {"durationMs": ended - started, "agentMeta": {"agentId": session.key.agent_id(), "provider": "shardgate", "model": "echo"}}}}),
                    None,
                )
            }
            Ok(Outcome::Aborted(_)) => (
                "aborted",
                json!({"runId": job.run_id, "status": "timeout", "summary": "aborted", "stopReason": "aborted"}),
                None,
            ),
            Err(_) => (
                "timeout",
                json!({"runId": job.run_id, "status": "error", "summary": "agent run timed out"}),
                Some(
                    GatewayError::AgentTimeout("agent run timed out".into())
                        .wire()
                        .to_json(),
                ),
            ),
        };
        session.updated_at.set(ended);
        *session.current.borrow_mut() = None;
        let joiners = shard.sessions.dedup.borrow_mut().finish(
            &job.dedup_key,
            Some(payload.clone()),
            error.clone(),
        );
        if job.kind == RunKind::Agent {
            replay_final(&shard, &job.reply, Some(payload.clone()), error.clone());
            for j in joiners {
                replay_final(&shard, &j, Some(payload.clone()), error.clone());
            }
        }
        let st = status.to_string();
        run_directory(&shard, &job.run_id, move |r| {
            r.status = st;
            r.ended_at = Some(ended);
        });
        shard.inflight.set(shard.inflight.get().saturating_sub(1));
        glommio::yield_if_needed().await;
    }
    session.running.set(false);
}

/// `agent.wait {runId, timeoutMs?}` on `owner(runId)`.
fn agent_wait(shard: &Rc<GatewayShard>, reply: ReplyTo, p: &Value) {
    let run_id = match required(p, "runId") {
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
                let r = runs.entry(run_id.clone()).or_default();
                if matches!(r.status.as_str(), "ok" | "error" | "timeout" | "aborted") {
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
                let r = runs.get(&run_id);
                let status = match r.map(|r| r.status.as_str()) {
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
