//! The Telegram long-poll driver: one task per channel on shard 0 that does what the
//! [`Poller`] decides — calls `getUpdates`, submits each message
//! ([`crate::channels::submit`]) and reports its admission — and publishes the connection's
//! state ([`crate::channels::state`]) after every step.
//!
//! Cancel safety: dropping the task between steps loses nothing. An update is acknowledged
//! to Telegram only by a later `getUpdates` whose offset passes it, and the driver asks for
//! that offset only after the update's admission answer came back.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::bot::Bot;
use super::machine::{Next, Poller, Setup};
use crate::channels::route::agent_of;
use crate::channels::state::{Link, LinkState};
use crate::channels::submit::Submitter;
use crate::clock::now_ms;
use crate::config::{ChannelConfig, TelegramMode};
use crate::shard::GatewayShard;

/// The state a channel starts in.
pub fn initial_state(shard: &GatewayShard, cfg: &ChannelConfig) -> LinkState {
    LinkState {
        mode: Some(match cfg.mode {
            TelegramMode::Longpoll => "polling",
            TelegramMode::Webhook => "webhook",
        }),
        ..LinkState::starting("telegram", cfg, agent_of(shard.config(), cfg), now_ms())
    }
}

/// Runs channel `name`'s long poll until the gateway stops (or the token is refused).
pub async fn run(shard: Rc<GatewayShard>, name: String, cfg: ChannelConfig) {
    let state = initial_state(&shard, &cfg);
    let agent = state.agent.clone();
    shard.channels().set_link(&name, state);
    let bot = match Bot::for_channel(&name, &cfg) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(channel = %name, "telegram channel not started: {e}");
            return stop(&shard, &name, e);
        }
    };
    let submitter = Submitter::open(&shard, &name);
    let mut poller = Poller::new(Setup {
        channel: name.clone(),
        agent,
        allow_from: cfg.allow_from.clone(),
        reconnect_ms: cfg.reconnect_interval.0,
        poll_timeout_s: cfg.poll_timeout.0 / 1000,
    });
    tracing::info!(channel = %name, base = %cfg.api_base(), "telegram long poll started");
    loop {
        if shard.shared().shutdown.load(Ordering::Relaxed) {
            return stop(&shard, &name, "the gateway is stopping".into());
        }
        match poller.next(now_ms()) {
            Next::Stop => {
                let reason = match &poller.link {
                    Link::Stopped { reason } => reason.clone(),
                    _ => "stopped".into(),
                };
                tracing::error!(channel = %name, "telegram channel stopped: {reason}");
                publish(&shard, &name, &poller);
                return;
            }
            Next::Wait(until) => {
                publish(&shard, &name, &poller);
                let ms = (until - now_ms()).max(1) as u64;
                glommio::timer::sleep(Duration::from_millis(ms)).await;
            }
            // Every message of a batch is reported below before the loop comes back here.
            Next::Admitting => glommio::timer::sleep(Duration::from_millis(10)).await,
            Next::Poll { offset, timeout_s } => {
                let answer = bot.get_updates(offset, timeout_s).await;
                let polled = poller.on_poll(answer, now_ms());
                let ch = shard.channels();
                if polled.error {
                    ch.count(&name, |c| c.errors += 1);
                    tracing::warn!(channel = %name, error = ?poller.last_error, "telegram getUpdates failed");
                }
                ch.count(&name, |c| {
                    c.duplicates += polled.duplicates;
                    c.filtered += polled.filtered;
                });
                publish(&shard, &name, &poller);
                for m in polled.inbound {
                    match submitter
                        .submit(&shard, &m.session_key, &m.text, &m.idem)
                        .await
                    {
                        Ok(()) => {
                            poller.admitted(m.update_id);
                            shard.channels().count(&name, |c| c.messages_in += 1);
                        }
                        Err(r) => {
                            tracing::warn!(channel = %name, update = m.update_id, "message not admitted: {}", r.why);
                            poller.refused(m.update_id, &r.why, r.retry_after_ms, now_ms());
                            break;
                        }
                    }
                }
                publish(&shard, &name, &poller);
            }
        }
    }
}

/// Copies the poller's state into the shard's channel state.
fn publish(shard: &GatewayShard, name: &str, p: &Poller) {
    let changed = shard.channels().update_link(name, |s| {
        s.link = p.link.clone();
        s.last_error = p.last_error.clone();
        s.reconnect_attempts = p.attempts;
        s.last_connected_at = p.last_connected_at;
        s.last_inbound_at = p.last_inbound_at;
        s.offset = p.offset();
    });
    if changed {
        shard.health_parts().mark_changed();
    }
}

/// Marks channel `name` stopped for `reason`.
fn stop(shard: &GatewayShard, name: &str, reason: String) {
    shard.channels().update_link(name, |s| {
        s.last_error = Some(reason.clone());
        s.link = Link::Stopped { reason };
    });
    shard.health_parts().mark_changed();
}
