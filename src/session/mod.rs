//! Sessions on their owner shard: history, the per-session ordering lane, and the idempotency
//! cache of the runs submitted to them.
//!
//! Invariant: a session exists only on `owner(key)`. Its lane runs one job at a time in arrival
//! order; a job is acknowledged (`accepted`/`started`) when it enters the lane.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use serde_json::{json, Value};

use crate::config::Config;
use crate::protocol::SessionKey;
use crate::shard::{ConnRef, ReplyTo};

/// Which method started a run (decides its answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// `agent`: `accepted` then a final `res`.
    Agent,
    /// `chat.send` / `sessions.send`: `started`, then `chat` events.
    Chat,
}

/// A run waiting in or running from a lane.
#[derive(Debug)]
pub struct Job {
    /// `runId` (= idempotencyKey).
    pub run_id: String,
    /// The user message.
    pub message: String,
    /// Where the final `res` goes (agent runs).
    pub reply: ReplyTo,
    /// Who receives the run's events.
    pub watcher: ConnRef,
    /// Which method.
    pub kind: RunKind,
    /// Dedup key `method:idempotencyKey`.
    pub dedup_key: String,
    /// When it was accepted.
    pub accepted_at: i64,
}

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
    /// Changes on reset.
    pub session_id: RefCell<String>,
    /// Created, ms.
    pub created_at: i64,
    /// Last activity, ms.
    pub updated_at: Cell<i64>,
    /// Optional label.
    pub label: RefCell<Option<String>>,
    /// Messages, oldest first, bounded by `agents.historyLimit`.
    pub history: RefCell<VecDeque<Value>>,
    /// Jobs waiting, FIFO.
    pub lane: RefCell<VecDeque<Job>>,
    /// A lane task is running.
    pub running: Cell<bool>,
    /// The job being run.
    pub current: RefCell<Option<Rc<RunCtl>>>,
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
    pub fn push_history(&self, msg: Value, limit: usize) {
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
        /// `res` ok payload of the final answer.
        payload: Option<Value>,
        /// `error` object of a failed final answer.
        error: Option<Value>,
    },
}

/// The idempotency cache of one shard: bounded, expiring.
#[derive(Debug)]
pub struct Dedup {
    window_ms: i64,
    capacity: usize,
    map: HashMap<String, (i64, Cached)>,
    order: VecDeque<(i64, String)>,
    /// Entries evicted before their window for capacity.
    pub evicted: u64,
}

impl Dedup {
    /// A cache with the configured window and capacity.
    pub fn new(window_ms: i64, capacity: usize) -> Dedup {
        Dedup {
            window_ms,
            capacity: capacity.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    fn expire(&mut self, now: i64, inserting: bool) {
        while let Some((t, _)) = self.order.front() {
            let full = inserting && self.map.len() >= self.capacity;
            if now - *t < self.window_ms && !full {
                break;
            }
            let (t, k) = self.order.pop_front().expect("front exists");
            if let Some((at, _)) = self.map.get(&k) {
                if *at == t {
                    if now - t < self.window_ms {
                        self.evicted += 1;
                    }
                    self.map.remove(&k);
                }
            }
        }
    }

    /// The cached state of `key`, if within the window.
    pub fn get_mut(&mut self, key: &str, now: i64) -> Option<&mut Cached> {
        self.expire(now, false);
        self.map.get_mut(key).map(|(_, c)| c)
    }

    /// Records `key` as in flight.
    pub fn begin(&mut self, key: String, now: i64) {
        self.expire(now, true);
        self.order.push_back((now, key.clone()));
        self.map.insert(
            key,
            (
                now,
                Cached::InFlight {
                    joiners: Vec::new(),
                },
            ),
        );
    }

    /// Records the final answer and returns the joiners to answer.
    pub fn finish(
        &mut self,
        key: &str,
        payload: Option<Value>,
        error: Option<Value>,
    ) -> Vec<ReplyTo> {
        match self.map.get_mut(key) {
            Some((_, c)) => match std::mem::replace(c, Cached::Done { payload, error }) {
                Cached::InFlight { joiners } => joiners,
                Cached::Done { .. } => Vec::new(),
            },
            None => Vec::new(),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The sessions a shard owns, and its dedup cache.
#[derive(Debug)]
pub struct SessionTable {
    /// Sessions by normalised key.
    pub map: RefCell<HashMap<String, Rc<Session>>>,
    /// Idempotency cache.
    pub dedup: RefCell<Dedup>,
}

impl SessionTable {
    /// An empty table.
    pub fn new(cfg: &Config) -> SessionTable {
        SessionTable {
            map: RefCell::new(HashMap::new()),
            dedup: RefCell::new(Dedup::new(
                cfg.deduplication.window.0 as i64,
                cfg.deduplication.capacity,
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

#[cfg(test)]
mod tests {
    use super::*;
    use shards::ShardId;

    fn reply() -> ReplyTo {
        ReplyTo {
            conn: ConnRef {
                shard: ShardId(0),
                id: 1,
            },
            req_id: "r".into(),
        }
    }

    #[test]
    fn dedup_in_flight_then_done_then_expired() {
        let mut d = Dedup::new(1000, 10);
        d.begin("agent:k".into(), 0);
        match d.get_mut("agent:k", 10).unwrap() {
            Cached::InFlight { joiners } => joiners.push(reply()),
            _ => panic!(),
        }
        let j = d.finish("agent:k", Some(json!({"ok":1})), None);
        assert_eq!(j.len(), 1);
        assert!(matches!(
            d.get_mut("agent:k", 20),
            Some(Cached::Done { .. })
        ));
        assert!(d.get_mut("agent:k", 1001).is_none());
    }

    #[test]
    fn dedup_capacity_evicts_oldest() {
        let mut d = Dedup::new(1_000_000, 2);
        d.begin("a".into(), 0);
        d.begin("b".into(), 1);
        d.begin("c".into(), 2);
        assert!(d.get_mut("a", 3).is_none());
        assert!(d.get_mut("c", 3).is_some());
        assert_eq!(d.evicted, 1);
    }
}
