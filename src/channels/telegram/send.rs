//! A reply to a Telegram chat, as the queue delivers it: `sendMessage` through the channel's
//! bot, counted in the channel's counters.

use std::rc::Rc;

use super::bot::{Bot, SendError};
use crate::clock::now_ms;
use crate::config::ChannelConfig;
use crate::shard::GatewayShard;

/// Sends `text` to chat `to` through channel `name`: Ok once Telegram accepted it. On flood
/// control it waits the `retry_after` Telegram asked for (at most a minute) before failing the
/// attempt, so the queue's next attempt does not come early.
pub async fn send(
    shard: &Rc<GatewayShard>,
    name: &str,
    cfg: &ChannelConfig,
    to: &str,
    text: &str,
) -> Result<String, String> {
    let bot = Bot::for_channel(name, cfg).inspect_err(|_| {
        shard.channels().count(name, |c| c.errors += 1);
    })?;
    match bot.send_message(to, text).await {
        Ok(()) => {
            shard.channels().sent(name, now_ms());
            Ok(text.to_string())
        }
        Err(e) => {
            shard.channels().count(name, |c| c.errors += 1);
            if let SendError::TooMany(s, _) = &e {
                glommio::timer::sleep(std::time::Duration::from_secs((*s).min(60))).await;
            }
            Err(format!("channel {name}: {e}"))
        }
    }
}
