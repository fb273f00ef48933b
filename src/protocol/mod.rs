//! The protocol core, sans-IO: text in, frames and decisions out. No sockets, no clock (callers
//! pass `now`).

pub mod authz;
pub mod connect;
pub mod error;
pub mod frame;
pub mod method;
pub mod params;
pub mod scope;
pub mod session_key;

pub use error::{ErrorCode, GatewayError, WireError};
pub use session_key::SessionKey;

/// The protocol version we speak.
pub const PROTOCOL_VERSION: i64 = 4;
/// The oldest version accepted from nodes and probes.
pub const MIN_PROBE_PROTOCOL: i64 = 3;
/// The OpenClaw release whose protocol and CLI this gateway is built against. Reported where
/// OpenClaw clients compare their own version with the gateway's (hello-ok `server.version`,
/// `status.runtimeVersion`), so a matching CLI warns of no skew; shardgate's own version is
/// beside it as `shardgateVersion`.
pub const OPENCLAW_COMPAT_VERSION: &str = "2026.9.6";
