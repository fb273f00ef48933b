//! Node pairing (issue 5, PROTOCOL.md §5): an operator approves the command set of a node.
//!
//! With `gateway.nodes.requirePairing`, a node is invoked only with commands of its approved
//! set. A node that declares commands outside that set (at connect, or with
//! `node.pair.request`) files a pending request, announced to operators as
//! `node.pair.requested`; meanwhile it keeps its approved set and `node.invoke` of a new
//! command is refused with `NOT_PAIRED` / `details.code: "NODE_COMMAND_NOT_APPROVED"`.
//! `node.pair.approve` replaces the approved set with the requested one, `node.pair.reject`
//! drops the request; both announce `node.pair.resolved` (to operators and to the node).
//!
//! Invariants a reader must keep:
//! - Pending requests and approved sets are process-wide ([`NodePairing`] in
//!   [`crate::shard::Shared`]) behind a mutex touched at node connect and by the pairing
//!   methods only. The invoke path reads the replica in each shard's node registry
//!   ([`super::NodeInfo::approved`]), refreshed by [`sync`] after every change; [`sync`] reads
//!   the shared state when it runs, so replicas converge whatever order broadcasts arrive in.
//! - One pending request per node: asking again with the same commands and caps returns the
//!   same id; asking with a different set supersedes the old request.
//! - Approved sets persist in `<state_dir>/nodes/paired.json` (written atomically, `0600`).
#![expect(
    clippy::disallowed_types,
    reason = "node pairing state is shared by all shards and touched at connect/pairing only"
)]

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::state_file;
use crate::clock::now_ms;
use crate::config::Config;

/// What a node says about itself at connect (`client.*`), kept with its requests and its
/// approval so a node that is gone still shows by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeMeta {
    /// `client.id` (`node-host`, `openclaw-ios`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `client.mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_mode: Option<String>,
    /// `client.displayName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `client.platform`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `client.version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `client.deviceFamily`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
}

impl NodeMeta {
    /// Adds the fields to a wire object (OpenClaw's names; absent ones are left out).
    fn put(&self, o: &mut Value) {
        let fields = [
            ("clientId", &self.client_id),
            ("clientMode", &self.client_mode),
            ("displayName", &self.display_name),
            ("platform", &self.platform),
            ("version", &self.version),
            ("deviceFamily", &self.device_family),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                o[k] = json!(v);
            }
        }
    }
}

/// The approved command surface of a node, as persisted (OpenClaw's paired node record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovedNode {
    /// The node.
    pub node_id: String,
    /// Commands it may be invoked with.
    pub commands: Vec<String>,
    /// Capabilities it declared when approved.
    #[serde(default)]
    pub caps: Vec<String>,
    /// Its self-description when approved.
    #[serde(flatten, default)]
    pub meta: NodeMeta,
    /// When its surface was first approved, ms since the epoch.
    #[serde(default)]
    pub created_at_ms: i64,
    /// When approved, ms since the epoch.
    pub approved_at_ms: i64,
    /// The approving operator (device id or client id).
    #[serde(default)]
    pub approved_by: Option<String>,
    /// When the node was last seen (its connect before the approval), ms since the epoch.
    #[serde(default)]
    pub last_seen_at_ms: Option<i64>,
}

impl ApprovedNode {
    /// The wire shape (`node.pair.list` `paired[]`, `node.pair.approve` `node`).
    pub fn to_json(&self) -> Value {
        let mut o = json!({"nodeId": self.node_id});
        self.meta.put(&mut o);
        o["caps"] = json!(self.caps);
        o["commands"] = json!(self.commands);
        o["createdAtMs"] = json!(self.created_at_ms);
        o["approvedAtMs"] = json!(self.approved_at_ms);
        if let Some(t) = self.last_seen_at_ms {
            o["lastSeenAtMs"] = json!(t);
            o["lastSeenReason"] = json!("connect");
        }
        o
    }
}

/// A node waiting for an operator to approve its command surface.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePairRequest {
    /// The id an operator approves.
    pub request_id: String,
    /// The node.
    pub node_id: String,
    /// The command set asked for (sorted, unique).
    pub commands: Vec<String>,
    /// Declared capabilities (sorted, unique).
    pub caps: Vec<String>,
    /// Its self-description.
    pub meta: NodeMeta,
    /// The approved set when it asked (`None` if never paired).
    pub approved: Option<Vec<String>>,
    /// Filed at the connect of a device approved without an operator (loopback, bootstrap):
    /// clients show it quietly.
    pub silent: bool,
    /// When it asked, ms since the epoch.
    pub created_at_ms: i64,
}

