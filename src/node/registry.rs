//! What one shard knows of the nodes: the replica of every connected node (like presence, on
//! every shard) and the invokes in flight on this shard. The methods that change it are
//! [`super`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::addr::{ConnRef, ReplyTo};
use crate::protocol::error::GatewayError;

/// Node types of the seed article, by family.
pub const NODE_TYPES: &[(&str, &[&str])] = &[
    ("mobile", &["ios", "android"]),
    ("desktop", &["macos", "windows", "linux"]),
    ("headless", &["raspberry-pi", "server"]),
    ("specialized", &["canvas", "tts", "vision"]),
];

/// The family of a node type, if it is one of the seed's.
pub fn node_family(node_type: &str) -> Option<&'static str> {
    NODE_TYPES
        .iter()
        .find(|(_, types)| types.contains(&node_type))
        .map(|(f, _)| *f)
}

/// A connected node, as every shard sees it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// device id, else client id.
    pub node_id: String,
    /// Where its connection lives.
    pub conn: ConnRef,
    /// Its `node.list` row.
    pub row: Value,
    /// Commands it declared (at connect or by `node.pair.request`).
    pub declared: Vec<String>,
    /// Capabilities it declared.
    pub declared_caps: Vec<String>,
    /// Its effective commands: the declared ones its approved surface holds (all declared
    /// ones when it is not gated). Only these are invoked.
    pub commands: Vec<String>,
    /// Its effective capabilities, likewise.
    pub caps: Vec<String>,
    /// Whether its surface needs an operator's approval (`gateway.nodes.requirePairing`).
    pub gated: bool,
    /// For agent workers (`client.mode: "worker"`): the agents it serves.
    pub agents: Vec<String>,
    /// Its operator-approved command set (`node.pair.*`), `None` if never approved.
    pub approved: Option<Vec<String>>,
    /// Its pending `node.pair.request`, if any.
    pub pending_request: Option<String>,
}

/// Where the answer of an invoke goes.
pub(crate) enum Answer {
    /// A `res` to a caller's request.
    Res(ReplyTo),
    /// A waiting task on shard `origin` (capability failover).
    Internal { origin: shards::ShardId, id: u64 },
}

/// An invoke waiting for its node.
pub(crate) struct PendingInvoke {
    pub(crate) caller: Answer,
    pub(crate) node_id: String,
    pub(crate) node_conn: ConnRef,
    pub(crate) command: String,
}

/// Per-shard node state.
#[derive(Default)]
pub struct NodeState {
    /// Replica of every connected node, by node id.
    pub registry: RefCell<BTreeMap<String, NodeInfo>>,
    pub(crate) pending: RefCell<HashMap<String, PendingInvoke>>,
    pub(crate) internal:
        RefCell<HashMap<u64, futures_channel::oneshot::Sender<Result<Value, GatewayError>>>>,
    pub(crate) next_internal: std::cell::Cell<u64>,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeState")
            .field("nodes", &self.registry.borrow().len())
            .field("pending", &self.pending.borrow().len())
            .finish()
    }
}
