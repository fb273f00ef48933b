//! End-to-end tests: each test starts its own `shardgate serve` (port 0, temp state dir) and
//! talks to it over real sockets.

mod support;

mod compat;
mod delivery;
mod handshake;
mod lifecycle;
mod monitor;
mod nodes;
mod ops;
mod routing;
mod rpc;
mod security;
mod workers;
