//! Session keys of chat-platform conversations, both ways: a chat becomes the session
//! `agent:<agent>:telegram:direct:<chatId>` (a group: `…:telegram:group:<chatId>`), and a
//! session key says which channel and chat a reply goes back to. `dm` is read as `direct`, as
//! the session key parser does ([`crate::protocol::SessionKey`] writes `dm` as `direct`, so
//! `agent:main:telegram:dm:42` names the same session).
//!
//! The channel named like its platform (`channels.telegram`) owns the short form; another
//! channel of the same platform puts its name after the platform, as OpenClaw does for a
//! platform's second account (`agent:main:telegram:<name>:direct:<chatId>`). The key alone routes
//! a reply, so a reply to a message replayed from the journal after a restart still finds
//! its chat.

use crate::config::Config;

/// A platform conversation: which channel, which chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRoute<'a> {
    /// The channel's name (`channels.<name>`).
    pub channel: &'a str,
    /// The platform's chat id.
    pub chat: &'a str,
    /// A group chat rather than a direct one.
    pub group: bool,
}

/// The platforms whose conversations have session keys.
const PLATFORMS: [&str; 1] = ["telegram"];

/// The session key of `chat` on channel `channel` (of `platform`), answered by `agent`.
pub fn session_key(agent: &str, platform: &str, channel: &str, chat: i64, group: bool) -> String {
    let peer = if group { "group" } else { "direct" };
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
    let platform = PLATFORMS.into_iter().find(|p| *p == platform)?;
    let parts: Vec<&str> = rest.split(':').collect();
    let (channel, peer, chat) = match parts.as_slice() {
        [peer, chat] => (platform, *peer, *chat),
        [channel, peer, chat] => (*channel, *peer, *chat),
        _ => return None,
    };
    let group = match peer {
        "direct" | "dm" => false,
        "group" => true,
        _ => return None,
    };
    // A chat id is an integer (negative for groups).
    let digits = chat.strip_prefix('-').unwrap_or(chat);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(ChatRoute {
        channel,
        chat,
        group,
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
    cfg.kind
        .is_platform()
        .then(|| (r.channel.to_string(), r.chat.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = session_key("main", "telegram", "telegram", 42, false);
        assert_eq!(k, "agent:main:telegram:direct:42");
        assert_eq!(
            chat_of(&k),
            Some(ChatRoute {
                channel: "telegram",
                chat: "42",
                group: false
            })
        );
        let k = session_key("ops", "telegram", "tg2", -100, true);
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
        ] {
            assert_eq!(chat_of(not), None, "{not}");
        }
    }
}
