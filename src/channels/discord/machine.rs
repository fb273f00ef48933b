//! The Discord Gateway connection as a sans-IO state machine: when to connect and where
//! (the gateway, or the session's `resume_gateway_url`), what to send after Hello (Identify or
//! Resume), when to heartbeat (the first after `interval × jitter`, then every interval), what
//! a missing ACK, op 1, op 7, op 9 and each close code mean, and which MESSAGE_CREATE events
//! become messages. No sockets, no clock, no token: the driver (`super::driver`) does the
//! I/O, passes `now`, and turns [`Op`]s into payloads with the token ([`super::wire`]).
//!
//! Invariants:
//! - A heartbeat is never sent while the previous one is unacknowledged: that connection is
//!   a zombie, closed with a non-1000 code (so the session stays resumable) and resumed.
//! - After a drop the client resumes with the last sequence number it received, on the
//!   session's resume URL; only close codes 4007/4009 and op 9 `d: false` start a new session
//!   (Identify on the main gateway URL), and 4004, 4010–4014 stop for good.
//! - A message id is taken once (duplicates counted, dropped), however often Discord
//!   delivers it (a Resume replays events).

use std::collections::{HashSet, VecDeque};

use super::wire::{self, op, Payload};
use crate::channels::link::Link;
use crate::channels::route;

/// How many message ids the dedup window keeps.
const SEEN: usize = 4096;

/// How long a new connection may take to say Hello, ms.
pub const HELLO_WAIT_MS: i64 = 20_000;

/// The close code the client uses to drop a connection it wants to resume (anything but
/// 1000/1001, which end the session).
pub const RESUMABLE_CLOSE: u16 = 4000;

/// What the machine needs of the channel's configuration.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The channel's name.
    pub channel: String,
    /// The agent that answers.
    pub agent: String,
    /// Sender allowlist (user ids, usernames, `*`); empty takes everyone.
    pub allow_from: Vec<String>,
    /// Wait after a failure, ms.
    pub reconnect_ms: u64,
    /// The Gateway URL to Identify on.
    pub gateway_url: String,
    /// Seed of the jitter (heartbeat start, Identify delay after op 9).
    pub seed: u64,
}

/// What the driver does next while no connection is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Open a WebSocket to this URL, then report [`Machine::connected`] or
    /// [`Machine::connect_failed`].
    Connect(String),
    /// Sleep until this time (ms), then ask again.
    Wait(i64),
    /// A connection is open: read frames, call [`Machine::tick`] at [`Machine::deadline`].
    Open,
    /// Stopped for good ([`Link::Stopped`] says why).
    Stop,
}

/// A payload to send (the driver adds the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// op 1 with the last sequence.
    Heartbeat(Option<u64>),
    /// op 2.
    Identify,
    /// op 6.
    Resume {
        /// The session.
        session_id: String,
        /// The last sequence received.
        seq: Option<u64>,
    },
}

/// A message to submit to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Its message id.
    pub message_id: String,
    /// The session it goes to.
    pub session_key: String,
    /// Its text.
    pub text: String,
    /// Its idempotency key (`discord:<channel>:<message_id>`).
    pub idem: String,
}

/// What the driver does after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Send this payload.
    Send(Op),
    /// Close the connection with this code; the machine has already moved on.
    Close(u16),
    /// Submit this message.
    Inbound(Inbound),
    /// A message already taken (count it).
    Duplicate,
    /// A message from a bot or a sender outside the allowlist (count it).
    Filtered,
}

/// A live session: what Resume needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    id: String,
    resume_url: String,
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection; the next opens at this time (ms).
    Down(i64),
    /// A connection is open.
    Up,
    /// Will not reconnect.
    Stopped,
}

/// One channel's Gateway connection.
#[derive(Debug)]
pub struct Machine {
    setup: Setup,
    phase: Phase,
    session: Option<Session>,
    seq: Option<u64>,
    interval_ms: Option<u64>,
    next_beat: Option<i64>,
    /// Until Hello: when the connection is given up.
    hello_by: Option<i64>,
    awaiting_ack: bool,
    beat_sent_at: i64,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    rng: u64,
    /// The state to report.
    pub link: Link,
    /// The last failure.
    pub last_error: Option<String>,
    /// Failed attempts since the last READY/RESUMED.
    pub attempts: u32,
    /// When the last READY/RESUMED came, ms.
    pub last_connected_at: Option<i64>,
    /// When the last message came, ms.
    pub last_inbound_at: Option<i64>,
    /// The last heartbeat's round trip, ms.
    pub latency_ms: Option<u64>,
    /// Sessions resumed (RESUMED received).
    pub resumes: u64,
    /// Connections dropped for a missing heartbeat ACK.
    pub zombies: u64,
}

