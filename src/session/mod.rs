//! Sessions on their owner shard: history, the per-session ordering lane, and the idempotency
//! ring of the runs submitted to them.
//!
//! Invariant: a session exists only on `owner(key)`. Its lane runs one job at a time in arrival
//! order; a job is acknowledged (`accepted`/`started`) when it enters the lane.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::Config;
use crate::protocol::SessionKey;
use crate::queue::Job;
use crate::shard::ReplyTo;

/// Abort flag of the running job.
#[derive(Debug)]
pub struct RunCtl {
    /// The run.
    pub run_id: String,
    /// Set by `chat.abort`.
    pub aborted: Cell<bool>,
}

/// One message of a session's history, as `chat.history` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// `user`, `assistant` or `outbound` (a `send` through a channel).
    pub role: &'static str,
    /// For `outbound`: the channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// For `outbound`: the recipient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The text, as one content part.
    pub content: [TextPart; 1],
    /// When, ms.
    pub timestamp: i64,
    /// The run (message id) it belongs to.
    pub run_id: String,
}

/// A `{"type":"text","text":…}` content part.
#[derive(Debug, Clone, Serialize)]
pub struct TextPart {
    /// Always `text`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The text.
    pub text: String,
}

impl HistoryEntry {
    /// A plain `role` message of `text`.
    pub fn new(role: &'static str, text: &str, timestamp: i64, run_id: &str) -> HistoryEntry {
        HistoryEntry {
            role,
            channel: None,
            to: None,
            content: [TextPart {
                kind: "text",
                text: text.to_string(),
            }],
            timestamp,
            run_id: run_id.to_string(),
        }
    }
}

/// One session.
#[derive(Debug)]
pub struct Session {
    /// Normalised key.
    pub key: SessionKey,
    /// Changes on reset.
    pub session_id: RefCell<String>,
    /// Created, ms.
    pub created_at: i64,
    /// Last activity, ms.
    pub updated_at: Cell<i64>,
    /// Optional label.
    pub label: RefCell<Option<String>>,
    /// Messages, oldest first, bounded by `agents.historyLimit`.
    pub history: RefCell<VecDeque<HistoryEntry>>,
    /// Jobs waiting, FIFO.
    pub lane: RefCell<VecDeque<Job>>,
    /// A lane task is running.
    pub running: Cell<bool>,
    /// The job being run.
    pub current: RefCell<Option<Rc<RunCtl>>>,
    /// Next expected client `sessionSeq` (None until the first sequenced message).
    pub next_seq: Cell<Option<u64>>,
    /// Sequenced jobs waiting for a predecessor.
    pub held: RefCell<std::collections::BTreeMap<u64, Job>>,
}

impl Session {
    fn new(key: SessionKey, now: i64) -> Session {
        Session {
            key,
            session_id: RefCell::new(uuid::Uuid::new_v4().to_string()),
            created_at: now,
            updated_at: Cell::new(now),
            label: RefCell::new(None),
            history: RefCell::new(VecDeque::new()),
            lane: RefCell::new(VecDeque::new()),
            running: Cell::new(false),
            current: RefCell::new(None),
            next_seq: Cell::new(None),
            held: RefCell::new(Default::default()),
        }
    }

    /// The `sessions.list`/`sessions.get` row.
    pub fn row(&self) -> Value {
        json!({
            "key": self.key.as_str(),
            "sessionKey": self.key.as_str(),
            "sessionId": *self.session_id.borrow(),
            "agentId": self.key.agent_id(),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at.get(),
            "label": *self.label.borrow(),
            "messageCount": self.history.borrow().len(),
            "running": self.current.borrow().as_ref().map(|c| c.run_id.clone()),
            "queued": self.lane.borrow().len(),
        })
    }

    /// Appends to history, keeping at most `limit` messages.
    pub fn push_history(&self, msg: HistoryEntry, limit: usize) {
        let mut h = self.history.borrow_mut();
        h.push_back(msg);
        while h.len() > limit {
            h.pop_front();
        }
    }
}

/// A finished call's answer kept for the dedup window.
#[derive(Debug, Clone)]
pub enum Cached {
    /// Still running: duplicates join it.
    InFlight {
        /// Duplicates of an `agent` call waiting for its final answer.
        joiners: Vec<ReplyTo>,
    },
    /// Done: duplicates get this final payload (or error) again.
    Done {
        /// `res` ok payload of the final answer, serialized once.
        payload: Option<crate::protocol::frame::JsonText>,
        /// `error` object of a failed final answer.
        error: Option<Value>,
    },
}

impl shards::dedup::Prefetch for Cached {
    fn prefetch(&self) {
        match self {
            Cached::InFlight { joiners } => joiners.prefetch(),
            Cached::Done { payload, .. } => payload.prefetch(),
        }
    }
}

/// The sessions a shard owns, and its dedup cache.
#[derive(Debug)]
pub struct SessionTable {
    /// Sessions by normalised key.
    pub map: RefCell<HashMap<String, Rc<Session>, ahash::RandomState>>,
    /// Idempotency cache (`method:idempotencyKey`), a fixed-capacity ring.
    pub dedup: RefCell<shards::dedup::DedupRing<String, Cached>>,
}

impl SessionTable {
    /// An empty table.
    pub fn new(cfg: &Config) -> SessionTable {
        SessionTable {
            map: RefCell::new(HashMap::default()),
            dedup: RefCell::new(shards::dedup::DedupRing::new(
                cfg.deduplication.capacity,
                cfg.deduplication.window.0 as i64,
            )),
        }
    }

    /// The session, created on first use. The bool is true when it was created now.
    pub fn get_or_create(&self, key: &SessionKey, now: i64) -> (Rc<Session>, bool) {
        let mut m = self.map.borrow_mut();
        if let Some(s) = m.get(key.as_str()) {
            return (s.clone(), false);
        }
        let s = Rc::new(Session::new(key.clone(), now));
        m.insert(key.as_str().to_string(), s.clone());
        (s, true)
    }

    /// The session if it exists.
    pub fn get(&self, key: &str) -> Option<Rc<Session>> {
        self.map.borrow().get(key).cloned()
    }

    /// Rows of every session here.
    pub fn rows(&self) -> Vec<Value> {
        self.map.borrow().values().map(|s| s.row()).collect()
    }
}
