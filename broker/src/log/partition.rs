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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tracing::{debug, info, warn};

use super::epochs::{self, EpochCache, EpochEntry};
use super::format::{self, CLEAN_SHUTDOWN_FILE, LOG_SUFFIX};
use super::recovery_point::{RecoveryPoint, RecoveryPointFile};
use super::retention::{retention_plan, roll_reason, RetentionLimits, RollInput, SegmentStats};
use super::segment::{validate_batches, BatchAt, Segment, SegmentLimits};
use super::{durable, FileRegion, LogConfig, LogError};

/// Milliseconds since the Unix epoch; replaceable in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    })
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

/// How an append gives its batches their offsets.
#[derive(Debug, Clone, Copy)]
enum Offsets {
    /// From the log end offset (a leader), stamping the leader epoch when there is one.
    Assign { leader_epoch: Option<i32> },
    /// As the batches carry them, which must continue the log (a follower).
    Keep,
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

fn limits_of(config: &LogConfig) -> SegmentLimits {
    SegmentLimits {
        index_interval_bytes: config.index_interval_bytes,
        index_bytes_max: config.segment_index_bytes,
        batch_bytes_max: config.max_message_bytes.max(format::BATCH_HEADER_SIZE),
    }
}

/// Limits used when reading segments back: a stored batch may be larger than the current
/// `max.message.bytes` (which can be lowered later) but never larger than a segment.
fn read_limits_of(config: &LogConfig) -> SegmentLimits {
    SegmentLimits {
        batch_bytes_max: i32::MAX as usize,
        ..limits_of(config)
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
        std::fs::create_dir_all(dir).map_err(|e| LogError::io("create log directory", dir, e))?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        let limits = read_limits_of(&config);

        let bases = list_segment_bases(dir)?;
        let checkpoint = RecoveryPointFile::open(dir)?;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, base) in bases.iter().enumerate() {
            let is_active = i + 1 == bases.len();
            let segment = Segment::open(dir, *base, limits, is_active)?;
            if !is_active {
                // Sealed at roll, so flushed and trimmed already: loading it costs no fsync
                // unless its indexes had to be rebuilt (or its seal was cut short).
                segment.load_tail(false)?;
                if segment.indexes_untrimmed() {
                    segment.seal()?;
                }
            } else if clean {
                segment.load_tail(true)?;
            } else {
                let point = checkpoint.read()?.filter(|p| {
                    p.segment_base_offset == *base && p.position <= segment.size_bytes()
                });
                let (position, next_offset) =
                    point.map_or((0, *base), |p| (p.position, p.next_offset));
                info!(dir = %dir.display(), segment = base, position, "recovering after unclean shutdown");
                segment.recover_from(position, next_offset)?;
            }
            segments.push(Arc::new(segment));
        }
        if segments.is_empty() {
            // A new log starts at 0; one whose reset was cut short by a crash at the offset
            // its checkpoint names.
            let base = checkpoint
                .read()?
                .map_or(0, |p| p.segment_base_offset.max(0));
            segments.push(Arc::new(Segment::create(dir, base, limits)?));
            durable::sync_dir(dir)?;
        }
        let active = segments.last().map(Arc::clone).ok_or(LogError::Closed)?;
        active.unseal()?;
        active.flush()?;
        checkpoint.write(
            RecoveryPoint {
                segment_base_offset: active.base_offset(),
                position: active.size_bytes(),
                next_offset: active.next_offset(),
            },
            true,
        )?;
        if clean {
            std::fs::remove_file(&marker)
                .map_err(|e| LogError::io("remove clean marker", &marker, e))?;
            durable::sync_dir(dir)?;
        }
        let log_start = segments.first().map_or(0, |s| s.base_offset());
        let log_end = active.next_offset();
        let epochs = load_epochs(dir, &segments, log_start, log_end)?;
        debug!(dir = %dir.display(), log_start, log_end, segments = segments.len(), clean, "opened partition log");
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

    // ----- writes -----

    /// Validates `records` (one or more v2 batches: length, magic, record count, CRC32C,
    /// `max.message.bytes`), assigns their offsets from the log end offset and appends them
    /// byte for byte. If any batch is invalid nothing is written.
    ///
    /// # Errors
    /// [`LogError::InvalidBatch`], [`LogError::EmptyBatch`], [`LogError::NoBatches`],
    /// [`LogError::BatchTooLarge`] for bad input; I/O errors; [`LogError::Closed`].
    pub fn append(&self, records: &mut [u8]) -> Result<AppendInfo, LogError> {
        self.append_inner(records, Offsets::Assign { leader_epoch: None })
    }

    /// As [`append`](Self::append), also stamping each batch with the leader epoch.
    ///
    /// # Errors
    /// As [`append`](Self::append).
    pub fn append_with_leader_epoch(
        &self,
        records: &mut [u8],
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        self.append_inner(
            records,
            Offsets::Assign {
                leader_epoch: Some(leader_epoch),
            },
        )
    }

    /// A follower's append of batches copied from the leader: validated as
    /// [`append`](Self::append) does, but stored with the base offsets and partition leader
    /// epochs the leader gave them. The first batch must start at the log end offset and each
    /// next one where the one before ends; otherwise nothing is written.
    ///
    /// # Errors
    /// As [`append`](Self::append); [`LogError::UnexpectedBaseOffset`] for a batch that does
    /// not continue the log.
    pub fn append_replicated(&self, records: &mut [u8]) -> Result<AppendInfo, LogError> {
        self.append_inner(records, Offsets::Keep)
    }

    fn append_inner(&self, records: &mut [u8], offsets: Offsets) -> Result<AppendInfo, LogError> {
        let max_message_bytes = self.writer.lock().config.max_message_bytes;
        let mut batches = validate_batches(records, max_message_bytes)?;
        let mut writer = self.writer.lock();
        if writer.closed {
            return Err(LogError::Closed);
        }
        let base_offset = self.log_end_offset();
        let next = place_batches(records, &mut batches, base_offset, offsets)?;
        let max_timestamp = batches
            .iter()
            .map(|b| b.header.max_timestamp)
            .fold(i64::MIN, i64::max);
        let record_count: u64 = batches
            .iter()
            .map(|b| u64::from(b.header.record_count.unsigned_abs()))
            .sum();
        let new_epochs = self.epochs_after(&batches)?;
        let now = (self.clock)();
        let active = self.active();
        let reason = roll_reason(&RollInput {
            active_size_bytes: active.size_bytes(),
            active_first_batch_timestamp: active.first_batch_timestamp(),
            active_indexes_full: active.indexes_full_for(batches.len()),
            active_can_hold_offsets: active.can_hold_offset(next - 1),
            incoming_bytes: records.len() as u64,
            incoming_max_timestamp: max_timestamp,
            segment_bytes: writer.config.segment_bytes,
            segment_ms: writer.config.segment_ms,
        });
        let active = match reason {
            Some(reason) => {
                debug!(dir = %self.dir.display(), ?reason, offset = base_offset, "rolling segment");
                self.roll(&mut writer)?
            }
            None => active,
        };
        active.append(records, &batches)?;
        if let Some(new_epochs) = new_epochs {
            self.epochs.store(Arc::new(new_epochs));
        }
        self.log_end_offset.store(next, Ordering::Release);
        writer.unflushed_records += record_count;
        writer.first_unflushed_ms.get_or_insert(now);
        let flushed = if self.flush_due(&writer, now) {
            self.flush_locked(&mut writer)?;
            true
        } else {
            false
        };
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            record_count,
            batch_count: batches.len(),
            max_timestamp,
            size_bytes: records.len(),
            flushed,
        })
    }

    fn active(&self) -> Arc<Segment> {
        let segments = self.segments.load();
        Arc::clone(
            segments
                .last()
                .expect("a partition log always has an active segment"),
        )
    }

    fn flush_due(&self, writer: &Writer, now: i64) -> bool {
        if writer.unflushed_records == 0 {
            return false;
        }
        let by_count = writer
            .config
            .flush
            .every_records
            .is_some_and(|n| writer.unflushed_records >= n);
        let by_time = match (writer.config.flush.every_ms, writer.first_unflushed_ms) {
            (Some(ms), Some(first)) => now - first >= ms,
            _ => false,
        };
        by_count || by_time
    }

    /// Seals the active segment (if it holds anything) and starts a new one at the log end
    /// offset. Returns the base offset of the active segment afterwards.
    ///
    /// # Errors
    /// I/O errors; [`LogError::Closed`].
    pub fn roll_now(&self) -> Result<i64, LogError> {
        let mut writer = self.writer.lock();
        if writer.closed {
            return Err(LogError::Closed);
        }
        if self.active().size_bytes() > 0 {
            self.roll(&mut writer)?;
        }
        Ok(self.active().base_offset())
    }

    /// Base offset of the active segment: every offset below it is in a sealed segment.
    pub fn active_segment_base_offset(&self) -> i64 {
        self.active().base_offset()
    }

    /// Seals the active segment and starts a new one at the log end offset.
    fn roll(&self, writer: &mut Writer) -> Result<Arc<Segment>, LogError> {
        let old = self.active();
        old.seal()?;
        let base = self.log_end_offset();
        let segment = Arc::new(Segment::create(&self.dir, base, limits_of(&writer.config))?);
        durable::sync_dir(&self.dir)?;
        let mut list = Vec::clone(&self.segments.load());
        list.push(Arc::clone(&segment));
        self.segments.store(Arc::new(list));
        writer.checkpoint.write(
            RecoveryPoint {
                segment_base_offset: base,
                position: 0,
                next_offset: base,
            },
            true,
        )?;
        writer.unflushed_records = 0;
        writer.first_unflushed_ms = None;
        Ok(segment)
    }

    /// Forces everything appended so far to disk and records the new recovery point.
    ///
    /// # Errors
    /// I/O errors of the fsync; the data is then not known durable.
    pub fn flush(&self) -> Result<(), LogError> {
        let mut writer = self.writer.lock();
        self.flush_locked(&mut writer)
    }

    /// Flushes if `flush.ms` has passed since the oldest unflushed append (for a periodic
    /// flusher). Returns whether it flushed.
    ///
    /// # Errors
    /// As [`flush`](Self::flush).
    pub fn maybe_flush(&self) -> Result<bool, LogError> {
        let mut writer = self.writer.lock();
        if self.flush_due(&writer, (self.clock)()) {
            self.flush_locked(&mut writer)?;
            return Ok(true);
        }
        Ok(false)
    }

    fn flush_locked(&self, writer: &mut Writer) -> Result<(), LogError> {
        let active = self.active();
        active.flush_data()?;
        // The checkpoint write is not fsynced here: a stale checkpoint only lengthens the
        // next recovery, it never skips an unflushed byte.
        writer.checkpoint.write(
            RecoveryPoint {
                segment_base_offset: active.base_offset(),
                position: active.size_bytes(),
                next_offset: active.next_offset(),
            },
            false,
        )?;
        writer.unflushed_records = 0;
        writer.first_unflushed_ms = None;
        Ok(())
    }

    /// Deletes whole segments past `retention.ms` or `retention.bytes` (never the active one,
    /// never one holding records at or above the high watermark) and advances the log start
    /// offset. Returns the number of segments deleted.
    ///
    /// # Errors
    /// I/O errors; [`LogError::Closed`].
    pub fn apply_retention(&self) -> Result<usize, LogError> {
        let mut writer = self.writer.lock();
        if writer.closed {
            return Err(LogError::Closed);
        }
        let limits = RetentionLimits {
            retention_ms: writer.config.retention_ms,
            retention_bytes: writer.config.retention_bytes,
        };
        let now = (self.clock)();
        let plan = retention_plan(&self.stats(), limits, now, self.high_watermark());
        if plan.roll_active {
            self.roll(&mut writer)?;
        }
        self.delete_oldest_locked(plan.delete_oldest, "retention")
    }

    /// Deletes the sealed segments that lie wholly below `offset` (each segment ends where
    /// the next begins), oldest first, and advances the log start offset to the base of the
    /// first segment kept. Only whole segments go: never the active one, never one holding
    /// records at or above the high watermark; a segment that straddles `offset` stays.
    /// Returns the number of segments deleted.
    ///
    /// Readers see the shorter list before any file goes, and files go oldest first, so a
    /// crash midway leaves a suffix of the log (the next open starts at its first segment).
    ///
    /// # Errors
    /// I/O errors; [`LogError::Closed`].
    pub fn delete_segments_below(&self, offset: i64) -> Result<usize, LogError> {
        let writer = self.writer.lock();
        if writer.closed {
            return Err(LogError::Closed);
        }
        let list = self.segments.load();
        let high_watermark = self.high_watermark();
        let doomed = list
            .windows(2)
            .take_while(|pair| {
                pair[1].base_offset() <= offset && pair[0].next_offset() <= high_watermark
            })
            .count();
        self.delete_oldest_locked(doomed, "compaction")
    }

    /// Deletes the `count` oldest segments (the caller holds the writer lock and leaves the
    /// active one).
    fn delete_oldest_locked(&self, count: usize, reason: &'static str) -> Result<usize, LogError> {
        if count == 0 {
            return Ok(0);
        }
        let list = self.segments.load();
        assert!(count < list.len(), "the active segment is never deleted");
        let (doomed, kept) = list.split_at(count);
        let new_start = kept
            .first()
            .map_or(self.log_end_offset(), |s| s.base_offset());
        self.segments.store(Arc::new(kept.to_vec()));
        self.log_start_offset.fetch_max(new_start, Ordering::AcqRel);
        self.high_watermark.fetch_max(new_start, Ordering::AcqRel);
        for segment in doomed {
            info!(dir = %self.dir.display(), segment = segment.base_offset(), reason, "deleting segment");
            segment.delete_files()?;
        }
        self.update_epochs(|epochs| epochs.truncate_from_start(new_start))?;
        Ok(doomed.len())
    }

    fn stats(&self) -> Vec<SegmentStats> {
        self.segments
            .load()
            .iter()
            .map(|s| SegmentStats {
                base_offset: s.base_offset(),
                next_offset: s.next_offset(),
                size_bytes: s.size_bytes(),
                max_timestamp: s.max_timestamp(),
            })
            .collect()
    }

    /// Removes every batch at or after `offset` (whole batches: the new log end offset is the
    /// largest batch boundary at most `offset`), for a replica whose tail diverged. The high
    /// watermark is lowered to the new end if needed. Returns the new log end offset. An
    /// `offset` at or below the log start empties the log (it then restarts at the log start).
    ///
    /// Published bytes are never rewritten, so that a reader holding a region never sees other
    /// batches in its place: the segment holding the cut is cut in place (a region past the cut
    /// ends early) and sealed, and appends continue in a new segment. Segments wholly past the
    /// cut are deleted newest first, so a crash midway leaves a prefix of the old log. The
    /// result is flushed before this returns.
    ///
    /// # Errors
    /// I/O errors; [`LogError::Corruption`] when the batches before the cut cannot be walked;
    /// [`LogError::Closed`].
    pub fn truncate_to(&self, offset: i64) -> Result<i64, LogError> {
        let mut writer = self.writer.lock();
        if writer.closed {
            return Err(LogError::Closed);
        }
        let log_end = self.log_end_offset();
        if offset >= log_end {
            // No record goes, but an epoch begun at the log end with nothing written in it
            // (a leader that lost leadership before appending) must: a follower that kept it
            // would ask the leader about an epoch it never had, round after round (Kafka's
            // truncateTo does the same).
            self.update_epochs(|epochs| epochs.truncate_from_end(log_end))?;
            return Ok(log_end);
        }
        let log_start = self.log_start_offset();
        if offset <= log_start {
            self.reset_locked(&mut writer, log_start)?;
            return Ok(log_start);
        }
        let list = self.segments.load_full();
        let keep = list
            .iter()
            .take_while(|s| s.base_offset() < offset)
            .count()
            .max(1);
        let (kept, doomed) = list.split_at(keep);
        let holder = Arc::clone(&kept[keep - 1]);
        let cut = holder.find_batch(offset)?;
        let new_end = cut.map_or(holder.next_offset(), |at| at.header.base_offset);
        // Readers stop at the new end before anything goes.
        self.log_end_offset.store(new_end, Ordering::Release);
        self.high_watermark.fetch_min(new_end, Ordering::AcqRel);
        for segment in doomed.iter().rev() {
            segment.delete_files()?;
        }
        let mut segments = kept.to_vec();
        // Appends always continue in a fresh segment (a new file, even where its name is that
        // of a deleted one): the holder may have been cut by an earlier truncation, and
        // appending to it again would rewrite bytes a reader of that earlier tail still holds.
        match cut {
            // Only later segments went and the holder ends at `new_end`; an empty holder would
            // share the new segment's name, so it goes.
            None if holder.size_bytes() == 0 => {
                segments.pop();
                holder.delete_files()?;
            }
            None => {}
            Some(at) if at.position == 0 => {
                segments.pop();
                holder.delete_files()?;
            }
            Some(_) => {
                holder.unseal()?;
                holder.truncate_to(offset)?;
                holder.seal()?;
            }
        }
        let segment = Segment::create(&self.dir, new_end, limits_of(&writer.config))?;
        segments.push(Arc::new(segment));
        durable::sync_dir(&self.dir)?;
        self.segments.store(Arc::new(segments));
        let active = self.active();
        assert_eq!(
            active.next_offset(),
            new_end,
            "the active segment ends the log"
        );
        active.flush()?;
        writer.checkpoint.write(
            RecoveryPoint {
                segment_base_offset: active.base_offset(),
                position: active.size_bytes(),
                next_offset: new_end,
            },
            true,
        )?;
        writer.unflushed_records = 0;
        writer.first_unflushed_ms = None;
        self.update_epochs(|epochs| epochs.truncate_from_end(new_end))?;
        info!(dir = %self.dir.display(), offset, new_end, "truncated log");
        Ok(new_end)
    }

    /// Deletes every segment and restarts the log, empty, at `offset` (a replica that must
    /// fetch everything anew). Durable when this returns.
    ///
    /// Crash safety: the new start is checkpointed first (an open that finds no segment starts
    /// there), segments holding offsets at or past `offset` go newest first, then the new
    /// segment is created, then the older segments go. A crash midway leaves a prefix of the
    /// old log, possibly followed by the new empty segment.
    ///
    /// # Errors
    /// [`LogError::OffsetOutOfRange`] for a negative offset; I/O errors; [`LogError::Closed`].
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                log_end_offset: self.log_end_offset(),
            });
        }
        let mut writer = self.writer.lock();
        if writer.closed {
            return Err(LogError::Closed);
        }
        self.reset_locked(&mut writer, offset)
    }

    fn reset_locked(&self, writer: &mut Writer, offset: i64) -> Result<(), LogError> {
        let start = RecoveryPoint {
            segment_base_offset: offset,
            position: 0,
            next_offset: offset,
        };
        writer.checkpoint.write(start, true)?;
        let old = self.segments.load_full();
        let (below, reaching): (Vec<&Arc<Segment>>, Vec<&Arc<Segment>>) = old
            .iter()
            .partition(|s| s.next_offset() <= offset && s.base_offset() < offset);
        for segment in reaching.iter().rev() {
            segment.delete_files()?;
        }
        let segment = Arc::new(Segment::create(
            &self.dir,
            offset,
            limits_of(&writer.config),
        )?);
        durable::sync_dir(&self.dir)?;
        self.log_end_offset.store(offset, Ordering::Release);
        self.segments.store(Arc::new(vec![segment]));
        self.log_start_offset.store(offset, Ordering::Release);
        self.high_watermark.store(offset, Ordering::Release);
        for segment in below {
            segment.delete_files()?;
        }
        durable::sync_dir(&self.dir)?;
        writer.unflushed_records = 0;
        writer.first_unflushed_ms = None;
        self.update_epochs(EpochCache::clear)?;
        info!(dir = %self.dir.display(), offset, "reset log");
        Ok(())
    }

    /// Flushes, trims the active segment's indexes and writes the clean-shutdown marker, so
    /// the next open skips recovery. Later appends fail with [`LogError::Closed`].
    ///
    /// # Errors
    /// I/O errors; the marker is then not written and the next open recovers.
    pub fn close(&self) -> Result<(), LogError> {
        let mut writer = self.writer.lock();
        if writer.closed {
            return Ok(());
        }
        let active = self.active();
        active.seal()?;
        writer.checkpoint.write(
            RecoveryPoint {
                segment_base_offset: active.base_offset(),
                position: active.size_bytes(),
                next_offset: active.next_offset(),
            },
            true,
        )?;
        durable::write_atomically(&self.dir.join(CLEAN_SHUTDOWN_FILE), &[])?;
        writer.closed = true;
        Ok(())
    }

    // ----- reads -----

    /// Reads whole batches from `offset` within `limits`. Never blocks the writer.
    ///
    /// The answer always starts with the batch holding `offset`. A reader that raced a
    /// truncation may hold a segment list in which the segment holding `offset` was already
    /// cut short while a later, doomed segment is still listed; it then sees a gap (a later
    /// segment starting above `offset`) and reads again with fresh state instead of skipping
    /// ahead to batches that no longer follow `offset`.
    ///
    /// # Errors
    /// [`LogError::OffsetOutOfRange`] when `offset` is below the log start or above the log
    /// end; [`LogError::Corruption`] when the batch at `offset` is damaged; I/O errors.
    pub fn read(&self, offset: i64, limits: ReadLimits) -> Result<ReadResult, LogError> {
        const STALE_RETRIES: usize = 16;
        for _ in 0..STALE_RETRIES {
            if let Some(result) = self.read_once(offset, limits)? {
                return Ok(result);
            }
            std::thread::yield_now();
        }
        // Still racing a writer that keeps truncating: answer with nothing rather than wait.
        let mut result = self.read_bounds(offset)?;
        result.region = None;
        Ok(result)
    }

    /// The bounds of a read at `offset` with no region yet.
    fn read_bounds(&self, offset: i64) -> Result<ReadResult, LogError> {
        let log_start = self.log_start_offset();
        let log_end = self.log_end_offset();
        let high_watermark = self.high_watermark();
        if offset < log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: log_start,
                log_end_offset: log_end,
            });
        }
        Ok(ReadResult {
            region: None,
            next_offset: offset,
            log_start_offset: log_start,
            log_end_offset: log_end,
            high_watermark,
        })
    }

    /// One read attempt; `None` when the segment list was stale (see [`read`](Self::read)).
    fn read_once(&self, offset: i64, limits: ReadLimits) -> Result<Option<ReadResult>, LogError> {
        let segments = self.segments.load();
        let mut result = self.read_bounds(offset)?;
        let max_offset = limits
            .max_offset
            .unwrap_or(result.log_end_offset)
            .min(result.log_end_offset);
        if offset >= max_offset {
            return Ok(Some(result));
        }
        let first = segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        for segment in &segments[first..] {
            if segment.base_offset() >= max_offset {
                break;
            }
            if segment.base_offset() > offset {
                // The segments before this one end below `offset`: a truncation cut them
                // after this list was loaded.
                return Ok(None);
            }
            let Some(at) = segment.find_batch(offset)? else {
                continue;
            };
            if at.header.base_offset >= max_offset {
                break;
            }
            if let Some((region, next)) =
                segment.region(at, max_offset, limits.max_bytes, limits.min_one_batch)?
            {
                result.region = Some(region);
                result.next_offset = next;
            }
            break;
        }
        Ok(Some(result))
    }

    /// The first record whose timestamp is at least `timestamp`, or `None` when every record
    /// is older. For compressed batches the answer is the first record of the first batch
    /// whose max timestamp qualifies, which may be a little early but never late.
    ///
    /// # Errors
    /// I/O errors; corruption found on the way.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampHit>, LogError> {
        let segments = self.segments.load();
        for segment in segments.iter() {
            if segment.max_timestamp() < timestamp {
                continue;
            }
            let Some(at) = segment.find_batch_by_timestamp(timestamp)? else {
                continue;
            };
            let batch = segment.read_batch(&at)?;
            let hit = format::first_offset_at_or_after(&batch, timestamp)
                .map(|(offset, ts)| TimestampHit {
                    offset,
                    timestamp: ts,
                })
                .unwrap_or(TimestampHit {
                    offset: at.header.base_offset,
                    timestamp: at.header.max_timestamp,
                });
            let offset = hit.offset.max(self.log_start_offset());
            return Ok(Some(TimestampHit { offset, ..hit }));
        }
        Ok(None)
    }
}

