//! The log of one partition: an ordered list of segments with one writer and many readers.
//!
//! Concurrency contract:
//! - appends, flushes, rolls, retention and truncation are serialised by the writer mutex;
//! - readers never take that mutex: they load the current segment list (an `ArcSwap`), the
//!   offsets (atomics) and read the files with positional reads, so a slow reader never
//!   delays the writer and the writer only delays a reader by the time of an atomic load;
//! - a region handed to a reader keeps its file open, so retention may delete the segment
//!   underneath without breaking the read.
//!
//! Durability contract: an append is durable once a flush covering it returns (by the flush
//! policy, an explicit [`PartitionLog::flush`], a roll, or [`PartitionLog::close`]). Segments
//! other than the active one are always fully flushed. After a crash, [`PartitionLog::open`]
//! validates only the active segment's bytes after the last recovery point, so recovery time
//! is bounded by the unflushed tail. The active segment's indexes are flushed at roll, at
//! close, and by flushes once [`INDEX_FLUSH_LAG_BYTES`](super::segment::INDEX_FLUSH_LAG_BYTES)
//! of batches came since they last were:
//! index entries lost to a power loss are rebuilt by walking at most that many bytes of batch
//! headers (shape and offsets only) before the recovery point.
//!
//! Files: this one holds the log's state, its contracts and its accessors; `loader.rs` turns
//! a directory into that state at open (recovery; Kafka's `LogLoader`); the log then serves
//! (Kafka's `LocalLog`) through `append.rs` (appends, rolls, flushes, close), `truncate.rs`
//! (retention, deletion, truncation, reset), `read.rs` (reads, timestamp lookups, batch
//! iteration) and `leader_epochs.rs` (the epoch cache, kept in step with all of them).
//! Serving never goes back to the loader.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::epochs::EpochCache;
use super::recovery_point::RecoveryPointFile;
use super::segment::Segment;
use super::{FileRegion, LogConfig, LogError};

mod append;
mod leader_epochs;
mod loader;
mod read;
mod truncate;

pub use read::Batches;

/// Milliseconds since the Unix epoch; replaceable in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(crate::clock::now_ms)
}

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: u64,
    pub batch_count: usize,
    pub max_timestamp: i64,
    pub size_bytes: usize,
    /// Whether the append was flushed to disk before returning.
    pub flushed: bool,
}

/// Bounds of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// At most this many bytes of batches...
    pub max_bytes: u64,
    /// ...but at least the first batch, even if larger (Kafka's fetch semantics since v3).
    pub min_one_batch: bool,
    /// Only batches whose base offset is below this (e.g. the high watermark); `None` = the
    /// log end offset.
    pub max_offset: Option<i64>,
}

impl ReadLimits {
    pub fn bytes(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            min_one_batch: true,
            max_offset: None,
        }
    }

    pub fn up_to(mut self, max_offset: i64) -> Self {
        self.max_offset = Some(max_offset);
        self
    }
}

/// The outcome of a read.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole batches, the first of which contains the requested offset (or is the first at a
    /// higher offset); `None` when there is nothing to return.
    pub region: Option<FileRegion>,
    /// Offset after the last batch returned (the requested offset when nothing is returned).
    pub next_offset: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
}

/// The first record at or after a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampHit {
    pub offset: i64,
    /// The record's timestamp when it could be read (uncompressed batches), else the batch's
    /// max timestamp.
    pub timestamp: i64,
}

/// Writer-only state.
struct Writer {
    config: LogConfig,
    checkpoint: RecoveryPointFile,
    unflushed_records: u64,
    /// Clock reading when the oldest unflushed append happened.
    first_unflushed_ms: Option<i64>,
    closed: bool,
}

