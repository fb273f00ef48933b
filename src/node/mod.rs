//! Nodes: devices (phones, desktops, headless boxes, canvas/tts/vision services) that connect
//! with `role: "node"` and are invoked through the gateway (PROTOCOL.md §8).
//!
//! The node registry is replicated on every shard (like presence): a node's hello broadcasts
//! its entry, its disconnect removes it, so `node.list` and the routing of `node.invoke` are
//! local reads. An invoke is owned by the node's shard: it registers the pending call (with
//! its timeout), sends `node.invoke.request` to the node, and answers the caller — wherever it
//! is — when `node.invoke.result` arrives, the timeout fires, or the node disconnects.

use std::rc::Rc;
use std::time::Duration;

use serde_json::{json, Value};

pub mod caps;
pub mod catalog;
pub mod pair_methods;
pub mod pairing;
pub mod policy;
pub mod registry;
pub mod worker;
pub mod worker_pool;

use crate::addr::{ConnRef, ReplyTo};
use crate::auth::handshake::Admission;
use crate::clock::now_ms;
use crate::protocol::error::GatewayError;
use crate::protocol::params::required_str;
use crate::shard::GatewayShard;
use registry::{node_family, Answer, NodeInfo, PendingInvoke};

impl Answer {
    /// Delivers `r` (from the node's shard `shard`).
    fn send(self, shard: &Rc<GatewayShard>, r: Result<Value, GatewayError>) {
        match self {
            Answer::Res(reply) => match r {
                Ok(v) => shard.reply_ok(&reply, &v),
                Err(e) => shard.reply_err(&reply, &e),
            },
            Answer::Internal { origin, id } => shard.on_shard(origin, move |o| {
                let tx = o.nodes().internal.borrow_mut().remove(&id);
                if let Some(tx) = tx {
                    let _ = tx.send(r);
                }
            }),
        }
    }
}

/// The node id of an admitted node connection.
pub fn node_id(adm: &Admission) -> String {
    adm.device_id
        .clone()
        .unwrap_or_else(|| adm.client.id.to_string())
}

/// Announces a node that just completed its handshake on `conn`.
/// `bootstrapped`: it authenticated with a setup code's bootstrap token, which approves its
/// declared surface as well (as in OpenClaw).
pub fn node_up(
    shard: &Rc<GatewayShard>,
    conn: ConnRef,
    adm: &Admission,
    raw_params: &Value,
    bootstrapped: bool,
) {
    let id = node_id(adm);
    let node_type = raw_params
        .get("nodeType")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| {
            adm.client
                .device_family
                .clone()
                .map(|f| f.to_ascii_lowercase())
        })
        .unwrap_or_default();
    let row = json!({
        "nodeId": id, "displayName": adm.client.display_name, "platform": adm.client.platform,
        "version": raw_params.get("version").and_then(|v| v.as_str()).unwrap_or(&adm.client.version),
        "nodeType": node_type, "family": node_family(&node_type),
        "caps": adm.params.caps, "commands": adm.params.commands, "permissions": adm.params.permissions,
        "connectedAt": now_ms(), "shard": conn.shard.0, "deviceId": adm.device_id, "clientId": adm.client.id,
    });
    let agents: Vec<String> = if &*adm.client.mode == "worker" {
        raw_params
            .get("agents")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_else(|| vec!["*".to_string()])
    } else {
        Vec::new()
    };
    let mut row = row;
    row["worker"] = json!(!agents.is_empty());
    row["agents"] = json!(agents);
    if let Some(path) = raw_params.get("pathEnv").filter(|v| v.is_string()) {
        row["pathEnv"] = path.clone();
    }
    if let Some(f) = &adm.client.device_family {
        row["deviceFamily"] = json!(f);
    }
    row["clientMode"] = json!(adm.client.mode);
    // Agent workers are gated too: calling itself a worker must not open a way around the
    // approval of a node's commands. A worker declaring no command files no request (it has
    // nothing to invoke; its agent runs go through `worker.run.*`).
    let gated = shard.config().gateway.nodes.require_pairing;
    let files_request = gated && !(&*adm.client.mode == "worker" && adm.params.commands.is_empty());
    // Commands outside the platform's allowlist are withheld from the start (OpenClaw).
    let (declared, declared_caps, withheld) = policy::admit_surface(
        &shard.config().gateway.nodes,
        Some(&adm.client.platform),
        adm.client.device_family.as_deref(),
        &adm.params.caps,
        &adm.params.commands,
    );
    if !withheld.is_empty() {
        tracing::warn!(shard = %shard.id(), node = %id, commands = ?withheld,
            "node command surface withheld (not in the platform allowlist; see gateway.nodes.allowCommands)");
    }
    let info = NodeInfo {
        node_id: id.clone(),
        conn,
        row,
        // Nothing is invocable before the pairing view is applied (below, on every shard).
        commands: if gated { Vec::new() } else { declared.clone() },
        caps: if gated {
            Vec::new()
        } else {
            declared_caps.clone()
        },
        declared: declared.clone(),
        declared_caps: declared_caps.clone(),
        gated,
        agents,
        approved: None,
        pending_request: None,
    };
    tracing::info!(shard = %shard.id(), node = %id, "node connected");
    if let Some(r) = shard.relay() {
        r.node_here(&id, true);
    }
    if files_request {
        pair_methods::on_connect(shard, &id, adm, &declared, &declared_caps, bootstrapped);
    }
    shard.broadcast(move |s| {
        s.nodes()
            .registry
            .borrow_mut()
            .insert(info.node_id.clone(), info.clone());
        pair_methods::apply_local(s, &info.node_id);
    });
}

