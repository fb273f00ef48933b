//! One store writer: the thread that writes the state directory's files (paired devices, node
//! approvals, setup codes), so that no shard does file I/O, and no lock is held across any,
//! when a handshake or a pairing method changes them.
//!
//! A [`Doc`] is one file's contents in memory: an `Arc<T>` snapshot behind a short lock, a
//! version counter bumped by every change, and the version last written. A change is applied
//! in memory at once (readers see it) and hands back a [`Ticket`]. The writer thread, woken
//! through a channel, takes the newest snapshot, encodes it and replaces the file
//! ([`state_file::write_atomic`]: temp file, fsync, rename, fsync of the directory) with no
//! lock held, then releases every ticket up to that version. Changes made while a write is in
//! progress are carried together by the next one, so N changes cost far fewer than N fsyncs,
//! and a caller waits for at most the write in progress and the one that carries its change.
//!
//! Invariants a reader must keep:
//! - No I/O under the lock: a [`Doc`]'s lock guards in-memory state only (snapshot swaps,
//!   versions, waiters); encoding (and sealing) and the file write run on the writer thread
//!   between two short lock sections.
//! - A caller that tells anyone about a change (a device token in hello-ok, an operator's
//!   answer) first awaits its ticket: what was handed out is on disk, and a crash cannot lose
//!   it. Tickets are awaited asynchronously (a `futures_channel::oneshot`, woken from the
//!   writer thread through glommio's cross-thread wake-up), never by blocking a shard.
//! - A failed write changes nothing: every change not yet on disk is undone (memory returns to
//!   the last written snapshot) and every waiting ticket gets the error, which is also logged
//!   and counted; the file shows as failing in `health.dependencies` (`store`) until a later
//!   write of it succeeds.
//! - A `Doc` without a file (tests, memory-only tables) is durable at once: its tickets are
//!   ready.
#![expect(
    clippy::disallowed_types,
    reason = "the lock of a store table shared by all shards and the writer thread; it guards \
              in-memory state only and is never held across I/O"
)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use futures_channel::oneshot;

use super::state_file;

/// Why a change did not reach the disk. Names the file; holds no secret (it is an I/O or
/// encoding error message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct WriteError {
    /// The file that could not be written.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// Counters of the writer, shared with whoever reports them (`/metrics`, health).
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Files replaced (each one fsync'd write).
    pub writes: AtomicU64,
    /// Writes that failed.
    pub errors: AtomicU64,
    /// Tickets that had to wait for a write (the others were durable when asked).
    pub waits: AtomicU64,
    /// The most writes of its file that one waiting ticket saw complete before it was
    /// released: 1 when it waited for its own write only, 2 when a write was in progress when
    /// its change was made. More would mean a caller queued behind other callers' writes.
    pub max_writes_waited: AtomicU64,
    /// Tickets waiting now.
    pub waiting: AtomicU64,
    /// Files whose last write failed, with the error.
    failing: Mutex<BTreeMap<PathBuf, String>>,
    /// Test hook (`/dangerously/store/hold`): while set, a write stops before its I/O, as on
    /// a stalled disk.
    hold: Mutex<bool>,
    released: Condvar,
}

impl WriterStats {
    /// Holds (or lets go of) the writer before the I/O of its next write: a stalled disk, for
    /// tests (`gateway.dangerouslyEnableTestHooks`). Shards go on; only callers waiting for
    /// a write wait.
    pub fn hold(&self, on: bool) {
        *lock(&self.hold) = on;
        self.released.notify_all();
    }

