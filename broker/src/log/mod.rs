//! The segment-log engine: durable, append-only partition logs of Kafka v2 record batches.
//!
//! A partition is a directory of segments named by base offset. Batches are stored byte for
//! byte as producers sent them, with offsets assigned by the log; readers get file regions
//! that the server sends to sockets without copying. This module knows nothing of the network
//! or the wire protocol beyond the record-batch format.

pub mod checkpoint;
pub mod durable;
pub mod epochs;
pub mod format;
pub mod high_watermark;
pub mod index;
pub mod partition;
pub mod recovery_point;
pub mod retention;
pub mod segment;
pub mod test_batches;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use format::BatchError;
pub use partition::{AppendInfo, PartitionLog, ReadLimits, ReadResult};

/// Errors of the log engine.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("record batch {batch_index} is invalid: {source}")]
    InvalidBatch {
        batch_index: usize,
        #[source]
        source: BatchError,
    },
    #[error("record batch {batch_index} holds no records")]
    EmptyBatch { batch_index: usize },
    #[error("the append holds no record batch")]
    NoBatches,
    #[error("record batch of {size_bytes} bytes exceeds max.message.bytes {max_bytes}")]
    BatchTooLarge { size_bytes: usize, max_bytes: usize },
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("corrupt log data in {path} at byte {position}: {detail}")]
    Corruption {
        path: PathBuf,
        position: u64,
        detail: String,
    },
    #[error(
        "replicated record batch {batch_index} has base offset {base_offset}, but the log continues at {expected_offset}"
    )]
    UnexpectedBaseOffset {
        batch_index: usize,
        base_offset: i64,
        expected_offset: i64,
    },
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    #[error("the log is closed")]
    Closed,
}

impl From<durable::DurableError> for LogError {
    fn from(error: durable::DurableError) -> Self {
        Self::Io {
            op: error.op,
            path: error.path,
            source: error.source,
        }
    }
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A byte range of a segment file holding whole record batches, ready to be sent with
/// `sendfile`. It keeps the file open, so it stays readable even if retention deletes the
/// segment meanwhile. The log never rewrites published bytes: a concurrent truncation can cut
/// the region short (reads past the cut find the end of the file), but never puts other
/// batches in its place.
#[derive(Debug, Clone)]
pub struct FileRegion {
    pub file: Arc<File>,
    pub position: u64,
    pub len: u64,
}

impl FileRegion {
    /// Copies the region into memory (for TLS, tests and tools; the plaintext fetch path
    /// sends the file region itself).
    ///
    /// A concurrent truncation may cut the region short. A read racing it can then copy the
    /// bytes the kernel zeroes past the new end (the partial page of a cut file) rather than
    /// stop at it, so the file's length is checked after the read: the kernel records the
    /// shorter length before it zeroes anything, and a region no longer wholly in the file
    /// is refused.
    ///
    /// # Errors
    /// I/O errors; `UnexpectedEof` for a region cut short by a concurrent truncation.
    pub fn to_vec(&self) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buffer = vec![0u8; self.len as usize];
        self.file.read_exact_at(&mut buffer, self.position)?;
        if self.file.metadata()?.len() < self.position + self.len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the region was cut by a truncation while it was read",
            ));
        }
        Ok(buffer)
    }
}

/// When appended data is forced to disk. Either limit may be absent; with both absent, data
/// reaches disk when the OS writes it back, at roll and at close (Kafka's default, which
/// relies on replication for durability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushPolicy {
    /// `flush.messages`: flush once this many records are unflushed (1 = every append).
    pub every_records: Option<u64>,
    /// `flush.ms`: flush once the oldest unflushed append is this old.
    pub every_ms: Option<i64>,
}

impl FlushPolicy {
    pub fn every_append() -> Self {
        Self {
            every_records: Some(1),
            every_ms: None,
        }
    }
}

/// Per-partition log settings, named after Kafka's topic configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`
    pub segment_bytes: u64,
    /// `segment.ms`
    pub segment_ms: i64,
    /// `segment.index.bytes`
    pub segment_index_bytes: usize,
    /// `index.interval.bytes`
    pub index_interval_bytes: u64,
    /// `retention.ms` (`None` = unlimited)
    pub retention_ms: Option<i64>,
    /// `retention.bytes` (`None` = unlimited)
    pub retention_bytes: Option<u64>,
    /// `max.message.bytes`: the largest record batch accepted.
    pub max_message_bytes: usize,
    /// `flush.messages` and `flush.ms`
    pub flush: FlushPolicy,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_message_bytes: 1_048_588,
            flush: FlushPolicy::default(),
        }
    }
}

impl LogConfig {
    /// Checks the settings that would break the log's invariants.
    ///
    /// # Errors
    /// [`LogError::InvalidConfig`] naming the setting.
    pub fn validate(&self) -> Result<(), LogError> {
        if self.segment_bytes < 14 || self.segment_bytes > i32::MAX as u64 {
            return Err(LogError::InvalidConfig(format!(
                "segment.bytes must be between 14 and {}, got {}",
                i32::MAX,
                self.segment_bytes
            )));
        }
        if self.segment_index_bytes < 16 {
            return Err(LogError::InvalidConfig(
                "segment.index.bytes must be at least 16".into(),
            ));
        }
        if self.segment_ms < 1 {
            return Err(LogError::InvalidConfig(
                "segment.ms must be at least 1".into(),
            ));
        }
        if self.max_message_bytes < format::BATCH_HEADER_SIZE {
            return Err(LogError::InvalidConfig(format!(
                "max.message.bytes must be at least {}",
                format::BATCH_HEADER_SIZE
            )));
        }
        if self.flush.every_records == Some(0) {
            return Err(LogError::InvalidConfig(
                "flush.messages must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
