//! What travels with a request to its session's owner ([`Call`]) and what comes back to a
//! connection's wire ([`Out`]): plain values, moved between shards by the mesh
//! ([`crate::shard::MeshMsg`]) and, in a cluster, between gateways.

use crate::addr::{Caller, ReplyTo};
use crate::protocol::SessionKey;

/// A request travelling to the shard that owns its session.
#[derive(Debug)]
pub struct Call {
    /// Answers go here.
    pub reply: ReplyTo,
    /// Who asked.
    pub caller: Caller,
    /// The method (one placed on the session's owner).
    pub method: crate::protocol::method::Method,
    /// Parameters.
    pub params: crate::protocol::params::Params,
    /// The session it acts on (normalised).
    pub key: SessionKey,
    /// When the caller's shard received it, ms since the epoch.
    pub received_at: i64,
    /// The caller's shard.
    pub received_shard: usize,
}

/// Something to put on a connection's wire.
#[derive(Debug)]
pub enum Out {
    /// A complete frame (`res`).
    Frame(String),
    /// An event begun with [`crate::protocol::frame::open_event`]; `seq` is given by the connection's shard.
    Event {
        /// The frame without `seq` and its closing brace.
        open: String,
        /// May be skipped under backpressure.
        droppable: bool,
    },
}
