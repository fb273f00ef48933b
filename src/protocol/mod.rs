//! The protocol core, sans-IO: text in, frames and decisions out. No sockets, no clock (callers
//! pass `now`).

pub mod authz;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod params;
pub mod session_key;

pub use error::{ErrorCode, GatewayError, WireError};
pub use session_key::SessionKey;

/// The protocol version we speak.
pub const PROTOCOL_VERSION: i64 = 4;
/// The oldest version accepted from nodes and probes.
pub const MIN_PROBE_PROTOCOL: i64 = 3;