pub struct PartitionLog {
    dir: PathBuf,
    clock: Clock,
    segments: ArcSwap<Vec<Arc<Segment>>>,
    log_start_offset: AtomicI64,
    log_end_offset: AtomicI64,
    high_watermark: AtomicI64,
    /// The leader epochs of the batches in the log; changed only under the writer lock, and
    /// always covering the log: an append publishes its epochs before its end offset.
    epochs: ArcSwap<EpochCache>,
    writer: Mutex<Writer>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset())
            .field("log_end_offset", &self.log_end_offset())
            .field("high_watermark", &self.high_watermark())
            .finish()
    }
}

impl PartitionLog {
    /// Opens the partition log in `dir`, creating it when absent, with the system clock.
    ///
    /// # Errors
    /// Invalid configuration or I/O errors. Damaged data is not an error: it is recovered.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Self, LogError> {
        Self::open_with_clock(dir, config, system_clock())
    }

    /// Opens the log with an explicit clock. After an unclean shutdown (no clean-shutdown
    /// marker), the active segment is validated from its recovery point and its torn tail cut.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with_clock(dir: &Path, config: LogConfig, clock: Clock) -> Result<Self, LogError> {
        config.validate()?;
        let loader::Loaded {
            segments,
            checkpoint,
            log_start,
            log_end,
            epochs,
        } = loader::load(dir, &config)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            clock,
            segments: ArcSwap::from_pointee(segments),
            log_start_offset: AtomicI64::new(log_start),
            log_end_offset: AtomicI64::new(log_end),
            high_watermark: AtomicI64::new(log_start),
            epochs: ArcSwap::from_pointee(epochs),
            writer: Mutex::new(Writer {
                config,
                checkpoint,
                unflushed_records: 0,
                first_unflushed_ms: None,
                closed: false,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    /// The high watermark as set by the owner of the log; always within
    /// `[log_start_offset, log_end_offset]`.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Sets the high watermark, clamped into `[log_start_offset, log_end_offset]`; returns the
    /// value stored.
    pub fn set_high_watermark(&self, offset: i64) -> i64 {
        let _writer = self.writer.lock();
        let clamped = offset.clamp(self.log_start_offset(), self.log_end_offset());
        self.high_watermark.store(clamped, Ordering::Release);
        clamped
    }

    pub fn config(&self) -> LogConfig {
        self.writer.lock().config.clone()
    }

    /// Replaces the configuration; it applies to later appends, rolls and retention passes.
    ///
    /// # Errors
    /// [`LogError::InvalidConfig`].
    pub fn update_config(&self, config: LogConfig) -> Result<(), LogError> {
        config.validate()?;
        self.writer.lock().config = config;
        Ok(())
    }

    pub fn segment_count(&self) -> usize {
        self.segments.load().len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments
            .load()
            .iter()
            .map(|s| s.base_offset())
            .collect()
    }

    /// Bytes of batches in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.load().iter().map(|s| s.size_bytes()).sum()
    }

    /// The active segment: the last one, which takes the appends.
    fn active(&self) -> Arc<Segment> {
        let segments = self.segments.load();
        Arc::clone(
            segments
                .last()
                .expect("a partition log always has an active segment"),
        )
    }
}

/// Builders shared by the unit tests of the log's files.
#[cfg(test)]
mod fixtures {
    use super::*;
    use crate::log::test_batches::{batch, BatchSpec};

    /// Segments of 1 KiB, so that a few batches roll.
    pub(super) fn small_segments() -> LogConfig {
        LogConfig {
            segment_bytes: 1024,
            ..LogConfig::default()
        }
    }

    /// A log of `batches` batches of 2 records in `dir`, its high watermark at the end.
    pub(super) fn log_of(dir: &Path, batches: u64) -> PartitionLog {
        let log = PartitionLog::open(dir, small_segments()).expect("open");
        for i in 0..batches {
            log.append(&mut batch(&BatchSpec::records(2).seed(i)))
                .expect("append");
        }
        log.set_high_watermark(log.log_end_offset());
        log
    }
}
