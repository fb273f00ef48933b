//! Authentication and pairing: device identities (Ed25519), the paired-device store, and the
//! per-IP limits that apply before a connection is authenticated.

pub mod access;
pub mod bootstrap;
pub mod device;
pub mod device_methods;
pub mod handshake;
pub mod identity;
pub mod limits;
pub mod net;
pub mod pairing;
pub mod state_file;
pub mod store;
pub mod totp;
