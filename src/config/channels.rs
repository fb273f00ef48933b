//! `channels.<name>`: where messages go out (`log`, `webhook`) and the chat platforms the
//! gateway holds connections to (`telegram`, `discord`). One struct for every kind: a key that does not
//! apply to a kind is refused by [`validate`] rather than ignored.
//!
//! Secrets (`token`, `secretToken`) never appear in a log line: [`ChannelConfig`]'s `Debug`
//! leaves them out and `config.get` redacts them by name.

use serde::{Deserialize, Serialize};

use super::duration::Millis;

/// `channels.<name>`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ChannelConfig {
    /// How messages are delivered. Default `log`.
    pub kind: ChannelKind,
    /// Webhook URL (`http://host:port/path`).
    pub url: Option<String>,
    /// Per-attempt timeout, ms (a webhook POST, a `sendMessage`). Default 5000.
    pub timeout_ms: u64,
    /// Telegram: the bot token, inline. Prefer `tokenEnv` or `tokenFile`.
    pub token: Option<String>,
    /// Telegram: the environment variable holding the bot token.
    pub token_env: Option<String>,
    /// Telegram: a file holding the bot token (trailing whitespace ignored).
    pub token_file: Option<std::path::PathBuf>,
    /// The platform's REST root: Telegram's Bot API (default `https://api.telegram.org`),
    /// Discord's API (default `https://discord.com/api/v10`). Tests point it at a stand-in
    /// over `http://`.
    pub api_base: Option<String>,
    /// Discord: the Gateway WebSocket URL. Default
    /// `wss://gateway.discord.gg/?v=10&encoding=json` (tests use `ws://` to a stand-in).
    pub gateway_url: Option<String>,
    /// Discord: the Gateway intents bitfield of Identify. Default GUILD_MESSAGES |
    /// DIRECT_MESSAGES | MESSAGE_CONTENT (`1<<9 | 1<<12 | 1<<15`).
    pub intents: Option<u64>,
    /// Telegram: `longpoll` (default: `getUpdates`). `webhook` (Telegram POSTs updates to the
    /// gateway) is reserved and refused at start until its inbound route exists.
    pub mode: TelegramMode,
    /// Telegram webhook mode (reserved): the `X-Telegram-Bot-Api-Secret-Token` every update
    /// must carry (the `secret_token` given to `setWebhook`).
    pub secret_token: Option<String>,
    /// Senders whose messages are taken (Telegram user ids or `@usernames`); empty takes
    /// everyone. Others are dropped (and acknowledged, so they are not delivered again).
    pub allow_from: Vec<String>,
    /// The agent that answers this channel's chats. Default `agents.defaultAgent`.
    pub agent: Option<String>,
    /// Wait after a failed poll (network error, 5xx) before the next one. A 429 waits its
    /// `retry_after` instead. Default "5s".
    pub reconnect_interval: Millis,
    /// The long poll's `timeout` (how long Telegram holds a `getUpdates` open). Default "30s".
    pub poll_timeout: Millis,
    /// Most `sendMessage` connections open at once on one shard (the long poll holds one
    /// more). Default 4.
    pub max_connections: usize,
    /// CA bundle for an `https://` apiBase. Default the system's
    /// (`/etc/ssl/certs/ca-certificates.crt`).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            kind: ChannelKind::Log,
            url: None,
            timeout_ms: 5000,
            token: None,
            token_env: None,
            token_file: None,
            api_base: None,
            gateway_url: None,
            intents: None,
            mode: TelegramMode::Longpoll,
            secret_token: None,
            allow_from: Vec::new(),
            agent: None,
            reconnect_interval: Millis(5_000),
            poll_timeout: Millis(30_000),
            max_connections: 4,
            ca_file: None,
        }
    }
}

impl std::fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No token, no secret: a config printed in a log line must not leak them.
        f.debug_struct("ChannelConfig")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("apiBase", &self.api_base)
            .field("gatewayUrl", &self.gateway_url)
            .field("mode", &self.mode)
            .field("tokenSource", &self.token_source())
            .finish_non_exhaustive()
    }
}

/// The Telegram Bot API root when `apiBase` is not set.
pub const TELEGRAM_API_BASE: &str = "https://api.telegram.org";

/// The Discord REST API root when `apiBase` is not set.
pub const DISCORD_API_BASE: &str = "https://discord.com/api/v10";

/// The Discord Gateway when `gatewayUrl` is not set.
pub const DISCORD_GATEWAY_URL: &str = "wss://gateway.discord.gg/?v=10&encoding=json";

/// Discord's default intents: GUILD_MESSAGES (1<<9) | DIRECT_MESSAGES (1<<12) |
/// MESSAGE_CONTENT (1<<15).
pub const DISCORD_INTENTS: u64 = (1 << 9) | (1 << 12) | (1 << 15);

impl ChannelConfig {
    /// The platform's REST root, without a trailing slash.
    pub fn api_base(&self) -> &str {
        let default = match self.kind {
            ChannelKind::Discord => DISCORD_API_BASE,
            _ => TELEGRAM_API_BASE,
        };
        self.api_base
            .as_deref()
            .unwrap_or(default)
            .trim_end_matches('/')
    }

    /// Discord: the Gateway URL.
    pub fn gateway_url(&self) -> &str {
        self.gateway_url.as_deref().unwrap_or(DISCORD_GATEWAY_URL)
    }

    /// Discord: the Identify intents.
    pub fn intents(&self) -> u64 {
        self.intents.unwrap_or(DISCORD_INTENTS)
    }

