//! Small files replaced whole, atomically and durably: checkpoints, snapshots, the
//! controller's vote and state. One mechanism for every such file of the broker, so that the
//! crash contract is written (and tested) once.
//!
//! Not for files that grow by appends (segments, indexes, the controller's log): those have
//! their own recovery. Not for the recovery point either, which is rewritten in place on every
//! flush because a torn one only lengthens the next recovery (see
//! [`RecoveryPointFile`](super::recovery_point::RecoveryPointFile)).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An I/O step that failed, on which path.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct DurableError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl DurableError {
    fn new(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// For callers whose errors are `std::io::Error` (openraft's storage): same kind, and the
/// message keeps the step and the path.
impl From<DurableError> for std::io::Error {
    fn from(error: DurableError) -> Self {
        std::io::Error::new(error.source.kind(), error)
    }
}

/// The temporary file [`write_atomically`] writes before renaming it over `path`: the same
/// name with `.tmp` appended, in the same directory (a rename is atomic only within one file
/// system).
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Replaces the file at `path` with `bytes` so that a crash at any point leaves either the old
/// file or the new one, whole, never a mix or a torn file: the bytes go to
/// [`temporary_path`]`(path)`, which is fsynced, renamed over `path`, and the directory is
/// fsynced. When this returns `Ok`, the new contents are durable. Creates the file if absent;
/// the directory must exist.
///
/// A reader that opens `path` meanwhile sees the old contents or the new ones.
///
/// # Errors
/// The first step that failed, with its path. The file at `path` is then unchanged, or
/// already replaced if only the directory fsync failed (then the rename may not survive a
/// crash). A temporary file may be left behind; the next write replaces it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DurableError> {
    let tmp = temporary_path(path);
    let mut file = File::create(&tmp).map_err(|e| DurableError::new("create", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| DurableError::new("write", &tmp, e))?;
    file.sync_all()
        .map_err(|e| DurableError::new("fsync", &tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| DurableError::new("rename", path, e))?;
    sync_dir(parent_dir(path))
}

/// The whole contents of `path`, or `None` when there is no such file (never written, or a
/// crash before its first [`write_atomically`] completed).
///
/// # Errors
/// I/O errors other than "not found", with the path.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, DurableError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DurableError::new("read", path, e)),
    }
}

/// Fsyncs directory `dir`, so that files created, renamed or removed in it survive a crash.
///
/// # Errors
/// I/O errors opening or syncing it, with its path.
pub fn sync_dir(dir: &Path) -> Result<(), DurableError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DurableError::new("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_creates_then_replaces_the_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state");
        assert_eq!(read(&path).expect("read"), None);
        write_atomically(&path, b"first").expect("write");
        write_atomically(&path, b"second, longer").expect("rewrite");
        write_atomically(&path, b"3").expect("shorter");
        assert_eq!(read(&path).expect("read"), Some(b"3".to_vec()));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state")]);
    }

    #[test]
    fn a_leftover_temporary_file_is_overwritten_and_never_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vote");
        // A crash after the temporary file was written, before the rename.
        std::fs::write(
            temporary_path(&path),
            b"torn and much longer than the new one",
        )
        .expect("leftover");
        assert_eq!(read(&path).expect("read"), None);
        write_atomically(&path, b"new").expect("write");
        assert_eq!(read(&path).expect("read"), Some(b"new".to_vec()));
        assert!(!temporary_path(&path).exists());
    }

    #[test]
    fn errors_name_the_step_and_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing-dir").join("file");
        let error = write_atomically(&path, b"x").expect_err("no such directory");
        assert_eq!(error.op, "create");
        assert_eq!(error.path, temporary_path(&path));
        let as_io = std::io::Error::from(error);
        assert_eq!(as_io.kind(), std::io::ErrorKind::NotFound);
        assert!(as_io.to_string().contains("missing-dir"), "{as_io}");
    }

    #[test]
    fn the_temporary_file_sits_beside_the_target() {
        assert_eq!(
            temporary_path(Path::new("/data/t-0/high-watermark")),
            Path::new("/data/t-0/high-watermark.tmp")
        );
        assert_eq!(temporary_path(Path::new("vote")), Path::new("vote.tmp"));
        assert_eq!(parent_dir(Path::new("vote")), Path::new("."));
    }
}
