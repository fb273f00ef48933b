//! Methods answered on the caller's shard: health, status, presence, identity, config,
//! session listing (gathered from every shard) and subscriptions.

use std::rc::Rc;

use serde_json::{json, Value};

use crate::addr::Caller;
use crate::clock::now_ms;
use crate::protocol::error::GatewayError;
use crate::protocol::method::InfoMethod;
use crate::shard::GatewayShard;

/// What `health` names as the session store: sessions are kept in memory on their owner shard.
const SESSION_STORE: &str = "memory";

/// This shard's part of the `health` payload: its counts, and its dependency rows (shard 0
/// checks the dependencies).
fn part(s: &GatewayShard) -> Value {
    let (authed, total) = s.conn_counts();
    let counts = json!({"shard": s.id().0, "connections": authed, "sockets": total,
           "sessions": s.sessions().map.borrow().len(), "inflightRuns": s.inflight().get()});
    Value::Array(vec![
        counts,
        crate::ops::deps::rows(s),
        s.channels().health_json(),
    ])
}

/// The `health` payload, fresh: every shard's part over the mesh (the `health` and `status`
/// methods, which may wait).
pub(super) async fn health(shard: &Rc<GatewayShard>) -> Value {
    let t0 = std::time::Instant::now();
    let answers = shard.gather(|s| part(s)).await;
    health_of(shard, answers, t0)
}

/// hello-ok's `snapshot.health` (and the `health` event after it): this shard's part now and
/// the others' as they last published them ([`crate::snapshot`]), so a connect waits for no
/// other shard. A shard that has not published yet (the first moments after start) counts as
/// it starts: nothing connected, no sessions.
pub fn hello_health(shard: &GatewayShard) -> Value {
    let t0 = std::time::Instant::now();
    let answers = shard.health_parts().assemble(shard.id().0, part(shard), |s| {
        json!([{"shard": s, "connections": 0, "sockets": 0, "sessions": 0, "inflightRuns": 0}, []])
    });
    health_of(shard, answers, t0)
}

/// Publishes this shard's part to every shard when it changed ([`crate::snapshot`]): parked
/// until a local event, then a look [`CHECK_MS`](crate::snapshot::CHECK_MS) later, and after
/// a publication another within [`PERIOD_MS`](crate::snapshot::PERIOD_MS). Runs for the
/// shard's life.
pub async fn publish_health(shard: Rc<GatewayShard>) {
    use crate::snapshot::{CHECK_MS, PERIOD_MS};
    use std::time::Duration;
    let parts = &shard.health_parts();
    let mut moved = false;
    loop {
        if moved {
            let wait = Duration::from_millis(PERIOD_MS.saturating_sub(CHECK_MS));
            let _ = glommio::timer::timeout(wait, async {
                parts.changed().await;
                Ok(())
            })
            .await;
        } else {
            parts.changed().await;
        }
        // Let a burst of events settle: one look, one publication at most, per check.
        glommio::timer::sleep(Duration::from_millis(CHECK_MS)).await;
        parts.take_changed();
        moved = match parts.to_publish(part(&shard)) {
            Some(p) => {
                let from = shard.id().0;
                shard.broadcast(move |s| s.health_parts().store(from, p.clone()));
                true
            }
            None => false,
        };
    }
}

/// The `health` payload from every shard's part, in shard order.
fn health_of(shard: &GatewayShard, answers: Vec<Value>, t0: std::time::Instant) -> Value {
    let mut per_shard = Vec::with_capacity(answers.len());
    let mut deps = Vec::new();
    let mut channel_parts = Vec::new();
    for a in answers {
        if let Value::Array(a) = a {
            let mut a = a.into_iter();
            per_shard.extend(a.next());
            if let Some(d) = a.next() {
                deps.extend(flatten_one(d));
            }
            channel_parts.extend(a.next());
        }
    }
    let (channels, channel_order, channel_labels) =
        crate::channels::status::health(shard, &channel_parts);
    let sessions: u64 = per_shard
        .iter()
        .filter_map(|v| v["sessions"].as_u64())
        .sum();
    let connections: u64 = per_shard
        .iter()
        .filter_map(|v| v["connections"].as_u64())
        .sum();
    let agent = shard.config().agents.default_agent.clone();
    let all_healthy = deps.iter().all(|d| d["healthy"] == true);
    json!({
        "ok": true,
        "dependencies": deps,
        "dependenciesHealthy": all_healthy,
        "ts": now_ms(),
        "durationMs": t0.elapsed().as_millis() as u64,
        "channels": channels, "channelOrder": channel_order, "channelLabels": channel_labels,
        "heartbeatSeconds": 0,
        "defaultAgentId": agent,
        // `path` names the session store, as OpenClaw's does (`openclaw health` prints it):
        // sessions live in memory on their owner shard.
        "agents": [{"agentId": agent, "isDefault": true, "sessions": {"path": SESSION_STORE, "count": sessions, "recent": []}}],
        "sessions": {"path": SESSION_STORE, "count": sessions, "recent": []},
        "gateway": {"version": env!("CARGO_PKG_VERSION"), "uptimeMs": shard.shared().uptime_ms(),
                    "shards": shard.shards(), "connections": connections, "perShard": per_shard},
    })
}

