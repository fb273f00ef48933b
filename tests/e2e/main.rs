//! End-to-end tests: each test starts its own `shardgate serve` (port 0, temp state dir) and
//! talks to it over real sockets.

// Tests play clients from outside the gateway: threads and locks are theirs to use.
#![expect(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "the clippy.toml bans are for the gateway's shards, not its test clients"
)]

mod support;

mod channels;
mod channels_discord;
mod cluster;
mod compat;
mod compression;
mod delivery;
mod handshake;
mod lifecycle;
mod mesh;
mod monitor;
mod nodes;
mod ops;
mod redis_queue;
mod routing;
mod rpc;
mod security;
mod setup_codes;
mod snapshot;
mod store;
mod ui_pause;
mod watchers;
mod workers;
