//! The Telegram long-poll connection as a sans-IO state machine: it says when to call
//! `getUpdates` and with which `offset`, reads the answers (updates, 429 flood control, a
//! refused token, garbage), decides which updates become messages, and advances the offset
//! only over updates that were admitted to the queue. No sockets, no clock: the driver
//! (`super::driver`) does the I/O and passes `now`.
//!
//! Invariants:
//! - `offset` (which acknowledges every update below it to Telegram) never passes an update
//!   that was not admitted: the driver submits a batch's messages in order and reports each
//!   outcome; a refusal drops that update and everything after it from the batch, so Telegram
//!   delivers them again.
//! - An update is taken once: ids below the offset, and ids already taken above it, are
//!   duplicates (counted, dropped).
//! - While a batch's messages wait for admission, no new poll starts.

use std::collections::BTreeMap;

use super::wire::{self, Update};
use crate::channels::link::Link;
use crate::channels::route;

/// What the machine needs of the channel's configuration.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The channel's name.
    pub channel: String,
    /// The agent that answers.
    pub agent: String,
    /// Sender allowlist (ids, `@usernames`, `*`); empty takes everyone.
    pub allow_from: Vec<String>,
    /// Wait after a failure, ms.
    pub reconnect_ms: u64,
    /// The long poll's `timeout`, s.
    pub poll_timeout_s: u64,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Call `getUpdates` with these arguments.
    Poll {
        /// `offset` (absent before the first acknowledgement).
        offset: Option<i64>,
        /// `timeout`, s.
        timeout_s: u64,
    },
    /// Sleep until this time (ms), then ask again.
    Wait(i64),
    /// Messages are waiting for their admission: report them first.
    Admitting,
    /// Stopped for good ([`Link::Stopped`] says why).
    Stop,
}

/// How a `getUpdates` call ended.
#[derive(Debug, Clone)]
pub enum Answer {
    /// An HTTP answer: its status and body.
    Http {
        /// HTTP status.
        status: u16,
        /// Body.
        body: Vec<u8>,
    },
    /// No answer: refused, dropped, timed out.
    Failed(String),
}

/// A message to submit to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Its update.
    pub update_id: i64,
    /// The session it goes to.
    pub session_key: String,
    /// Its text.
    pub text: String,
    /// Its idempotency key (`telegram:<channel>:<update_id>`): a redelivery after a restart
    /// is answered from the queue's dedup window rather than run again.
    pub idem: String,
}

/// What a poll's answer yielded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Polled {
    /// Messages to submit, in update order.
    pub inbound: Vec<Inbound>,
    /// Updates already taken.
    pub duplicates: u64,
    /// Messages from senders outside the allowlist, and from bots.
    pub filtered: u64,
    /// The call failed.
    pub error: bool,
}

/// An update taken from a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// Submitted, admission not reported yet.
    Pending,
    /// Admitted, or nothing to do (not a text message, filtered).
    Done,
}

/// One long-poll connection.
#[derive(Debug)]
pub struct Poller {
    setup: Setup,
    offset: Option<i64>,
    taken: BTreeMap<i64, Taken>,
    wait_until: i64,
    /// Where the connection stands.
    pub link: Link,
    /// The last failure.
    pub last_error: Option<String>,
    /// Failures since the last success.
    pub attempts: u32,
    /// When Telegram last answered, ms.
    pub last_connected_at: Option<i64>,
    /// When the last message was taken, ms.
    pub last_inbound_at: Option<i64>,
}

impl Poller {
    /// A poller that has acknowledged nothing yet.
    pub fn new(setup: Setup) -> Poller {
        Poller {
            setup,
            offset: None,
            taken: BTreeMap::new(),
            wait_until: 0,
            link: Link::Connecting,
            last_error: None,
            attempts: 0,
            last_connected_at: None,
            last_inbound_at: None,
        }
    }

    /// The next `offset`: everything below it is acknowledged.
    pub fn offset(&self) -> Option<i64> {
        self.offset
    }

