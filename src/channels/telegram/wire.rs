//! The Telegram Bot API shapes shardgate reads and writes: the `{ok, result | error_code,
//! description, parameters}` envelope, `Update`, `Message`, `Chat`, `User`, and the
//! `sendMessage` body. Only the fields used here; unknown fields are ignored, as the Bot API
//! adds fields over time. (`frankenstein`'s types were not taken: its client pulls in an
//! HTTP stack, and the few fields used here fit on one page.)

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every Bot API answer: `{"ok":true,"result":…}` or `{"ok":false,"error_code":429,
/// "description":"…","parameters":{"retry_after":3}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    /// Whether the call succeeded.
    pub ok: bool,
    /// The result (its type depends on the method).
    #[serde(default)]
    pub result: Value,
    /// The error's HTTP-like code.
    #[serde(default)]
    pub error_code: Option<u16>,
    /// What went wrong.
    #[serde(default)]
    pub description: Option<String>,
    /// Flood control and chat migration hints.
    #[serde(default)]
    pub parameters: Option<ResponseParameters>,
}

/// `ResponseParameters`
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResponseParameters {
    /// Seconds to wait before the next call (flood control, with 429).
    #[serde(default)]
    pub retry_after: Option<u64>,
}

/// `Update`: one incoming event. Only `message` is read; other kinds are acknowledged and
/// dropped.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Update {
    /// Sequential id; `getUpdates?offset=update_id+1` acknowledges it and those before.
    pub update_id: i64,
    /// A new message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
}

/// `Message`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Message {
    /// Id in its chat.
    pub message_id: i64,
    /// Sender (absent for channel posts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<User>,
    /// The chat it belongs to.
    pub chat: Chat,
    /// Unix time, s.
    #[serde(default)]
    pub date: i64,
    /// Text (absent for media).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `User`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Bots' messages are not answered (two bots would talk forever).
    #[serde(default)]
    pub is_bot: bool,
    /// `@username` without the `@`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// `Chat`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Chat {
    /// Id (negative for groups).
    pub id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// The `sendMessage` body.
#[derive(Debug, Clone, Serialize)]
pub struct SendMessage<'a> {
    /// Target chat.
    pub chat_id: &'a str,
    /// Text (at most 4096 characters; longer replies are split by the caller).
    pub text: &'a str,
}

/// The longest `text` one `sendMessage` takes, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;

/// Parses a Bot API answer body. `None` when it is not the envelope (a proxy's HTML page).
pub fn envelope(body: &[u8]) -> Option<Envelope> {
    serde_json::from_slice(body).ok()
}

/// The updates of a `getUpdates` result, each parsed on its own: one malformed update must
/// not block the others (it is returned as `Err(update_id)` when its id can be read, so it
/// is acknowledged and skipped; without an id it is dropped).
pub fn updates(result: Value) -> Vec<Result<Update, i64>> {
    let Value::Array(items) = result else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|v| {
            let id = v.get("update_id").and_then(Value::as_i64);
            match serde_json::from_value::<Update>(v) {
                Ok(u) => Some(Ok(u)),
                Err(_) => id.map(Err),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_real_shapes() {
        let body = br#"{"ok":true,"result":[{"update_id":10,"message":{"message_id":1,
            "from":{"id":7,"is_bot":false,"first_name":"A","username":"ann"},
            "chat":{"id":7,"type":"private","first_name":"A"},"date":1,"text":"hi"}},
            {"update_id":11,"edited_message":{}},{"update_id":12,"message":{"chat":1}}]}"#;
        let e = envelope(body).unwrap();
        assert!(e.ok);
        let u = updates(e.result);
        assert_eq!(u.len(), 3);
        let m = u[0].as_ref().unwrap().message.as_ref().unwrap();
        assert_eq!(
            (
                m.text.as_deref(),
                m.chat.kind.as_str(),
                m.from.as_ref().unwrap().id
            ),
            (Some("hi"), "private", 7)
        );
        assert!(u[1].as_ref().unwrap().message.is_none());
        assert_eq!(u[2], Err(12));
        let e = envelope(br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#).unwrap();
        assert_eq!(
            (e.ok, e.error_code, e.parameters.unwrap().retry_after),
            (false, Some(429), Some(3))
        );
        assert!(envelope(b"<html>").is_none());
    }
}
