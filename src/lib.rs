//! # shardgate
//!
//! A thread-per-core, io_uring gateway that holds every WebSocket connection of an
//! AI-assistant host (operator clients, device nodes, agent workers) and routes their messages
//! by session key. Wire-compatible with the OpenClaw Gateway protocol v4.
//!
//! ## Shape
//! One process, N shards (`shards` crate), one pinned core each, every shard accepting on the
//! same port (SO_REUSEPORT). A connection lives on the shard that accepted it
//! ([`transport::conn::Conn`]); a session lives on `owner(session key)`
//! ([`session::SessionTable`] in [`shard::GatewayShard`]).
//!
//! ## Data paths
//! 1. Inbound: socket → [`transport::server`] (HTTP head, upgrade, WebSocket) →
//!    [`protocol::frame::parse`] → [`protocol::authz::authorize`] → [`routing::dispatch`] →
//!    local method, or the session's owner (a plain call when local, a [`shard::MeshMsg::Call`]
//!    over the SPSC mesh when not) → dedup → per-session lane → the echo agent.
//! 2. Outbound: the owner emits events and answers with [`shard::GatewayShard::deliver`] →
//!    the connection's shard (mesh hop if remote) → [`transport::conn::Conn`] send buffer
//!    (seq, backpressure) → the connection's task, which writes all queued frames in one
//!    `send` from a per-shard scratch buffer ([`transport::ws`]).
//!
//! ## Ownership rules
//! - Shard state is `!Send` (`Rc`, `RefCell`); other shards reach it only through the mesh.
//! - Process-wide state ([`shard::Shared`]) is read-mostly: config, the paired-device store,
//!   pre-auth limits per IP, pending pairing requests and the TOTP replay guard
//!   ([`auth::pairing`]), the IP allowlist and connections per IP ([`auth::access`]), the TLS
//!   acceptor config ([`transport::tls`]). Each is touched per connection, never per frame.
//! - Request rate limits are per shard ([`auth::access::ShardLimiter`], no lock): `global` and
//!   `perIp` budgets are split evenly over the shards.
//!
//! ## Reading order
//! `config` → `protocol` (sans-IO) → `transport` → `shard` → `routing` → `session` → `agent` →
//! `app` (start/stop).

#![forbid(unsafe_code)]

pub mod agent;
pub mod app;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod node;
pub mod ops;
pub mod protocol;
pub mod queue;
pub mod routing;
pub mod session;
pub mod shard;

/// Size of the future `f` returns, read from its type without calling it: what spawning it
/// moves and what its task keeps for as long as it lives.
#[cfg(test)]
pub(crate) fn future_size<A, B, R: std::future::Future>(_f: fn(A, B) -> R) -> usize {
    size_of::<R>()
}

/// [`future_size`] of a function of five arguments.
#[cfg(test)]
#[allow(clippy::type_complexity)]
pub(crate) fn future_size5<A, B, C, D, E, R: std::future::Future>(
    _f: fn(A, B, C, D, E) -> R,
) -> usize {
    size_of::<R>()
}
pub mod transport;