    /// What to do at `now`.
    pub fn next(&self, now: i64) -> Next {
        if matches!(self.link, Link::Stopped { .. }) {
            return Next::Stop;
        }
        if self.taken.values().any(|t| *t == Taken::Pending) {
            return Next::Admitting;
        }
        if now < self.wait_until {
            return Next::Wait(self.wait_until);
        }
        Next::Poll {
            offset: self.offset,
            timeout_s: self.setup.poll_timeout_s,
        }
    }

    /// Reads a `getUpdates` answer at `now`.
    pub fn on_poll(&mut self, answer: Answer, now: i64) -> Polled {
        let (status, body) = match answer {
            Answer::Failed(e) => return self.failed(format!("network: {e}"), None, now),
            Answer::Http { status, body } => (status, body),
        };
        let Some(env) = wire::envelope(&body) else {
            return self.failed(format!("HTTP {status}: not a Bot API answer"), None, now);
        };
        if !env.ok {
            let code = env.error_code.unwrap_or(status);
            let what = env.description.unwrap_or_default();
            let why = format!("{code}: {what}");
            return match code {
                // The token is wrong or revoked: polling again changes nothing.
                401 | 404 => {
                    self.link = Link::Stopped {
                        reason: format!("the Bot API refused the token ({why})"),
                    };
                    self.last_error = Some(why);
                    Polled {
                        error: true,
                        ..Polled::default()
                    }
                }
                429 => {
                    let retry = env.parameters.and_then(|p| p.retry_after).unwrap_or(1);
                    self.failed(why, Some(retry.saturating_mul(1000)), now)
                }
                _ => self.failed(why, None, now),
            };
        }
        self.link = Link::Connected;
        self.attempts = 0;
        self.last_connected_at = Some(now);
        let mut out = Polled::default();
        for u in wire::updates(env.result) {
            let id = match &u {
                Ok(u) => u.update_id,
                Err(id) => *id,
            };
            if self.offset.is_some_and(|o| id < o) || self.taken.contains_key(&id) {
                out.duplicates += 1;
                continue;
            }
            let taken = match u {
                Ok(u) => match self.classify(u) {
                    Class::Message(m) => {
                        out.inbound.push(m);
                        Taken::Pending
                    }
                    Class::Filtered => {
                        out.filtered += 1;
                        Taken::Done
                    }
                    Class::Other => Taken::Done,
                },
                Err(_) => Taken::Done,
            };
            self.taken.insert(id, taken);
        }
        if !out.inbound.is_empty() {
            self.last_inbound_at = Some(now);
        }
        self.advance();
        out
    }

    /// Update `id`'s message was admitted (or was a duplicate the queue already had).
    pub fn admitted(&mut self, id: i64) {
        if let Some(t) = self.taken.get_mut(&id) {
            *t = Taken::Done;
        }
        self.advance();
    }

    /// Update `id`'s message was refused (queue full, shutting down…): it and every update
    /// after it are dropped from the batch (Telegram delivers them again, as the offset
    /// stays below them), and the next poll waits `retry_ms` (at least the reconnect
    /// interval when none is given).
    pub fn refused(&mut self, id: i64, why: &str, retry_ms: Option<u64>, now: i64) {
        self.taken.retain(|k, _| *k < id);
        self.last_error = Some(format!("update {id} not admitted: {why}"));
        let wait = retry_ms.unwrap_or(self.setup.reconnect_ms).max(1);
        self.wait_until = now + wait as i64;
        self.advance();
    }

    /// Moves the offset past the leading updates that are done.
    fn advance(&mut self) {
        while let Some((&id, &t)) = self.taken.first_key_value() {
            if t == Taken::Pending {
                break;
            }
            self.taken.pop_first();
            self.offset = Some(self.offset.map_or(id + 1, |o| o.max(id + 1)));
        }
    }

