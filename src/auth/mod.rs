//! Authentication and pairing: device identities (Ed25519), the paired-device store, and the
//! per-IP limits that apply before a connection is authenticated.

pub mod device;
pub mod limits;
pub mod store;
