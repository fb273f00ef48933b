//! A Telegram bot's API calls: `getUpdates` for the long poll and `sendMessage` for replies,
//! over [`crate::channels::http`]. The token is part of every URL path (`/bot<token>/…`) and
//! so of no error text: errors name the method and the answer, never the URL.
//!
//! One [`Bot`] per channel per shard, made on first use and kept (the configuration does not
//! change while the gateway runs); its semaphore caps the shard's `sendMessage` connections
//! at `maxConnections`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use super::machine::Answer;
use super::wire;
use crate::channels::http::Endpoint;
use crate::config::ChannelConfig;

/// A configured bot.
pub struct Bot {
    endpoint: Endpoint,
    token: String,
    timeout: Duration,
    permits: Rc<glommio::sync::Semaphore>,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// This shard's bots by channel name (a shard is one thread): built once, the token read
    /// once.
    static BOTS: RefCell<HashMap<String, Rc<Bot>>> = RefCell::new(HashMap::new());
}

/// How a `sendMessage` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Flood control: wait this many seconds.
    TooMany(u64, String),
    /// Anything else (network, 4xx, 5xx), as text.
    Other(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::TooMany(s, why) => write!(f, "{why} (retry after {s} s)"),
            SendError::Other(why) => f.write_str(why),
        }
    }
}

impl Bot {
    /// Channel `name`'s bot on this shard.
    pub fn for_channel(name: &str, cfg: &ChannelConfig) -> Result<Rc<Bot>, String> {
        if let Some(b) = BOTS.with_borrow(|m| m.get(name).cloned()) {
            return Ok(b);
        }
        let b = Rc::new(Bot::new(cfg)?);
        BOTS.with_borrow_mut(|m| m.insert(name.to_string(), b.clone()));
        Ok(b)
    }

    /// A bot for `cfg`: its token read (from config, env or file) and its endpoint parsed.
    pub fn new(cfg: &ChannelConfig) -> Result<Bot, String> {
        let token = cfg.resolve_token()?;
        let endpoint = Endpoint::parse(cfg.api_base(), cfg.ca_file.as_deref())?;
        Ok(Bot {
            endpoint,
            token,
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            permits: Rc::new(glommio::sync::Semaphore::new(cfg.max_connections as u64)),
        })
    }

    /// `getUpdates?offset=…&timeout=…`, for message updates only. Waits up to the poll
    /// timeout plus the request timeout.
    pub async fn get_updates(&self, offset: Option<i64>, timeout_s: u64) -> Answer {
        let mut path = format!("/bot{}/getUpdates?timeout={timeout_s}", self.token);
        if let Some(o) = offset {
            path.push_str(&format!("&offset={o}"));
        }
        path.push_str("&allowed_updates=%5B%22message%22%5D");
        let wait = Duration::from_secs(timeout_s) + self.timeout;
        match self.endpoint.request("GET", &path, None, wait).await {
            Ok(r) => Answer::Http {
                status: r.status,
                body: r.body,
            },
            Err(e) => Answer::Failed(e),
        }
    }

    /// `sendMessage {chat_id, text}`, split into pieces of at most 4096 characters.
    pub async fn send_message(&self, chat: &str, text: &str) -> Result<(), SendError> {
        let _permit = self.permits.acquire_static_permit(1).await;
        for piece in crate::channels::text::pieces(text, wire::MAX_TEXT_CHARS) {
            let body = serde_json::to_vec(&wire::SendMessage {
                chat_id: chat,
                text: piece,
            })
            .map_err(|e| SendError::Other(e.to_string()))?;
            let path = format!("/bot{}/sendMessage", self.token);
            let r = self
                .endpoint
                .request("POST", &path, Some(&body), self.timeout)
                .await
                .map_err(|e| SendError::Other(format!("sendMessage: {e}")))?;
            let env = wire::envelope(&r.body);
            match env {
                Some(e) if e.ok => {}
                Some(e) => {
                    let code = e.error_code.unwrap_or(r.status);
                    let why = format!("sendMessage: {code} {}", e.description.unwrap_or_default());
                    return Err(match (code, e.parameters.and_then(|p| p.retry_after)) {
                        (429, Some(s)) => SendError::TooMany(s, why),
                        _ => SendError::Other(why),
                    });
                }
                None => {
                    return Err(SendError::Other(format!(
                        "sendMessage: HTTP {} without a Bot API answer",
                        r.status
                    )))
                }
            }
        }
        Ok(())
    }
}