    /// Blocks the writer thread while held.
    fn wait_unheld(&self) {
        let mut held = lock(&self.hold);
        while *held {
            held = self
                .released
                .wait(held)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Files whose last write failed, with the error, by path.
    pub fn failing(&self) -> Vec<(PathBuf, String)> {
        lock(&self.failing)
            .iter()
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect()
    }
}

/// What the writer thread is asked to do.
enum Job {
    /// Write the newest snapshot of a document (if it is ahead of its file).
    Flush(Arc<dyn Flush>),
    /// Answer once every job sent before it is done.
    Barrier(mpsc::Sender<()>),
}

/// A document the writer can bring up to date.
trait Flush: Send + Sync {
    fn flush(&self, stats: &WriterStats);
}

/// The handle of the writer thread. Cheap to clone; the thread ends when every handle (and
/// every [`Doc`] using it) is gone.
#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
}

impl fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreWriter")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl StoreWriter {
    /// Starts the writer thread (`store-writer`).
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start() -> io::Result<StoreWriter> {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(WriterStats::default());
        let st = stats.clone();
        // A thread of its own, outside the shard pool: file writes and fsyncs block, and a
        // shard must never wait on one (glommio's blocking pool would serve too, but it is
        // per executor: one thread here keeps the order of each file's writes simple).
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Flush(doc) => doc.flush(&st),
                        Job::Barrier(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(StoreWriter { tx, stats })
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }

    /// Blocks the calling thread until every write asked for before the call is done. For
    /// the end of the process and for tests; never call it on a shard.
    pub fn wait_idle(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Job::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// The promise of one change: resolved when the change is on disk, or failed when the write
/// carrying it failed (the change was then undone).
#[must_use = "a change is on disk only once its ticket resolved"]
#[derive(Debug)]
pub struct Ticket(Option<oneshot::Receiver<Result<(), WriteError>>>);

impl Ticket {
    /// A ticket of a change that is already durable (or needs no file).
    pub fn ready() -> Ticket {
        Ticket(None)
    }

    /// True when there is nothing to wait for.
    pub fn is_ready(&self) -> bool {
        self.0.is_none()
    }

    /// Waits until the change is on disk.
    ///
    /// # Errors
    /// The write's error (the change was undone), or the writer's end.
    pub async fn wait(self) -> Result<(), WriteError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.await.unwrap_or_else(|_| {
                Err(WriteError {
                    path: String::new(),
                    message: "store writer stopped".into(),
                })
            }),
        }
    }
}

/// Encodes a snapshot into the file's bytes (runs on the writer thread).
pub type Encode<T> = Box<dyn Fn(&T) -> Result<Vec<u8>, String> + Send + Sync>;
/// Replaces a file with bytes (runs on the writer thread): [`state_file::write_atomic`],
/// or a test's stand-in.
pub type Sink = Box<dyn Fn(&Path, &[u8]) -> io::Result<()> + Send + Sync>;

/// One file's contents in memory, kept in step with the file by the writer. Cheap to clone
/// (shared).
pub struct Doc<T> {
    inner: Arc<DocInner<T>>,
}

impl<T> Clone for Doc<T> {
    fn clone(&self) -> Self {
        Doc {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for Doc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("Doc")
            .field("file", &self.inner.file.as_ref().map(|f| &f.path))
            .field("version", &st.version)
            .field("written_version", &st.written_version)
            .finish_non_exhaustive()
    }
}

struct File<T> {
    path: PathBuf,
    encode: Encode<T>,
    sink: Sink,
    writer: StoreWriter,
}

struct DocInner<T> {
    /// `None`: memory only, every change durable at once.
    file: Option<File<T>>,
    state: Mutex<State<T>>,
}

struct Waiter {
    version: u64,
    /// `State::writes` when it started waiting.
    writes_at: u64,
    tx: oneshot::Sender<Result<(), WriteError>>,
}

struct State<T> {
    /// What readers see; changed in place (`Arc::make_mut`), so a change copies the table
    /// only when the writer still holds the previous snapshot.
    current: Arc<T>,
    version: u64,
    /// The snapshot last written (what a failed write returns to) and its version.
    written: Arc<T>,
    written_version: u64,
    /// Key → version of its last change not yet written.
    dirty: HashMap<String, u64>,
    /// A flush of this document is queued or running on the writer.
    queued: bool,
    /// Writes of this file attempted so far.
    writes: u64,
    waiters: Vec<Waiter>,
}

impl<T: Clone + Send + Sync + 'static> Doc<T> {
    /// A document kept in memory only.
    pub fn memory(value: T) -> Doc<T> {
        Doc::build(value, None)
    }

    /// A document written to `path` by `writer` with `encode` (the file already holds
    /// `value`, or nothing when it did not exist).
    pub fn file(value: T, path: PathBuf, encode: Encode<T>, writer: &StoreWriter) -> Doc<T> {
        let sink: Sink = Box::new(state_file::write_atomic);
        Doc::with_sink(value, path, encode, sink, writer)
    }

    /// [`Doc::file`] with another way of replacing the file (tests).
    pub fn with_sink(
        value: T,
        path: PathBuf,
        encode: Encode<T>,
        sink: Sink,
        writer: &StoreWriter,
    ) -> Doc<T> {
        Doc::build(
            value,
            Some(File {
                path,
                encode,
                sink,
                writer: writer.clone(),
            }),
        )
    }

