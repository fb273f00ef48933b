//! The node pairing methods (`node.pair.*`) and events (`node.pair.requested|resolved`),
//! and the refresh of each shard's registry replica after a change: the shard-facing half of
//! [`super::pairing`], whose requests and approved sets they act on.

use std::rc::Rc;

use serde_json::{json, Value};

use super::pairing::{ApprovedNode, Filed, NodeMeta, NodePairRequest};
use crate::addr::Caller;
use crate::auth::handshake::Admission;
use crate::clock::now_ms;
use crate::protocol::error::GatewayError;
use crate::protocol::method::NodePairMethod;
use crate::protocol::params::required_str;
use crate::shard::GatewayShard;

/// Refreshes the pairing view of `node_id` in this shard's registry replica from the shared
/// state (and, with `declared`, replaces its declared commands and caps first): a gated
/// node's effective surface is what it declares *and* its approval holds.
fn apply(s: &GatewayShard, node_id: &str, declared: Option<(&[String], &[String])>) {
    let approved = s.shared().node_pairing.approved(node_id);
    let pending = s.shared().node_pairing.pending_for(node_id, now_ms());
    let mut reg = s.nodes().registry.borrow_mut();
    let Some(n) = reg.get_mut(node_id) else {
        return;
    };
    if let Some((commands, caps)) = declared {
        n.declared = commands.to_vec();
        n.declared_caps = caps.to_vec();
    }
    if n.gated {
        let keep = |declared: &[String], approved: Option<&Vec<String>>| -> Vec<String> {
            declared
                .iter()
                .filter(|c| approved.is_some_and(|a| a.contains(c)))
                .cloned()
                .collect()
        };
        n.commands = keep(&n.declared, approved.as_ref().map(|a| &a.commands));
        n.caps = keep(&n.declared_caps, approved.as_ref().map(|a| &a.caps));
    } else {
        n.commands = n.declared.clone();
        n.caps = n.declared_caps.clone();
    }
    n.row["commands"] = json!(n.commands);
    n.row["caps"] = json!(n.caps);
    n.approved = approved.map(|a| a.commands);
    n.pending_request = pending.map(|r| r.request_id);
}

/// Refreshes the pairing view of a node in every shard's registry.
pub fn sync(shard: &Rc<GatewayShard>, node_id: &str) {
    let id = node_id.to_owned();
    shard.broadcast(move |s| apply(s, &id, None));
}

/// Called on the node's shard when its registry entry is inserted.
pub(crate) fn apply_local(s: &GatewayShard, node_id: &str) {
    apply(s, node_id, None);
}

/// Sends a pairing event to every operator allowed to act on it, and to the node itself.
fn emit(shard: &Rc<GatewayShard>, name: &'static str, node_id: &str, payload: Value) {
    if let Some(conn) = shard.nodes().registry.borrow().get(node_id).map(|n| n.conn) {
        shard.event_to(conn, name, &payload, true);
    }
    let text = payload.to_string();
    shard.broadcast(move |s| {
        s.event_local_all(
            name,
            &text,
            true,
            false,
            crate::transport::conn::Conn::may_pair,
        )
    });
}

fn announce(shard: &Rc<GatewayShard>, filed: &Filed) {
    let Filed::Pending {
        request,
        new: true,
        superseded,
    } = filed
    else {
        return;
    };
    if let Some(old) = superseded {
        emit(
            shard,
            "node.pair.resolved",
            &request.node_id,
            json!({"requestId": old, "nodeId": request.node_id, "decision": "superseded",
                   "supersededBy": request.request_id, "ts": now_ms()}),
        );
    }
    tracing::info!(shard = %shard.id(), request = %request.request_id, node = %request.node_id,
        commands = ?request.commands, "node pairing requested");
    emit(
        shard,
        "node.pair.requested",
        &request.node_id,
        request.to_json(),
    );
}

