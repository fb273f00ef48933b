//! A run id's entry in a shard's run ring: the pipeline stages its message passed there and,
//! on the shard that owns the run id, its run directory record (for `agent.wait`).

/// A record of a run in the run directory (on `owner(runId)`), for `agent.wait`.
#[derive(Debug, Default)]
pub struct RunRecord {
    /// `queued`, `running`, `ok`, `error`, `timeout`, `aborted` (empty: only waited for).
    pub status: &'static str,
    /// When it started.
    pub started_at: Option<i64>,
    /// When it ended.
    pub ended_at: Option<i64>,
    /// Error text.
    pub error: Option<String>,
    /// Waiters to notify at the end.
    pub waiters: Vec<futures_channel::oneshot::Sender<()>>,
}

impl RunRecord {
    /// The statuses of a run that has ended.
    pub const ENDED: [&'static str; 4] = ["ok", "error", "timeout", "aborted"];

    /// Whether the run has ended.
    pub fn ended(&self) -> bool {
        matches!(self.status, "ok" | "error" | "timeout" | "aborted")
    }
}

/// A run id's entry in a shard's run ring ([`crate::shard::GatewayShard::runs`]): the stages its message
/// passed on this shard and, on `owner(runId)`, its run directory record. One entry, one key
/// and one index probe per run rather than two rings' worth.
#[derive(Debug, Default)]
pub struct RunEntry {
    /// Pipeline stages recorded here (`gateway.trace`).
    pub trace: crate::delivery::trace::Trace,
    /// The run directory record (status `""` unless this shard owns the run id, or only
    /// waited for).
    pub record: RunRecord,
}

/// The record has nothing on the heap in the common case (no error text, no waiters).
impl shards::dedup::Prefetch for RunEntry {
    fn prefetch(&self) {
        self.trace.prefetch();
    }
}
