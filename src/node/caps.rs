//! Capability negotiation (`gateway.nodeCapabilities`): a capability (camera, tts, vision…)
//! is served by an ordered list of providers — `node:<selector>` (a live node declaring the
//! capability whose nodeType, family, platform, display name or client id is the selector),
//! `host` (the gateway itself) or `cloud` — with a `fallback` tried last. `capability.invoke`
//! walks that order, failing over to the next provider when one is absent, disconnects or
//! times out; `capabilities.status` shows who serves what right now.

use std::rc::Rc;

use serde_json::{json, Value};

use crate::config::CapabilityConfig;
use crate::protocol::error::GatewayError;
use crate::shard::GatewayShard;

/// The provider order for `cap` (preference applied, fallback last).
fn order(c: &CapabilityConfig) -> Vec<String> {
    let mut p = c.providers.clone();
    match c.preference.as_deref() {
        Some("cloud_first") => p.sort_by_key(|x| if x == "cloud" { 0 } else { 1 }),
        // local_first (default): nodes and the host before the cloud, list order otherwise.
        _ => p.sort_by_key(|x| if x == "cloud" { 1 } else { 0 }),
    }
    if let Some(f) = &c.fallback {
        if !p.contains(f) {
            p.push(f.clone());
        }
    }
    p
}

/// Live nodes matching `node:<sel>` for `cap`, by node id order.
fn nodes_for(shard: &GatewayShard, cap: &str, sel: &str) -> Vec<String> {
    shard
        .nodes()
        .registry
        .borrow()
        .values()
        .filter(|n| {
            n.row["caps"]
                .as_array()
                .is_some_and(|c| c.iter().any(|x| x == cap))
        })
        .filter(|n| {
            [
                "nodeType",
                "family",
                "platform",
                "displayName",
                "clientId",
                "nodeId",
            ]
            .iter()
            .any(|k| {
                n.row[*k]
                    .as_str()
                    .is_some_and(|v| v.eq_ignore_ascii_case(sel))
            })
        })
        .map(|n| n.node_id.clone())
        .collect()
}

/// The built-in `host` provider: commands the gateway host answers itself.
fn host(command: &str, params: &Value) -> Result<Value, String> {
    match command {
        "echo" => Ok(json!({"echo": params})),
        "time" => Ok(json!({"ts": crate::clock::now_ms()})),
        other => Err(format!("host provider has no command {other}")),
    }
}

/// `capability.invoke {capability, command, params?, timeoutMs?, idempotencyKey}`
pub async fn invoke(shard: &Rc<GatewayShard>, p: &Value) -> Result<Value, GatewayError> {
    let cap = p
        .get("capability")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| GatewayError::InvalidParams("invalid params: missing capability".into()))?;
    let command = p
        .get("command")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| GatewayError::InvalidParams("invalid params: missing command".into()))?;
    let idem = p
        .get("idempotencyKey")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            GatewayError::InvalidParams("invalid params: missing idempotencyKey".into())
        })?;
    let cfg = shard
        .config()
        .gateway
        .node_capabilities
        .get(cap)
        .cloned()
        .ok_or_else(|| {
            GatewayError::InvalidParams(format!(
                "unknown capability {cap:?} (see gateway.nodeCapabilities)"
            ))
        })?;
    let mut tried: Vec<Value> = Vec::new();
    for provider in order(&cfg) {
        if let Some(sel) = provider.strip_prefix("node:") {
            for node in nodes_for(shard, cap, sel) {
                let call = json!({"nodeId": node, "command": command, "params": p.get("params"),
                                  "timeoutMs": p.get("timeoutMs"), "idempotencyKey": format!("{idem}:{node}")});
                match crate::node::invoke_await(shard, &call).await {
                    Ok(mut v) => {
                        v["provider"] = json!(provider);
                        v["capability"] = json!(cap);
                        v["tried"] = json!(tried);
                        return Ok(v);
                    }
                    // Gone or silent: fail over. Any other answer is the provider's own.
                    Err(e @ (GatewayError::NodeUnavailable(_) | GatewayError::AgentTimeout(_))) => {
                        tried.push(json!({"provider": provider, "nodeId": node, "error": e.wire().message}));
                    }
                    Err(e) => return Err(e),
                }
            }
            if tried.iter().all(|t| t["provider"] != provider.as_str()) {
                tried.push(json!({"provider": provider, "error": "no live node"}));
            }
        } else if provider == "host" {
            match host(command, p.get("params").unwrap_or(&Value::Null)) {
                Ok(payload) => {
                    return Ok(
                        json!({"ok": true, "provider": "host", "capability": cap, "command": command,
                                     "payload": payload, "tried": tried}),
                    )
                }
                Err(e) => tried.push(json!({"provider": "host", "error": e})),
            }
        } else {
            tried.push(
                json!({"provider": provider, "error": "provider not available on this gateway"}),
            );
        }
    }
    Err(GatewayError::CapabilityUnavailable {
        capability: cap.to_string(),
        required: cfg.required,
        tried: Value::Array(tried),
    })
}

/// `capabilities.status`: each configured capability, its providers and which are live.
pub fn status(shard: &GatewayShard) -> Value {
    let caps = &shard.config().gateway.node_capabilities;
    let rows: Vec<Value> = caps
        .iter()
        .map(|(name, c)| {
            let providers: Vec<Value> = order(c)
                .into_iter()
                .map(|p| {
                    let live: Vec<String> = match p.strip_prefix("node:") {
                        Some(sel) => nodes_for(shard, name, sel),
                        None if p == "host" => vec!["host".into()],
                        None => vec![],
                    };
                    json!({"provider": p, "live": !live.is_empty(), "nodes": live})
                })
                .collect();
            let serving = providers
                .iter()
                .find(|p| p["live"] == true)
                .map(|p| p["provider"].clone());
            json!({"capability": name, "required": c.required, "providers": providers,
                   "servedBy": serving, "available": serving.is_some()})
        })
        .collect();
    json!({"capabilities": rows})
}
