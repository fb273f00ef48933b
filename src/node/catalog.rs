//! The known-node catalog behind `node.list` and `node.describe`: every node the gateway
//! knows of, live or not, merged from three sources as OpenClaw's `createKnownNodeCatalog`
//! does — the live registry replica of this shard, the node pairing store (approved surfaces
//! and pending requests) and the device pairing store (devices paired with the `node` role).
//!
//! Invariants a reader must keep:
//! - A paired node stays listed after it disconnects (`connected: false`), with its approved
//!   caps and commands; a live node shows only its *effective* surface (declared ∩ approved).
//! - `paired` means the device is paired for the node role or its surface was approved;
//!   `approvalState` is about the command surface: `approved`, `pending-approval`,
//!   `pending-reapproval` or `unapproved`.
//! - The pending request's id and declared surface are shown only to callers who may act on
//!   them (`operator.pairing` or `operator.admin`), as in OpenClaw.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::pairing::{ApprovedNode, NodePairRequest};
use super::registry::NodeInfo;
use crate::auth::store::PairedDevice;
use crate::clock::now_ms;
use crate::shard::GatewayShard;

/// The fields of a live row copied as they are (shardgate's own ones included).
const LIVE_FIELDS: &[&str] = &[
    "pathEnv",
    "hostStats",
    "permissions",
    "nodeType",
    "family",
    "worker",
    "agents",
    "shard",
    "deviceId",
];

fn text<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// One node's sources.
#[derive(Default)]
struct Sources<'a> {
    live: Option<&'a NodeInfo>,
    approved: Option<&'a ApprovedNode>,
    pending: Option<&'a NodePairRequest>,
    device: Option<&'a PairedDevice>,
}

impl Sources<'_> {
    /// The first present value of a field, in the given source order.
    fn first(&self, order: &[&str], k: &str) -> Option<String> {
        order.iter().find_map(|src| {
            let v = match *src {
                "live" => self.live.and_then(|n| text(&n.row, k)).map(str::to_owned),
                "approved" => self.approved.and_then(|a| meta(&a.meta, k)),
                "pending" => self.pending.and_then(|r| meta(&r.meta, k)),
                _ => self.device.and_then(|d| match k {
                    "displayName" => d.display_name.clone(),
                    "platform" => d.platform.clone(),
                    "clientId" => d.client_id.clone(),
                    "clientMode" => d.client_mode.clone(),
                    _ => None,
                }),
            };
            v.filter(|s| !s.is_empty())
        })
    }

    fn row(&self, node_id: &str, with_pending: bool) -> Value {
        let mut o = json!({"nodeId": node_id});
        let fields: [(&str, &[&str]); 6] = [
            ("displayName", &["approved", "live", "device", "pending"]),
            ("platform", &["live", "approved", "device", "pending"]),
            ("version", &["live", "approved", "pending"]),
            ("clientId", &["live", "device", "approved", "pending"]),
            ("clientMode", &["live", "device", "approved", "pending"]),
            ("deviceFamily", &["live", "approved", "pending"]),
        ];
        for (k, order) in fields {
            if let Some(v) = self.first(order, k) {
                o[k] = json!(v);
            }
        }
        let (caps, commands) = match (self.live, self.approved) {
            (Some(n), _) => (n.caps.clone(), n.commands.clone()),
            (None, Some(a)) => (a.caps.clone(), a.commands.clone()),
            (None, None) => (Vec::new(), Vec::new()),
        };
        o["caps"] = json!(sorted(caps));
        o["commands"] = json!(sorted(commands));
        o["sessionHost"] = json!(false);
        if let Some(n) = self.live {
            o["nodePluginTools"] = json!([]);
            for k in LIVE_FIELDS {
                if let Some(v) = n.row.get(*k).filter(|v| !v.is_null()) {
                    o[*k] = v.clone();
                }
            }
        }
        o["approvalState"] = json!(match (self.pending, self.approved) {
            (Some(_), Some(_)) => "pending-reapproval",
            (Some(_), None) => "pending-approval",
            (None, Some(_)) => "approved",
            (None, None) => "unapproved",
        });
        if let (Some(r), true) = (self.pending, with_pending) {
            o["pendingRequestId"] = json!(r.request_id);
            o["pendingDeclaredCaps"] = json!(r.caps);
            o["pendingDeclaredCommands"] = json!(r.commands);
        }
        let connected_at = self.live.and_then(|n| n.row["connectedAt"].as_i64());
        if let Some(t) = connected_at {
            o["connectedAtMs"] = json!(t);
            o["lastConnectedAtMs"] = json!(t);
        }
        let seen = [connected_at, self.approved.and_then(|a| a.last_seen_at_ms)]
            .into_iter()
            .flatten()
            .max();
        if let Some(t) = seen {
            o["lastSeenAtMs"] = json!(t);
            o["lastSeenReason"] = json!("connect");
        }
        let approved_at = self
            .approved
            .map(|a| a.approved_at_ms)
            .or(self.device.map(|d| d.approved_at_ms));
        if let Some(t) = approved_at {
            o["approvedAtMs"] = json!(t);
        }
        o["paired"] = json!(self.device.is_some() || self.approved.is_some());
        o["connected"] = json!(self.live.is_some());
        o
    }
}

fn meta(m: &super::pairing::NodeMeta, k: &str) -> Option<String> {
    match k {
        "displayName" => m.display_name.clone(),
        "platform" => m.platform.clone(),
        "version" => m.version.clone(),
        "clientId" => m.client_id.clone(),
        "clientMode" => m.client_mode.clone(),
        "deviceFamily" => m.device_family.clone(),
        _ => None,
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// Every known node as `node.list` shows it: connected first, then by name, then by id.
/// `with_pending` shows the pending request's id and declared surface.
pub fn rows(shard: &GatewayShard, with_pending: bool) -> Vec<Value> {
    let live = shard.nodes().registry.borrow();
    let (pending, approved) = shard.shared().node_pairing.list(now_ms());
    let devices: Vec<PairedDevice> = shard
        .shared()
        .store
        .list()
        .into_iter()
        .filter(|d| d.roles.iter().any(|r| r == "node"))
        .collect();
    let mut by_id: BTreeMap<&str, Sources<'_>> = BTreeMap::new();
    for n in live.values() {
        by_id.entry(&n.node_id).or_default().live = Some(n);
    }
    for a in &approved {
        by_id.entry(&a.node_id).or_default().approved = Some(a);
    }
    for r in &pending {
        let s = by_id.entry(&r.node_id).or_default();
        s.pending.get_or_insert(r);
    }
    for d in &devices {
        by_id.entry(&d.device_id).or_default().device = Some(d);
    }
    let mut rows: Vec<Value> = by_id
        .iter()
        .map(|(id, s)| s.row(id, with_pending))
        .collect();
    rows.sort_by_cached_key(|r| {
        let name = text(r, "displayName")
            .or(text(r, "nodeId"))
            .unwrap_or_default()
            .to_lowercase();
        (
            r["connected"] != true,
            name,
            r["nodeId"].as_str().unwrap_or_default().to_owned(),
        )
    });
    rows
}

/// One known node's row, if the gateway knows it.
pub fn row(shard: &GatewayShard, node_id: &str, with_pending: bool) -> Option<Value> {
    // The catalog is small (nodes, not connections) and read rarely; building it whole
    // keeps one code path for list and describe.
    rows(shard, with_pending)
        .into_iter()
        .find(|r| r["nodeId"] == node_id)
}
