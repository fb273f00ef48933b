//! Sockets, HTTP, WebSocket: everything with I/O and a clock. The protocol decisions are made
//! in `crate::protocol`; this layer moves bytes and enforces time and size limits.

pub mod conn;
pub mod deflate;
pub mod http;
pub mod limited;
pub mod relay_in;
pub mod seed;
pub mod server;
pub mod tls;
pub mod tls_policy;
pub mod ws;
pub mod ws_client;