/// At the connect of a gated node (on its shard, before its registry entry is broadcast):
/// files a request when the declared surface is not covered by its approval. A node that
/// authenticated with a setup code's bootstrap token has its first surface approved at once
/// (OpenClaw: the operator approved it by minting the code).
/// `commands` and `caps`: its declared surface after the platform policy ([`super::policy`]).
pub fn on_connect(
    shard: &Rc<GatewayShard>,
    node_id: &str,
    adm: &Admission,
    commands: &[String],
    caps: &[String],
    bootstrapped: bool,
) {
    let c = &adm.client;
    let meta = NodeMeta {
        client_id: Some(c.id.to_string()),
        client_mode: Some(c.mode.to_string()),
        display_name: c.display_name.as_deref().map(str::to_owned),
        platform: Some(c.platform.to_string()),
        version: Some(c.version.to_string()),
        device_family: c.device_family.as_deref().map(str::to_owned),
    };
    let np = &shard.shared().node_pairing;
    let now = now_ms();
    let first = np.approved(node_id).is_none();
    let filed = np.file(node_id, commands, caps, meta, false, now);
    if let (true, true, Filed::Pending { request, .. }) = (bootstrapped, first, &filed) {
        if let Some((r, a, written)) = np.approve(&request.request_id, "bootstrap", now) {
            // Announced once on disk; a failed write undoes the approval and the request
            // goes back to the operators.
            let shard = shard.clone();
            let node_id = node_id.to_owned();
            glommio::spawn_local(async move {
                match written.wait().await {
                    Ok(()) => {
                        tracing::info!(shard = %shard.id(), node = %node_id, commands = ?a.commands,
                            "node capability surface approved by its bootstrap token");
                        sync(&shard, &node_id);
                        emit(
                            &shard,
                            "node.pair.resolved",
                            &node_id,
                            json!({"requestId": r.request_id, "nodeId": node_id, "decision": "approved", "ts": now}),
                        );
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "node pairing store");
                        shard.shared().node_pairing.restore(r.clone());
                        sync(&shard, &node_id);
                        announce(
                            &shard,
                            &Filed::Pending {
                                request: Box::new(r),
                                new: true,
                                superseded: None,
                            },
                        );
                    }
                }
            })
            .detach();
            return;
        }
    }
    announce(shard, &filed);
}

fn strings(p: &Value, k: &str) -> Result<Vec<String>, GatewayError> {
    match p.get(k) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    GatewayError::InvalidParams(format!("invalid params: {k} must be strings"))
                })
            })
            .collect(),
        Some(_) => Err(GatewayError::InvalidParams(format!(
            "invalid params: {k} must be an array"
        ))),
    }
}

