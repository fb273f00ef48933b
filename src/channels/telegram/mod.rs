//! Telegram (Bot API): long polling (`getUpdates`) in, `sendMessage` out.
//!
//! The pieces, bottom up: [`wire`] (the API's shapes), [`machine`] (the sans-IO long-poll
//! state machine: offset, dedup, flood control, backoff), [`bot`] (the two API calls), and
//! [`driver`] (the task on shard 0 that runs the machine). Replies leave through [`send::send`],
//! called by the queue for a reply job, so they are retried and dead-lettered like any
//! delivery.

pub mod bot;
pub mod driver;
pub mod machine;
pub mod send;
pub mod wire;
