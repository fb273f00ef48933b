//! Discord (Gateway v10 + REST): `MESSAGE_CREATE` events in over the Gateway WebSocket,
//! `POST /channels/{id}/messages` out.
//!
//! The pieces, bottom up: [`wire`] (the Gateway's and the API's shapes), [`machine`] (the
//! sans-IO Gateway session: heartbeats and ACKs, Identify/Resume, sequence, op 7/op 9, close
//! codes, dedup), [`ratelimit`] (the sans-IO REST buckets), [`rest`] (the one API call),
//! and [`driver`] (the task on shard 0 that runs the machine over [`crate::channels::ws`]).
//! Replies leave through [`send::send`], called by the queue for a reply job, so they are
//! retried and dead-lettered like any delivery.

pub mod driver;
pub mod machine;
pub mod ratelimit;
pub mod rest;
pub mod send;
pub mod wire;