impl Machine {
    /// A machine that connects at once.
    pub fn new(setup: Setup) -> Machine {
        let rng = setup.seed | 1;
        Machine {
            setup,
            phase: Phase::Down(0),
            session: None,
            seq: None,
            interval_ms: None,
            next_beat: None,
            hello_by: None,
            awaiting_ack: false,
            beat_sent_at: 0,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            rng,
            link: Link::Connecting,
            last_error: None,
            attempts: 0,
            last_connected_at: None,
            last_inbound_at: None,
            latency_ms: None,
            resumes: 0,
            zombies: 0,
        }
    }

    /// The last sequence number received.
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// The session id, when there is one to resume.
    pub fn session_id(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.id.as_str())
    }

    /// What to do at `now`.
    pub fn next(&self, now: i64) -> Next {
        match self.phase {
            Phase::Stopped => Next::Stop,
            Phase::Up => Next::Open,
            Phase::Down(at) if now < at => Next::Wait(at),
            Phase::Down(_) => Next::Connect(match &self.session {
                Some(s) => wire::resume_url(&s.resume_url),
                None => self.setup.gateway_url.clone(),
            }),
        }
    }

    /// The WebSocket is open (upgrade done) at `now`; Hello comes next, within
    /// [`HELLO_WAIT_MS`].
    pub fn connected(&mut self, now: i64) {
        self.phase = Phase::Up;
        self.interval_ms = None;
        self.next_beat = None;
        self.hello_by = Some(now + HELLO_WAIT_MS);
        self.awaiting_ack = false;
    }

    /// Opening the WebSocket failed.
    pub fn connect_failed(&mut self, why: &str, now: i64) {
        // The error names the step (`connect host:port: …`, `TLS handshake…`, `upgrade…`).
        self.down_after_failure(why.to_string(), now);
    }

    /// When [`Machine::tick`] is due (the next heartbeat, or the end of the wait for
    /// Hello), ms.
    pub fn deadline(&self) -> Option<i64> {
        match self.phase {
            Phase::Up => self.next_beat.or(self.hello_by),
            _ => None,
        }
    }

    /// Time passed: heartbeat when due, or drop a zombie connection (or one that never said
    /// Hello).
    pub fn tick(&mut self, now: i64) -> Vec<Out> {
        if let (Phase::Up, Some(by)) = (self.phase, self.hello_by) {
            if now >= by {
                self.down_after_failure("no Hello from the Gateway".into(), now);
                return vec![Out::Close(RESUMABLE_CLOSE)];
            }
        }
        let (Phase::Up, Some(at), Some(interval)) = (self.phase, self.next_beat, self.interval_ms)
        else {
            return Vec::new();
        };
        if now < at {
            return Vec::new();
        }
        if self.awaiting_ack {
            // The last heartbeat was not acknowledged within an interval: a zombie.
            self.zombies += 1;
            self.last_error = Some("heartbeat not acknowledged (zombie connection)".into());
            self.down(now);
            return vec![Out::Close(RESUMABLE_CLOSE)];
        }
        self.next_beat = Some(now + interval as i64);
        vec![self.beat(now)]
    }

    /// A text message from the Gateway at `now`.
    pub fn on_text(&mut self, text: &str, now: i64) -> Vec<Out> {
        if self.phase != Phase::Up {
            return Vec::new();
        }
        let Ok(p) = serde_json::from_str::<Payload>(text) else {
            // One unreadable payload does not end the session.
            self.last_error = Some("an unreadable Gateway payload".into());
            return Vec::new();
        };
        match p.op {
            op::HELLO => {
                let Ok(h) = serde_json::from_value::<wire::Hello>(p.d) else {
                    self.last_error = Some("Hello without heartbeat_interval".into());
                    self.down_after_failure("bad Hello".into(), now);
                    return vec![Out::Close(RESUMABLE_CLOSE)];
                };
                let interval = h.heartbeat_interval.max(1);
                self.interval_ms = Some(interval);
                self.hello_by = None;
                let jitter = (interval as f64 * self.random_unit()) as i64;
                self.next_beat = Some(now + jitter);
                self.awaiting_ack = false;
                let first = match (&self.session, self.seq) {
                    (Some(s), seq) => Op::Resume {
                        session_id: s.id.clone(),
                        seq,
                    },
                    (None, _) => Op::Identify,
                };
                vec![Out::Send(first)]
            }
            op::HEARTBEAT_ACK => {
                if self.awaiting_ack {
                    self.latency_ms = Some((now - self.beat_sent_at).max(0) as u64);
                }
                self.awaiting_ack = false;
                Vec::new()
            }
            // The server wants a heartbeat now (the schedule stays).
            op::HEARTBEAT => vec![self.beat(now)],
            op::RECONNECT => {
                self.last_error = Some("the Gateway asked to reconnect (op 7)".into());
                self.down(now);
                vec![Out::Close(RESUMABLE_CLOSE)]
            }
            op::INVALID_SESSION => {
                if p.d.as_bool() == Some(true) {
                    self.last_error = Some("invalid session, resumable (op 9)".into());
                    self.down(now);
                    vec![Out::Close(RESUMABLE_CLOSE)]
                } else {
                    // A new session, after 1–5 s as Discord asks.
                    self.session = None;
                    self.seq = None;
                    self.last_error = Some("invalid session (op 9)".into());
                    let wait = 1_000 + (4_000.0 * self.random_unit()) as i64;
                    self.down(now + wait);
                    vec![Out::Close(1000)]
                }
            }
            op::DISPATCH => {
                if let Some(s) = p.s {
                    self.seq = Some(self.seq.map_or(s, |q| q.max(s)));
                }
                self.dispatch(p.t.as_deref().unwrap_or(""), p.d, now)
            }
            _ => Vec::new(),
        }
    }

    /// The connection ended: the server closed with `code` (None: no close frame, the socket
    /// dropped), for `why`.
    pub fn on_close(&mut self, code: Option<u16>, why: &str, now: i64) {
        if self.phase != Phase::Up {
            return;
        }
        let what = match code {
            Some(c) => format!("closed by the Gateway: {c} {why}"),
            None => format!("connection lost: {why}"),
        };
        match code {
            Some(c @ (4004 | 4010..=4014)) => {
                let reason = match c {
                    4004 => "authentication failed (4004): the token is wrong or revoked",
                    4010 => "invalid shard (4010)",
                    4011 => "sharding required (4011)",
                    4012 => "invalid API version (4012)",
                    4013 => "invalid intents (4013)",
                    _ => "disallowed intents (4014): enable them in the developer portal",
                };
                self.last_error = Some(what);
                self.stop(reason.to_string());
            }
            Some(4007 | 4009) => {
                // Bad sequence, or the session timed out: a new one.
                self.session = None;
                self.seq = None;
                self.down_after_failure(what, now);
            }
            _ => self.down_after_failure(what, now),
        }
    }

    /// Stops for good with `reason`.
    pub fn stop(&mut self, reason: String) {
        self.phase = Phase::Stopped;
        self.next_beat = None;
        self.hello_by = None;
        self.link = Link::Stopped { reason };
    }

    /// A heartbeat, sent now.
    fn beat(&mut self, now: i64) -> Out {
        self.awaiting_ack = true;
        self.beat_sent_at = now;
        Out::Send(Op::Heartbeat(self.seq))
    }

    /// A dispatch event.
    fn dispatch(&mut self, t: &str, d: serde_json::Value, now: i64) -> Vec<Out> {
        match t {
            "READY" => match serde_json::from_value::<wire::Ready>(d) {
                Ok(r) => {
                    self.session = Some(Session {
                        id: r.session_id,
                        resume_url: r.resume_gateway_url,
                    });
                    self.up(now);
                    Vec::new()
                }
                Err(_) => {
                    self.last_error = Some("READY without session_id".into());
                    Vec::new()
                }
            },
            "RESUMED" => {
                self.resumes += 1;
                self.up(now);
                Vec::new()
            }
            "MESSAGE_CREATE" => match serde_json::from_value::<wire::Message>(d) {
                Ok(m) => vec![self.classify(m, now)],
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// READY or RESUMED: the session is live.
    fn up(&mut self, now: i64) {
        self.link = Link::Connected;
        self.attempts = 0;
        self.last_connected_at = Some(now);
    }

    /// What a message is to the gateway.
    fn classify(&mut self, m: wire::Message, now: i64) -> Out {
        if self.seen.contains(&m.id) {
            return Out::Duplicate;
        }
        self.remember(m.id.clone());
        if m.author.bot || !allowed(&self.setup.allow_from, &m.author) {
            return Out::Filtered;
        }
        let text = m.content;
        if text.trim().is_empty() {
            return Out::Filtered;
        }
        self.last_inbound_at = Some(now);
        let peer = if m.guild_id.is_some() {
            "channel"
        } else {
            "direct"
        };
        Out::Inbound(Inbound {
            session_key: route::session_key(
                &self.setup.agent,
                "discord",
                &self.setup.channel,
                peer,
                &m.channel_id,
            ),
            idem: format!("discord:{}:{}", self.setup.channel, m.id),
            message_id: m.id,
            text,
        })
    }

    fn remember(&mut self, id: String) {
        if self.seen_order.len() >= SEEN {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(id.clone());
        self.seen_order.push_back(id);
    }

    /// A planned drop: reconnect at `at` (the session kept unless the caller cleared it).
    fn down(&mut self, at: i64) {
        self.phase = Phase::Down(at);
        self.next_beat = None;
        self.hello_by = None;
        self.awaiting_ack = false;
        self.link = Link::Reconnecting { next_at: at };
    }

    /// A failure: reconnect after the reconnect interval.
    fn down_after_failure(&mut self, why: String, now: i64) {
        self.attempts = self.attempts.saturating_add(1);
        self.last_error = Some(why);
        self.down(now + self.setup.reconnect_ms.max(1) as i64);
    }

    /// A number in [0, 1) (xorshift64*; seeded by the driver, fixed in tests).
    fn random_unit(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Whether `author` is on `allow_from` (user ids, usernames with or without `@` regardless
/// of case, `*`; an empty list takes everyone).
pub fn allowed(allow_from: &[String], author: &wire::User) -> bool {
    allow_from.is_empty()
        || allow_from.iter().any(|a| {
            let a = a.trim();
            a == "*"
                || a == author.id
                || author
                    .username
                    .as_deref()
                    .is_some_and(|u| a.strip_prefix('@').unwrap_or(a).eq_ignore_ascii_case(u))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(allow: &[&str]) -> Setup {
        Setup {
            channel: "discord".into(),
            agent: "main".into(),
            allow_from: allow.iter().map(|s| s.to_string()).collect(),
            reconnect_ms: 500,
            gateway_url: "ws://gw/?v=10&encoding=json".into(),
            seed: 42,
        }
    }

    fn hello(interval: u64) -> String {
        format!(r#"{{"op":10,"d":{{"heartbeat_interval":{interval}}},"s":null,"t":null}}"#)
    }

    fn ready(seq: u64) -> String {
        format!(
            r#"{{"op":0,"s":{seq},"t":"READY","d":{{"v":10,"session_id":"sess1","resume_gateway_url":"ws://resume","user":{{"id":"1","bot":true}}}}}}"#
        )
    }

    fn message(seq: u64, id: &str, guild: bool, author: &str, bot: bool, text: &str) -> String {
        let guild = if guild { r#","guild_id":"900""# } else { "" };
        format!(
            r#"{{"op":0,"s":{seq},"t":"MESSAGE_CREATE","d":{{"id":"{id}","channel_id":"77"{guild},"author":{{"id":"{author}","username":"u{author}","bot":{bot}}},"content":"{text}"}}}}"#
        )
    }

    /// A machine past Hello and READY at time 0, heartbeating every 1000 ms.
    fn ready_machine() -> Machine {
        let mut m = Machine::new(setup(&[]));
        assert_eq!(
            m.next(0),
            Next::Connect("ws://gw/?v=10&encoding=json".into())
        );
        m.connected(0);
        assert_eq!(m.on_text(&hello(1000), 0), [Out::Send(Op::Identify)]);
        assert!(m.on_text(&ready(1), 0).is_empty());
        assert_eq!(m.link, Link::Connected);
        m
    }

    #[test]
    fn heartbeats_start_with_jitter_then_every_interval() {
        let mut m = ready_machine();
        let first = m.deadline().unwrap();
        assert!((0..1000).contains(&first), "first beat at {first}");
        assert!(m.tick(first - 1).is_empty());
        assert_eq!(m.tick(first), [Out::Send(Op::Heartbeat(Some(1)))]);
        assert_eq!(m.deadline(), Some(first + 1000));
        m.on_text(r#"{"op":11}"#, first + 30);
        assert_eq!(m.latency_ms, Some(30));
        assert_eq!(m.tick(first + 1000), [Out::Send(Op::Heartbeat(Some(1)))]);
        // The server asks for one: sent at once, the schedule kept.
        m.on_text(r#"{"op":11}"#, first + 1001);
        assert_eq!(
            m.on_text(r#"{"op":1,"d":null}"#, first + 1500),
            [Out::Send(Op::Heartbeat(Some(1)))]
        );
        assert_eq!(m.deadline(), Some(first + 2000));
    }

    #[test]
    fn a_missing_ack_is_a_zombie_closed_and_resumed() {
        let mut m = ready_machine();
        m.on_text(&message(5, "m1", true, "9", false, "hi"), 10);
        let first = m.deadline().unwrap();
        m.tick(first);
        // No ACK before the next beat is due.
        assert_eq!(m.tick(first + 1000), [Out::Close(RESUMABLE_CLOSE)]);
        assert_eq!(m.zombies, 1);
        assert!(matches!(m.link, Link::Reconnecting { .. }));
        // At once, to the session's resume URL, resuming with the last sequence.
        assert_eq!(
            m.next(first + 1000),
            Next::Connect("ws://resume/?v=10&encoding=json".into())
        );
        m.connected(0);
        assert_eq!(
            m.on_text(&hello(1000), first + 1001),
            [Out::Send(Op::Resume {
                session_id: "sess1".into(),
                seq: Some(5)
            })]
        );
        m.on_text(r#"{"op":0,"s":6,"t":"RESUMED","d":{}}"#, first + 1002);
        assert_eq!(
            (m.link.clone(), m.resumes, m.seq()),
            (Link::Connected, 1, Some(6))
        );
    }

    #[test]
    fn a_drop_resumes_after_the_reconnect_interval() {
        let mut m = ready_machine();
        m.on_text(&message(8, "m1", false, "9", false, "x"), 0);
        m.on_close(None, "connection reset", 100);
        assert_eq!(m.link, Link::Reconnecting { next_at: 600 });
        assert_eq!(m.attempts, 1);
        assert_eq!(m.next(599), Next::Wait(600));
        assert!(matches!(m.next(600), Next::Connect(u) if u.starts_with("ws://resume")));
        m.connect_failed("refused", 600);
        assert_eq!((m.attempts, m.next(700)), (2, Next::Wait(1100)));
        m.connected(0);
        assert_eq!(
            m.on_text(&hello(1000), 1100),
            [Out::Send(Op::Resume {
                session_id: "sess1".into(),
                seq: Some(8)
            })]
        );
    }

    #[test]
    fn op7_reconnects_and_op9_resumes_or_identifies_anew() {
        let mut m = ready_machine();
        assert_eq!(
            m.on_text(r#"{"op":7,"d":null}"#, 50),
            [Out::Close(RESUMABLE_CLOSE)]
        );
        assert!(matches!(m.next(50), Next::Connect(u) if u.starts_with("ws://resume")));
        m.connected(0);
        assert!(matches!(
            m.on_text(&hello(1000), 60)[..],
            [Out::Send(Op::Resume { .. })]
        ));
        // Resumable invalid session: resume again at once.
        assert_eq!(
            m.on_text(r#"{"op":9,"d":true}"#, 70),
            [Out::Close(RESUMABLE_CLOSE)]
        );
        assert!(matches!(m.next(70), Next::Connect(u) if u.starts_with("ws://resume")));
        m.connected(0);
        m.on_text(&hello(1000), 80);
        // Not resumable: a new session on the main URL after 1–5 s.
        assert_eq!(m.on_text(r#"{"op":9,"d":false}"#, 90), [Out::Close(1000)]);
        let Next::Wait(at) = m.next(90) else {
            panic!("waits before identifying")
        };
        assert!((1_090..=5_090).contains(&at), "identify at {at}");
        assert_eq!(
            m.next(at),
            Next::Connect("ws://gw/?v=10&encoding=json".into())
        );
        m.connected(0);
        assert_eq!(m.on_text(&hello(1000), at), [Out::Send(Op::Identify)]);
    }

    #[test]
    fn close_codes_stop_reidentify_or_resume() {
        for code in [4004, 4010, 4011, 4012, 4013, 4014] {
            let mut m = ready_machine();
            m.on_close(Some(code), "", 10);
            assert_eq!(m.next(100_000), Next::Stop, "{code}");
            assert!(
                matches!(&m.link, Link::Stopped { reason } if reason.contains(&code.to_string())),
                "{code}: {:?}",
                m.link
            );
        }
        for code in [4007, 4009] {
            let mut m = ready_machine();
            m.on_close(Some(code), "", 10);
            assert_eq!(
                m.next(510),
                Next::Connect("ws://gw/?v=10&encoding=json".into())
            );
            m.connected(0);
            assert_eq!(
                m.on_text(&hello(1000), 510),
                [Out::Send(Op::Identify)],
                "{code}"
            );
        }
        for code in [Some(4000), Some(1006), Some(4008), None] {
            let mut m = ready_machine();
            m.on_close(code, "", 10);
            assert!(matches!(m.next(510), Next::Connect(u) if u.starts_with("ws://resume")));
            m.connected(0);
            assert!(
                matches!(
                    m.on_text(&hello(1000), 510)[..],
                    [Out::Send(Op::Resume { .. })]
                ),
                "{code:?}"
            );
        }
    }

    #[test]
    fn a_connection_without_hello_is_given_up() {
        let mut m = Machine::new(setup(&[]));
        m.connected(100);
        assert_eq!(m.deadline(), Some(100 + HELLO_WAIT_MS));
        assert!(m.tick(100 + HELLO_WAIT_MS - 1).is_empty());
        assert_eq!(m.tick(100 + HELLO_WAIT_MS), [Out::Close(RESUMABLE_CLOSE)]);
        assert_eq!(m.attempts, 1);
        assert!(matches!(m.next(100 + HELLO_WAIT_MS), Next::Wait(_)));
        // Once Hello came, the deadline is the heartbeat's.
        m.connected(0);
        m.on_text(&hello(1000), 0);
        assert!(m.deadline().unwrap() < 1000);
    }

    #[test]
    fn messages_are_routed_deduplicated_and_filtered() {
        let mut m = Machine::new(setup(&["9", "@Ann"]));
        m.connected(0);
        m.on_text(&hello(1000), 0);
        m.on_text(&ready(1), 0);
        let out = m.on_text(&message(2, "m1", true, "9", false, "in a guild"), 1);
        assert_eq!(
            out,
            [Out::Inbound(Inbound {
                message_id: "m1".into(),
                session_key: "agent:main:discord:channel:77".into(),
                text: "in a guild".into(),
                idem: "discord:discord:m1".into()
            })]
        );
        let out = m.on_text(&message(3, "m2", false, "9", false, "a dm"), 2);
        assert!(
            matches!(&out[..], [Out::Inbound(i)] if i.session_key == "agent:main:discord:direct:77")
        );
        // The same message again (a replay after Resume): taken once.
        assert_eq!(
            m.on_text(&message(4, "m1", true, "9", false, "in a guild"), 3),
            [Out::Duplicate]
        );
        // A bot (our own reply), a stranger, an empty text.
        assert_eq!(
            m.on_text(&message(5, "m3", true, "1", true, "echo"), 4),
            [Out::Filtered]
        );
        assert_eq!(
            m.on_text(&message(6, "m4", true, "8", false, "hey"), 5),
            [Out::Filtered]
        );
        let by_name = message(7, "m5", true, "10", false, "hey").replace("u10", "ann");
        assert!(matches!(m.on_text(&by_name, 6)[..], [Out::Inbound(_)]));
        assert_eq!(m.seq(), Some(7));
    }
}
