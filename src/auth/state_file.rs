//! The state directory's private JSON files (paired devices, node approvals, setup-code
//! hashes and sealed join codes, the gateway identity): how one is read and how one is
//! replaced.
//!
//! Invariants a reader must keep:
//! - Directories are made `0700` and files `0600`: they hold secrets or what admits a peer.
//! - A write replaces the file atomically (a new temp file in the same directory, fsync,
//!   rename over the file, fsync of the directory), so a crash leaves the old file or the
//!   new one, never a torn one, and a failed write leaves the old file and no temp file.
//! - A missing file is "nothing stored yet"; a file that exists but does not parse is an
//!   error naming its path, never an empty default (that would silently drop its state).
//!
//! Blocking file I/O: callers run it at start or at pairing time, never per frame.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Creates `dir` and its missing parents, mode `0700`.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The bytes of `path`, `None` when it does not exist.
pub fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `path` parsed as JSON, `T::default()` when it does not exist; `InvalidData` naming the
/// path when it does not parse.
pub fn read_json_or_default<T: DeserializeOwned + Default>(path: &Path) -> io::Result<T> {
    let Some(bytes) = read_if_exists(path)? else {
        return Ok(T::default());
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Replaces `path` with `bytes`, atomically and readable by the owner only (see the module
/// doc). The parent directory must exist.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()));
    let write_tmp = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write_tmp().and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir).and_then(|d| d.sync_all())
}

/// [`write_atomic`] of `value` as pretty JSON with a final newline.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn missing_is_default_written_is_read_back_private() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a").join("b");
        create_private_dir(&sub).unwrap();
        assert_eq!(
            fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let path = sub.join("x.json");
        let empty: BTreeMap<String, u32> = read_json_or_default(&path).unwrap();
        assert!(empty.is_empty());
        let v = BTreeMap::from([("k".to_owned(), 1u32)]);
        write_json_atomic(&path, &v).unwrap();
        assert_eq!(
            read_json_or_default::<BTreeMap<String, u32>>(&path).unwrap(),
            v
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Only the file itself is left behind (no temp file).
        assert_eq!(fs::read_dir(&sub).unwrap().count(), 1);
    }

    #[test]
    fn unparsable_is_an_error_naming_the_file_and_a_failed_write_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        fs::write(&path, "{not json").unwrap();
        let e = read_json_or_default::<BTreeMap<String, u32>>(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("x.json"), "{e}");
        // A directory where the file should be makes the rename fail, even as root.
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        assert!(write_atomic(&path, b"{}").is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
