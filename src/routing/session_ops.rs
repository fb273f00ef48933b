//! The session methods behind `openclaw sessions …` and the TUI's session line, on the
//! session's owner shard: `sessions.describe`, `sessions.patch` (label, archived) and
//! `sessions.compact` (`maxLines`). Shapes follow OpenClaw 2026.9.6 (tests/interop).

use serde_json::{json, Value};

use crate::clock::now_ms;
use crate::protocol::error::GatewayError;
use crate::protocol::SessionKey;
use crate::shard::GatewayShard;

/// `sessions.describe {key}`: `{session: row}`, or `{session: null}` for a key with no
/// session (OpenClaw answers an unknown key that way, not with an error).
pub(super) fn describe(shard: &GatewayShard, key: &SessionKey) -> Value {
    json!({"session": shard.sessions.get(key.as_str()).map(|s| s.row())})
}

/// `sessions.patch {key, label?, archived?, expectedSessionId?}` →
/// `{ok, key, entry: row}`. Archiving changes the session's lifecycle, so OpenClaw wants the
/// caller to name the incarnation it saw (`expectedSessionId`); so do we.
pub(super) fn patch(
    shard: &std::rc::Rc<GatewayShard>,
    key: &SessionKey,
    p: &Value,
) -> Result<Value, GatewayError> {
    let s = shard
        .sessions
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
pub(super) fn compact(
    shard: &std::rc::Rc<GatewayShard>,
    key: &SessionKey,
    p: &Value,
) -> Result<Value, GatewayError> {
    let Some(s) = shard.sessions.get(key.as_str()) else {
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
