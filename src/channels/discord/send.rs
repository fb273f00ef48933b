//! A reply to a Discord channel, as the queue delivers it: `Create Message` through the
//! channel's REST client, counted in the channel's counters. Rate limits are waited out
//! inside the attempt (up to a minute); anything else fails the attempt, which the queue
//! retries and finally dead-letters.

use std::rc::Rc;

use super::rest::Rest;
use crate::clock::now_ms;
use crate::config::ChannelConfig;
use crate::shard::GatewayShard;

/// Sends `text` to Discord channel `to` through channel `name`: Ok once Discord accepted it.
pub async fn send(
    shard: &Rc<GatewayShard>,
    name: &str,
    cfg: &ChannelConfig,
    to: &str,
    text: &str,
) -> Result<String, String> {
    let rest = Rest::for_channel(name, cfg).inspect_err(|_| {
        shard.channels().count(name, |c| c.errors += 1);
    })?;
    match rest.create_message(to, text).await {
        Ok(limited) => {
            if limited > 0 {
                shard
                    .channels()
                    .count(name, |c| c.rate_limited += u64::from(limited));
            }
            shard.channels().sent(name, now_ms());
            Ok(text.to_string())
        }
        Err(e) => {
            shard.channels().count(name, |c| c.errors += 1);
            Err(format!("channel {name}: {e}"))
        }
    }
}