    /// A failed call: reconnect after `retry_ms` (the reconnect interval when `None`).
    fn failed(&mut self, why: String, retry_ms: Option<u64>, now: i64) -> Polled {
        let wait = retry_ms.unwrap_or(self.setup.reconnect_ms).max(1) as i64;
        self.wait_until = now + wait;
        self.link = Link::Reconnecting {
            next_at: self.wait_until,
        };
        self.attempts = self.attempts.saturating_add(1);
        self.last_error = Some(why);
        Polled {
            error: true,
            ..Polled::default()
        }
    }

    /// What an update is to the gateway.
    fn classify(&self, u: Update) -> Class {
        let Some(m) = u.message else {
            return Class::Other;
        };
        let group = match m.chat.kind.as_str() {
            "private" => false,
            "group" | "supergroup" => true,
            _ => return Class::Other,
        };
        let Some(text) = m.text.filter(|t| !t.trim().is_empty()) else {
            return Class::Other;
        };
        let from = m.from.as_ref();
        if from.is_some_and(|f| f.is_bot) || !self.allowed(from) {
            return Class::Filtered;
        }
        Class::Message(Inbound {
            update_id: u.update_id,
            session_key: route::session_key(
                &self.setup.agent,
                "telegram",
                &self.setup.channel,
                if group { "group" } else { "direct" },
                m.chat.id,
            ),
            text,
            idem: format!("telegram:{}:{}", self.setup.channel, u.update_id),
        })
    }

    /// Whether `from` may talk to the agent.
    fn allowed(&self, from: Option<&wire::User>) -> bool {
        allowed(&self.setup.allow_from, from)
    }
}

/// Whether sender `from` is on `allow_from` (ids, `@usernames` without regard to case, `*`;
/// an empty list takes everyone).
pub fn allowed(allow_from: &[String], from: Option<&wire::User>) -> bool {
    if allow_from.is_empty() {
        return true;
    }
    let Some(from) = from else { return false };
    let id = from.id.to_string();
    allow_from.iter().any(|a| {
        let a = a.trim();
        a == "*"
            || a == id
            || from
                .username
                .as_deref()
                .is_some_and(|u| a.strip_prefix('@').unwrap_or(a).eq_ignore_ascii_case(u))
    })
}

/// [`Poller::classify`]'s answer.
enum Class {
    Message(Inbound),
    Filtered,
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(allow: &[&str]) -> Setup {
        Setup {
            channel: "telegram".into(),
            agent: "main".into(),
            allow_from: allow.iter().map(|s| s.to_string()).collect(),
            reconnect_ms: 500,
            poll_timeout_s: 30,
        }
    }