impl PartitionLog {
    // ----- leader epochs -----

    /// The epoch of the last leader that wrote to this log, if any wrote with an epoch.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.load().latest_epoch()
    }

    /// The offset of the first batch written by leader `epoch`, if it wrote here.
    pub fn epoch_start_offset(&self, epoch: i32) -> Option<i64> {
        self.epochs.load().start_offset_of(epoch)
    }

    /// The leader epochs of the log and where each starts, oldest first.
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.epochs.load().entries().to_vec()
    }

    /// Kafka's OffsetForLeaderEpoch answer: the largest epoch at most `requested_epoch` and
    /// the offset where it ends in this log (see [`EpochCache::end_offset_for`]); `None` for
    /// UNDEFINED. Never blocks the writer; the answer never exceeds the log end offset.
    ///
    /// The log end is read before the epochs (an append publishes its epochs first), so an
    /// answer never credits an epoch with records a newer one wrote. A truncation running at
    /// the same time (followers truncate, leaders answer) may yield an answer of either side.
    pub fn end_offset_for_epoch(&self, requested_epoch: i32) -> Option<(i32, i64)> {
        let log_end = self.log_end_offset();
        self.epochs
            .load()
            .end_offset_for(requested_epoch, log_end)
            .map(|(epoch, end_offset)| (epoch, end_offset.min(log_end)))
    }

    /// Where this log, as a follower, cuts its tail given the leader's
    /// [`end_offset_for_epoch`](Self::end_offset_for_epoch) answer about this log's latest
    /// epoch (see [`epochs::follower_truncation`]): the offset to
    /// [`truncate_to`](Self::truncate_to), and whether it is final (otherwise ask the leader
    /// again about the latest epoch once cut).
    pub fn truncation_point(&self, leader_answer: Option<(i32, i64)>) -> (i64, bool) {
        epochs::follower_truncation(
            leader_answer,
            |epoch| self.end_offset_for_epoch(epoch),
            self.log_end_offset(),
            self.high_watermark(),
        )
    }

    /// Records that leader `epoch` begins at the log end offset, as a new leader does before
    /// it appends (Kafka assigns it on becoming leader), so that a follower asking about an
    /// epoch newer than this log's last batch gets a precise answer. Only an epoch above the
    /// latest one counts; an entry that no batch follows is dropped at the next open.
    ///
    /// # Errors
    /// I/O errors writing the checkpoint; [`LogError::Closed`].
    pub fn begin_leader_epoch(&self, epoch: i32) -> Result<(), LogError> {
        let writer = self.writer.lock();
        if writer.closed {
            return Err(LogError::Closed);
        }
        if self.epochs.load().is_new_epoch(epoch) {
            let log_end = self.log_end_offset();
            self.update_epochs(|epochs| epochs.assign(epoch, log_end))?;
        }
        drop(writer);
        Ok(())
    }

    /// The epoch cache once `batches` are appended, already checkpointed, or `None` when they
    /// change nothing. The checkpoint is written before the batches reach the segment: an
    /// entry whose batch is then lost starts at or past the log end and is dropped at open.
    /// The caller holds the writer lock.
    fn epochs_after(&self, batches: &[BatchAt]) -> Result<Option<EpochCache>, LogError> {
        let current = self.epochs.load();
        let new_epoch = |b: &BatchAt| current.is_new_epoch(b.header.partition_leader_epoch);
        if !batches.iter().any(new_epoch) {
            return Ok(None);
        }
        let mut next = EpochCache::clone(&current);
        for batch in batches {
            next.observe_batch(
                batch.header.partition_leader_epoch,
                batch.header.base_offset,
            );
        }
        epochs::write_checkpoint(&self.dir, &next)?;
        Ok(Some(next))
    }

    /// Applies `change` to the epoch cache; when it changed anything, checkpoints and
    /// publishes the result. The caller holds the writer lock.
    fn update_epochs(&self, change: impl FnOnce(&mut EpochCache) -> bool) -> Result<(), LogError> {
        let mut next = EpochCache::clone(&self.epochs.load());
        if change(&mut next) {
            epochs::write_checkpoint(&self.dir, &next)?;
            self.epochs.store(Arc::new(next));
        }
        Ok(())
    }
}