/// The node on `conn` went away: forget it everywhere and fail its pending invokes.
pub fn node_down(shard: &Rc<GatewayShard>, conn: ConnRef) {
    let id = shard
        .nodes()
        .registry
        .borrow()
        .values()
        .find(|n| n.conn == conn)
        .map(|n| n.node_id.clone());
    let Some(id) = id else { return };
    tracing::info!(shard = %shard.id(), node = %id, "node disconnected");
    if let Some(r) = shard.relay() {
        r.node_here(&id, false);
    }
    worker::worker_down(shard, conn);
    let failed: Vec<PendingInvoke> = {
        let mut p = shard.nodes().pending.borrow_mut();
        let ids: Vec<String> = p
            .iter()
            .filter(|(_, v)| v.node_conn == conn)
            .map(|(k, _)| k.clone())
            .collect();
        ids.into_iter().filter_map(|k| p.remove(&k)).collect()
    };
    for f in failed {
        let e = GatewayError::NodeUnavailable(format!("node disconnected: {}", f.node_id));
        f.caller.send(shard, Err(e));
    }
    shard.broadcast(move |s| {
        let mut r = s.nodes().registry.borrow_mut();
        if r.get(&id).is_some_and(|n| n.conn == conn) {
            r.remove(&id);
        }
    });
}

/// Whether a caller may act on pairing requests (and so sees their details).
pub use crate::auth::pairing::may_pair;

/// `node.list`: every known node (see [`catalog`]). `with_pending`: the caller may act on
/// pairing requests, so it sees the pending request's id and surface.
pub fn list(shard: &GatewayShard, with_pending: bool) -> Value {
    let nodes = catalog::rows(shard, with_pending);
    json!({"ts": now_ms(), "count": nodes.len(), "nodes": nodes})
}

/// `node.describe {nodeId}`: the node's catalog row, its fields at the top level.
pub fn describe(
    shard: &GatewayShard,
    p: &Value,
    with_pending: bool,
) -> Result<Value, GatewayError> {
    let id = required_str(p, "nodeId")?;
    let mut row = catalog::row(shard, id, with_pending)
        .ok_or_else(|| GatewayError::InvalidParams("unknown nodeId".into()))?;
    row["ts"] = json!(now_ms());
    Ok(row)
}

