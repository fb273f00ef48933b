//! What one shard holds for agent workers ([`super::worker`]): the runs it handed out, the runs
//! assigned to workers connected here, pings in flight, and each worker's load.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use futures_channel::oneshot;
use shards::ShardId;

use crate::addr::ConnRef;
use crate::delivery::JobKind;

/// A run handed to a worker, as its session's shard tracks it.
pub(crate) struct RunHere {
    pub(crate) watcher: Option<ConnRef>,
    pub(crate) kind: JobKind,
    pub(crate) session_key: String,
    pub(crate) agent_id: String,
    pub(crate) text: String,
    pub(crate) seq: u64,
    pub(crate) chat_seq: u64,
    pub(crate) done: Option<oneshot::Sender<Result<String, String>>>,
}

/// A run assigned to a worker connected here.
pub(crate) struct Assigned {
    pub(crate) session_shard: ShardId,
    pub(crate) worker_conn: ConnRef,
}

/// Per-shard worker state.
#[derive(Default)]
pub struct WorkerState {
    pub(crate) runs: RefCell<HashMap<String, RunHere>>,
    pub(crate) assigned: RefCell<HashMap<String, Assigned>>,
    pub(crate) pings: RefCell<HashMap<String, oneshot::Sender<()>>>,
    /// Runs this shard handed to each worker and that have not finished.
    pub(crate) load: RefCell<HashMap<String, usize>>,
    pub(crate) rr: Cell<usize>,
}

impl std::fmt::Debug for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerState")
            .field("runs", &self.runs.borrow().len())
            .field("assigned", &self.assigned.borrow().len())
            .finish()
    }
}