/// Gives `batches` (validated, within `records`) their offsets from `log_end_offset` as
/// `offsets` says, and returns the offset after the last. [`Offsets::Keep`] checks every batch
/// before anything is written and changes no byte.
fn place_batches(
    records: &mut [u8],
    batches: &mut [BatchAt],
    log_end_offset: i64,
    offsets: Offsets,
) -> Result<i64, LogError> {
    let mut next = log_end_offset;
    for (batch_index, batch) in batches.iter_mut().enumerate() {
        match offsets {
            Offsets::Assign { leader_epoch } => {
                let start = batch.position as usize;
                format::set_base_offset(&mut records[start..], next);
                batch.header.base_offset = next;
                if let Some(epoch) = leader_epoch {
                    format::set_partition_leader_epoch(&mut records[start..], epoch);
                    batch.header.partition_leader_epoch = epoch;
                }
            }
            Offsets::Keep if batch.header.base_offset != next => {
                return Err(LogError::UnexpectedBaseOffset {
                    batch_index,
                    base_offset: batch.header.base_offset,
                    expected_offset: next,
                });
            }
            Offsets::Keep => {}
        }
        next = batch.header.next_offset();
    }
    Ok(next)
}

/// The epoch cache of a log with `segments` spanning `[log_start, log_end)`: from its
/// checkpoint or, when that is missing or damaged, rebuilt from the batch headers; cut to the
/// log (entries at or past the end go, history below the start is folded into the start, an
/// empty log has none) and checkpointed again when that changed it.
fn load_epochs(
    dir: &Path,
    segments: &[Arc<Segment>],
    log_start: i64,
    log_end: i64,
) -> Result<EpochCache, LogError> {
    let (mut cache, mut changed) = match epochs::read_checkpoint(dir)? {
        Some(cache) => (cache, false),
        None => {
            if log_end > log_start {
                warn!(dir = %dir.display(), "no usable leader-epoch checkpoint; rebuilding it from the batch headers");
            }
            (scan_epochs(dir, segments)?, true)
        }
    };
    changed |= cache.truncate_from_end(log_end);
    changed |= if log_end == log_start {
        cache.clear()
    } else {
        cache.truncate_from_start(log_start)
    };
    if changed {
        epochs::write_checkpoint(dir, &cache)?;
    }
    Ok(cache)
}

