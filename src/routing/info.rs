//! Methods answered on the caller's shard: health, status, presence, identity, config,
//! session listing (gathered from every shard) and subscriptions.

use std::rc::Rc;

use serde_json::{json, Value};

use crate::protocol::error::GatewayError;
use crate::shard::{now_ms, Caller, GatewayShard};

/// The `health` payload (also `hello-ok.snapshot.health` and the `health` event).
pub async fn health(shard: &Rc<GatewayShard>) -> Value {
    let t0 = std::time::Instant::now();
    let per_shard = shard
        .gather(|s| {
            let (authed, total) = s.conn_counts();
            json!({"shard": s.id.0, "connections": authed, "sockets": total,
                   "sessions": s.sessions.map.borrow().len(), "inflightRuns": s.inflight.get()})
        })
        .await;
    let sessions: u64 = per_shard
        .iter()
        .filter_map(|v| v["sessions"].as_u64())
        .sum();
    let connections: u64 = per_shard
        .iter()
        .filter_map(|v| v["connections"].as_u64())
        .sum();
    let agent = shard.config().agents.default_agent.clone();
    json!({
        "ok": true,
        "ts": now_ms(),
        "durationMs": t0.elapsed().as_millis() as u64,
        "channels": {}, "channelOrder": [], "channelLabels": {},
        "heartbeatSeconds": 0,
        "defaultAgentId": agent,
        "agents": [{"agentId": agent, "isDefault": true, "sessions": {"count": sessions, "recent": []}}],
        "sessions": {"count": sessions, "recent": []},
        "gateway": {"version": env!("CARGO_PKG_VERSION"), "uptimeMs": shard.shared.uptime_ms(),
                    "shards": shard.shards(), "connections": connections, "perShard": per_shard},
    })
}

/// Runs a connection-local method.
pub(super) async fn local(
    shard: &Rc<GatewayShard>,
    caller: &Caller,
    method: &str,
    p: &Value,
) -> Result<Value, GatewayError> {
    let cfg = shard.config();
    Ok(match method {
        "health" => health(shard).await,
        "status" => {
            let h = health(shard).await;
            json!({
                "runtimeVersion": env!("CARGO_PKG_VERSION"),
                "heartbeat": {"defaultAgentId": cfg.agents.default_agent, "agents": []},
                "channelSummary": [],
                "queuedSystemEvents": [],
                "sessions": {"count": h["sessions"]["count"], "recent": [],
                             "byAgent": [{"agentId": cfg.agents.default_agent, "count": h["sessions"]["count"], "recent": []}]},
                "pid": std::process::id(),
                "gateway": h["gateway"],
            })
        }
        "system-presence" => Value::Array(shard.presence_list()),
        "last-heartbeat" => shard.last_heartbeat.borrow().clone().unwrap_or(Value::Null),
        "gateway.identity.get" => json!({
            "instanceId": shard.shared.instance_id, "host": shard.shared.host,
            "version": env!("CARGO_PKG_VERSION"), "name": "shardgate", "protocol": crate::protocol::PROTOCOL_VERSION,
        }),
        "channels.status" => {
            json!({"ts": now_ms(), "channels": {}, "channelOrder": [], "channelLabels": {}})
        }
        "models.list" => {
            json!({"models": [{"id": "echo", "name": "echo", "provider": "shardgate", "contextWindow": 0}]})
        }
        "config.get" => json!({"config": cfg.redacted_json(), "path": Value::Null}),
        "sessions.list" => {
            let rows = shard.gather(|s| Value::Array(s.sessions.rows())).await;
            let mut all: Vec<Value> = rows
                .into_iter()
                .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                .collect();
            all.sort_by(|a, b| b["updatedAt"].as_i64().cmp(&a["updatedAt"].as_i64()));
            let limit = p.get("limit").and_then(|v| v.as_u64()).unwrap_or(1000) as usize;
            all.truncate(limit);
            json!({"count": all.len(), "sessions": all})
        }
        "sessions.subscribe" | "sessions.unsubscribe" => {
            let on = method == "sessions.subscribe";
            if let Some(c) = shard.conn(caller.conn.id) {
                c.sessions_subscribed.set(on);
            }
            json!({"ok": true, "subscribed": on})
        }
        "system-event" => {
            let text = match p.get("text") {
                Some(Value::String(t)) if !t.is_empty() => t.clone(),
                _ => {
                    return Err(GatewayError::InvalidParams(
                        "invalid params: missing text".into(),
                    ))
                }
            };
            let ev = json!({"text": text, "ts": now_ms(), "deviceId": caller.auth.device_id, "host": p.get("host")});
            let ev2 = ev.clone();
            shard.broadcast(move |s| {
                *s.last_heartbeat.borrow_mut() = Some(ev2.clone());
            });
            json!({"ok": true})
        }
        other => return Err(GatewayError::UnknownMethod(other.to_string())),
    })
}
