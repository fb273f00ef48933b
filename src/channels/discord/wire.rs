//! The Discord shapes shardgate reads and writes: Gateway payloads (`{op, d, s, t}`; Hello,
//! READY, MESSAGE_CREATE, Invalid Session) and the ones it sends (Heartbeat, Identify,
//! Resume), the REST `Create Message` body and the 429 body. Only the fields used here;
//! unknown fields are ignored, as Discord adds fields over time. (`twilight-model` was not
//! taken: the dozen fields used here fit on one page, and its model of every Discord object
//! would be most of the compile time of this module.)
//!
//! The token goes into Identify and Resume only, built here from the caller's copy: the
//! machine that decides when to send them never holds it.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Gateway opcodes.
pub mod op {
    /// An event (`t` names it, `s` is its sequence number).
    pub const DISPATCH: u8 = 0;
    /// Heartbeat (both ways: the server may ask for one at once).
    pub const HEARTBEAT: u8 = 1;
    /// Identify (start a new session).
    pub const IDENTIFY: u8 = 2;
    /// Resume (continue a session after a reconnect).
    pub const RESUME: u8 = 6;
    /// The server asks the client to reconnect and resume.
    pub const RECONNECT: u8 = 7;
    /// The session is invalid (`d`: whether it can be resumed).
    pub const INVALID_SESSION: u8 = 9;
    /// First message of a connection: the heartbeat interval.
    pub const HELLO: u8 = 10;
    /// The server received a heartbeat.
    pub const HEARTBEAT_ACK: u8 = 11;
}

/// Any Gateway payload.
#[derive(Debug, Clone, Deserialize)]
pub struct Payload {
    /// The opcode.
    pub op: u8,
    /// The data (its shape depends on `op` and `t`).
    #[serde(default)]
    pub d: Value,
    /// The sequence number of a dispatch.
    #[serde(default)]
    pub s: Option<u64>,
    /// The event name of a dispatch.
    #[serde(default)]
    pub t: Option<String>,
}

/// Hello's `d`.
#[derive(Debug, Clone, Deserialize)]
pub struct Hello {
    /// Heartbeat every this many ms.
    pub heartbeat_interval: u64,
}

/// READY's `d`.
#[derive(Debug, Clone, Deserialize)]
pub struct Ready {
    /// The session to resume.
    pub session_id: String,
    /// Where to resume it.
    pub resume_gateway_url: String,
}

/// A user (message author).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct User {
    /// Snowflake.
    pub id: String,
    /// Username.
    #[serde(default)]
    pub username: Option<String>,
    /// A bot's messages are not answered (two bots would talk forever; and the gateway's
    /// own replies come back as MESSAGE_CREATE).
    #[serde(default)]
    pub bot: bool,
}

/// MESSAGE_CREATE's `d` (a message).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Message {
    /// Snowflake (dedup key).
    pub id: String,
    /// The channel (guild text channel or DM channel) it was posted in.
    pub channel_id: String,
    /// The guild; absent for a DM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guild_id: Option<String>,
    /// The sender.
    pub author: User,
    /// Text (empty without the MESSAGE_CONTENT intent, or for an attachment only).
    #[serde(default)]
    pub content: String,
}

/// A REST 429 body.
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimited {
    /// Seconds to wait (a float).
    #[serde(default)]
    pub retry_after: f64,
    /// Whether it is the bot's global limit rather than the route's.
    #[serde(default)]
    pub global: bool,
    /// Discord's text.
    #[serde(default)]
    pub message: String,
}

/// The `Create Message` body.
#[derive(Debug, Clone, Serialize)]
pub struct CreateMessage<'a> {
    /// Text (at most [`MAX_CONTENT_CHARS`] characters; longer replies are split).
    pub content: &'a str,
}

/// The longest `content` one message takes, in characters.
pub const MAX_CONTENT_CHARS: usize = 2000;

