//! The session methods behind `openclaw sessions …` and the TUI's session line, on the
//! session's owner shard: `sessions.get|create|reset|delete|abort`, `sessions.describe`,
//! `sessions.patch` (label, archived) and `sessions.compact` (`maxLines`). Shapes follow
//! OpenClaw 2026.9.6 (tests/interop).

use std::rc::Rc;

use serde_json::{json, Value};

use crate::clock::now_ms;
use crate::protocol::error::GatewayError;
use crate::protocol::method::SessionMethod;
use crate::protocol::SessionKey;
use crate::shard::{Call, GatewayShard};

/// Runs a session method on the session's owner (this shard).
pub(super) fn run(shard: Rc<GatewayShard>, call: Call, m: SessionMethod) {
    let key = &call.key;
    let params = call.params.into_json();
    let r = match m {
        SessionMethod::Get => get(&shard, key),
        SessionMethod::Create => create(&shard, key, &params),
        SessionMethod::Reset => reset(&shard, key),
        SessionMethod::Delete => delete(&shard, key),
        SessionMethod::Abort => super::chat::abort(&shard, key, &params),
        SessionMethod::Describe => Ok(describe(&shard, key)),
        SessionMethod::Patch => patch(&shard, key, &params),
        SessionMethod::Compact => compact(&shard, key, &params),
    };
    shard.answer(&call.reply, r);
}

/// `sessions.get {key}`: `{session: row}`.
fn get(shard: &GatewayShard, key: &SessionKey) -> Result<Value, GatewayError> {
    shard
        .sessions()
        .get(key.as_str())
        .map(|s| json!({"session": s.row()}))
        .ok_or_else(|| GatewayError::NotFound(format!("session not found: {key}")))
}

/// `sessions.create {key?, agentId?, label?}`: the session, made when new.
fn create(shard: &Rc<GatewayShard>, key: &SessionKey, p: &Value) -> Result<Value, GatewayError> {
    let (s, created) = shard.sessions().get_or_create(key, now_ms());
    if let Some(l) = p.get("label").and_then(Value::as_str) {
        *s.label.borrow_mut() = Some(l.to_string());
    }
    if created {
        shard.sessions_changed(key, "created");
    }
    Ok(
        json!({"ok": true, "key": key.as_str(), "sessionId": *s.session_id.borrow(), "created": created}),
    )
}

/// `sessions.reset {key}`: empties the transcript and starts a new incarnation.
fn reset(shard: &Rc<GatewayShard>, key: &SessionKey) -> Result<Value, GatewayError> {
    match shard.sessions().get(key.as_str()) {
        Some(s) => {
            s.history.borrow_mut().clear();
            *s.session_id.borrow_mut() = uuid::Uuid::new_v4().to_string();
            s.updated_at.set(now_ms());
            shard.sessions_changed(key, "reset");
            Ok(json!({"ok": true, "key": key.as_str(), "sessionId": *s.session_id.borrow()}))
        }
        None => Err(GatewayError::NotFound(format!("session not found: {key}"))),
    }
}

/// `sessions.delete {key}`: removes the session (aborting its run); `deleted: false` when
/// there was none.
fn delete(shard: &Rc<GatewayShard>, key: &SessionKey) -> Result<Value, GatewayError> {
    let removed = shard.sessions().map.borrow_mut().remove(key.as_str());
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

/// `sessions.describe {key}`: `{session: row}`, or `{session: null}` for a key with no
/// session (OpenClaw answers an unknown key that way, not with an error).
fn describe(shard: &GatewayShard, key: &SessionKey) -> Value {
    json!({"session": shard.sessions().get(key.as_str()).map(|s| s.row())})
}

/// `sessions.patch {key, label?, archived?, expectedSessionId?}` →
/// `{ok, key, entry: row}`. Archiving changes the session's lifecycle, so OpenClaw wants the
/// caller to name the incarnation it saw (`expectedSessionId`); so do we.
fn patch(shard: &Rc<GatewayShard>, key: &SessionKey, p: &Value) -> Result<Value, GatewayError> {
    let s = shard
        .sessions()
        .get(key.as_str())
        .ok_or_else(|| GatewayError::NotFound(format!("session not found: {key}")))?;
    let archived = match p.get("archived") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(GatewayError::InvalidParams(
                "invalid params: archived must be a boolean".into(),
            ))
        }
    };
    if archived.is_some() {
        match p.get("expectedSessionId").and_then(Value::as_str) {
            None => {
                return Err(GatewayError::InvalidParams(format!(
                    "expectedSessionId required for session lifecycle patch: {key}"
                )))
            }
            Some(id) if id != *s.session_id.borrow() => {
                return Err(GatewayError::InvalidParams(format!(
                    "session changed since it was read (expectedSessionId mismatch): {key}"
                )))
            }
            Some(_) => {}
        }
    }
    match p.get("label") {
        None => {}
        Some(Value::Null) => *s.label.borrow_mut() = None,
        Some(Value::String(l)) => *s.label.borrow_mut() = Some(l.clone()),
        Some(_) => {
            return Err(GatewayError::InvalidParams(
                "invalid params: label must be a string".into(),
            ))
        }
    }
    let now = now_ms();
    match archived {
        Some(true) if s.archived_at.get().is_none() => s.archived_at.set(Some(now)),
        Some(false) => s.archived_at.set(None),
        _ => {}
    }
    s.updated_at.set(now);
    shard.sessions_changed(key, "patched");
    Ok(json!({"ok": true, "key": key.as_str(), "entry": s.row()}))
}

/// `sessions.compact {key, maxLines?}`: with `maxLines`, keeps the newest that many messages;
/// without, there is no model to summarize with, so nothing changes (`compacted: false`).
fn compact(shard: &Rc<GatewayShard>, key: &SessionKey, p: &Value) -> Result<Value, GatewayError> {
    let Some(s) = shard.sessions().get(key.as_str()) else {
        return Ok(
            json!({"ok": true, "key": key.as_str(), "compacted": false, "reason": "no sessionId"}),
        );
    };
    let max = match p.get("maxLines") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(n as usize),
            _ => {
                return Err(GatewayError::InvalidParams(
                    "invalid params: maxLines must be a positive integer".into(),
                ))
            }
        },
    };
    let mut h = s.history.borrow_mut();
    if h.is_empty() {
        return Ok(
            json!({"ok": true, "key": key.as_str(), "compacted": false, "reason": "no transcript"}),
        );
    }
    let Some(max) = max else {
        return Ok(json!({"ok": true, "key": key.as_str(), "compacted": false,
                         "reason": "the echo agent does not summarize; pass maxLines"}));
    };
    if h.len() <= max {
        return Ok(json!({"ok": true, "key": key.as_str(), "compacted": false, "kept": h.len()}));
    }
    h.keep_last(max);
    drop(h);
    s.updated_at.set(now_ms());
    shard.sessions_changed(key, "compacted");
    Ok(json!({"ok": true, "key": key.as_str(), "compacted": true, "kept": max}))
}