/// The items of an array answer (a shard's rows); anything else has none.
fn flatten_one(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

/// Every shard's rows, in shard order, moved rather than copied.
fn flatten(per_shard: Vec<Value>) -> Vec<Value> {
    per_shard.into_iter().flat_map(flatten_one).collect()
}

/// Runs an info method.
pub(super) async fn local(
    shard: &Rc<GatewayShard>,
    caller: &Caller,
    m: InfoMethod,
    p: &Value,
) -> Result<Value, GatewayError> {
    let cfg = shard.config();
    Ok(match m {
        InfoMethod::Health => health(shard).await,
        InfoMethod::Status => {
            let h = health(shard).await;
            json!({
                "runtimeVersion": crate::protocol::OPENCLAW_COMPAT_VERSION,
                "shardgateVersion": env!("CARGO_PKG_VERSION"),
                "heartbeat": {"defaultAgentId": cfg.agents.default_agent, "agents": []},
                "channelSummary": [],
                "queuedSystemEvents": shard.system_events().borrow().iter().collect::<Vec<_>>(),
                "sessions": {"count": h["sessions"]["count"], "recent": [],
                             "byAgent": [{"agentId": cfg.agents.default_agent, "count": h["sessions"]["count"], "recent": []}]},
                "pid": std::process::id(),
                "gateway": h["gateway"],
                "cluster": shard.shared().cluster.as_ref().map(|c| {
                    let mut v = c.status_json();
                    v["relay"] = shard.relay().map(|r| r.stats_json()).unwrap_or_default();
                    v
                }),
            })
        }
        InfoMethod::SystemPresence => Value::Array(shard.presence_list()),
        // The last heartbeat run's outcome; heartbeats are disabled here (no heartbeat
        // runner), and OpenClaw answers null until one has run.
        InfoMethod::LastHeartbeat => Value::Null,
        InfoMethod::GatewayIdentityGet => json!({
            "deviceId": shard.shared().identity.device_id, "publicKey": shard.shared().identity.public_key,
        }),
        InfoMethod::ChannelsStatus => {
            let only = p.get("channel").and_then(Value::as_str);
            crate::channels::status::status(shard, only).await
        }
        InfoMethod::ConfigGet => json!({"config": cfg.redacted_json(), "path": Value::Null}),
        InfoMethod::SessionsList => {
            let rows = shard.gather(|s| Value::Array(s.sessions().rows())).await;
            let mut all = flatten(rows);
            // As OpenClaw: archived sessions only when asked for (`archived: "all"`/true,
            // or "only"); `agentId` narrows to one agent.
            let archived = match p.get("archived") {
                Some(Value::Bool(true)) => Some(true),
                Some(Value::String(s)) if s == "all" => Some(true),
                Some(Value::String(s)) if s == "only" => None,
                _ => Some(false),
            };
            let agent = p.get("agentId").and_then(|v| v.as_str());
            all.retain(|r| {
                let is_archived = r["archived"] == true;
                let shown = match archived {
                    Some(true) => true,
                    Some(false) => !is_archived,
                    None => is_archived,
                };
                shown && agent.is_none_or(|a| r["agentId"] == a)
            });
            all.sort_by(|a, b| b["updatedAt"].as_i64().cmp(&a["updatedAt"].as_i64()));
            let limit = p.get("limit").and_then(|v| v.as_u64()).unwrap_or(1000) as usize;
            let offset = p.get("offset").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
            let total = all.len();
            all.drain(..offset.min(total));
            all.truncate(limit);
            let next = offset + all.len();
            json!({"count": all.len(), "totalCount": total, "hasMore": next < total,
                   "nextOffset": (next < total).then_some(next), "sessions": all,
                   "defaults": {"modelProvider": crate::session::MODEL_PROVIDER,
                                "model": crate::session::MODEL, "contextTokens": Value::Null}})
        }
        InfoMethod::SessionsSubscribe | InfoMethod::SessionsUnsubscribe => {
            let on = m == InfoMethod::SessionsSubscribe;
            if let Some(c) = shard.conn(caller.conn.id) {
                c.sessions_subscribed.set(on);
            }
            json!({"ok": true, "subscribed": on})
        }
        InfoMethod::SystemEvent => {
            let text = match p.get("text") {
                Some(Value::String(t)) if !t.is_empty() => t.clone(),
                _ => {
                    return Err(GatewayError::InvalidParams(
                        "invalid params: missing text".into(),
                    ))
                }
            };
            // A presence line from a client, not a heartbeat (those come from a heartbeat
            // run, which shardgate does not have): logged, and `last-heartbeat` stays null.
            tracing::debug!(shard = %shard.id(), device = ?caller.auth.device_id, len = text.len(), "system-event");
            json!({"ok": true})
        }
        InfoMethod::QueueStatus => {
            let per = shard.gather(|s| s.queue().stats_json()).await;
            let dead: u64 = per.iter().filter_map(|v| v["deadLetters"].as_u64()).sum();
            json!({"enabled": cfg.queue.enabled, "backend": cfg.queue.backend, "maxSize": cfg.queue.max_size,
                   "depth": per.iter().filter_map(|v| v["depth"].as_u64()).sum::<u64>(),
                   "deadLetters": dead, "deadLetterEnabled": cfg.queue.dead_letter.enabled,
                   "perShard": per})
        }
        InfoMethod::QueueStats => {
            let per = shard.gather(|s| s.queue().stats_json()).await;
            let mut total = serde_json::Map::new();
            for v in &per {
                if let Some(m) = v.as_object() {
                    for (k, x) in m {
                        let sum = total.get(k).and_then(|t| t.as_u64()).unwrap_or(0)
                            + x.as_u64().unwrap_or(0);
                        total.insert(k.clone(), json!(sum));
                    }
                }
            }
            let dedup = shard
                .gather(|s| {
                    let core = s.queue().core.borrow();
                    let d = &core.dedup;
                    json!({"entries": d.len(), "capacity": d.capacity(), "evictedLive": d.evicted_live, "expired": d.expired})
                })
                .await;
            json!({"total": total, "perShard": per, "dedup": dedup,
                   "retryPolicy": serde_json::to_value(&cfg.queue.retry_policy).unwrap_or_default()})
        }
        InfoMethod::QueueInspect => {
            let limit = p
                .get("limit")
                .and_then(|v| v.as_u64())
                .unwrap_or(10)
                .min(1000) as usize;
            let dead = p
                .get("deadLetter")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let rows = shard
                .gather(move |s| {
                    let id = s.id().0;
                    if dead {
                        Value::Array(s.queue().core.borrow().dead.iter().map(|d| d.row(id)).collect())
                    } else {
                        let mut v = Vec::new();
                        for sess in s.sessions().map.borrow().values() {
                            if let Some(c) = sess.current.borrow().as_ref() {
                                v.push(json!({"messageId": c.run_id, "sessionKey": sess.key.as_str(), "state": "running", "shard": id}));
                            }
                            for j in sess.lane.borrow().iter() {
                                v.push(json!({"messageId": j.run_id, "sessionKey": j.session_key, "method": j.kind.method(),
                                              "state": "queued", "acceptedAt": j.accepted_at, "shard": id}));
                            }
                        }
                        Value::Array(v)
                    }
                })
                .await;
            let mut all = flatten(rows);
            all.truncate(limit);
            json!({"deadLetter": dead, "count": all.len(), "items": all})
        }
        InfoMethod::QueueRedrive => {
            let id = p.get("id").and_then(|v| v.as_str()).map(str::to_string);
            let all = p.get("all").and_then(|v| v.as_bool()).unwrap_or(false);
            if id.is_none() && !all {
                return Err(GatewayError::InvalidParams(
                    "invalid params: give id or all:true".into(),
                ));
            }
            let counts = shard
                .gather(move |s| json!(crate::queue::redrive(s, id.as_deref())))
                .await;
            let n: u64 = counts.iter().filter_map(|v| v.as_u64()).sum();
            if n == 0 && !all {
                return Err(GatewayError::NotFound("dead letter not found".into()));
            }
            json!({"ok": true, "redriven": n})
        }
        InfoMethod::GatewayTrace => {
            let id = match p.get("messageId").or_else(|| p.get("runId")) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => {
                    return Err(GatewayError::InvalidParams(
                        "invalid params: missing messageId".into(),
                    ))
                }
            };
            let id2 = id.clone();
            let parts = shard
                .gather(move |s| {
                    s.runs()
                        .borrow()
                        .get(&id2, now_ms())
                        .map(|e| {
                            Value::Array(e.trace.stages().iter().map(|st| st.to_json()).collect())
                        })
                        .unwrap_or(Value::Array(vec![]))
                })
                .await;
            let mut stages = flatten(parts);
            stages.sort_by_key(|v| v["ts"].as_i64().unwrap_or(0));
            if stages.is_empty() {
                return Err(GatewayError::NotFound(format!(
                    "no trace for message {id} (unknown or older than the dedup window)"
                )));
            }
            json!({"messageId": id, "stages": stages})
        }
        InfoMethod::GatewayAudit => crate::ops::audit::report(cfg),
    })
}
