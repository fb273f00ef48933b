//! The durable queue backend: an append-only journal per shard, written with glommio DMA I/O
//! and group commit.
//!
//! Layout: `<state>/journal/shard-<i>/seg-<n>.log`. A record is `[len u32 LE][crc32 u32 LE]
//! [payload]`; the payload is a JSON [`Record`], sealed with AES-256-GCM (`nonce ‖ ciphertext`)
//! when encryption is on. A zero length ends a segment (DMA padding); a bad CRC or a short
//! record ends replay of that segment (a torn tail after a crash).
//!
//! Group commit: [`Journal::append`] puts the bytes in a buffer and waits; one flusher task
//! writes everything buffered, syncs once (`fdatasync` through glommio), and wakes every
//! waiter of that batch. So N concurrent acknowledgements cost one sync.
//!
//! On start, [`Journal::open`] reads every segment and folds the records into the live state
//! (pending, done, dead); the shard re-queues pending work, refills the dedup ring and the dead
//! letter store, then writes that state as the first records of a fresh segment and deletes the
//! old ones (compaction). Segments roll at [`SEGMENT_BYTES`]; after [`MAX_SEGMENTS`] the
//! flusher compacts again from a snapshot of the live state.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use futures_lite::AsyncWriteExt;
use glommio::io::{DmaFile, DmaStreamWriter, DmaStreamWriterBuilder};
use serde_json::Value;

/// Roll to a new segment past this size.
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// Compact when this many segments exist.
pub const MAX_SEGMENTS: usize = 4;

pub use crate::delivery::record::{Entry, Fold, Record, State};

/// Journal errors.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// File system.
    #[error("journal {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Key file.
    #[error("journal key {path}: {why}")]
    Key {
        /// Path.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// Loads or creates the 32-byte at-rest key (`<state>/journal.key`, mode 0600).
pub fn load_key(state_dir: &Path) -> Result<Aes256Gcm, JournalError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join("journal.key");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|source| JournalError::Io {
                    path: path.clone(),
                    source,
                })?;
            std::io::Write::write_all(&mut f, &key).map_err(|source| JournalError::Io {
                path: path.clone(),
                source,
            })?;
            f.sync_all().map_err(|source| JournalError::Io {
                path: path.clone(),
                source,
            })?;
            key.to_vec()
        }
        Err(source) => return Err(JournalError::Io { path, source }),
    };
    if bytes.len() != 32 {
        return Err(JournalError::Key {
            path,
            why: format!("expected 32 bytes, found {}", bytes.len()),
        });
    }
    Aes256Gcm::new_from_slice(&bytes).map_err(|e| JournalError::Key {
        path,
        why: e.to_string(),
    })
}

/// Encodes one record with its frame.
pub fn encode(r: &Record, cipher: Option<&Aes256Gcm>) -> Vec<u8> {
    let json = serde_json::to_vec(r).unwrap_or_default();
    let payload = match cipher {
        Some(c) => {
            let nonce: [u8; 12] = rand::random();
            let mut out = nonce.to_vec();
            out.extend(
                c.encrypt(Nonce::from_slice(&nonce), json.as_slice())
                    .unwrap_or_default(),
            );
            out
        }
        None => json,
    };
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes the records of one segment; stops at padding or the first damaged record.
pub fn decode_all(bytes: &[u8], cipher: Option<&Aes256Gcm>) -> (Vec<Record>, Option<String>) {
    let d = decode_prefix(bytes, cipher);
    (d.records, d.damage)
}

/// What replay read from one segment.
#[derive(Debug)]
pub struct Decoded {
    /// The records, in order: every one before the first damaged record or the padding.
    pub records: Vec<Record>,
    /// Bytes of the segment those records occupy: `bytes[..end]` decodes to the same records
    /// with no damage. Nothing at or past it is ever accepted.
    pub end: usize,
    /// Why replay stopped before the end of the data (a torn or corrupt record), if it did.
    pub damage: Option<String>,
}

/// [`decode_all`], saying where the valid records end.
pub fn decode_prefix(bytes: &[u8], cipher: Option<&Aes256Gcm>) -> Decoded {
    let mut out = Vec::new();
    let mut i = 0;
    let damaged = |records, end, why: String| Decoded {
        records,
        end,
        damage: Some(why),
    };
    while i + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            break;
        }
        let crc = u32::from_le_bytes(bytes[i + 4..i + 8].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(i + 8..i + 8 + len) else {
            return damaged(out, i, format!("torn record at byte {i}"));
        };
        if crc32fast::hash(payload) != crc {
            return damaged(out, i, format!("checksum mismatch at byte {i}"));
        }
        let json = match cipher {
            Some(c) if payload.len() > 12 => {
                match c.decrypt(Nonce::from_slice(&payload[..12]), &payload[12..]) {
                    Ok(p) => p,
                    Err(_) => {
                        return damaged(
                            out,
                            i,
                            format!("cannot decrypt record at byte {i} (wrong key?)"),
                        )
                    }
                }
            }
            Some(_) => return damaged(out, i, format!("short sealed record at byte {i}")),
            None => payload.to_vec(),
        };
        match serde_json::from_slice::<Record>(&json) {
            Ok(r) => out.push(r),
            Err(e) => return damaged(out, i, format!("bad record at byte {i}: {e}")),
        }
        i += 8 + len;
    }
    Decoded {
        records: out,
        end: i,
        damage: None,
    }
}

fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name
                .strip_prefix("seg-")?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Produces the live state as records (for compaction).
pub type Snapshot = Box<dyn Fn() -> Vec<Record>>;

/// One shard's journal.
pub struct Journal {
    dir: PathBuf,
    cipher: Option<Aes256Gcm>,
    buf: RefCell<Vec<u8>>,
    waiters: RefCell<Vec<futures_channel::oneshot::Sender<Result<(), String>>>>,
    wake: Cell<Option<Waker>>,
    seg_no: Cell<u64>,
    snapshot: RefCell<Option<Snapshot>>,
    /// Records appended.
    pub appended: Cell<u64>,
    /// Group commits (syncs).
    pub syncs: Cell<u64>,
    /// Bytes written.
    pub bytes: Cell<u64>,
    /// Compactions done.
    pub compactions: Cell<u64>,
    closed: Cell<bool>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).finish()
    }
}

impl Journal {
    /// Reads the journal in `dir` and returns it (not yet writing) with the replayed state.
    pub fn open(
        dir: &Path,
        cipher: Option<Aes256Gcm>,
    ) -> Result<(Rc<Journal>, Fold), JournalError> {
        std::fs::create_dir_all(dir).map_err(|source| JournalError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut fold = Fold::default();
        let segs = segments(dir);
        for (_, path) in &segs {
            let bytes = std::fs::read(path).map_err(|source| JournalError::Io {
                path: path.clone(),
                source,
            })?;
            let (recs, damage) = decode_all(&bytes, cipher.as_ref());
            if let Some(d) = damage {
                tracing::warn!(segment = %path.display(), "journal replay stopped early: {d}");
            }
            for r in recs {
                fold.apply(r);
            }
        }
        let next = segs.last().map(|(n, _)| n + 1).unwrap_or(1);
        let j = Rc::new(Journal {
            dir: dir.to_path_buf(),
            cipher,
            buf: RefCell::new(Vec::new()),
            waiters: RefCell::new(Vec::new()),
            wake: Cell::new(None),
            seg_no: Cell::new(next),
            snapshot: RefCell::new(None),
            appended: Cell::new(0),
            syncs: Cell::new(0),
            bytes: Cell::new(0),
            compactions: Cell::new(0),
            closed: Cell::new(false),
        });
        Ok((j, fold))
    }

    /// Sets the live-state snapshot used by compaction.
    pub fn set_snapshot(&self, s: Snapshot) {
        *self.snapshot.borrow_mut() = Some(s);
    }

    fn seg_path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("seg-{n:08}.log"))
    }

    /// Starts the flusher: first a compaction (the live state into a fresh segment, old
    /// segments deleted), then group commits until [`Journal::close`].
    pub fn start(self: &Rc<Self>) {
        let j = self.clone();
        glommio::spawn_local(async move {
            if let Err(e) = j.run().await {
                tracing::error!(dir = %j.dir.display(), "journal stopped: {e}");
                let waiters: Vec<_> = j.waiters.borrow_mut().drain(..).collect();
                for w in waiters {
                    let _ = w.send(Err(format!("journal failed: {e}")));
                }
                j.closed.set(true);
            }
        })
        .detach();
    }

    async fn new_segment(&self) -> Result<(DmaStreamWriter, u64), String> {
        let n = self.seg_no.get();
        self.seg_no.set(n + 1);
        let path = self.seg_path(n);
        let f = DmaFile::create(&path)
            .await
            .map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok((
            DmaStreamWriterBuilder::new(f)
                .with_buffer_size(128 << 10)
                .build(),
            n,
        ))
    }

    /// Writes the snapshot into a new segment and deletes every older one.
    async fn compact(&self) -> Result<(DmaStreamWriter, u64), String> {
        let (mut w, n) = self.new_segment().await?;
        let recs = self
            .snapshot
            .borrow()
            .as_ref()
            .map(|s| s())
            .unwrap_or_default();
        let mut bytes = Vec::new();
        for r in &recs {
            bytes.extend(encode(r, self.cipher.as_ref()));
        }
        w.write_all(&bytes).await.map_err(|e| e.to_string())?;
        w.sync().await.map_err(|e| e.to_string())?;
        for (old, path) in segments(&self.dir) {
            if old < n {
                let _ = std::fs::remove_file(path);
            }
        }
        self.compactions.set(self.compactions.get() + 1);
        tracing::info!(dir = %self.dir.display(), records = recs.len(), segment = n, "journal compacted");
        Ok((w, bytes.len() as u64))
    }

    async fn run(&self) -> Result<(), String> {
        let (mut w, mut seg_bytes) = self.compact().await?;
        loop {
            let closed = poll_fn(|cx| {
                if !self.buf.borrow().is_empty() {
                    return Poll::Ready(false);
                }
                if self.closed.get() {
                    return Poll::Ready(true);
                }
                self.wake.set(Some(cx.waker().clone()));
                Poll::Pending
            })
            .await;
            if closed {
                let _ = w.close().await;
                return Ok(());
            }
            let batch = std::mem::take(&mut *self.buf.borrow_mut());
            let waiters: Vec<_> = self.waiters.borrow_mut().drain(..).collect();
            let r = async {
                w.write_all(&batch).await.map_err(|e| e.to_string())?;
                w.sync().await.map_err(|e| e.to_string())
            }
            .await;
            self.syncs.set(self.syncs.get() + 1);
            self.bytes.set(self.bytes.get() + batch.len() as u64);
            seg_bytes += batch.len() as u64;
            let failed = r.as_ref().err().cloned();
            for wt in waiters {
                let _ = wt.send(r.clone().map(|_| ()));
            }
            if let Some(e) = failed {
                return Err(e);
            }
            if seg_bytes >= SEGMENT_BYTES {
                let _ = w.close().await;
                if segments(&self.dir).len() >= MAX_SEGMENTS {
                    (w, seg_bytes) = self.compact().await?;
                } else {
                    (w, _) = self.new_segment().await?;
                    seg_bytes = 0;
                }
            }
        }
    }

    /// Appends `r` and waits until it is durable.
    pub async fn append(&self, r: &Record) -> Result<(), String> {
        if self.closed.get() {
            return Err("journal is closed".into());
        }
        let (tx, rx) = futures_channel::oneshot::channel();
        self.buf
            .borrow_mut()
            .extend(encode(r, self.cipher.as_ref()));
        self.waiters.borrow_mut().push(tx);
        self.appended.set(self.appended.get() + 1);
        if let Some(w) = self.wake.take() {
            w.wake();
        }
        rx.await.unwrap_or_else(|_| Err("journal stopped".into()))
    }

    /// Appends `r` without waiting (it is made durable with the next group commit).
    pub fn append_nowait(&self, r: &Record) {
        if self.closed.get() {
            return;
        }
        self.buf
            .borrow_mut()
            .extend(encode(r, self.cipher.as_ref()));
        self.appended.set(self.appended.get() + 1);
        if let Some(w) = self.wake.take() {
            w.wake();
        }
    }

    /// Flushes what is buffered and stops the flusher.
    pub async fn close(&self) {
        if !self.buf.borrow().is_empty() {
            let _ = self.append(&Record::Purge { id: String::new() }).await;
        }
        self.closed.set(true);
        if let Some(w) = self.wake.take() {
            w.wake();
        }
    }

    /// Counters as JSON.
    pub fn stats_json(&self) -> Value {
        serde_json::json!({"appended": self.appended.get(), "groupCommits": self.syncs.get(),
                           "bytes": self.bytes.get(), "compactions": self.compactions.get(),
                           "encrypted": self.cipher.is_some()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::record::tests::acc;

    #[test]
    fn frames_round_trip_plain_and_sealed() {
        let key = Aes256Gcm::new_from_slice(&[7u8; 32]).unwrap();
        for cipher in [None, Some(&key)] {
            let mut bytes = encode(&acc("a"), cipher);
            bytes.extend(encode(&Record::Purge { id: "x".into() }, cipher));
            bytes.extend([0u8; 100]); // DMA padding
            let (recs, damage) = decode_all(&bytes, cipher);
            assert_eq!(recs.len(), 2);
            assert!(damage.is_none());
        }
    }

    #[test]
    fn sealed_records_hide_the_message_and_need_the_key() {
        let key = Aes256Gcm::new_from_slice(&[7u8; 32]).unwrap();
        let other = Aes256Gcm::new_from_slice(&[8u8; 32]).unwrap();
        let bytes = encode(&acc("secret-run"), Some(&key));
        assert!(!bytes.windows(10).any(|w| w == b"secret-run"));
        let (recs, damage) = decode_all(&bytes, Some(&other));
        assert!(recs.is_empty());
        assert!(damage.unwrap().contains("decrypt"));
    }

    #[test]
    fn torn_tail_stops_replay() {
        let mut bytes = encode(&acc("a"), None);
        let second = encode(&acc("b"), None);
        bytes.extend(&second[..second.len() - 3]);
        let (recs, damage) = decode_all(&bytes, None);
        assert_eq!(recs.len(), 1);
        assert!(damage.is_some());
    }
}