/// Whether `gateway.nodes.denyCommands` lets `command` through (checked again at invoke: a
/// command denied after its approval is not run).
fn command_allowed(shard: &GatewayShard, command: &str) -> bool {
    let matches = |pat: &String| {
        pat == command
            || pat
                .strip_suffix('*')
                .is_some_and(|p| command.starts_with(p))
    };
    !shard
        .config()
        .gateway
        .nodes
        .deny_commands
        .iter()
        .any(matches)
}

/// A checked invoke, ready to hand to the node's shard.
struct Prepared {
    node: NodeInfo,
    command: String,
    idem: String,
    timeout_ms: u64,
    params_json: Value,
}

fn prepare(shard: &GatewayShard, p: &Value) -> Result<Prepared, GatewayError> {
    let node_id = required_str(p, "nodeId")?.to_string();
    let command = required_str(p, "command")?.to_string();
    let idem = required_str(p, "idempotencyKey")?.to_string();
    let live = shard.nodes().registry.borrow().get(&node_id).cloned();
    // OpenClaw's order: a node whose surface was never approved has no pairing generation
    // to invoke under (`PAIRING_CHANGED`), connected or not; then it must be connected.
    let gated = live
        .as_ref()
        .map_or(shard.config().gateway.nodes.require_pairing, |n| n.gated);
    if gated && shard.shared().node_pairing.approved(&node_id).is_none() {
        return Err(GatewayError::NodePairingChanged);
    }
    let node = live.ok_or_else(|| GatewayError::NodeNotConnected(node_id.clone()))?;
    if !command_allowed(shard, &command) {
        return Err(GatewayError::InvalidParams(format!(
            "command not allowed by gateway policy: {command}"
        )));
    }
    if !node.commands.iter().any(|c| c == &command) {
        let platform = node.row["platform"].as_str().unwrap_or("unknown");
        let (reason, hint) = if node.commands.is_empty() && node.declared.contains(&command) {
            ("node did not declare commands", "node command not allowed: the node's declared command surface is pending approval; run `openclaw nodes pending`, then `openclaw nodes approve <requestId>`".to_string())
        } else if node.commands.is_empty() {
            (
                "node did not declare commands",
                "node command not allowed: the node did not declare any supported commands"
                    .to_string(),
            )
        } else {
            ("command not declared by node", format!("node command not allowed: the node (platform: {platform}) does not support \"{command}\""))
        };
        return Err(GatewayError::NodeCommandNotAllowed(Box::new(
            crate::protocol::error::CommandNotAllowed {
                message: hint,
                reason,
                command,
                request_id: node.pending_request.clone(),
            },
        )));
    }
    let timeout_ms = p
        .get("timeoutMs")
        .and_then(|v| v.as_u64())
        .unwrap_or(30_000)
        .clamp(1, 600_000);
    let params_json = match p.get("params") {
        None | Some(Value::Null) => Value::Null,
        Some(v) => Value::String(v.to_string()),
    };
    Ok(Prepared {
        node,
        command,
        idem,
        timeout_ms,
        params_json,
    })
}