/// Runs a `node.pair.*` method (`node.pair.request` from a node or a pairing operator; the
/// others need `operator.pairing`, checked by authz). An approval or a removal is answered
/// (and announced) once it is on disk.
pub async fn call(
    shard: &Rc<GatewayShard>,
    caller: &Caller,
    m: NodePairMethod,
    p: &Value,
) -> Result<Value, GatewayError> {
    let np = &shard.shared().node_pairing;
    let now = now_ms();
    let me = caller.auth.actor();
    match m {
        NodePairMethod::Request => {
            let is_node = caller.auth.role == "node";
            let node_id = match p.get("nodeId").and_then(|v| v.as_str()) {
                Some(id) if is_node && id != me => {
                    return Err(GatewayError::InvalidParams(
                        "nodeId does not match the calling node".into(),
                    ))
                }
                Some(id) if !id.is_empty() => id.to_owned(),
                _ if is_node => me.to_owned(),
                _ => {
                    return Err(GatewayError::InvalidParams(
                        "invalid params: missing nodeId".into(),
                    ))
                }
            };
            let commands = strings(p, "commands")?;
            let caps = strings(p, "caps")?;
            let live = shard
                .nodes()
                .registry
                .borrow()
                .get(&node_id)
                .map(|n| n.row.clone());
            let from = |k: &str| {
                p.get(k)
                    .or_else(|| live.as_ref().and_then(|r| r.get(k)))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            let meta = NodeMeta {
                client_id: from("clientId"),
                client_mode: from("clientMode"),
                display_name: from("displayName"),
                platform: from("platform"),
                version: from("version"),
                device_family: from("deviceFamily"),
            };
            let filed = np.file(&node_id, &commands, &caps, meta, false, now);
            announce(shard, &filed);
            if is_node {
                // The request re-declares the node's surface.
                let id = node_id.clone();
                shard.broadcast(move |s| apply(s, &id, Some((&commands, &caps))));
            } else {
                sync(shard, &node_id);
            }
            Ok(match filed {
                Filed::Covered => json!({"status": "paired", "nodeId": node_id,
                    "commands": np.approved(&node_id).map(|a| a.commands)}),
                Filed::Pending { request, new, .. } => json!({"status": "pending",
                    "nodeId": node_id, "requestId": request.request_id, "created": new,
                    "request": request.to_json()}),
            })
        }
        NodePairMethod::List => {
            let (pending, paired) = np.list(now);
            Ok(json!({
                "pending": pending.iter().map(NodePairRequest::to_json).collect::<Vec<_>>(),
                "paired": paired.iter().map(ApprovedNode::to_json).collect::<Vec<_>>(),
            }))
        }
        NodePairMethod::Approve => {
            let id = required_str(p, "requestId")?;
            let (r, a, written) = np
                .approve(id, me, now)
                .ok_or_else(|| GatewayError::ApprovalNotFound(id.to_owned()))?;
            if let Err(e) = written.wait().await {
                tracing::error!(error = %e, "node pairing store");
                np.restore(r);
                return Err(GatewayError::AgentFailed(format!(
                    "node pairing store: {e}"
                )));
            }
            tracing::info!(request = %id, node = %r.node_id, by = %me, commands = ?a.commands, "node pairing approved");
            sync(shard, &r.node_id);
            emit(
                shard,
                "node.pair.resolved",
                &r.node_id,
                json!({"requestId": id, "nodeId": r.node_id, "decision": "approved", "ts": now}),
            );
            Ok(json!({"requestId": id, "node": a.to_json()}))
        }
        NodePairMethod::Reject => {
            let id = required_str(p, "requestId")?;
            let r = np
                .reject(id, now)
                .ok_or_else(|| GatewayError::ApprovalNotFound(id.to_owned()))?;
            tracing::info!(request = %id, node = %r.node_id, by = %me, "node pairing rejected");
            sync(shard, &r.node_id);
            emit(
                shard,
                "node.pair.resolved",
                &r.node_id,
                json!({"requestId": id, "nodeId": r.node_id, "decision": "rejected",
                       "approvedCommands": r.approved, "ts": now}),
            );
            Ok(json!({"requestId": id, "nodeId": r.node_id, "approvedCommands": r.approved}))
        }
        NodePairMethod::Verify => {
            let node_id = required_str(p, "nodeId")?;
            let approved = np.approved(node_id);
            let pending = np.pending_for(node_id, now);
            let live = shard.nodes().registry.borrow().get(node_id).cloned();
            let declared = live.as_ref().map(|n| n.declared.clone());
            let unapproved: Vec<String> = declared
                .iter()
                .flatten()
                .filter(|c| !approved.as_ref().is_some_and(|a| a.commands.contains(c)))
                .cloned()
                .collect();
            Ok(json!({
                "nodeId": node_id,
                "paired": approved.is_some(),
                "verified": approved.is_some() && unapproved.is_empty() && pending.is_none(),
                "approvedCommands": approved.as_ref().map(|a| &a.commands),
                "approvedAtMs": approved.as_ref().map(|a| a.approved_at_ms),
                "caps": approved.as_ref().map(|a| &a.caps),
                "connected": live.is_some(),
                "declaredCommands": declared,
                "unapprovedCommands": unapproved,
                "pendingRequestId": pending.map(|r| r.request_id),
                "requirePairing": shard.config().gateway.nodes.require_pairing,
            }))
        }
        NodePairMethod::Remove => {
            // OpenClaw keeps a node's surface in its device record, so removing the node
            // unpairs a device paired only as a node, and closes its node connections.
            let node_id = required_str(p, "nodeId")?;
            let store = &shard.shared().store;
            let device_node_only = store
                .get(node_id)
                .is_some_and(|d| d.roles.iter().all(|r| r == "node"));
            let (mut removed, written) = np.remove(node_id, now);
            written.wait().await.map_err(|e| {
                tracing::error!(error = %e, "node pairing store");
                GatewayError::AgentFailed(format!("node pairing store: {e}"))
            })?;
            if device_node_only {
                let (gone, written) = store.remove(node_id);
                written
                    .wait()
                    .await
                    .map_err(|e| GatewayError::AgentFailed(format!("pairing store: {e}")))?;
                removed |= gone;
            }
            if !removed {
                return Err(GatewayError::InvalidParams("unknown nodeId".into()));
            }
            tracing::info!(node = %node_id, by = %me, "node unpaired");
            sync(shard, node_id);
            shard.close_device(node_id, Some("node"), "node removed");
            Ok(json!({"nodeId": node_id}))
        }
    }
}
