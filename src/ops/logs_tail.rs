//! `logs.tail {cursor?, limit?, maxBytes?}`: the last lines of the gateway's own log file
//! (`<stateDir>/logs/shardgate.log.<date>`, the newest one), as OpenClaw's method answers:
//! `{file, cursor, size, lines, truncated, reset, skippedBytes?}`.
//!
//! The cursor is a byte offset in that file just past the last whole line returned; a client
//! that follows (`openclaw logs --follow`) sends it back and gets only what came after. A
//! cursor past the end (the file rotated or was cut) answers `reset: true` with the file's
//! tail. At most `maxBytes` are read, so a call is bounded however big the file is.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::protocol::error::GatewayError;

/// Lines per call when the client names no `limit` (OpenClaw's).
const DEFAULT_LIMIT: u64 = 500;
/// Bytes per call when the client names no `maxBytes` (OpenClaw's).
const DEFAULT_MAX_BYTES: u64 = 250_000;
/// The largest `limit` accepted.
const MAX_LIMIT: u64 = 5_000;
/// The largest `maxBytes` accepted.
const MAX_BYTES: u64 = 1_000_000;

/// What the client asked for, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailParams {
    /// Where the previous call stopped.
    pub cursor: Option<u64>,
    /// At most this many lines (the last ones).
    pub limit: u64,
    /// At most this many bytes from the end.
    pub max_bytes: u64,
}

impl TailParams {
    /// Checks the params as OpenClaw's schema does (no other keys; integers in range).
    ///
    /// # Errors
    /// [`GatewayError::InvalidParams`] naming the bad key.
    pub fn parse(p: &Value) -> Result<TailParams, GatewayError> {
        let bad = |m: String| GatewayError::InvalidParams(format!("invalid logs.tail params: {m}"));
        if let Some(o) = p.as_object() {
            if let Some(k) = o
                .keys()
                .find(|k| !matches!(k.as_str(), "cursor" | "limit" | "maxBytes"))
            {
                return Err(bad(format!("unexpected property '{k}'")));
            }
        }
        let int = |k: &str, min: u64, max: u64| -> Result<Option<u64>, GatewayError> {
            match p.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .filter(|n| (min..=max).contains(n))
                    .map(Some)
                    .ok_or_else(|| bad(format!("{k} must be an integer in {min}..{max}"))),
            }
        };
        Ok(TailParams {
            cursor: int("cursor", 0, u64::MAX)?,
            limit: int("limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT),
            max_bytes: int("maxBytes", 1, MAX_BYTES)?.unwrap_or(DEFAULT_MAX_BYTES),
        })
    }
}

/// The gateway's log files in `dir` (`shardgate.log.<date>`), oldest first: the daily
/// suffix sorts by date. Also what `shardgate logs` reads.
///
/// # Errors
/// `dir` cannot be listed.
pub fn log_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("shardgate.log"))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// The newest log file in `dir`, or the name the first one will have.
pub fn current_file(dir: &Path) -> PathBuf {
    log_files(dir)
        .ok()
        .and_then(|mut f| f.pop())
        .unwrap_or_else(|| dir.join("shardgate.log"))
}

