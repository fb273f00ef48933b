//! The seed article's simplified dialect (PROTOCOL.md §9), on the same port.
//!
//! A seed client sends `{"type":"connect","params":{deviceId, auth:{token}, …}}` and gets
//! `{"type":"res","ok":true,"payload":{"status":"hello-ok",…}}`. Its `agent` requests run
//! through the normal pipeline; on the way out their frames are rewritten into the seed shape:
//! `agent` events become `{"type":"thinking"|"text"|"done","content":…}` and the final `res`
//! becomes `{message, sessionKey}`. Without an idempotencyKey the request id stands in.

use std::rc::Rc;

use serde_json::{json, Value};

use super::conn::Conn;
use crate::auth::handshake::ct_eq;
use crate::auth::limits::Peer;
use crate::config::AuthMode;
use crate::protocol::authz::{READ, WRITE};
use crate::protocol::connect::ClientInfo;
use crate::protocol::connect::ConnAuth;
use crate::protocol::error::GatewayError;
use crate::shard::GatewayShard;

/// Admits a seed-dialect client: shared secret as configured; operators get read+write.
pub fn admit(
    shard: &Rc<GatewayShard>,
    conn: &Rc<Conn>,
    id: Option<&str>,
    p: &Value,
    peer: Peer,
) -> bool {
    let cfg = shard.config();
    let given = p.pointer("/auth/token").and_then(|v| v.as_str());
    let given_pw = p.pointer("/auth/password").and_then(|v| v.as_str());
    let check = match cfg.gateway.auth.effective_mode() {
        AuthMode::None => Ok(()),
        AuthMode::Token => match given {
            None => Err(GatewayError::AuthTokenMissing),
            Some(t) if ct_eq(t, cfg.gateway.auth.token.as_deref().unwrap_or("")) => Ok(()),
            Some(_) => Err(GatewayError::AuthTokenMismatch),
        },
        AuthMode::Password => match given_pw {
            None => Err(GatewayError::AuthPasswordMissing),
            Some(t) if ct_eq(t, cfg.gateway.auth.password.as_deref().unwrap_or("")) => Ok(()),
            Some(_) => Err(GatewayError::AuthPasswordMismatch),
        },
    };
    if let Err(e) = check {
        if matches!(
            e,
            GatewayError::AuthTokenMismatch | GatewayError::AuthPasswordMismatch
        ) {
            shard
                .shared()
                .limits
                .record_failure(peer, crate::clock::now_ms());
        }
        conn.fail(id, &e);
        return false;
    }
    let role = p
        .get("role")
        .and_then(|v| v.as_str())
        .unwrap_or("operator")
        .to_string();
    if role != "operator" && role != "node" {
        conn.fail(
            id,
            &GatewayError::InvalidConnect(format!("unknown role {role:?}")),
        );
        return false;
    }
    let device = p
        .get("deviceId")
        .and_then(|v| v.as_str())
        .unwrap_or("seed-client")
        .to_string();
    conn.set_seed();
    *conn.auth.borrow_mut() = Some(std::sync::Arc::new(ConnAuth {
        scopes: if role == "operator" {
            vec![READ.into(), WRITE.into()]
        } else {
            vec![]
        },
        role,
        client: ClientInfo {
            id: device.into(),
            version: p
                .get("version")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .into(),
            platform: p
                .get("nodeType")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .into(),
            mode: "seed".into(),
            ..Default::default()
        },
        device_id: None,
        seed: true,
    }));
    let mut res = json!({"type": "res", "ok": true, "payload": {
        "status": "hello-ok",
        "health": {"gateway": "running", "channels": {}},
        "snapshot": {"presence": {"gateway": "online"}, "state": {"sessions": shard.sessions().map.borrow().len()}},
    }});
    if let Some(id) = id {
        res["id"] = json!(id);
    }
    conn.push_frame(res.to_string());
    true
}

/// Rewrites an outbound frame for a seed client; `None` drops it (the `accepted` res).
pub fn translate(frame: &str) -> Option<String> {
    let v: Value = serde_json::from_str(frame).ok()?;
    match v.get("type").and_then(|t| t.as_str()) {
        Some("event") => {
            let p = &v["payload"];
            match v.get("event").and_then(|e| e.as_str()) {
                Some("agent") => {
                    let (kind, content) = match (p["stream"].as_str(), p["data"]["phase"].as_str())
                    {
                        (Some("lifecycle"), Some("start")) => ("thinking", json!("")),
                        (Some("lifecycle"), _) => ("done", json!("")),
                        (Some("assistant"), _) => ("text", p["data"]["delta"].clone()),
                        _ => ("other", p["data"].clone()),
                    };
                    Some(json!({"type": "event", "event": "agent", "payload": {"type": kind, "content": content, "runId": p["runId"]}}).to_string())
                }
                // Seed clients get only their own run's agent events.
                _ => None,
            }
        }
        Some("res") => {
            let p = &v["payload"];
            if p["status"] == "accepted" {
                return None;
            }
            if v["ok"] == true && p.get("result").is_some() {
                let text = p["result"]["payloads"][0]["text"].clone();
                return Some(
                    json!({"type": "res", "id": v["id"], "ok": true,
                                   "payload": {"message": text, "sessionKey": p["sessionKey"]}})
                    .to_string(),
                );
            }
            Some(frame.to_string())
        }
        _ => Some(frame.to_string()),
    }
}
