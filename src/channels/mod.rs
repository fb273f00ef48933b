//! Chat platforms the gateway holds connections to (`channels.<name>` of a platform kind:
//! Telegram and Discord; WhatsApp plugs in beside them).
//!
//! The shape every platform follows:
//! - A sans-IO state machine per connection (`telegram::machine`, `discord::machine`)
//!   decides; a task on shard 0 (`telegram::driver`, `discord::driver`) does its I/O with
//!   glommio sockets ([`http`], and [`ws`] for a WebSocket API).
//! - An inbound message enters the same pipeline as a client's `chat.send` ([`submit`]), on
//!   the session of its chat ([`route`]: `agent:<agent>:telegram:direct:<chatId>`,
//!   `agent:<agent>:discord:channel:<channelId>`), and is
//!   acknowledged to the platform only once the queue admitted it (with a durable backend:
//!   once its admission record is written).
//! - The run's final reply becomes a reply job on the same session (`send` to the channel and
//!   chat the session key names, queued by the lane as the run completes), delivered by the
//!   platform's `send` and so retried and dead-lettered by the queue's retry policy.
//! - Each connection's state and counters live in [`state`] on the shards and are read by
//!   `channels.status`, `health` (hello-ok) and `/metrics` ([`status`]).

pub mod discord;
pub mod http;
pub mod link;
pub mod route;
pub mod state;
pub mod status;
pub mod submit;
pub mod telegram;
pub mod text;
pub mod ws;

use std::rc::Rc;

use crate::config::{ChannelKind, TelegramMode};
use crate::shard::GatewayShard;

/// Starts the connections of every platform channel (on shard 0, once).
pub fn start(shard: &Rc<GatewayShard>) {
    for (name, cfg) in &shard.config().channels {
        match (cfg.kind, cfg.mode) {
            (ChannelKind::Telegram, TelegramMode::Longpoll) => {
                glommio::spawn_local(telegram::driver::run(
                    shard.clone(),
                    name.clone(),
                    cfg.clone(),
                ))
                .detach();
            }
            // Refused by the config's validation (not built yet).
            (ChannelKind::Telegram, TelegramMode::Webhook) => {}
            (ChannelKind::Discord, _) => {
                glommio::spawn_local(discord::driver::run(
                    shard.clone(),
                    name.clone(),
                    cfg.clone(),
                ))
                .detach();
            }
            (ChannelKind::Log | ChannelKind::Webhook, _) => {}
        }
    }
}