impl NodePairRequest {
    /// The wire shape (`node.pair.list` `pending[]`, `node.pair.requested`).
    pub fn to_json(&self) -> Value {
        let mut o = json!({"requestId": self.request_id, "nodeId": self.node_id});
        self.meta.put(&mut o);
        o["caps"] = json!(self.caps);
        o["commands"] = json!(self.commands);
        // Approving a surface that can run commands on the node takes admin as well.
        o["requiredApproveScopes"] = json!([
            crate::protocol::authz::PAIRING,
            crate::protocol::authz::ADMIN
        ]);
        if self.silent {
            o["silent"] = json!(true);
        }
        if let Some(a) = &self.approved {
            let new: Vec<&String> = self.commands.iter().filter(|c| !a.contains(c)).collect();
            o["isRepair"] = json!(true);
            o["approvedCommands"] = json!(a);
            o["newCommands"] = json!(new);
        }
        o["ts"] = json!(self.created_at_ms);
        o
    }
}

#[derive(Debug, Default)]
struct Inner {
    approved: BTreeMap<String, ApprovedNode>,
    pending: BTreeMap<String, NodePairRequest>,
}

/// Outcome of [`NodePairing::file`].
#[derive(Debug, Clone, PartialEq)]
pub enum Filed {
    /// The approved set covers what was asked: nothing to approve.
    Covered,
    /// A request is pending; `new` when it was just filed, `superseded` the request it replaced.
    Pending {
        /// The pending request.
        request: Box<NodePairRequest>,
        /// Just filed (announce it).
        new: bool,
        /// An older request of the same node it replaced.
        superseded: Option<String>,
    },
}

/// Process-wide node pairing state.
#[derive(Debug)]
pub struct NodePairing {
    inner: Mutex<Inner>,
    /// `<state_dir>/nodes`; `None` keeps approvals in memory only.
    dir: Option<PathBuf>,
    ttl_ms: i64,
}

const FILE: &str = "paired.json";

impl NodePairing {
    /// Loads the approved sets from `<state_dir>/nodes/paired.json` (creating the directory).
    pub fn open(state_dir: &Path, cfg: &Config) -> io::Result<NodePairing> {
        let dir = state_dir.join("nodes");
        state_file::create_private_dir(&dir)?;
        let approved = state_file::read_json_or_default(&dir.join(FILE))?;
        Ok(NodePairing {
            inner: Mutex::new(Inner {
                approved,
                pending: BTreeMap::new(),
            }),
            dir: Some(dir),
            ttl_ms: cfg.gateway.pairing.pending_ttl.0 as i64,
        })
    }

    /// In memory only (tests).
    pub fn in_memory(cfg: &Config) -> NodePairing {
        NodePairing {
            inner: Mutex::new(Inner::default()),
            dir: None,
            ttl_ms: cfg.gateway.pairing.pending_ttl.0 as i64,
        }
    }