/// Hands a prepared invoke to the node's shard; `answer` gets the outcome.
fn start(shard: &Rc<GatewayShard>, x: Prepared, answer: Answer) {
    shard.on_shard(x.node.conn.shard, move |s| {
        let Prepared {
            node,
            command,
            idem,
            timeout_ms,
            params_json,
        } = x;
        // The caller's shard may not have heard yet that the node left (the registry is
        // updated by broadcast): a node whose connection is gone here fails the call now
        // instead of at its timeout.
        if s.conn(node.conn.id).is_none_or(|c| c.is_closing()) {
            let e = GatewayError::NodeUnavailable(format!("node disconnected: {}", node.node_id));
            answer.send(s, Err(e));
            return;
        }
        let invoke_id = uuid::Uuid::new_v4().to_string();
        s.nodes().pending.borrow_mut().insert(
            invoke_id.clone(),
            PendingInvoke {
                caller: answer,
                node_id: node.node_id.clone(),
                node_conn: node.conn,
                command: command.clone(),
            },
        );
        let ev = json!({"id": invoke_id, "nodeId": node.node_id, "command": command,
                        "paramsJSON": params_json, "timeoutMs": timeout_ms, "idempotencyKey": idem});
        s.event_to(node.conn, "node.invoke.request", &ev, false);
        let s2 = s.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(Duration::from_millis(timeout_ms)).await;
            let gone = s2.nodes().pending.borrow_mut().remove(&invoke_id);
            if let Some(p) = gone {
                let e = GatewayError::AgentTimeout(format!(
                    "node {} did not answer {} within {timeout_ms} ms",
                    p.node_id, p.command
                ));
                p.caller.send(&s2, Err(e));
            }
        })
        .detach();
    });
}

/// `node.invoke {nodeId, command, params?, timeoutMs?, idempotencyKey}` from a caller on
/// `shard`: checks, then hands the call to the node's shard.
pub fn invoke(shard: &Rc<GatewayShard>, reply: ReplyTo, p: &Value) {
    match prepare(shard, p) {
        Ok(x) => start(shard, x, Answer::Res(reply)),
        Err(e) => shard.reply_err(&reply, &e),
    }
}

/// Invokes a node and waits for its answer (used by capability failover).
pub async fn invoke_await(shard: &Rc<GatewayShard>, p: &Value) -> Result<Value, GatewayError> {
    let x = prepare(shard, p)?;
    let id = shard.nodes().next_internal.get();
    shard.nodes().next_internal.set(id + 1);
    let (tx, rx) = futures_channel::oneshot::channel();
    shard.nodes().internal.borrow_mut().insert(id, tx);
    start(
        shard,
        x,
        Answer::Internal {
            origin: shard.id(),
            id,
        },
    );
    rx.await
        .unwrap_or_else(|_| Err(GatewayError::NodeUnavailable("invoke abandoned".into())))
}

/// `node.invoke.result {id, nodeId, ok, payload?, payloadJSON?, error?}` from a node on
/// `shard` (the node's own shard, where its pending invokes live).
pub fn result(
    shard: &Rc<GatewayShard>,
    caller_node: &str,
    p: &Value,
) -> Result<Value, GatewayError> {
    let id = required_str(p, "id")?;
    let node_id = required_str(p, "nodeId")?;
    if node_id != caller_node {
        return Err(GatewayError::InvalidParams(
            "nodeId does not match the calling node".into(),
        ));
    }
    let pending = {
        let mut m = shard.nodes().pending.borrow_mut();
        match m.get(id) {
            Some(x) if x.node_id == node_id => m.remove(id),
            _ => None,
        }
    };
    let Some(pi) = pending else {
        return Ok(json!({"ok": true, "ignored": true}));
    };
    let ok = p.get("ok").and_then(|v| v.as_bool()).unwrap_or(true);
    if ok {
        let payload_json = p
            .get("payloadJSON")
            .cloned()
            .filter(|v| !v.is_null())
            .unwrap_or_else(|| {
                p.get("payload")
                    .map(|v| Value::String(v.to_string()))
                    .unwrap_or(Value::Null)
            });
        let payload = p
            .get("payload")
            .cloned()
            .or_else(|| {
                payload_json
                    .as_str()
                    .and_then(|s| serde_json::from_str(s).ok())
            })
            .unwrap_or(Value::Null);
        let v = json!({"ok": true, "nodeId": node_id, "command": pi.command, "payload": payload, "payloadJSON": payload_json});
        pi.caller.send(shard, Ok(v));
    } else {
        let msg = p
            .pointer("/error/message")
            .and_then(|v| v.as_str())
            .unwrap_or("node reported an error")
            .to_string();
        let e = GatewayError::NodeUnavailable(format!("node {node_id}: {msg}"));
        pi.caller.send(shard, Err(e));
    }
    Ok(json!({"ok": true}))
}

