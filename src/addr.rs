//! Addresses: where a connection lives, who called, and where a request's answers go. Plain
//! values that travel between shards and into the delivery core.

use std::sync::Arc;

use shards::ShardId;

use crate::protocol::connect::ConnAuth;

/// Where a connection lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    /// The connection's shard.
    pub shard: ShardId,
    /// Its id on that shard.
    pub id: u64,
    /// Its gateway: 0 is this one; `n` is the cluster member with index `n − 1`
    /// ([`crate::cluster::MemberIdx`]), whose requests came over the relay.
    pub gw: u16,
}

impl ConnRef {
    /// A connection of this gateway.
    pub fn local(shard: ShardId, id: u64) -> ConnRef {
        ConnRef { shard, id, gw: 0 }
    }

    /// Whether the connection is on this gateway.
    pub fn is_local(&self) -> bool {
        self.gw == 0
    }
}

/// Who called, carried with a request to the shard that runs it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The calling connection.
    pub conn: ConnRef,
    /// Its authorization.
    pub auth: Arc<ConnAuth>,
    /// When the request arrived (`Shared::mono_us`), for latency.
    pub received_us: u64,
}

/// Where the answers of one request go.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    /// The connection.
    pub conn: ConnRef,
    /// The request id.
    pub req_id: String,
}