    fn lock(&self, now_ms: i64) -> std::sync::MutexGuard<'_, Inner> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.ttl_ms;
        g.pending.retain(|_, r| now_ms - r.created_at_ms < ttl);
        g
    }

    /// The approved set of a node.
    pub fn approved(&self, node_id: &str) -> Option<ApprovedNode> {
        self.lock(now_ms()).approved.get(node_id).cloned()
    }

    /// The pending request of a node.
    pub fn pending_for(&self, node_id: &str, now_ms: i64) -> Option<NodePairRequest> {
        self.lock(now_ms)
            .pending
            .values()
            .find(|r| r.node_id == node_id)
            .cloned()
    }

    /// Files a request for `commands` and `caps` (or finds the approved surface covers them).
    /// `commands` and `caps` are normalised (sorted, unique) here.
    pub fn file(
        &self,
        node_id: &str,
        commands: &[String],
        caps: &[String],
        meta: NodeMeta,
        silent: bool,
        now_ms: i64,
    ) -> Filed {
        let commands = sorted_unique(commands);
        let caps = sorted_unique(caps);
        let mut g = self.lock(now_ms);
        let approved = g.approved.get(node_id).cloned();
        // OpenClaw's rule: a surface counts as changed when it declares a command or a
        // capability the approval does not hold; dropping some is no change.
        if approved.as_ref().is_some_and(|a| {
            commands.iter().all(|c| a.commands.contains(c))
                && caps.iter().all(|c| a.caps.contains(c))
        }) {
            return Filed::Covered;
        }
        let old = g.pending.values().find(|r| r.node_id == node_id).cloned();
        if let Some(r) = &old {
            if r.commands == commands && r.caps == caps {
                return Filed::Pending {
                    request: Box::new(r.clone()),
                    new: false,
                    superseded: None,
                };
            }
            g.pending.remove(&r.request_id);
        }
        let request = NodePairRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            node_id: node_id.to_owned(),
            commands,
            caps,
            meta,
            approved: approved.map(|a| a.commands),
            silent,
            created_at_ms: now_ms,
        };
        g.pending
            .insert(request.request_id.clone(), request.clone());
        Filed::Pending {
            request: Box::new(request),
            new: true,
            superseded: old.map(|r| r.request_id),
        }
    }

    /// Pending requests (oldest first) and approved nodes.
    pub fn list(&self, now_ms: i64) -> (Vec<NodePairRequest>, Vec<ApprovedNode>) {
        let g = self.lock(now_ms);
        let mut p: Vec<_> = g.pending.values().cloned().collect();
        p.sort_by_key(|r| r.created_at_ms);
        (p, g.approved.values().cloned().collect())
    }

    /// Removes a pending request.
    pub fn reject(&self, request_id: &str, now_ms: i64) -> Option<NodePairRequest> {
        self.lock(now_ms).pending.remove(request_id)
    }

    /// Approves a pending request: its command set becomes the node's approved set (persisted
    /// before it takes effect; on a write failure nothing changes).
    pub fn approve(
        &self,
        request_id: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<Option<(NodePairRequest, ApprovedNode)>, io::Error> {
        let mut g = self.lock(now_ms);
        let Some(r) = g.pending.get(request_id).cloned() else {
            return Ok(None);
        };
        let a = ApprovedNode {
            node_id: r.node_id.clone(),
            commands: r.commands.clone(),
            caps: r.caps.clone(),
            meta: r.meta.clone(),
            created_at_ms: g
                .approved
                .get(&r.node_id)
                .map_or(now_ms, |old| old.created_at_ms),
            approved_at_ms: now_ms,
            approved_by: Some(by.to_owned()),
            last_seen_at_ms: Some(r.created_at_ms),
        };
        let mut next = g.approved.clone();
        next.insert(r.node_id.clone(), a.clone());
        self.persist(&next)?;
        g.approved = next;
        g.pending.remove(request_id);
        Ok(Some((r, a)))
    }

    /// Forgets a node's approval and pending request (`node.pair.remove`); whether it had
    /// either.
    pub fn remove(&self, node_id: &str, now_ms: i64) -> Result<bool, io::Error> {
        let mut g = self.lock(now_ms);
        let before = g.pending.len();
        g.pending.retain(|_, r| r.node_id != node_id);
        let had_pending = g.pending.len() != before;
        if !g.approved.contains_key(node_id) {
            return Ok(had_pending);
        }
        let mut next = g.approved.clone();
        next.remove(node_id);
        self.persist(&next)?;
        g.approved = next;
        Ok(true)
    }

    /// Writes the approved sets ([`state_file::write_json_atomic`]).
    fn persist(&self, approved: &BTreeMap<String, ApprovedNode>) -> io::Result<()> {
        match &self.dir {
            Some(dir) => state_file::write_json_atomic(&dir.join(FILE), approved),
            None => Ok(()),
        }
    }
}

fn sorted_unique(v: &[String]) -> Vec<String> {
    let mut v: Vec<String> = v
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn request_approve_persist_and_reapproval() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::default();
        let np = NodePairing::open(dir.path(), &cfg).unwrap();
        let Filed::Pending { request, new, .. } =
            np.file("n1", &s(&["a"]), &[], NodeMeta::default(), false, 0)
        else {
            panic!("expected pending")
        };
        assert!(new);
        assert!(matches!(
            np.file("n1", &s(&["a"]), &[], NodeMeta::default(), false, 1),
            Filed::Pending { new: false, .. }
        ));
        np.approve(&request.request_id, "op", 2).unwrap().unwrap();
        assert_eq!(
            np.file("n1", &s(&["a"]), &[], NodeMeta::default(), false, 3),
            Filed::Covered
        );
        // Declaring less than approved is no change; a new capability is.
        assert_eq!(
            np.file("n1", &[], &[], NodeMeta::default(), false, 3),
            Filed::Covered
        );
        assert!(matches!(
            np.file(
                "n1",
                &s(&["a"]),
                &s(&["camera"]),
                NodeMeta::default(),
                false,
                3
            ),
            Filed::Pending { new: true, .. }
        ));
        np.reject(&np.pending_for("n1", 3).unwrap().request_id, 3);
        let path = dir.path().join("nodes").join(FILE);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = NodePairing::open(dir.path(), &cfg).unwrap();
        assert_eq!(again.approved("n1").unwrap().commands, s(&["a"]));
        let Filed::Pending { request, .. } =
            again.file("n1", &s(&["a", "b"]), &[], NodeMeta::default(), false, 4)
        else {
            panic!("new command needs re-approval")
        };
        assert_eq!(request.approved, Some(s(&["a"])));
        assert_eq!(request.to_json()["newCommands"], json!(["b"]));
        let Filed::Pending { superseded, .. } =
            again.file("n1", &s(&["a", "c"]), &[], NodeMeta::default(), false, 5)
        else {
            panic!()
        };
        assert_eq!(superseded, Some(request.request_id.clone()));
        assert!(again.reject(&request.request_id, 6).is_none());
        assert_eq!(again.approved("n1").unwrap().commands, s(&["a"]));
    }
}
