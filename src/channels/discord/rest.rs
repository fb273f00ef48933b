//! A Discord bot's REST calls: `POST /channels/{id}/messages` for replies, over
//! [`crate::channels::http`], with `Authorization: Bot <token>` (a header, so no URL and no
//! error text carries the token), honouring the rate limits ([`super::ratelimit`]): a request
//! waits for its bucket and for the global limit, and a 429 is waited out and retried.
//!
//! One [`Rest`] per channel per shard, made on first use and kept; its semaphore caps the
//! shard's connections to the API at `maxConnections`. Limits are learned per shard (a
//! shard's replies go out from the shard that owns their session).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use super::ratelimit::{Limits, Verdict};
use super::wire;
use crate::channels::http::Endpoint;
use crate::clock::now_ms;
use crate::config::ChannelConfig;

/// The route of `Create Message` (its major parameter is the channel id).
const CREATE_MESSAGE: &str = "POST /channels/{id}/messages";

/// The longest a rate limit is waited out inside one delivery attempt; a longer one fails
/// the attempt (the queue's retry policy takes over).
const MAX_WAIT_MS: i64 = 60_000;

/// How many 429s one message piece takes before the attempt fails.
const MAX_429: u32 = 5;

/// A configured bot's REST side.
pub struct Rest {
    endpoint: Endpoint,
    auth: String,
    timeout: Duration,
    permits: Rc<glommio::sync::Semaphore>,
    limits: RefCell<Limits>,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// This shard's REST clients by channel name (a shard is one thread).
    static RESTS: RefCell<HashMap<String, Rc<Rest>>> = RefCell::new(HashMap::new());
}

impl Rest {
    /// Channel `name`'s REST client on this shard.
    pub fn for_channel(name: &str, cfg: &ChannelConfig) -> Result<Rc<Rest>, String> {
        if let Some(r) = RESTS.with_borrow(|m| m.get(name).cloned()) {
            return Ok(r);
        }
        let r = Rc::new(Rest::new(cfg)?);
        RESTS.with_borrow_mut(|m| m.insert(name.to_string(), r.clone()));
        Ok(r)
    }

    /// A client for `cfg`: its token read and its endpoint parsed.
    pub fn new(cfg: &ChannelConfig) -> Result<Rest, String> {
        let token = cfg.resolve_token()?;
        let endpoint = Endpoint::parse(cfg.api_base(), cfg.ca_file.as_deref())?;
        Ok(Rest {
            endpoint,
            auth: format!("Authorization: Bot {token}\r\n"),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            permits: Rc::new(glommio::sync::Semaphore::new(cfg.max_connections as u64)),
            limits: RefCell::new(Limits::default()),
        })
    }

    /// Posts `text` to channel `channel` (in pieces of at most 2000 characters). Returns how
    /// many 429s were waited out.
    pub async fn create_message(&self, channel: &str, text: &str) -> Result<u32, String> {
        if channel.is_empty() || !channel.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("not a Discord channel id: {channel:?}"));
        }
        let path = format!("/channels/{channel}/messages");
        let mut limited = 0;
        for piece in crate::channels::text::pieces(text, wire::MAX_CONTENT_CHARS) {
            let body = serde_json::to_vec(&wire::CreateMessage { content: piece })
                .map_err(|e| e.to_string())?;
            let mut tries = 0;
            loop {
                // Wait for the bucket (and the global limit) first.
                loop {
                    let now = now_ms();
                    let wait = match self
                        .limits
                        .borrow_mut()
                        .acquire(CREATE_MESSAGE, channel, now)
                    {
                        Ok(()) => break,
                        Err(at) => at - now,
                    };
                    if wait > MAX_WAIT_MS {
                        return Err(format!("rate limited for {wait} ms"));
                    }
                    glommio::timer::sleep(Duration::from_millis(wait.max(1) as u64)).await;
                }
                let r = {
                    let _permit = self.permits.acquire_static_permit(1).await;
                    self.endpoint
                        .request_with("POST", &path, &self.auth, Some(&body), self.timeout)
                        .await
                        .map_err(|e| format!("create message: {e}"))?
                };
                let verdict = self.limits.borrow_mut().on_answer(
                    CREATE_MESSAGE,
                    channel,
                    r.status,
                    |k| r.header(k),
                    &r.body,
                    now_ms(),
                );
                match verdict {
                    Verdict::Done => break,
                    Verdict::RetryAt { at, global } => {
                        tries += 1;
                        limited += 1;
                        let wait = at - now_ms();
                        if tries >= MAX_429 || wait > MAX_WAIT_MS {
                            let scope = if global { "global" } else { "route" };
                            return Err(format!(
                                "create message: 429 ({scope} rate limit, retry after {wait} ms)"
                            ));
                        }
                        // The loop above waits it out.
                    }
                    Verdict::Failed => {
                        let msg = serde_json::from_slice::<serde_json::Value>(&r.body)
                            .ok()
                            .and_then(|v| v["message"].as_str().map(str::to_string))
                            .unwrap_or_default();
                        return Err(format!("create message: HTTP {} {msg}", r.status));
                    }
                }
            }
        }
        Ok(limited)
    }
}
