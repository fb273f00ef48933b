//! shardgate's own Redis client: thin, RESP3-only, per shard, on glommio.
//!
//! Why our own: the gateway runs thread-per-core on glommio, whose sockets are `!Send`;
//! redis-rs and friends need tokio. This crate is small on purpose — the codec is the
//! `redis-protocol` crate (sans-IO, no tokio); what is ours is the pairing of replies with
//! requests and the connection lifecycle (issue 22, "Engine and client").
//!
//! # Shape
//!
//! Each shard owns its links to Redis (`Rc` inside, `!Send`, like all shard state):
//!
//! - [`Client`]: the pipelined command connection. Many tasks call it at once; their commands
//!   share one socket, one writer task flushes what is queued, one reader task completes the
//!   replies in order. [`Client::eval`] runs a [`Script`] by sha1 and loads it on `NOSCRIPT`.
//! - [`Blocking`]: a connection for `XREADGROUP … BLOCK` / `BLPOP`, so a long read never holds
//!   up the pipelined replies.
//! - [`Subscriber`]: `SUBSCRIBE`/`PSUBSCRIBE`; messages come out of a channel as [`Push`]es;
//!   subscriptions are restored after a reconnect.
//!
//! All three reconnect by themselves with capped, jittered exponential backoff. A command in
//! flight when the connection drops fails with [`Error::Disconnected`] at once (it never hangs);
//! a command issued while down waits for the reconnect within its timeout, or fails at once with
//! [`Options::fail_fast`]. Counters: [`StatsSnapshot`].
//!
//! # Reading order
//!
//! 1. `pipeline.rs` — the sans-IO core: encode commands, feed bytes, get replies (FIFO) and
//!    pushes (apart). Everything about the protocol is tested there by feeding bytes.
//! 2. `value.rs`, `push.rs`, `error.rs` — what comes out: [`Value`], [`Push`], typed errors.
//! 3. `conn.rs` — one socket driven by a reader and a writer task around a pipeline.
//! 4. `link.rs` — the supervisor: reconnect, backoff (`backoff.rs`), resubscribe.
//! 5. `client.rs`, `script.rs`, `blocking.rs`, `subscriber.rs` — the public handles.
//! 6. `test_server.rs` (feature `test-server`) — `RedisServer`, a
//!    private `redis-server` per test; `tests/` use it against the real server.

mod backoff;
mod blocking;
mod client;
mod conn;
mod encode;
pub mod error;
mod link;
mod options;
pub mod pipeline;
pub mod push;
mod script;
mod signal;
mod stats;
mod subscriber;
#[cfg(feature = "test-server")]
pub mod test_server;
pub mod value;

pub use blocking::Blocking;
pub use client::Client;
pub use error::{Error, ErrorCode, ProtocolError, ServerError};
pub use options::Options;
pub use push::Push;
pub use script::Script;
pub use stats::StatsSnapshot;
pub use subscriber::Subscriber;
pub use value::Value;