    fn ok(updates: &str) -> Answer {
        Answer::Http {
            status: 200,
            body: format!(r#"{{"ok":true,"result":[{updates}]}}"#).into_bytes(),
        }
    }

    fn msg(id: i64, chat: i64, from: i64, text: &str) -> String {
        format!(
            r#"{{"update_id":{id},"message":{{"message_id":{id},"from":{{"id":{from},"is_bot":false,"username":"u{from}"}},"chat":{{"id":{chat},"type":"private"}},"date":0,"text":"{text}"}}}}"#
        )
    }

    #[test]
    fn acknowledges_only_what_was_admitted() {
        let mut p = Poller::new(setup(&[]));
        assert_eq!(
            p.next(0),
            Next::Poll {
                offset: None,
                timeout_s: 30
            }
        );
        let got = p.on_poll(
            ok(&format!("{},{}", msg(5, 1, 1, "a"), msg(6, 2, 2, "b"))),
            0,
        );
        assert_eq!(got.inbound.len(), 2);
        assert_eq!(got.inbound[0].session_key, "agent:main:telegram:direct:1");
        assert_eq!(got.inbound[0].idem, "telegram:telegram:5");
        // Not polled again, nor acknowledged, before both are admitted.
        assert_eq!(p.next(0), Next::Admitting);
        assert_eq!(p.offset(), None);
        p.admitted(5);
        assert_eq!(p.offset(), Some(6));
        assert_eq!(p.next(0), Next::Admitting);
        p.admitted(6);
        assert_eq!(
            p.next(0),
            Next::Poll {
                offset: Some(7),
                timeout_s: 30
            }
        );
    }

    #[test]
    fn a_refusal_keeps_it_and_what_follows_unacknowledged() {
        let mut p = Poller::new(setup(&[]));
        let b = format!(
            "{},{},{}",
            msg(5, 1, 1, "a"),
            msg(6, 1, 1, "b"),
            msg(7, 1, 1, "c")
        );
        p.on_poll(ok(&b), 0);
        p.admitted(5);
        p.refused(6, "QUEUE_FULL", Some(2_000), 10);
        assert_eq!(p.offset(), Some(6));
        assert_eq!(p.next(10), Next::Wait(2_010));
        // Redelivered: 5 is acknowledged (a duplicate now), 6 and 7 come again.
        let got = p.on_poll(ok(&b), 2_010);
        assert_eq!(got.duplicates, 1);
        let ids: Vec<i64> = got.inbound.iter().map(|i| i.update_id).collect();
        assert_eq!(ids, [6, 7]);
    }

    #[test]
    fn duplicates_are_taken_once() {
        let mut p = Poller::new(setup(&[]));
        let got = p.on_poll(
            ok(&format!("{},{}", msg(5, 1, 1, "a"), msg(5, 1, 1, "a"))),
            0,
        );
        assert_eq!((got.inbound.len(), got.duplicates), (1, 1));
        p.admitted(5);
        let got = p.on_poll(ok(&msg(5, 1, 1, "a")), 1);
        assert_eq!((got.inbound.len(), got.duplicates), (0, 1));
    }

    #[test]
    fn flood_control_waits_retry_after() {
        let mut p = Poller::new(setup(&[]));
        let got = p.on_poll(
            Answer::Http {
                status: 429,
                body: br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#.to_vec(),
            },
            1_000,
        );
        assert!(got.error);
        assert_eq!(p.link, Link::Reconnecting { next_at: 4_000 });
        assert_eq!(p.next(3_999), Next::Wait(4_000));
        assert!(matches!(p.next(4_000), Next::Poll { .. }));
    }

    #[test]
    fn network_errors_back_off_and_a_bad_token_stops() {
        let mut p = Poller::new(setup(&[]));
        p.on_poll(Answer::Failed("connection refused".into()), 0);
        assert_eq!(p.next(0), Next::Wait(500));
        assert_eq!(p.attempts, 1);
        p.on_poll(ok(""), 500);
        assert_eq!((p.link.clone(), p.attempts), (Link::Connected, 0));
        p.on_poll(
            Answer::Http {
                status: 401,
                body: br#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#.to_vec(),
            },
            600,
        );
        assert_eq!(p.next(10_000), Next::Stop);
    }

    #[test]
    fn others_groups_and_strangers() {
        let mut p = Poller::new(setup(&["7", "@Ann"]));
        let group = r#"{"update_id":3,"message":{"message_id":1,"from":{"id":9,"is_bot":false,"username":"ann"},"chat":{"id":-100,"type":"supergroup"},"text":"hey"}}"#;
        let photo = r#"{"update_id":4,"message":{"message_id":2,"from":{"id":7,"is_bot":false},"chat":{"id":7,"type":"private"}}}"#;
        let b = format!(
            "{},{group},{photo},{}",
            msg(1, 7, 7, "x"),
            msg(2, 8, 8, "y")
        );
        let got = p.on_poll(ok(&b), 0);
        let keys: Vec<&str> = got.inbound.iter().map(|i| i.session_key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "agent:main:telegram:direct:7",
                "agent:main:telegram:group:-100"
            ]
        );
        assert_eq!(got.filtered, 1);
        p.admitted(1);
        p.admitted(3);
        assert_eq!(p.offset(), Some(5));
    }
}
