//! Sessions on their owner shard: history and the per-session ordering lane.
//!
//! Invariant: a session exists only on `owner(key)`. Its lane runs one job at a time in arrival
//! order; a job is acknowledged (`accepted`/`started`) when it enters the lane.

pub mod history;
pub mod run_entry;
pub mod watchers;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use serde_json::{json, Value};

use crate::delivery::{Job, SeqOrder};
use crate::protocol::SessionKey;
pub use history::{History, HistoryEntry};

/// The provider and model a session reports (`sessions.list` defaults, rows): the echo
/// agent, as `models.list` names it.
pub const MODEL_PROVIDER: &str = "shardgate";
/// See [`MODEL_PROVIDER`].
pub const MODEL: &str = "echo";

/// Abort flag of the running job.
#[derive(Debug)]
pub struct RunCtl {
    /// The run.
    pub run_id: String,
    /// Set by `chat.abort`.
    pub aborted: Cell<bool>,
}

/// One session.
#[derive(Debug)]
pub struct Session {
    /// Normalised key.
    pub key: SessionKey,
    /// The key again, shared by the traces of the session's runs (one string per session,
    /// not one per run).
    pub shared_key: Rc<str>,
    /// Changes on reset.
    pub session_id: RefCell<String>,
    /// Created, ms.
    pub created_at: i64,
    /// Last activity, ms.
    pub updated_at: Cell<i64>,
    /// Optional label.
    pub label: RefCell<Option<String>>,
    /// When `sessions.patch {archived: true}` archived it, ms (listed only when asked for).
    pub archived_at: Cell<Option<i64>>,
    /// Messages, oldest first, bounded by `agents.historyLimit`.
    pub history: RefCell<History>,
    /// Jobs waiting, FIFO.
    pub lane: RefCell<VecDeque<Job>>,
    /// A lane task is running.
    pub running: Cell<bool>,
    /// The job being run.
    pub current: RefCell<Option<Rc<RunCtl>>>,
    /// Sequenced jobs waiting for a predecessor (`sessionSeq` order).
    pub held: RefCell<SeqOrder<Job>>,
}

impl Session {
    fn new(key: SessionKey, now: i64) -> Session {
        Session {
            shared_key: key.as_str().into(),
            key,
            session_id: RefCell::new(uuid::Uuid::new_v4().to_string()),
            created_at: now,
            updated_at: Cell::new(now),
            label: RefCell::new(None),
            archived_at: Cell::new(None),
            history: RefCell::new(History::default()),
            lane: RefCell::new(VecDeque::new()),
            running: Cell::new(false),
            current: RefCell::new(None),
            held: RefCell::new(Default::default()),
        }
    }

    /// The `sessions.list`/`sessions.get`/`sessions.describe` row (OpenClaw's keys where we
    /// have the fact: `kind`, `isMain`, `archived`, the model).
    pub fn row(&self) -> Value {
        let is_main = self.key.as_str() == SessionKey::main(self.key.agent_id()).as_str();
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
            "kind": "direct",
            "isMain": is_main,
            "archived": self.archived_at.get().is_some(),
            "archivedAt": self.archived_at.get(),
            "modelProvider": MODEL_PROVIDER,
            "model": MODEL,
        })
    }

    /// Appends to history, keeping at most `limit` messages.
    pub fn push_history(&self, msg: HistoryEntry<'_>, limit: usize) {
        self.history.borrow_mut().push(&msg, limit);
    }
}

/// The sessions a shard owns.
#[derive(Debug, Default)]
pub struct SessionTable {
    /// Sessions by normalised key.
    pub map: RefCell<HashMap<String, Rc<Session>, ahash::RandomState>>,
    /// Who watches the runs of the keys this shard owns ([`watchers`]).
    pub watchers: watchers::Watchers,
    /// Which keys this shard's connections watch ([`watchers`]).
    pub watching: watchers::Watching,
}

impl SessionTable {
    /// An empty table.
    pub fn new() -> SessionTable {
        SessionTable::default()
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