/// The epochs of the batches in `segments`, read from their headers only. A header that
/// cannot be read ends the walk of its segment (with a warning): the epochs after it in that
/// segment are missed, never invented.
fn scan_epochs(dir: &Path, segments: &[Arc<Segment>]) -> Result<EpochCache, LogError> {
    let mut cache = EpochCache::default();
    for segment in segments {
        let end = segment.size_bytes();
        let mut position = 0u64;
        // Each header moves the position forward by at least a header's size.
        while let Some(header) = segment.header_at(position, end)? {
            cache.observe_batch(header.partition_leader_epoch, header.base_offset);
            position += header.size_bytes() as u64;
        }
        if position < end {
            warn!(dir = %dir.display(), segment = segment.base_offset(), position, "unreadable batch header while rebuilding leader epochs");
        }
    }
    Ok(cache)
}

/// Bytes read at a time by [`Batches`].
const BATCHES_CHUNK_BYTES: u64 = 4 << 20;

/// The stored record batches of a range of a log, one at a time, each with its 12-byte
/// prefix (base offset and length), as read back from disk: see [`PartitionLog::batches`].
pub struct Batches<'a> {
    log: &'a PartitionLog,
    /// Where the next read starts.
    next_offset: i64,
    /// Only batches whose base offset is below this.
    until_offset: i64,
    /// Batches read but not yet handed out.
    chunk: bytes::Bytes,
    /// File position of `chunk`'s first byte, for errors.
    chunk_position: u64,
    done: bool,
}

