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
//!    [`protocol::frame::parse`] (the method looked up once in the table,
//!    [`protocol::method::Method`]) → [`protocol::authz::authorize`] → [`routing::dispatch`]
//!    (where by the method's placement) → local method, or the session's owner (a plain call when local, a [`shard::MeshMsg::Call`]
//!    over the SPSC mesh when not) → dedup → per-session lane → the echo agent. The decisions
//!    of that last stretch (dedup, admission, ordering, retry, dead letters) are the sans-IO
//!    [`delivery`] core; [`queue`] drives it and applies its effects.
//! 2. Outbound: the owner emits events and answers with [`shard::GatewayShard::deliver`] (a
//!    run's events also to the session's other watchers, [`session::watchers`]) →
//!    the connection's shard (mesh hop if remote) → [`transport::conn::Conn`] send buffer
//!    (seq, backpressure) → the connection's task, which writes all queued frames in one
//!    `send` from a per-shard scratch buffer ([`transport::ws`]).
//!
//! ## Ownership rules
//! - Shard state is `!Send` (`Rc`, `RefCell`); other shards reach it only through the mesh.
//! - Process-wide state ([`shard::Shared`]) is read-mostly: config, the paired-device store,
//!   pre-auth limits per IP, pending pairing requests and the TOTP replay guard
//!   ([`auth::pairing`]), node surface approvals ([`node::pairing`]), setup codes
//!   ([`auth::bootstrap`]), the IP allowlist and connections per IP ([`auth::access`]), the TLS
//!   acceptor config ([`transport::tls`]). Each is touched per connection, never per frame.
//!   The state files among them are written by one thread, [`auth::store_writer`], never by a
//!   shard: a change is made in memory under a short lock (no I/O under it), and whoever
//!   hands it out awaits its write asynchronously.
//! - Request rate limits are per shard ([`auth::access::ShardLimiter`], no lock): `global` and
//!   `perIp` budgets are split evenly over the shards.
//!
//! ## Layers
//! Each file of src/ sits in one layer and imports only from its own layer or those below;
//! no files import each other in a circle (`tests/layers.rs` checks both). A module path
//! names its file and everything under it, unless a longer path is listed elsewhere. Read
//! from the bottom up.
//!
//! | layer | modules | what it is |
//! |---|---|---|
//! | 1 base | `clock`, `config`, `auth::net`, `auth::totp`, `transport::tls_policy` | the clock, the typed config, and the pure parsers its validation uses |
//! | 2 wire | `protocol`, `transport::ws_client` | sans-IO: frames, errors, the connect request, params, scopes, WebSocket framing in the client role |
//! | 3 trust | `auth` | the paired-device store, device proofs, pairing policy, setup codes, the connect decision |
//! | 4 core | `addr`, `envelope`, `channels::link`, `channels::route`, `channels::text`, `channels::telegram::machine`, `channels::telegram::wire`, `channels::discord::machine`, `channels::discord::ratelimit`, `channels::discord::wire`, `cluster`, `delivery`, `session`, `queue::backend`, `queue::journal`, `queue::redis` | addresses and envelopes, cluster membership and slot leases, the sans-IO delivery core, sessions and lanes, the durable journal |
//! | 5 state | `shared`, `snapshot`, `channels::state`, `relay`, `transport::conn`, `transport::tls`, `node::registry`, `node::worker_pool`, `node::pairing`, `node::policy`, `ops::metrics`, `ops::dep_state`, `queue::state` | the process-wide state, the cluster relay, what a shard holds, each subsystem's per-shard state |
//! | 6 shard | `shard` | one shard: its state, the mesh, delivery to connections |
//! | 7 methods | `routing`, `queue`, `agent`, `node`, `auth::device_methods`, `ops`, `channels` | what requests do: dispatch, the delivery driver, agents, nodes, pairing, operations, chat-platform connections |
//! | 8 transport | `transport` | sockets: accept, HTTP, WebSocket, the connection's task |
//! | 9 app | `app` | start and stop of the whole |
//! | 10 cli | `cli`, `client` | the command line and the client it uses |
//!
//! External crates sit below layer 1: `shards` (the runtime) and `shardgate_redis` (the
//! Redis client the `queue::redis` backend and `doctor` use).

#![forbid(unsafe_code)]

pub mod addr;
pub mod agent;
pub mod app;
pub mod auth;
pub mod channels;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod envelope;
pub mod node;
pub mod ops;
pub mod protocol;
pub mod queue;
pub mod relay;
pub mod routing;
pub mod session;
pub mod shard;
pub mod shared;
pub mod snapshot;
pub mod transport;

#[cfg(test)]
mod tests {
    use std::future::Future;

    /// Size of the future `f` returns, read from its type without calling it: what spawning
    /// it moves and what its task keeps for as long as it lives. The layout is the same in
    /// debug and release builds.
    fn future_size<A, B, R: Future>(_f: fn(A, B) -> R) -> usize {
        size_of::<R>()
    }

    /// [`future_size`] of a function of five arguments.
    #[allow(clippy::type_complexity)]
    fn future_size5<A, B, C, D, E, R: Future>(_f: fn(A, B, C, D, E) -> R) -> usize {
        size_of::<R>()
    }

    /// The futures every connection keeps, and those every request moves when spawned.
    #[test]
    fn spawned_futures_stay_small() {
        let budgets = [
            // Every open connection's task holds this for its whole life (456 B; with
            // glommio's 48 B task header, the 504 B of tuning.md's idle-memory breakdown,
            // inside mimalloc's 512 B size class: past 464 B the task takes a 640 B block). A
            // future awaited inline instead of boxed (TLS, the handshake, a slow write) would
            // add hundreds of bytes to every connection.
            (
                "connection task",
                future_size(crate::transport::server::handle_tcp),
                464,
            ),
            // Spawned for a connection-local request (health, status…): 816 B. Other
            // requests spawn nothing: a message's admission is synchronous and only a durable
            // queue's journal write (boxed) waits. When every request spawned one task, with
            // admission an inline `async` call, it was 1 776 B.
            (
                "local request",
                future_size5(crate::routing::local_call),
                896,
            ),
            // Boxed whenever an idle session gets a message (once per request in a closed
            // loop), and spawned when its run waits: 1 184 B. 1 080 B once the rare branches
            // (timed runs, channel deliveries, the journal) were boxed (2 696 B before); the
            // job's ring handles (`queue::Found`, 32 B, held twice) added 64 B and save three
            // ring lookups per run. The run's watcher targets, kept across its events
            // (`routing::watchers::RunTargets`, 40 B), save two table lookups per run: 1 232 B.
            ("lane driver", future_size(crate::queue::drive_lane), 1248),
        ];
        for (what, size, max) in budgets {
            assert!(size <= max, "{what} future is {size} B (budget {max} B)");
        }
    }
}