/// Reads the tail of the current log file in `dir`. Blocking file I/O: run it off the shard.
///
/// # Errors
/// The file exists but cannot be read.
pub fn tail(dir: &Path, q: TailParams) -> std::io::Result<Value> {
    let file = current_file(dir);
    let (mut f, size) = match std::fs::File::open(&file) {
        Ok(f) => {
            let size = f.metadata()?.len();
            (Some(f), size)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, 0),
        Err(e) => return Err(e),
    };
    let mut reset = false;
    let mut skipped = None;
    let (start, mut truncated) = match q.cursor {
        Some(c) if c > size => {
            reset = true;
            let s = size.saturating_sub(q.max_bytes);
            (s, s > 0)
        }
        Some(c) if size - c > q.max_bytes => {
            reset = true;
            let s = size - q.max_bytes;
            skipped = Some(s - c);
            (s, true)
        }
        Some(c) => (c, false),
        None => {
            let s = size.saturating_sub(q.max_bytes);
            (s, s > 0)
        }
    };
    let mut out = json!({"file": file.display().to_string(), "cursor": size, "size": size,
                         "lines": [], "truncated": truncated, "reset": reset});
    if let Some(s) = skipped {
        out["skippedBytes"] = json!(s);
    }
    let Some(f) = f.as_mut().filter(|_| size > start) else {
        return Ok(out);
    };
    // One byte before `start` tells whether the window begins on a line boundary.
    let from = start.saturating_sub(1);
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::with_capacity((size - from) as usize);
    f.take(size - from).read_to_end(&mut buf)?;
    let (prefix, body) = if start > 0 && !buf.is_empty() {
        (Some(buf[0]), &buf[1..])
    } else {
        (None, &buf[..])
    };
    let Some(last_nl) = body.iter().rposition(|&b| b == b'\n') else {
        out["cursor"] = json!(start);
        return Ok(out);
    };
    let mut lines: Vec<&[u8]> = body[..last_nl].split(|&b| b == b'\n').collect();
    if prefix.is_some_and(|b| b != b'\n') {
        // The window starts inside a line: that partial line is not shown.
        lines.remove(0);
    }
    if lines.len() as u64 > q.limit {
        truncated = true;
        lines.drain(..lines.len() - q.limit as usize);
    }
    out["cursor"] = json!(start + last_nl as u64 + 1);
    out["truncated"] = json!(truncated);
    out["lines"] = Value::Array(
        lines
            .into_iter()
            .map(|l| Value::String(String::from_utf8_lossy(l).into_owned()))
            .collect(),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(cursor: Option<u64>, limit: u64, max_bytes: u64) -> TailParams {
        TailParams {
            cursor,
            limit,
            max_bytes,
        }
    }

    #[test]
    fn follows_with_the_cursor_and_resets_after_a_cut() {
        let dir = tempfile::tempdir().unwrap();
        let none = tail(dir.path(), q(None, 10, 1000)).unwrap();
        assert_eq!(none["lines"], json!([]));
        assert_eq!(none["size"], 0);
        let p = dir.path().join("shardgate.log.2026-01-02");
        std::fs::write(dir.path().join("shardgate.log.2026-01-01"), "old\n").unwrap();
        std::fs::write(&p, "a\nbb\nccc\npartial").unwrap();
        let v = tail(dir.path(), q(None, 10, 1000)).unwrap();
        assert_eq!(v["lines"], json!(["a", "bb", "ccc"]));
        assert_eq!(v["file"], p.display().to_string());
        assert_eq!(v["cursor"], 9, "just past the last whole line");
        assert_eq!(v["size"], 16);
        let v = tail(dir.path(), q(None, 2, 1000)).unwrap();
        assert_eq!(v["lines"], json!(["bb", "ccc"]));
        assert_eq!(v["truncated"], true);
        std::fs::write(&p, "a\nbb\nccc\npartial line\nnext\n").unwrap();
        let v = tail(dir.path(), q(Some(9), 10, 1000)).unwrap();
        assert_eq!(v["lines"], json!(["partial line", "next"]));
        assert_eq!(v["reset"], false);
        let v = tail(dir.path(), q(Some(999), 10, 1000)).unwrap();
        assert_eq!(v["reset"], true);
        assert_eq!(v["lines"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn max_bytes_starts_on_a_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("shardgate.log.x"), "one\ntwo\nthree\n").unwrap();
        // The last 8 bytes are "o\nthree\n": "o" is the end of a cut line.
        let v = tail(dir.path(), q(None, 10, 8)).unwrap();
        assert_eq!(v["lines"], json!(["three"]));
        assert_eq!(v["truncated"], true);
        // Exactly on a boundary: "three\n".
        let v = tail(dir.path(), q(None, 10, 6)).unwrap();
        assert_eq!(v["lines"], json!(["three"]));
        let v = tail(dir.path(), q(Some(0), 10, 6)).unwrap();
        assert_eq!(v["reset"], true);
        assert_eq!(v["skippedBytes"], 8);
    }

    #[test]
    fn params_are_checked_like_openclaw() {
        assert_eq!(
            TailParams::parse(&json!({})).unwrap(),
            q(None, DEFAULT_LIMIT, DEFAULT_MAX_BYTES)
        );
        assert!(TailParams::parse(&json!({"limit": 0})).is_err());
        assert!(TailParams::parse(&json!({"limit": 5001})).is_err());
        assert!(TailParams::parse(&json!({"cursor": -1})).is_err());
        assert!(TailParams::parse(&json!({"follow": true})).is_err());
        assert_eq!(
            TailParams::parse(&json!({"cursor": 5, "limit": 3, "maxBytes": 100})).unwrap(),
            q(Some(5), 3, 100)
        );
    }
}
