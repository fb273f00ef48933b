//! # shards: the thread-per-core runtime of shardgate
//!
//! This crate is vocabulary, not product: it knows nothing of WebSocket, JSON or OpenClaw.
//!
//! ## The model
//! One process runs `N` shards. A shard is a glommio `LocalExecutor` with its own io_uring,
//! pinned to one CPU. Work that belongs to a shard never leaves it: state owned by a shard is
//! `!Send` (`Rc`/`RefCell`) and reached from elsewhere only by a message.
//!
//! - [`pool`] starts the shards, sizing io_uring registered memory to fit `RLIMIT_MEMLOCK`
//!   ([`memlock`]).
//! - [`mesh`] is a full mesh of bounded SPSC channels, one per ordered pair of shards, joined
//!   once at start. A send to a full channel waits in a bounded per-peer outbox, so the order of
//!   messages from one shard to another is the order they were sent; past the bound, or to a
//!   closed peer, the send hands the message back and the caller answers for it.
//! - [`route`] maps a key (a session key) to the shard that owns it: a fixed FNV-1a hash
//!   fed to jump consistent hashing, identical on every shard and across restarts.
//! - [`id`] is the shard id type.
//!
//! ## Rules
//! 1. The shard count is fixed for the life of the process.
//! 2. A local owner is a plain call; only a remote owner costs a mesh hop.
//! 3. Messages between shards are owned values (`Send`); nothing is shared by reference.

pub mod clock;
pub mod dedup;
pub mod id;
pub mod memlock;
pub mod mesh;
pub mod pool;
pub mod route;

pub use id::ShardId;