impl PartitionLog {
    /// The batches whose base offset lies in `[from, until)`, starting with the batch that
    /// holds `from` (which may begin below it), read a few MiB at a time without blocking
    /// the writer. The log only stores batches whose length and CRC were checked, so each
    /// batch's length says where the next begins; one that does not fit the bytes read is
    /// [`LogError::Corruption`] and ends the iteration.
    ///
    /// # Errors
    /// Each item: as [`read`](Self::read) (for example [`LogError::OffsetOutOfRange`] when
    /// segments below the read position were deleted meanwhile).
    pub fn batches(&self, from: i64, until: i64) -> Batches<'_> {
        Batches {
            log: self,
            next_offset: from,
            until_offset: until,
            chunk: bytes::Bytes::new(),
            chunk_position: 0,
            done: false,
        }
    }
}

impl Batches<'_> {
    fn corruption(&mut self, detail: String) -> LogError {
        self.done = true;
        self.chunk = bytes::Bytes::new();
        LogError::Corruption {
            path: self.log.dir.clone(),
            position: self.chunk_position,
            detail,
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<bytes::Bytes, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Each pass either hands out a batch, ends, or reads a chunk that moves forward.
        loop {
            if !self.chunk.is_empty() {
                if self.chunk.len() < format::LOG_OVERHEAD {
                    let detail = format!("{} stray bytes after a batch", self.chunk.len());
                    return Some(Err(self.corruption(detail)));
                }
                let length = i32::from_be_bytes([
                    self.chunk[8],
                    self.chunk[9],
                    self.chunk[10],
                    self.chunk[11],
                ]);
                let size = usize::try_from(length)
                    .ok()
                    .map(|length| length + format::LOG_OVERHEAD)
                    .filter(|size| *size <= self.chunk.len());
                let Some(size) = size else {
                    let detail = format!("batch length {length} exceeds the bytes read");
                    return Some(Err(self.corruption(detail)));
                };
                self.chunk_position += size as u64;
                return Some(Ok(self.chunk.split_to(size)));
            }
            if self.done || self.next_offset >= self.until_offset {
                return None;
            }
            let limits = ReadLimits::bytes(BATCHES_CHUNK_BYTES).up_to(self.until_offset);
            let read = match self.log.read(self.next_offset, limits) {
                Ok(read) => read,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            let region = read.region?;
            match region.to_vec() {
                Ok(bytes) => self.chunk = bytes::Bytes::from(bytes),
                Err(e) => {
                    self.done = true;
                    return Some(Err(LogError::io("read batches", &self.log.dir, e)));
                }
            }
            self.chunk_position = region.position;
            // A read always returns at least one batch past `next_offset`; stop rather than
            // loop if it ever did not.
            self.done = read.next_offset <= self.next_offset;
            self.next_offset = read.next_offset;
        }
    }
}

/// Base offsets of the segments in `dir`, sorted. Index files without a log file are
/// removed; files that are not segment files are left alone.
fn list_segment_bases(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut bases = Vec::new();
    let mut orphans = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| LogError::io("list log directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("list log directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((base, suffix)) = format::parse_segment_file_name(name) else {
            continue;
        };
        if suffix == LOG_SUFFIX {
            bases.push(base);
        } else {
            orphans.push((base, entry.path()));
        }
    }
    bases.sort_unstable();
    for (base, path) in orphans {
        if bases.binary_search(&base).is_err() {
            warn!(path = %path.display(), "removing index file without a segment");
            std::fs::remove_file(&path)
                .map_err(|e| LogError::io("remove orphan index", &path, e))?;
        }
    }
    Ok(bases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_batches::{batch, BatchSpec};

    fn small_segments() -> LogConfig {
        LogConfig {
            segment_bytes: 1024,
            ..LogConfig::default()
        }
    }

    /// A log of `batches` batches of 2 records, its high watermark at the end.
    fn log_of(dir: &Path, batches: u64) -> PartitionLog {
        let log = PartitionLog::open(dir, small_segments()).expect("open");
        for i in 0..batches {
            log.append(&mut batch(&BatchSpec::records(2).seed(i)))
                .expect("append");
        }
        log.set_high_watermark(log.log_end_offset());
        log
    }

    #[test]
    fn deleting_segments_below_an_offset_keeps_the_segment_holding_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log_of(dir.path(), 40);
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 4, "small segments roll: {bases:?}");
        // An offset inside the third segment: the first two go, the third stays.
        let deleted = log
            .delete_segments_below(bases[2] + 1)
            .expect("delete below");
        assert_eq!(deleted, 2);
        assert_eq!(log.log_start_offset(), bases[2]);
        assert_eq!(log.segment_base_offsets(), bases[2..].to_vec());
        assert!(matches!(
            log.read(bases[1], ReadLimits::bytes(1 << 20)),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // Already done: nothing more goes.
        assert_eq!(log.delete_segments_below(bases[2]).expect("again"), 0);
    }

    #[test]
    fn deleting_segments_never_takes_the_active_one_or_records_above_the_high_watermark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log_of(dir.path(), 40);
        let bases = log.segment_base_offsets();
        let active = *bases.last().expect("active");
        log.set_high_watermark(bases[1] + 1);
        // The second segment holds records at the high watermark: only the first goes.
        assert_eq!(log.delete_segments_below(i64::MAX).expect("delete"), 1);
        log.set_high_watermark(log.log_end_offset());
        assert_eq!(
            log.delete_segments_below(i64::MAX).expect("delete"),
            bases.len() - 2
        );
        assert_eq!(log.segment_base_offsets(), vec![active]);
        assert_eq!(log.log_start_offset(), active);
    }

    #[test]
    fn deleted_segments_stay_deleted_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bases = {
            let log = log_of(dir.path(), 40);
            let bases = log.segment_base_offsets();
            log.delete_segments_below(bases[3]).expect("delete");
            log.close().expect("close");
            bases
        };
        let log = PartitionLog::open(dir.path(), small_segments()).expect("reopen");
        assert_eq!(log.log_start_offset(), bases[3]);
        assert_eq!(log.segment_base_offsets(), bases[3..].to_vec());
    }

    #[test]
    fn batches_walks_every_batch_of_a_range_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log_of(dir.path(), 40);
        assert!(log.segment_count() > 2);
        let bases: Vec<i64> = log
            .batches(0, log.log_end_offset())
            .map(|b| format::BatchHeader::parse(&b.expect("batch")).expect("header"))
            .map(|h| h.base_offset)
            .collect();
        assert_eq!(bases, (0..40).map(|i| i * 2).collect::<Vec<_>>());
        // From inside a batch up to a bound: the batch holding `from`, none at `until`.
        let bases: Vec<i64> = log
            .batches(11, 20)
            .map(|b| format::BatchHeader::parse(&b.expect("batch")).expect("header"))
            .map(|h| h.base_offset)
            .collect();
        assert_eq!(bases, vec![10, 12, 14, 16, 18]);
        assert_eq!(log.batches(80, 80).count(), 0);
    }

    #[test]
    fn roll_now_seals_the_active_segment_only_when_it_holds_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log_of(dir.path(), 1);
        assert_eq!(log.roll_now().expect("roll"), 2);
        assert_eq!(log.roll_now().expect("roll again"), 2);
        assert_eq!(log.segment_base_offsets(), vec![0, 2]);
    }
}
