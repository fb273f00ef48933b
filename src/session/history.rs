//! A session's message history (`chat.history`), bounded by `agents.historyLimit`.
//!
//! Kept without a heap block per message: a session keeps 200 messages by default, two per
//! run, and a message is dropped long after it was written, when none of it is in the cache;
//! a block per message made every run free two cold blocks and allocate two more out of memory
//! just as cold. The texts (each followed by its run id) live instead in one byte ring per
//! session, written in order and dropped from the front, and each message keeps only their
//! lengths.

use std::borrow::Cow;
use std::collections::VecDeque;

use serde::Serialize;

/// One message, as recorded and as `chat.history` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry<'a> {
    /// `user`, `assistant` or `outbound` (a `send` through a channel).
    pub role: &'static str,
    /// The text.
    pub text: Cow<'a, str>,
    /// The run (message id) it belongs to.
    pub run_id: Cow<'a, str>,
    /// For `outbound`: the channel and the recipient.
    pub channel_to: Option<(Cow<'a, str>, Cow<'a, str>)>,
    /// When, ms.
    pub timestamp: i64,
}

impl<'a> HistoryEntry<'a> {
    /// A plain `role` message of `text`.
    pub fn new(role: &'static str, text: &'a str, timestamp: i64, run_id: &'a str) -> Self {
        HistoryEntry {
            role,
            text: Cow::Borrowed(text),
            run_id: Cow::Borrowed(run_id),
            channel_to: None,
            timestamp,
        }
    }

    /// An `outbound` message delivered through `channel` to `to`.
    pub fn outbound(
        text: &'a str,
        at: i64,
        run_id: &'a str,
        channel: &'a str,
        to: &'a str,
    ) -> Self {
        HistoryEntry {
            channel_to: Some((Cow::Borrowed(channel), Cow::Borrowed(to))),
            ..HistoryEntry::new("outbound", text, at, run_id)
        }
    }
}

/// The `chat.history` shape.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryJson<'a> {
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    content: [TextPart<'a>; 1],
    timestamp: i64,
    run_id: &'a str,
}

/// A `{"type":"text","text":…}` content part.
#[derive(Serialize)]
struct TextPart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

impl Serialize for HistoryEntry<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (channel, to) = self.channel_to.as_ref().map(|(c, t)| (&**c, &**t)).unzip();
        HistoryJson {
            role: self.role,
            channel,
            to,
            content: [TextPart {
                kind: "text",
                text: &self.text,
            }],
            timestamp: self.timestamp,
            run_id: &self.run_id,
        }
        .serialize(s)
    }
}

/// What a message keeps besides its bytes.
#[derive(Debug)]
struct Meta {
    role: &'static str,
    /// Channel and recipient of an `outbound` message (rare, so behind one pointer).
    outbound: Option<Box<(String, String)>>,
    text_len: usize,
    run_len: usize,
    timestamp: i64,
}

impl Meta {
    fn bytes(&self) -> usize {
        self.text_len + self.run_len
    }
}

/// A session's messages, oldest first.
#[derive(Debug, Default)]
pub struct History {
    messages: VecDeque<Meta>,
    /// Text then run id of each message, in message order.
    bytes: VecDeque<u8>,
}

/// The byte ring gives back its memory when it holds less than a quarter of what it reserved,
/// above this size.
const SHRINK_ABOVE: usize = 64 * 1024;

impl History {
    /// Messages held.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Appends `m`, then drops the oldest messages beyond `limit`.
    pub fn push(&mut self, m: &HistoryEntry<'_>, limit: usize) {
        self.bytes.extend(m.text.as_bytes());
        self.bytes.extend(m.run_id.as_bytes());
        self.messages.push_back(Meta {
            role: m.role,
            outbound: m
                .channel_to
                .as_ref()
                .map(|(c, t)| Box::new((c.to_string(), t.to_string()))),
            text_len: m.text.len(),
            run_len: m.run_id.len(),
            timestamp: m.timestamp,
        });
        while self.messages.len() > limit {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(m) = self.messages.pop_front() {
            self.bytes.drain(..m.bytes());
        }
        if self.bytes.capacity() > SHRINK_ABOVE && self.bytes.len() < self.bytes.capacity() / 4 {
            self.bytes.shrink_to(self.bytes.len() * 2);
        }
    }

    /// Keeps the newest `n` messages (`sessions.compact {maxLines}`).
    pub fn keep_last(&mut self, n: usize) {
        while self.messages.len() > n {
            self.pop_front();
        }
    }

    /// Drops every message.
    pub fn clear(&mut self) {
        self.messages.clear();
        self.bytes = VecDeque::new();
    }

    /// The messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = HistoryEntry<'_>> {
        let mut at = 0;
        self.messages.iter().map(move |m| {
            let text = self.str_at(at, m.text_len);
            let run_id = self.str_at(at + m.text_len, m.run_len);
            at += m.bytes();
            HistoryEntry {
                role: m.role,
                text,
                run_id,
                channel_to: m
                    .outbound
                    .as_deref()
                    .map(|(c, t)| (Cow::Borrowed(c.as_str()), Cow::Borrowed(t.as_str()))),
                timestamp: m.timestamp,
            }
        })
    }