    fn build(value: T, file: Option<File<T>>) -> Doc<T> {
        let v = Arc::new(value);
        Doc {
            inner: Arc::new(DocInner {
                file,
                state: Mutex::new(State {
                    current: v.clone(),
                    version: 0,
                    written: v,
                    written_version: 0,
                    dirty: HashMap::new(),
                    queued: false,
                    writes: 0,
                    waiters: Vec::new(),
                }),
            }),
        }
    }

    /// The current contents (including changes not yet on disk). The lock is held only to
    /// copy the `Arc`.
    pub fn read(&self) -> Arc<T> {
        self.inner.lock().current.clone()
    }

    /// Reads the current contents and, in the same lock section, takes the ticket of `key`'s
    /// last change: what `f` saw of `key` is on disk once the ticket resolves.
    pub fn read_durable<R>(&self, key: &str, f: impl FnOnce(&T) -> R) -> (R, Ticket) {
        let mut st = self.inner.lock();
        let r = f(&st.current);
        let version = st.dirty.get(key).copied();
        let t = self.inner.ticket(&mut st, version);
        (r, t)
    }

    /// Applies `f` to the contents in memory. `f` returns its result and whether it changed
    /// anything under `key` (when it did, the document's version advances and the writer is
    /// woken); it must change nothing when it fails. The ticket covers `key`'s last change,
    /// this one or an earlier one not yet written.
    ///
    /// # Errors
    /// `f`'s error.
    pub fn change<R, E>(
        &self,
        key: &str,
        f: impl FnOnce(&mut T) -> Result<(R, bool), E>,
    ) -> Result<(R, Ticket), E> {
        let (r, ticket, wake) = {
            let mut st = self.inner.lock();
            let (r, changed) = f(Arc::make_mut(&mut st.current))?;
            let mut wake = false;
            if changed {
                st.version += 1;
                let v = st.version;
                st.dirty.insert(key.to_owned(), v);
                if self.inner.file.is_none() {
                    // Nothing to write: durable at once.
                    st.written = st.current.clone();
                    st.written_version = v;
                    st.dirty.clear();
                } else if !st.queued {
                    st.queued = true;
                    wake = true;
                }
            }
            let version = st.dirty.get(key).copied();
            let t = self.inner.ticket(&mut st, version);
            (r, t, wake)
        };
        if wake {
            if let Some(file) = &self.inner.file {
                let job = Job::Flush(self.inner.clone());
                if file.writer.tx.send(job).is_err() {
                    // The writer is gone (only at the end of the process): fail the change as
                    // a write error would.
                    self.inner.fail(&file.path, "store writer stopped".into());
                }
            }
        }
        Ok((r, ticket))
    }
}

impl<T> DocInner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        lock(&self.state)
    }

    /// The ticket of `version` (ready when it is written or absent).
    fn ticket(&self, st: &mut State<T>, version: Option<u64>) -> Ticket {
        match version {
            Some(v) if v > st.written_version => {
                if let Some(f) = &self.file {
                    f.writer.stats.waiting.fetch_add(1, Ordering::Relaxed);
                }
                let (tx, rx) = oneshot::channel();
                st.waiters.push(Waiter {
                    version: v,
                    writes_at: st.writes,
                    tx,
                });
                Ticket(Some(rx))
            }
            _ => Ticket::ready(),
        }
    }

    /// Undoes every change not on disk and fails its waiters.
    fn fail(&self, path: &Path, message: String) {
        let waiters = {
            let mut st = self.lock();
            st.current = st.written.clone();
            st.written_version = st.version;
            st.dirty.clear();
            st.queued = false;
            std::mem::take(&mut st.waiters)
        };
        if let Some(f) = &self.file {
            f.writer
                .stats
                .waiting
                .fetch_sub(waiters.len() as u64, Ordering::Relaxed);
        }
        let e = WriteError {
            path: path.display().to_string(),
            message,
        };
        for w in waiters {
            let _ = w.tx.send(Err(e.clone()));
        }
    }
}