/// `node.skills.update {skills}`, what the OpenClaw node host reports about itself right
/// after its hello: acknowledged, nothing here uses it.
pub fn skills_update(node: &str, p: &Value) -> Result<Value, GatewayError> {
    Ok(json!({"nodeId": node, "skills": p.get("skills").cloned().unwrap_or(json!([]))}))
}

/// `node.pluginTools.update {tools}`, as [`skills_update`].
pub fn plugin_tools_update(node: &str, p: &Value) -> Result<Value, GatewayError> {
    Ok(json!({"nodeId": node, "tools": p.get("tools").cloned().unwrap_or(json!([]))}))
}

/// `node.runnerInventory.update` (worker hosting), which OpenClaw refuses while the node's
/// surface awaits approval — the node host retries it until then.
pub fn runner_inventory_update(
    shard: &Rc<GatewayShard>,
    node: &str,
) -> Result<Value, GatewayError> {
    let gated = shard
        .nodes()
        .registry
        .borrow()
        .get(node)
        .is_some_and(|n| n.gated);
    let np = &shard.shared().node_pairing;
    match np.pending_for(node, now_ms()) {
        Some(r) if gated && np.approved(node).is_none() => Err(GatewayError::NodeUnavailable(format!(
            "node capability surface is awaiting operator approval; run `openclaw nodes approve {}` (see `openclaw nodes pending`), then this node retries automatically",
            r.request_id
        ))),
        _ => Ok(json!({"nodeId": node})),
    }
}

/// `node.event {event, payload}` from a node: passed to operators as a droppable event.
/// `node.host.stats` (the node host's load, memory and disk, every minute) is kept on the
/// node's row as `hostStats`, as OpenClaw shows it.
///
/// A gated node whose command surface is not approved yet has no pairing generation for its
/// events to belong to: OpenClaw refuses them (`UNAVAILABLE`, `PAIRING_CHANGED`, retryable),
/// so nothing it says reaches operators or its row until `nodes approve`.
pub fn event(shard: &Rc<GatewayShard>, node: &str, p: &Value) -> Result<Value, GatewayError> {
    let name = required_str(p, "event")?.to_string();
    let gated = shard
        .nodes()
        .registry
        .borrow()
        .get(node)
        .map_or(shard.config().gateway.nodes.require_pairing, |n| n.gated);
    if gated && shard.shared().node_pairing.approved(node).is_none() {
        return Err(GatewayError::NodePairingChanged);
    }
    if name == "node.host.stats" {
        let stats = p
            .get("payloadJSON")
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .or_else(|| p.get("payload").cloned())
            .filter(Value::is_object);
        if let Some(mut stats) = stats {
            stats["updatedAtMs"] = json!(now_ms());
            let (id, text) = (node.to_owned(), stats.to_string());
            shard.broadcast(move |s| {
                if let Some(n) = s.nodes().registry.borrow_mut().get_mut(&id) {
                    n.row["hostStats"] = serde_json::from_str(&text).unwrap_or_default();
                }
            });
            return Ok(json!({"ok": true, "event": name, "handled": true, "reason": "updated"}));
        }
    }
    let payload =
        json!({"nodeId": node, "event": name, "payload": p.get("payload"), "ts": now_ms()})
            .to_string();
    shard.broadcast(move |s| {
        s.event_local_all("node.event", &payload, true, false, |c| {
            c.auth
                .borrow()
                .as_ref()
                .is_some_and(|a| a.role == "operator")
        });
    });
    Ok(json!({"ok": true}))
}