    /// Where the token comes from, as OpenClaw's `tokenSource` says it: `config`, `env`,
    /// `file` or `none`.
    pub fn token_source(&self) -> &'static str {
        match (&self.token, &self.token_env, &self.token_file) {
            (Some(_), _, _) => "config",
            (None, Some(_), _) => "env",
            (None, None, Some(_)) => "file",
            _ => "none",
        }
    }

    /// Reads the token from where it is configured. The error names the source, never the
    /// value.
    pub fn resolve_token(&self) -> Result<String, String> {
        let t = match (&self.token, &self.token_env, &self.token_file) {
            (Some(t), _, _) => t.clone(),
            (None, Some(var), _) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?
            }
            (None, None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read tokenFile {}: {e}", path.display()))?,
            _ => return Err("no token, tokenEnv or tokenFile".into()),
        };
        let t = t.trim().to_string();
        if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(format!(
                "the {} token is empty or not a bot token",
                self.token_source()
            ));
        }
        Ok(t)
    }
}

/// `channels.<name>.kind`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Record the message in the session.
    Log,
    /// HTTP POST to the channel's `url`.
    Webhook,
    /// A Telegram bot (Bot API): inbound messages become runs, replies go out by
    /// `sendMessage`.
    Telegram,
    /// A Discord bot (Gateway v10 + REST): `MESSAGE_CREATE` events become runs, replies go
    /// out by `POST /channels/{id}/messages`.
    Discord,
}

impl ChannelKind {
    /// A chat platform the gateway holds a connection to (its messages come in, not only go
    /// out).
    pub fn is_platform(self) -> bool {
        self.platform().is_some()
    }

    /// The platform's name (a session key segment, OpenClaw's channel id).
    pub fn platform(self) -> Option<&'static str> {
        match self {
            ChannelKind::Telegram => Some("telegram"),
            ChannelKind::Discord => Some("discord"),
            ChannelKind::Log | ChannelKind::Webhook => None,
        }
    }
}

/// `channels.<name>.mode` (Telegram)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TelegramMode {
    /// `getUpdates` long polling.
    #[default]
    Longpoll,
    /// Telegram POSTs updates to the gateway.
    Webhook,
}

/// Checks every channel; the error is the key path and the reason.
pub(super) fn validate(
    channels: &std::collections::BTreeMap<String, ChannelConfig>,
) -> Result<(), (String, String)> {
    let bad = |key: String, reason: &str| Err((key, reason.to_string()));
    for (name, c) in channels {
        let at = |k: &str| format!("channels.{name}.{k}");
        match c.kind {
            ChannelKind::Log => {}
            ChannelKind::Webhook if c.url.as_deref().is_some_and(|u| u.starts_with("http://")) => {}
            ChannelKind::Webhook => return bad(at("url"), "a webhook needs an http:// url"),
            ChannelKind::Telegram | ChannelKind::Discord => {
                platform_common(name, c)?;
            }
        }
        match c.kind {
            ChannelKind::Discord => {
                let url = c.gateway_url();
                if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                    return bad(at("gatewayUrl"), "a ws:// or wss:// URL is required");
                }
                if c.mode == TelegramMode::Webhook {
                    return bad(at("mode"), "only a telegram channel takes a mode");
                }
                if c.secret_token.is_some() {
                    return bad(
                        at("secretToken"),
                        "only a telegram channel takes a secretToken",
                    );
                }
            }
            ChannelKind::Telegram => {
                if c.mode == TelegramMode::Webhook {
                    // Refused rather than accepted and left deaf: the inbound route
                    // (`/channels/<name>/webhook` with the secret-token check) is not built yet.
                    return bad(
                        at("mode"),
                        "webhook mode is not supported yet; use \"longpoll\"",
                    );
                }
                if c.secret_token.is_some() {
                    return bad(at("secretToken"), "only webhook mode takes a secretToken");
                }
                if c.reconnect_interval.0 < 10 {
                    return bad(at("reconnectInterval"), "must be at least 10ms");
                }
                if c.poll_timeout.0 > 600_000 {
                    return bad(at("pollTimeout"), "must be at most 10m");
                }
                if c.gateway_url.is_some() || c.intents.is_some() {
                    return bad(
                        at("gatewayUrl"),
                        "only a discord channel takes gatewayUrl and intents",
                    );
                }
            }
            ChannelKind::Log | ChannelKind::Webhook => {}
        }
        if !c.kind.is_platform()
            && (c.token.is_some() || c.token_env.is_some() || c.token_file.is_some())
        {
            return bad(
                at("token"),
                "only a telegram or discord channel takes a token",
            );
        }
    }
    Ok(())
}

/// What every platform channel needs: a name fit for a session key, one token source, an
/// http(s) API root, sane limits.
fn platform_common(name: &str, c: &ChannelConfig) -> Result<(), (String, String)> {
    let bad = |key: String, reason: &str| Err((key, reason.to_string()));
    let at = |k: &str| format!("channels.{name}.{k}");
    // The name is a session key segment (`agent:main:telegram:<name>:dm:<chat>`).
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return bad(
            format!("channels.{name}"),
            "a platform channel's name is lower-case letters, digits, - and _",
        );
    }
    let sources = [
        c.token.is_some(),
        c.token_env.is_some(),
        c.token_file.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return bad(at("token"), "set exactly one of token, tokenEnv, tokenFile");
    }
    let base = c.api_base();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return bad(at("apiBase"), "an http:// or https:// URL is required");
    }
    if c.reconnect_interval.0 < 10 {
        return bad(at("reconnectInterval"), "must be at least 10ms");
    }
    if c.max_connections == 0 {
        return bad(at("maxConnections"), "must be at least 1");
    }
    if c.timeout_ms == 0 {
        return bad(at("timeoutMs"), "must be at least 1");
    }
    Ok(())
}
