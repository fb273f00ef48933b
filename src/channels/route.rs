//! Session keys of chat-platform conversations, both ways: a chat becomes the session
//! `agent:<agent>:telegram:direct:<chatId>` (a group: `…:telegram:group:<chatId>`; Discord:
//! `…:discord:channel:<channelId>` for a guild channel, `…:discord:direct:<channelId>` for a
//! DM, OpenClaw's shapes), and a session key says which channel and chat a reply goes back to. `dm` is read as `direct`, as
//! the session key parser does ([`crate::protocol::SessionKey`] writes `dm` as `direct`, so
//! `agent:main:telegram:dm:42` names the same session).
//!
//! The channel named like its platform (`channels.telegram`) owns the short form; another
//! channel of the same platform puts its name after the platform, as OpenClaw does for a
//! platform's second account (`agent:main:telegram:<name>:direct:<chatId>`). The key alone routes
//! a reply, so a reply to a message replayed from the journal after a restart still finds
//! its chat.

use crate::config::{ChannelConfig, Config};

/// The agent that answers channel `ch`'s chats: its `agent`, else the default agent.
pub fn agent_of(cfg: &Config, ch: &ChannelConfig) -> String {
    ch.agent
        .clone()
        .unwrap_or_else(|| cfg.agents.default_agent.clone())
        .to_ascii_lowercase()
}

/// A platform conversation: which channel, which chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRoute<'a> {
    /// The platform (`telegram`, `discord`).
    pub platform: &'a str,
    /// The channel's name (`channels.<name>`).
    pub channel: &'a str,
    /// The platform's chat id.
    pub chat: &'a str,
    /// The kind of conversation: `direct`, `group` (Telegram), `channel` (Discord).
    pub peer: &'a str,
}

/// The platforms whose conversations have session keys, with their conversation kinds.
const PLATFORMS: [(&str, &[&str]); 2] = [
    ("telegram", &["direct", "dm", "group"]),
    ("discord", &["direct", "dm", "channel"]),
];

/// The session key of `chat` on channel `channel` (of `platform`), a conversation of kind
/// `peer` (`direct`, `group`, `channel`), answered by `agent`.
pub fn session_key(
    agent: &str,
    platform: &str,
    channel: &str,
    peer: &str,
    chat: impl std::fmt::Display,
) -> String {
    if channel == platform {
        format!("agent:{agent}:{platform}:{peer}:{chat}")
    } else {
        format!("agent:{agent}:{platform}:{channel}:{peer}:{chat}")
    }
}

/// The channel and chat a session's replies go to, when the session is a platform
/// conversation (`key` is normalised: `agent:<agent>:…`).
pub fn chat_of(key: &str) -> Option<ChatRoute<'_>> {
    let rest = key.strip_prefix("agent:")?;
    let (_agent, rest) = rest.split_once(':')?;
    let (platform, rest) = rest.split_once(':')?;
    let (platform, peers) = PLATFORMS.into_iter().find(|(p, _)| *p == platform)?;
    let parts: Vec<&str> = rest.split(':').collect();
    let (channel, peer, chat) = match parts.as_slice() {
        [peer, chat] => (platform, *peer, *chat),
        [channel, peer, chat] => (*channel, *peer, *chat),
        _ => return None,
    };
    if !peers.contains(&peer) {
        return None;
    }
    let peer = if peer == "dm" { "direct" } else { peer };
    // A chat id is an integer (negative for Telegram groups, a snowflake for Discord).
    let digits = chat.strip_prefix('-').unwrap_or(chat);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(ChatRoute {
        platform,
        channel,
        chat,
        peer,
    })
}

/// The platform channel a session's replies go to, and the chat: when the session key names
/// a platform chat and a channel of that platform by that name is configured.
pub fn reply_route(cfg: &Config, session_key: &str) -> Option<(String, String)> {
    // Every run ends here: without a platform channel there is no key to parse.
    if !cfg.channels.values().any(|c| c.kind.is_platform()) {
        return None;
    }
    let r = chat_of(session_key)?;
    let cfg = cfg.channels.get(r.channel)?;
    (cfg.kind.platform() == Some(r.platform)).then(|| (r.channel.to_string(), r.chat.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = session_key("main", "telegram", "telegram", "direct", 42);
        assert_eq!(k, "agent:main:telegram:direct:42");
        assert_eq!(
            chat_of(&k),
            Some(ChatRoute {
                platform: "telegram",
                channel: "telegram",
                chat: "42",
                peer: "direct"
            })
        );
        let k = session_key(
            "main",
            "discord",
            "discord",
            "channel",
            1234567890123456789u64,
        );
        assert_eq!(k, "agent:main:discord:channel:1234567890123456789");
        assert_eq!(
            chat_of(&k).map(|r| (r.platform, r.channel, r.peer)),
            Some(("discord", "discord", "channel"))
        );
        assert_eq!(
            chat_of("agent:main:discord:dm:55").map(|r| r.peer),
            Some("direct")
        );
        let k = session_key("ops", "telegram", "tg2", "group", -100);
        assert_eq!(k, "agent:ops:telegram:tg2:group:-100");
        assert_eq!(
            chat_of(&k).map(|r| (r.channel, r.chat)),
            Some(("tg2", "-100"))
        );
        for not in [
            "agent:main:main",
            "agent:main:telegram:direct:",
            "agent:main:telegram:dm:abc",
            "agent:main:log:direct:42",
            "agent:main:telegram:x:y:dm:1",
            "agent:main:telegram:channel:1",
            "agent:main:discord:group:1",
        ] {
            assert_eq!(chat_of(not), None, "{not}");
        }
    }
}