    /// Keeps the messages whose timestamp satisfies `keep` (rebuilds the ring when any goes).
    pub fn retain(&mut self, keep: impl Fn(i64) -> bool) {
        if self.messages.iter().all(|m| keep(m.timestamp)) {
            return;
        }
        let mut kept = History::default();
        for m in self.iter().filter(|m| keep(m.timestamp)) {
            kept.push(&m, usize::MAX);
        }
        *self = kept;
    }

    /// The `len` bytes from `start` as text: borrowed unless they wrap around the ring's end.
    fn str_at(&self, start: usize, len: usize) -> Cow<'_, str> {
        let (a, b) = self.bytes.as_slices();
        let end = start + len;
        let bytes: Cow<'_, [u8]> = if end <= a.len() {
            Cow::Borrowed(&a[start..end])
        } else if start >= a.len() {
            Cow::Borrowed(&b[start - a.len()..end - a.len()])
        } else {
            Cow::Owned([&a[start..], &b[..end - a.len()]].concat())
        };
        // Whole strings went in, so whole strings come out (checked, not assumed).
        match bytes {
            Cow::Borrowed(s) => String::from_utf8_lossy(s),
            Cow::Owned(v) => Cow::Owned(String::from_utf8_lossy(&v).into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn texts(h: &History) -> Vec<(String, String)> {
        h.iter()
            .map(|m| (m.text.into_owned(), m.run_id.into_owned()))
            .collect()
    }

    #[test]
    fn entries_keep_the_chat_history_shape() {
        let mut h = History::default();
        h.push(&HistoryEntry::new("user", "héllo \"x\"", 7, "run-1"), 10);
        h.push(&HistoryEntry::outbound("hi", 9, "r2", "log", "bob"), 10);
        let rows: Vec<_> = h.iter().map(|m| serde_json::to_value(m).unwrap()).collect();
        assert_eq!(
            rows,
            [
                json!({"role": "user", "content": [{"type": "text", "text": "héllo \"x\""}],
                       "timestamp": 7, "runId": "run-1"}),
                json!({"role": "outbound", "channel": "log", "to": "bob",
                       "content": [{"type": "text", "text": "hi"}], "timestamp": 9, "runId": "r2"}),
            ]
        );
    }

    #[test]
    fn keeps_the_last_limit_messages_across_the_ring_end() {
        let mut h = History::default();
        let mut model = VecDeque::new();
        // Lengths that do not divide the ring's capacity, so texts wrap around its end.
        for i in 0..500usize {
            let text = format!("{}ü{}", "m".repeat(i % 37), i);
            let run = format!("r{i}");
            h.push(&HistoryEntry::new("user", &text, i as i64, &run), 7);
            model.push_back((text, run));
            if model.len() > 7 {
                model.pop_front();
            }
            assert_eq!(texts(&h), Vec::from(model.clone()), "after {i}");
        }
        assert_eq!(h.len(), 7);
        assert_eq!(
            h.bytes.len(),
            model.iter().map(|(t, r)| t.len() + r.len()).sum::<usize>()
        );
    }

    #[test]
    fn retain_and_clear() {
        let mut h = History::default();
        for i in 0..6 {
            h.push(&HistoryEntry::new("assistant", "t", i, &i.to_string()), 100);
        }
        h.retain(|ts| ts % 2 == 1);
        let runs: Vec<_> = h.iter().map(|m| m.run_id.into_owned()).collect();
        assert_eq!(runs, ["1", "3", "5"]);
        h.clear();
        assert!(h.is_empty() && h.iter().next().is_none());
    }

    #[test]
    fn a_ring_that_held_big_messages_gives_memory_back() {
        let mut h = History::default();
        let big = "x".repeat(100_000);
        for i in 0..4 {
            h.push(&HistoryEntry::new("user", &big, i, "r"), 4);
        }
        for i in 0..4 {
            h.push(&HistoryEntry::new("user", "small", i, "r"), 4);
        }
        assert!(h.bytes.capacity() < 100_000, "{}", h.bytes.capacity());
        assert_eq!(texts(&h).len(), 4);
    }
}