impl<T: Send + Sync> Flush for DocInner<T> {
    fn flush(&self, stats: &WriterStats) {
        let Some(file) = &self.file else { return };
        loop {
            let (version, snapshot) = {
                let mut st = self.lock();
                if st.version == st.written_version {
                    st.queued = false;
                    return;
                }
                (st.version, st.current.clone())
            };
            // No lock from here to the result: shards read and change the table meanwhile.
            stats.wait_unheld();
            let result = (file.encode)(&snapshot)
                .and_then(|bytes| (file.sink)(&file.path, &bytes).map_err(|e| e.to_string()));
            let (released, outcome) = {
                let mut st = self.lock();
                st.writes += 1;
                let out = match &result {
                    Ok(()) => {
                        st.written = snapshot;
                        st.written_version = version;
                        st.dirty.retain(|_, v| *v > version);
                        let (done, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut st.waiters)
                            .into_iter()
                            .partition(|w| w.version <= version);
                        st.waiters = wait;
                        (done, Ok(()))
                    }
                    Err(e) => {
                        // Roll back everything not on disk, changes made during this write
                        // included: their callers are told, none has handed anything out.
                        st.current = st.written.clone();
                        st.written_version = st.version;
                        st.dirty.clear();
                        let e = WriteError {
                            path: file.path.display().to_string(),
                            message: e.clone(),
                        };
                        (std::mem::take(&mut st.waiters), Err(e))
                    }
                };
                for w in &out.0 {
                    let waited = st.writes - w.writes_at;
                    stats.max_writes_waited.fetch_max(waited, Ordering::Relaxed);
                }
                out
            };
            stats
                .waits
                .fetch_add(released.len() as u64, Ordering::Relaxed);
            stats
                .waiting
                .fetch_sub(released.len() as u64, Ordering::Relaxed);
            match &outcome {
                Ok(()) => {
                    stats.writes.fetch_add(1, Ordering::Relaxed);
                    lock(&stats.failing).remove(&file.path);
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    lock(&stats.failing).insert(file.path.clone(), e.message.clone());
                    tracing::error!(file = %file.path.display(), error = %e.message,
                        "store write failed; changes not yet on disk were undone");
                }
            }
            for w in released {
                let _ = w.tx.send(outcome.clone());
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks (no I/O, no user code but the caller's
    // in-memory change), and a change is committed only as a whole, so a poisoned lock still
    // guards a consistent state.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};
    use std::time::Duration;

    type Table = BTreeMap<String, u32>;

    /// A file stand-in the test drives: each write reports its bytes on `entered`, then
    /// blocks until the test sends its outcome.
    struct Gate {
        entered: mpsc::Receiver<Table>,
        outcome: mpsc::Sender<io::Result<()>>,
    }

    const WAIT: Duration = Duration::from_secs(20);

    impl Gate {
        /// The next write's contents (the writer is now inside it, no lock held).
        fn entered(&self) -> Table {
            self.entered.recv_timeout(WAIT).expect("a write starts")
        }
        fn finish(&self, r: io::Result<()>) {
            self.outcome.send(r).unwrap();
        }
    }

    fn gated_doc() -> (Doc<Table>, StoreWriter, Gate) {
        let writer = StoreWriter::start().unwrap();
        let (etx, erx) = mpsc::channel();
        let (otx, orx) = mpsc::channel::<io::Result<()>>();
        let orx = Mutex::new(orx);
        let sink: Sink = Box::new(move |_path, bytes| {
            etx.send(serde_json::from_slice(bytes).unwrap()).unwrap();
            lock(&orx).recv().unwrap()
        });
        let encode: Encode<Table> = Box::new(|t| serde_json::to_vec(t).map_err(|e| e.to_string()));
        let doc = Doc::with_sink(
            Table::new(),
            PathBuf::from("/x/t.json"),
            encode,
            sink,
            &writer,
        );
        let gate = Gate {
            entered: erx,
            outcome: otx,
        };
        (doc, writer, gate)
    }

    fn set(doc: &Doc<Table>, k: &str, v: u32) -> Ticket {
        doc.change(k, |t| {
            let changed = t.insert(k.to_owned(), v) != Some(v);
            Ok::<_, ()>(((), changed))
        })
        .unwrap()
        .1
    }

    /// True while the ticket has not resolved (polls it once, without blocking).
    fn pending(t: &mut Ticket) -> bool {
        match &mut t.0 {
            None => false,
            Some(rx) => block_on(poll_once(rx)).is_none(),
        }
    }

    #[test]
    fn changes_made_during_a_write_are_coalesced_into_the_next() {
        let (doc, writer, gate) = gated_doc();
        let mut a = set(&doc, "a", 1);
        // The writer is inside the write of {a}, holding no lock: changes and reads go on.
        assert_eq!(gate.entered(), Table::from([("a".into(), 1)]));
        let mut rest: Vec<Ticket> = (0..50).map(|i| set(&doc, &format!("k{i}"), i)).collect();
        assert_eq!(doc.read().len(), 51);
        assert!(pending(&mut a) && rest.iter_mut().all(pending));
        gate.finish(Ok(()));
        assert_eq!(block_on(a.wait()), Ok(()));
        // One write carries all 50 later changes.
        assert_eq!(gate.entered().len(), 51);
        assert!(rest.iter_mut().all(pending));
        gate.finish(Ok(()));
        for t in rest {
            assert_eq!(block_on(t.wait()), Ok(()));
        }
        writer.wait_idle();
        let s = writer.stats();
        assert_eq!(s.writes.load(Ordering::Relaxed), 2);
        assert_eq!(s.waits.load(Ordering::Relaxed), 51);
        assert_eq!(s.waiting.load(Ordering::Relaxed), 0);
        // The later changes waited through the write in progress and their own: two writes.
        assert_eq!(s.max_writes_waited.load(Ordering::Relaxed), 2);
        // Nothing left to write: an unchanged value is durable at once.
        assert!(set(&doc, "a", 1).is_ready());
    }

    #[test]
    fn a_ticket_resolves_only_once_its_version_is_on_disk() {
        let (doc, writer, gate) = gated_doc();
        let mut a = set(&doc, "a", 1);
        assert_eq!(gate.entered().len(), 1);
        let mut b = set(&doc, "b", 2);
        // `a`'s key again, unchanged: its ticket is that of the write in progress.
        let (seen, mut a_again) = doc.read_durable("a", |t| t.get("a").copied());
        assert_eq!(seen, Some(1));
        assert!(pending(&mut a) && pending(&mut a_again));
        gate.finish(Ok(()));
        assert_eq!(block_on(a.wait()), Ok(()));
        assert_eq!(block_on(a_again.wait()), Ok(()));
        // `b` was made after the first write had taken its snapshot: not durable yet.
        assert!(pending(&mut b));
        assert_eq!(gate.entered().len(), 2);
        assert!(pending(&mut b));
        gate.finish(Ok(()));
        assert_eq!(block_on(b.wait()), Ok(()));
        writer.wait_idle();
        assert!(doc.read_durable("b", |_| ()).1.is_ready());
    }

    #[test]
    fn a_write_error_reaches_the_waiters_and_undoes_the_changes() {
        let (doc, writer, gate) = gated_doc();
        block_on(async {
            let t = set(&doc, "a", 1);
            gate.entered();
            gate.finish(Ok(()));
            t.wait().await.unwrap();
        });
        let t = set(&doc, "b", 2);
        gate.entered();
        let during = set(&doc, "c", 3);
        gate.finish(Err(io::Error::other("disk full")));
        let e = block_on(t.wait()).unwrap_err();
        assert_eq!(e.path, "/x/t.json");
        assert!(e.message.contains("disk full"), "{e}");
        // The change made during the failed write is undone too, and told so.
        assert!(block_on(during.wait()).is_err());
        assert_eq!(*doc.read(), Table::from([("a".into(), 1)]));
        writer.wait_idle();
        let s = writer.stats();
        assert_eq!(s.errors.load(Ordering::Relaxed), 1);
        assert_eq!(s.waiting.load(Ordering::Relaxed), 0);
        assert_eq!(s.failing().len(), 1);
        assert!(s.failing()[0].1.contains("disk full"));
        // The next write succeeds and clears the failing state.
        let t = set(&doc, "b", 2);
        assert_eq!(gate.entered().len(), 2);
        gate.finish(Ok(()));
        block_on(t.wait()).unwrap();
        writer.wait_idle();
        assert!(s.failing().is_empty());
        assert_eq!(s.writes.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_memory_doc_is_durable_at_once() {
        let doc = Doc::memory(Table::new());
        assert!(set(&doc, "a", 1).is_ready());
        assert_eq!(doc.read().get("a"), Some(&1));
    }

    #[test]
    fn a_real_file_is_written_and_the_ticket_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let writer = StoreWriter::start().unwrap();
        let encode: Encode<Table> = Box::new(|t| serde_json::to_vec(t).map_err(|e| e.to_string()));
        let doc = Doc::file(Table::new(), path.clone(), encode, &writer);
        let t = set(&doc, "a", 7);
        block_on(t.wait()).unwrap();
        let on_disk: Table = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(on_disk, Table::from([("a".into(), 7)]));
    }
}