/// Heartbeat: the last sequence number received (null before the first).
pub fn heartbeat(seq: Option<u64>) -> String {
    json!({"op": op::HEARTBEAT, "d": seq}).to_string()
}

/// Identify with `token` and `intents`.
pub fn identify(token: &str, intents: u64) -> String {
    json!({"op": op::IDENTIFY, "d": {
        "token": token, "intents": intents,
        "properties": {"os": "linux", "browser": "shardgate", "device": "shardgate"}}})
    .to_string()
}

/// Resume session `session_id` after sequence `seq`.
pub fn resume(token: &str, session_id: &str, seq: Option<u64>) -> String {
    json!({"op": op::RESUME, "d": {"token": token, "session_id": session_id, "seq": seq}})
        .to_string()
}

/// Where to resume: `resume_gateway_url` with the version and encoding query the Gateway
/// wants (Discord sends the URL without it).
pub fn resume_url(base: &str) -> String {
    if base.contains('?') {
        return base.to_string();
    }
    let base = base.trim_end_matches('/');
    let after_scheme = base.split_once("://").map_or(base, |(_, r)| r);
    if after_scheme.contains('/') {
        format!("{base}?v=10&encoding=json")
    } else {
        format!("{base}/?v=10&encoding=json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_real_shapes() {
        let p: Payload = serde_json::from_str(
            r#"{"t":"MESSAGE_CREATE","s":3,"op":0,"d":{"id":"11","channel_id":"22","guild_id":"33",
            "author":{"id":"44","username":"ann","global_name":"Ann","discriminator":"0"},
            "content":"hi","mentions":[],"type":0}}"#,
        )
        .unwrap();
        assert_eq!(
            (p.op, p.s, p.t.as_deref()),
            (0, Some(3), Some("MESSAGE_CREATE"))
        );
        let m: Message = serde_json::from_value(p.d).unwrap();
        assert_eq!(
            (
                m.id.as_str(),
                m.guild_id.as_deref(),
                m.author.bot,
                m.content.as_str()
            ),
            ("11", Some("33"), false, "hi")
        );
        let h: Payload =
            serde_json::from_str(r#"{"op":10,"d":{"heartbeat_interval":41250},"s":null,"t":null}"#)
                .unwrap();
        let h: Hello = serde_json::from_value(h.d).unwrap();
        assert_eq!(h.heartbeat_interval, 41250);
        let r: RateLimited = serde_json::from_str(
            r#"{"message":"You are being rate limited.","retry_after":0.64,"global":false}"#,
        )
        .unwrap();
        assert!((r.retry_after - 0.64).abs() < 1e-9 && !r.global);
    }

    #[test]
    fn writes_the_real_shapes() {
        let v: Value = serde_json::from_str(&heartbeat(Some(7))).unwrap();
        assert_eq!(v, json!({"op": 1, "d": 7}));
        let v: Value = serde_json::from_str(&heartbeat(None)).unwrap();
        assert_eq!(v, json!({"op": 1, "d": null}));
        let v: Value = serde_json::from_str(&resume("t", "s1", Some(9))).unwrap();
        assert_eq!(
            v,
            json!({"op": 6, "d": {"token": "t", "session_id": "s1", "seq": 9}})
        );
        let v: Value = serde_json::from_str(&identify("t", 37376)).unwrap();
        assert_eq!(
            (v["op"].clone(), v["d"]["intents"].clone()),
            (json!(2), json!(37376))
        );
        assert_eq!(
            resume_url("wss://gateway-us-east1-b.discord.gg"),
            "wss://gateway-us-east1-b.discord.gg/?v=10&encoding=json"
        );
        assert_eq!(
            resume_url("ws://127.0.0.1:9/resume"),
            "ws://127.0.0.1:9/resume?v=10&encoding=json"
        );
        assert_eq!(resume_url("ws://h/?v=10"), "ws://h/?v=10");
    }
}
