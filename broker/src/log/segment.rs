//! One segment of a partition log: a `.log` file of record batches starting at the segment's
//! base offset, with its offset and time indexes.
//!
//! Invariants, upheld by the single writer and relied on by readers:
//! - bytes below the published `size_bytes` are whole record batches with contiguous offsets
//!   starting at `base_offset`; once published they are never rewritten, only cut off by
//!   truncation, after which the segment takes no more appends (the partition log rolls);
//! - index entries point at batch starts below `size_bytes` and are published after the
//!   batches they point at; readers still treat them as hints and check the batch header;
//! - a batch is known valid (CRC and continuity checked) when it lies in the verified prefix
//!   or in the verified suffix (everything appended or recovered by this process); readers
//!   check any other batch before they hand it out, and check that every batch header they
//!   walk continues the offsets of the one before (the CRC does not cover the base offset).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::warn;

use super::format::{
    self, batch_size_from_prefix, validate_batch, BatchHeader, BATCH_HEADER_SIZE, INDEX_SUFFIX,
    LOG_SUFFIX, TIME_INDEX_SUFFIX,
};
use super::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use super::{FileRegion, LogConfig, LogError};

/// Bytes of batches appended since the indexes were last flushed after which a data flush
/// flushes them too. Index entries are hints that recovery rebuilds by walking batch headers,
/// so this bounds what a recovery after a power loss walks beyond the recovery point's
/// segment position, without paying two more synchronous writes on every flush.
pub const INDEX_FLUSH_LAG_BYTES: u64 = 16 << 20;

/// Sizes that govern a segment's indexes and batch checks.
#[derive(Debug, Clone, Copy)]
pub struct SegmentLimits {
    /// Bytes of batches between two offset-index entries.
    pub index_interval_bytes: u64,
    /// Preallocated size of each index file.
    pub index_bytes_max: usize,
    /// Largest batch the segment will accept or believe when scanning.
    pub batch_bytes_max: usize,
}

impl SegmentLimits {
    /// The limits of a segment of a log configured with `config`, for appends.
    pub fn of(config: &LogConfig) -> Self {
        Self {
            index_interval_bytes: config.index_interval_bytes,
            index_bytes_max: config.segment_index_bytes,
            batch_bytes_max: config.max_message_bytes.max(format::BATCH_HEADER_SIZE),
        }
    }

    /// The limits used when reading segments back: a stored batch may be larger than the
    /// current `max.message.bytes` (which can be lowered later) but never larger than a
    /// segment.
    pub fn for_reading(config: &LogConfig) -> Self {
        Self {
            batch_bytes_max: i32::MAX as usize,
            ..Self::of(config)
        }
    }
}

/// A batch seen while walking a segment: where it starts and its header.
#[derive(Debug, Clone, Copy)]
pub struct BatchAt {
    pub position: u64,
    pub header: BatchHeader,
}

/// Writer-only bookkeeping of a segment.
#[derive(Debug, Default)]
struct WriterState {
    bytes_since_index_entry: u64,
    /// Largest timestamp seen and the base offset of the first batch that reached it.
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    /// Whether a time entry was left out for lack of room, so that the time index may not
    /// hold the max timestamp of the batches it covers.
    time_entries_skipped: bool,
    /// Bytes appended since the indexes were last flushed.
    bytes_since_index_flush: u64,
}

pub struct Segment {
    base_offset: i64,
    dir: PathBuf,
    log: Arc<File>,
    limits: SegmentLimits,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    /// Bytes of whole batches visible to readers.
    size_bytes: AtomicU64,
    /// Offset after the last batch.
    next_offset: AtomicI64,
    /// Largest batch max-timestamp in the segment (`i64::MIN` when empty).
    max_timestamp: AtomicI64,
    /// Max timestamp of the first batch, the basis of time-based rolling (`i64::MIN` if none).
    first_batch_timestamp: AtomicI64,
    /// Batches below this position are verified.
    verified_prefix_bytes: AtomicU64,
    /// Batches at or after this position are verified.
    verified_suffix_from: AtomicU64,
    writer: Mutex<WriterState>,
}

impl Segment {
    /// Creates a new, empty segment (its files must not exist yet, or are replaced).
    ///
    /// # Errors
    /// I/O errors creating the files.
    pub fn create(dir: &Path, base_offset: i64, limits: SegmentLimits) -> Result<Self, LogError> {
        let log_path = format::segment_path(dir, base_offset, LOG_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .map_err(|e| LogError::io("create segment", &log_path, e))?;
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let path = format::segment_path(dir, base_offset, suffix);
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| LogError::io("remove index", &path, e))?;
            }
        }
        Self::from_parts(dir, base_offset, file, limits, 0, true)
    }

    /// Opens an existing segment as it is on disk, without scanning its batches. The caller
    /// then either recovers it ([`Segment::recover_from`]) or loads its tail
    /// ([`Segment::load_tail`]). The index files are preallocated for appends when `active`;
    /// a sealed segment's are left as they are (see [`indexes_untrimmed`](Self::indexes_untrimmed)).
    ///
    /// # Errors
    /// I/O errors opening the files.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        limits: SegmentLimits,
        active: bool,
    ) -> Result<Self, LogError> {
        let log_path = format::segment_path(dir, base_offset, LOG_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|e| LogError::io("open segment", &log_path, e))?;
        let len = file
            .metadata()
            .map_err(|e| LogError::io("stat segment", &log_path, e))?
            .len();
        Self::from_parts(dir, base_offset, file, limits, len, active)
    }

    fn from_parts(
        dir: &Path,
        base_offset: i64,
        file: File,
        limits: SegmentLimits,
        size_bytes: u64,
        preallocate_indexes: bool,
    ) -> Result<Self, LogError> {
        let offset_index = OffsetIndex::open(
            &format::segment_path(dir, base_offset, INDEX_SUFFIX),
            limits.index_bytes_max,
            preallocate_indexes,
        )?;
        let time_index = TimeIndex::open(
            &format::segment_path(dir, base_offset, TIME_INDEX_SUFFIX),
            limits.index_bytes_max,
            preallocate_indexes,
        )?;
        Ok(Self {
            base_offset,
            dir: dir.to_path_buf(),
            log: Arc::new(file),
            limits,
            offset_index,
            time_index,
            size_bytes: AtomicU64::new(size_bytes),
            next_offset: AtomicI64::new(base_offset),
            max_timestamp: AtomicI64::new(i64::MIN),
            first_batch_timestamp: AtomicI64::new(i64::MIN),
            verified_prefix_bytes: AtomicU64::new(0),
            verified_suffix_from: AtomicU64::new(size_bytes),
            writer: Mutex::new(WriterState {
                bytes_since_index_entry: 0,
                max_timestamp: i64::MIN,
                offset_of_max_timestamp: base_offset,
                time_entries_skipped: false,
                bytes_since_index_flush: 0,
            }),
        })
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Acquire)
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.size_bytes() == 0
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    pub fn first_batch_timestamp(&self) -> i64 {
        self.first_batch_timestamp.load(Ordering::Acquire)
    }

    pub fn log_path(&self) -> PathBuf {
        format::segment_path(&self.dir, self.base_offset, LOG_SUFFIX)
    }

    pub fn index_entries(&self) -> usize {
        self.offset_index.len()
    }

    /// Whether an index file holds more slots than entries: a sealed segment whose load had to
    /// add entries (or whose last seal was cut short) and should be sealed again.
    pub fn indexes_untrimmed(&self) -> bool {
        self.offset_index.untrimmed() || self.time_index.untrimmed()
    }

    /// Whether the index entries of `batches` more batches may not fit.
    pub fn indexes_full_for(&self, batches: usize) -> bool {
        let offset_room = self.offset_index.capacity_entries() - self.offset_index.len();
        offset_room < batches + 1 || !self.time_index.has_room_for_appends(batches)
    }

    /// Whether offsets up to `last_offset` fit the 32-bit relative offsets of the indexes.
    pub fn can_hold_offset(&self, last_offset: i64) -> bool {
        last_offset - self.base_offset < i64::from(u32::MAX)
    }

    // ----- writer -----

    /// Appends already validated batches whose offsets are assigned and contiguous from
    /// [`next_offset`](Self::next_offset). Durable only after [`flush`](Self::flush).
    ///
    /// On error nothing becomes visible to readers, and the bytes written past the published
    /// size are overwritten by the next append.
    ///
    /// # Errors
    /// I/O errors of the write.
    pub fn append(&self, bytes: &[u8], batches: &[BatchAt]) -> Result<(), LogError> {
        let start = self.size_bytes();
        let (Some(first), Some(last)) = (batches.first(), batches.last()) else {
            return Ok(());
        };
        assert_eq!(
            first.header.base_offset,
            self.next_offset(),
            "appended offsets continue the segment"
        );
        self.log
            .write_all_at(bytes, start)
            .map_err(|e| LogError::io("append to segment", &self.log_path(), e))?;
        let mut writer = self.writer.lock();
        writer.bytes_since_index_flush += bytes.len() as u64;
        if self.first_batch_timestamp() == i64::MIN {
            self.first_batch_timestamp
                .store(first.header.max_timestamp, Ordering::Release);
        }
        let max_timestamp = batches
            .iter()
            .map(|b| b.header.max_timestamp)
            .fold(writer.max_timestamp, i64::max);
        self.max_timestamp.store(max_timestamp, Ordering::Release);
        self.next_offset
            .store(last.header.next_offset(), Ordering::Release);
        // The batches are published before the index entries that point at them, so a reader
        // never finds an entry beyond the size it loaded.
        self.size_bytes
            .store(start + bytes.len() as u64, Ordering::Release);
        for batch in batches {
            // A time entry made at a batch covers the batches up to it, no further.
            Self::note_timestamp(&mut writer, &batch.header);
            self.index_batch(&mut writer, start + batch.position, &batch.header)?;
        }
        Ok(())
    }

    /// Tracks the largest timestamp and the first batch that reached it.
    fn note_timestamp(writer: &mut WriterState, header: &BatchHeader) {
        if header.max_timestamp > writer.max_timestamp {
            writer.max_timestamp = header.max_timestamp;
            writer.offset_of_max_timestamp = header.base_offset;
        }
    }

    /// Adds index entries for one batch at `position` as the interval requires, while the
    /// indexes have room (an empty segment takes a whole append even when its entries do not
    /// fit; the index is sparse, so a missing entry only lengthens a scan).
    /// [`note_timestamp`](Self::note_timestamp) must have seen the batch already.
    fn index_batch(
        &self,
        writer: &mut WriterState,
        position: u64,
        header: &BatchHeader,
    ) -> Result<(), LogError> {
        if writer.bytes_since_index_entry >= self.limits.index_interval_bytes
            && position > 0
            && !self.offset_index.is_full()
        {
            let relative_offset = (header.base_offset - self.base_offset) as u32;
            self.offset_index.append(OffsetEntry {
                relative_offset,
                position: position as u32,
            })?;
            self.append_time_entry(writer, false)?;
            writer.bytes_since_index_entry = 0;
        }
        writer.bytes_since_index_entry += header.size_bytes() as u64;
        Ok(())
    }

    /// Records the max timestamp so far in the time index. Appends leave the last slot to
    /// [`seal`](Self::seal), so that a sealed segment's time index always ends with its max
    /// timestamp.
    fn append_time_entry(&self, writer: &mut WriterState, sealing: bool) -> Result<(), LogError> {
        if writer.max_timestamp == i64::MIN {
            return Ok(());
        }
        let room = if sealing {
            !self.time_index.is_full()
        } else {
            self.time_index.has_room_for_appends(1)
        };
        if room {
            self.time_index.maybe_append(TimeEntry {
                timestamp: writer.max_timestamp,
                relative_offset: (writer.offset_of_max_timestamp - self.base_offset) as u32,
            })?;
        } else if !sealing {
            writer.time_entries_skipped = true;
        }
        Ok(())
    }

    /// Makes everything appended so far durable: the log file, then the indexes.
    ///
    /// # Errors
    /// The first fsync/msync failure; it is never ignored.
    pub fn flush(&self) -> Result<(), LogError> {
        self.sync_log()?;
        self.flush_indexes()
    }

    /// Makes the batches appended so far durable; flushes the indexes too once
    /// [`INDEX_FLUSH_LAG_BYTES`] were appended since they last were.
    ///
    /// # Errors
    /// The first fsync/msync failure; it is never ignored.
    pub fn flush_data(&self) -> Result<(), LogError> {
        self.sync_log()?;
        let due = self.writer.lock().bytes_since_index_flush >= INDEX_FLUSH_LAG_BYTES;
        if due {
            self.flush_indexes()?;
        }
        Ok(())
    }

    fn sync_log(&self) -> Result<(), LogError> {
        self.log
            .sync_data()
            .map_err(|e| LogError::io("fsync segment", &self.log_path(), e))
    }

    /// Flushes the time index before the offset index: recovery computes the max timestamp
    /// from the time entries up to the last offset entry it finds, so those must be durable
    /// whenever that offset entry is.
    fn flush_indexes(&self) -> Result<(), LogError> {
        self.time_index.flush()?;
        self.offset_index.flush()?;
        self.writer.lock().bytes_since_index_flush = 0;
        Ok(())
    }

    /// Seals the segment when it stops being the active one: records the final time-index
    /// entry, flushes, and trims both indexes to their entries.
    ///
    /// # Errors
    /// I/O errors of the flush or the trim.
    pub fn seal(&self) -> Result<(), LogError> {
        {
            let mut writer = self.writer.lock();
            self.append_time_entry(&mut writer, true)?;
        }
        self.flush()?;
        self.offset_index.trim()?;
        self.time_index.trim()
    }

    /// Makes a sealed segment writable again (after a truncation made it the active one).
    ///
    /// # Errors
    /// I/O errors growing the index files.
    pub fn unseal(&self) -> Result<(), LogError> {
        self.offset_index.untrim()?;
        self.time_index.untrim()
    }

    /// Removes every batch at or after `offset`, so that the next offset is the largest batch
    /// boundary at most `offset`. Returns the new next offset. The caller seals the segment
    /// afterwards and appends elsewhere: bytes a reader may hold are never rewritten.
    ///
    /// # Errors
    /// I/O errors truncating the file; [`LogError::Corruption`] when the batches cannot be
    /// walked to the cut point.
    pub fn truncate_to(&self, offset: i64) -> Result<i64, LogError> {
        let (position, next_offset) = match self.find_batch(offset)? {
            Some(at) => (at.position, at.header.base_offset),
            None => return Ok(self.next_offset()),
        };
        self.cut_at(position, next_offset)?;
        Ok(next_offset)
    }

    /// Cuts the file at `position`, a batch boundary whose batch starts at `next_offset`.
    fn cut_at(&self, position: u64, next_offset: i64) -> Result<(), LogError> {
        self.size_bytes
            .store(position.min(self.size_bytes()), Ordering::Release);
        self.log
            .set_len(position)
            .map_err(|e| LogError::io("truncate segment", &self.log_path(), e))?;
        let relative = (next_offset - self.base_offset).max(0) as u32;
        self.offset_index.truncate_to_offset(relative);
        self.time_index.truncate_to_offset(relative);
        self.next_offset.store(next_offset, Ordering::Release);
        self.verified_prefix_bytes
            .fetch_min(position, Ordering::AcqRel);
        self.verified_suffix_from
            .fetch_min(position, Ordering::AcqRel);
        let mut writer = self.writer.lock();
        writer.bytes_since_index_entry = self.bytes_since_last_entry(position);
        let (max_ts, max_ts_offset) =
            self.max_timestamp_from(writer.time_entries_skipped, position)?;
        writer.max_timestamp = max_ts;
        writer.offset_of_max_timestamp = max_ts_offset;
        self.max_timestamp.store(max_ts, Ordering::Release);
        if position == 0 {
            self.first_batch_timestamp
                .store(i64::MIN, Ordering::Release);
        }
        Ok(())
    }

    fn bytes_since_last_entry(&self, end: u64) -> u64 {
        let last = self
            .offset_index
            .last()
            .map_or(0, |e| u64::from(e.position));
        end.saturating_sub(last)
    }

    /// Recomputes the max timestamp of the batches below `end` from the time index and the
    /// batches after the last offset-index entry (every offset-index entry comes with a time
    /// entry unless one was `skipped` for lack of room; then all batches are walked).
    fn max_timestamp_from(&self, skipped: bool, end: u64) -> Result<(i64, i64), LogError> {
        let complete = !skipped;
        let mut best = match self.time_index.last() {
            Some(e) if complete => (e.timestamp, self.base_offset + i64::from(e.relative_offset)),
            _ => (i64::MIN, self.base_offset),
        };
        let start = match self.offset_index.last() {
            Some(e) if complete => u64::from(e.position),
            _ => 0,
        };
        let mut position = start;
        while position < end {
            let Some(header) = self.header_at(position, end)? else {
                break;
            };
            if header.max_timestamp > best.0 {
                best = (header.max_timestamp, header.base_offset);
            }
            position += header.size_bytes() as u64;
        }
        Ok(best)
    }

    // ----- open and recovery -----

    /// Loads a segment that needs no recovery (a sealed segment, or the active one after a
    /// clean shutdown): keeps the index entries that point at real batch starts, walks the
    /// batches after the last one to find the end (checking their shape and offset continuity,
    /// not their CRCs, which readers check lazily), and rebuilds the index entries for that
    /// tail. A structurally broken tail is cut off when `cut_broken_tail` (the active segment);
    /// otherwise reads simply stop before it.
    ///
    /// The segment's max timestamp comes from the time index, whose last entry a sealed segment
    /// always holds (see [`seal`](Self::seal)), and from the walked tail.
    ///
    /// # Errors
    /// I/O errors.
    pub fn load_tail(&self, cut_broken_tail: bool) -> Result<(), LogError> {
        let file_len = self.size_bytes();
        self.offset_index
            .keep_first(self.offset_index.valid_prefix(file_len));
        // Drop trailing entries that do not point at a batch of the right offset.
        while let Some(last) = self.offset_index.last() {
            let expected = self.base_offset + i64::from(last.relative_offset);
            match self.header_at(u64::from(last.position), file_len)? {
                Some(h) if h.base_offset == expected => break,
                _ => self.offset_index.keep_first(self.offset_index.len() - 1),
            }
        }
        self.time_index
            .keep_first(self.time_index.valid_prefix(u64::from(u32::MAX)));
        let (start, start_offset) = self.last_indexed_batch();
        // The seal entry gives the max timestamp; but a time index without room for appends
        // may have skipped entries before it, which a later truncation must not rely on.
        self.reset_writer_state(start_offset, !self.time_index.has_room_for_appends(1));
        self.walk_and_index(start, start_offset, file_len, false, cut_broken_tail)?;
        self.verified_suffix_from
            .store(self.size_bytes(), Ordering::Release);
        self.finish_load()
    }

    /// Recovers the segment after an unclean shutdown from `position`, a batch boundary known
    /// durable whose batch starts at `next_offset`: every batch after it is fully validated
    /// (length, magic, CRC32C, offset continuity), the first invalid or torn batch and all
    /// bytes after it are cut off, and the index entries after `position` are rebuilt. When
    /// the bytes before `position` do not lead to it, the whole segment is validated instead.
    ///
    /// # Errors
    /// I/O errors.
    pub fn recover_from(&self, position: u64, next_offset: i64) -> Result<(), LogError> {
        let file_len = self.size_bytes();
        let point_fits = position <= file_len
            && next_offset >= self.base_offset
            && self.can_hold_offset(next_offset);
        if point_fits {
            self.recover(position, next_offset, file_len)
        } else {
            self.recover(0, self.base_offset, file_len)
        }
    }

    fn recover(&self, position: u64, next_offset: i64, file_len: u64) -> Result<(), LogError> {
        let relative = (next_offset - self.base_offset) as u32;
        // Entries written after the last flush may point anywhere: keep the ordered prefix
        // below the recovery point, then cut at its offset.
        self.offset_index
            .keep_first(self.offset_index.valid_prefix(position.saturating_add(1)));
        self.offset_index.truncate_to_offset(relative);
        self.time_index
            .keep_first(self.time_index.valid_prefix(u64::from(u32::MAX)));
        self.time_index.truncate_to_offset(relative);
        // A time index that ran out of room may lack the entries that carry the max
        // timestamp: walk the segment from its start to find it.
        let skipped = !self.time_index.has_room_for_appends(1);
        let (start, start_offset) = if skipped {
            (0, self.base_offset)
        } else {
            self.last_indexed_batch()
        };
        self.reset_writer_state(start_offset, skipped);
        if position > 0 {
            // The batches between the walk's start and `position` are durable: their shape and
            // offsets are checked here, their CRCs lazily by readers.
            self.walk_and_index(start, start_offset, position, false, false)?;
            if self.size_bytes() != position || self.next_offset() != next_offset {
                warn!(
                    segment = self.base_offset,
                    position, "recovery point does not match the log; recovering the whole segment"
                );
                return self.recover(0, self.base_offset, file_len);
            }
        }
        self.verified_suffix_from.store(position, Ordering::Release);
        self.walk_and_index(position, next_offset, file_len, true, true)?;
        self.finish_load()
    }

    /// The last indexed batch (position, base offset), or the segment start.
    fn last_indexed_batch(&self) -> (u64, i64) {
        self.offset_index.last().map_or((0, self.base_offset), |e| {
            (
                u64::from(e.position),
                self.base_offset + i64::from(e.relative_offset),
            )
        })
    }

    /// Resets the writer's bookkeeping before a walk from the batch at `start_offset`: the max
    /// timestamp so far is the last time-index entry at or before that batch.
    fn reset_writer_state(&self, start_offset: i64, time_entries_skipped: bool) {
        let mut writer = self.writer.lock();
        writer.bytes_since_index_entry = 0;
        writer.max_timestamp = i64::MIN;
        writer.offset_of_max_timestamp = self.base_offset;
        writer.time_entries_skipped = time_entries_skipped;
        let relative = (start_offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        if let Some(entry) = self.time_index.floor_by_offset(relative) {
            writer.max_timestamp = entry.timestamp;
            writer.offset_of_max_timestamp = self.base_offset + i64::from(entry.relative_offset);
        }
    }

    /// After a walk: drops time entries past the end and learns the first batch's timestamp.
    fn finish_load(&self) -> Result<(), LogError> {
        let end_relative = (self.next_offset() - self.base_offset) as u32;
        self.time_index.truncate_to_offset(end_relative);
        let end = self.size_bytes();
        let first = match self.header_at(0, end)? {
            Some(header) if end > 0 => header.max_timestamp,
            _ => i64::MIN,
        };
        self.first_batch_timestamp.store(first, Ordering::Release);
        Ok(())
    }

    /// Walks batches from `start` (a batch boundary whose batch starts at `start_offset`) to
    /// `end`, appending index entries, and publishes the size, next offset and max timestamp.
    /// With `validate`, each batch's CRC is checked too. Stops at the first batch that is
    /// broken or does not continue the offsets; with `cut` the file is truncated there.
    fn walk_and_index(
        &self,
        start: u64,
        start_offset: i64,
        end: u64,
        validate: bool,
        cut: bool,
    ) -> Result<(), LogError> {
        let mut writer = self.writer.lock();
        writer.bytes_since_index_entry = 0;
        let mut position = start;
        let mut expected_offset = start_offset;
        let mut buffer = Vec::new();
        let mut broken: Option<String> = None;
        while position < end {
            let header = match self.checked_header_at(position, end, &mut buffer, validate) {
                Ok(h) => h,
                Err(reason) => {
                    broken = Some(reason);
                    break;
                }
            };
            if header.base_offset != expected_offset || !self.can_hold_offset(header.last_offset())
            {
                broken = Some(format!(
                    "batch base offset {} where {} was expected",
                    header.base_offset, expected_offset
                ));
                break;
            }
            Self::note_timestamp(&mut writer, &header);
            let already_indexed = self
                .offset_index
                .last()
                .is_some_and(|e| u64::from(e.position) >= position);
            if already_indexed {
                writer.bytes_since_index_entry = header.size_bytes() as u64;
            } else {
                self.index_batch(&mut writer, position, &header)?;
            }
            expected_offset = header.next_offset();
            position += header.size_bytes() as u64;
        }
        if let Some(reason) = broken {
            warn!(segment = self.base_offset, position, reason = %reason, cut, "broken batch while loading segment");
            if cut {
                self.log
                    .set_len(position)
                    .map_err(|e| LogError::io("truncate torn tail", &self.log_path(), e))?;
            }
        }
        self.size_bytes.store(position, Ordering::Release);
        self.next_offset.store(expected_offset, Ordering::Release);
        self.max_timestamp
            .store(writer.max_timestamp, Ordering::Release);
        if validate && start == 0 {
            self.verified_prefix_bytes
                .store(position, Ordering::Release);
        }
        Ok(())
    }

    /// Reads and checks the batch at `position`, which must end by `end`. Returns a reason
    /// when the bytes there are not a plausible (or, with `validate`, valid) batch.
    fn checked_header_at(
        &self,
        position: u64,
        end: u64,
        buffer: &mut Vec<u8>,
        validate: bool,
    ) -> Result<BatchHeader, String> {
        let header = match self.header_at(position, end) {
            Ok(Some(h)) => h,
            Ok(None) => return Err("torn or implausible batch header".to_string()),
            Err(e) => return Err(e.to_string()),
        };
        if validate {
            buffer.resize(header.size_bytes(), 0);
            self.log
                .read_exact_at(buffer, position)
                .map_err(|e| e.to_string())?;
            validate_batch(buffer).map_err(|e| e.to_string())?;
        }
        Ok(header)
    }

    /// Reads the header of the batch at `position` and checks its shape: magic 2, a length
    /// within limits, and an end at or before `end`. `None` when it does not look like a batch.
    ///
    /// # Errors
    /// I/O errors other than a short read.
    pub fn header_at(&self, position: u64, end: u64) -> Result<Option<BatchHeader>, LogError> {
        if position + BATCH_HEADER_SIZE as u64 > end {
            return Ok(None);
        }
        let mut raw = [0u8; BATCH_HEADER_SIZE];
        match self.log.read_exact_at(&mut raw, position) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(LogError::io("read batch header", &self.log_path(), e)),
        }
        let Ok(size) = batch_size_from_prefix(&raw, self.limits.batch_bytes_max) else {
            return Ok(None);
        };
        let Ok(header) = BatchHeader::parse(&raw) else {
            return Ok(None);
        };
        let plausible = header.magic == format::MAGIC_V2
            && header.last_offset_delta >= 0
            && position + size as u64 <= end
            && size >= BATCH_HEADER_SIZE
            && header.base_offset >= self.base_offset;
        Ok(plausible.then_some(header))
    }

    // ----- readers -----

    /// The first batch whose last offset is at least `offset`, or `None` when the segment has
    /// none (the offset is at or past its end, or a concurrent truncation cut the segment).
    ///
    /// The walk starts at the segment's first batch or at an index entry whose batch header
    /// confirms it, and every header on the way must continue the offsets of the one before:
    /// a base offset damaged on disk (the CRC does not cover it) is reported, never believed.
    ///
    /// # Errors
    /// I/O errors; [`LogError::Corruption`] when a batch on the way is broken or out of
    /// sequence.
    pub fn find_batch(&self, offset: i64) -> Result<Option<BatchAt>, LogError> {
        let end = self.size_bytes();
        let relative = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let mut position = 0;
        let mut expected = self.base_offset;
        // The header read to confirm an index entry is the walk's first.
        let mut known: Option<BatchHeader> = None;
        if let Some(entry) = self.offset_index.floor_by_offset(relative) {
            let entry_offset = self.base_offset + i64::from(entry.relative_offset);
            let entry_position = u64::from(entry.position);
            match self.header_at(entry_position, end)? {
                Some(h) if h.base_offset == entry_offset => {
                    position = entry_position;
                    expected = entry_offset;
                    known = Some(h);
                }
                // An entry past the end belongs to a concurrent truncation, not to damage.
                _ if entry_position >= self.size_bytes() => {}
                _ => {
                    warn!(segment = self.base_offset, entry = ?entry, "offset index entry does not match the log; scanning the segment")
                }
            }
        }
        while position < end {
            let header = match known
                .take()
                .map_or_else(|| self.header_at(position, end), |h| Ok(Some(h)))?
            {
                Some(header) => header,
                None if position >= self.size_bytes() => return Ok(None),
                None => return Err(self.corruption(position, "broken batch header")),
            };
            if header.base_offset != expected {
                return Err(self.corruption(
                    position,
                    &format!(
                        "batch base offset {} where {expected} was expected",
                        header.base_offset
                    ),
                ));
            }
            if header.last_offset() >= offset {
                return Ok(Some(BatchAt { position, header }));
            }
            expected = header.next_offset();
            position += header.size_bytes() as u64;
        }
        Ok(None)
    }

    /// The first batch whose max timestamp is at least `timestamp`.
    ///
    /// # Errors
    /// As [`find_batch`](Self::find_batch).
    pub fn find_batch_by_timestamp(&self, timestamp: i64) -> Result<Option<BatchAt>, LogError> {
        if self.max_timestamp() < timestamp {
            return Ok(None);
        }
        let start_offset = self
            .time_index
            .floor_below(timestamp)
            .map_or(self.base_offset, |e| {
                self.base_offset + i64::from(e.relative_offset)
            });
        let Some(mut at) = self.find_batch(start_offset)? else {
            return Ok(None);
        };
        let end = self.size_bytes();
        loop {
            if at.header.max_timestamp >= timestamp {
                return Ok(Some(at));
            }
            let next = at.position + at.header.size_bytes() as u64;
            if next >= end {
                return Ok(None);
            }
            let header = match self.header_at(next, end)? {
                Some(header) if header.base_offset == at.header.next_offset() => header,
                None if next >= self.size_bytes() => return Ok(None),
                _ => return Err(self.corruption(next, "broken or out-of-sequence batch")),
            };
            at = BatchAt {
                position: next,
                header,
            };
        }
    }

    /// Reads a whole batch into a buffer, checking its CRC unless it is known valid.
    ///
    /// # Errors
    /// I/O errors; [`LogError::Corruption`] when the batch is invalid.
    pub fn read_batch(&self, at: &BatchAt) -> Result<Vec<u8>, LogError> {
        let mut buffer = vec![0u8; at.header.size_bytes()];
        self.log
            .read_exact_at(&mut buffer, at.position)
            .map_err(|e| LogError::io("read batch", &self.log_path(), e))?;
        if !self.is_verified(at.position) {
            validate_batch(&buffer).map_err(|e| self.corruption(at.position, &e.to_string()))?;
            self.mark_verified(at.position, at.position + buffer.len() as u64);
        }
        Ok(buffer)
    }

    /// The region of whole batches starting with `first`, ending before the first batch whose
    /// base offset reaches `max_offset` and within `max_bytes` (the first batch is included
    /// even when larger if `min_one_batch`). Every batch in the region that is not yet known
    /// valid is checked; the region stops before the first invalid one.
    ///
    /// Returns the region and the offset after its last batch, or `None` when not even the
    /// first batch qualifies.
    ///
    /// # Errors
    /// I/O errors; [`LogError::Corruption`] when the first batch itself is invalid.
    pub fn region(
        &self,
        first: BatchAt,
        max_offset: i64,
        max_bytes: u64,
        min_one_batch: bool,
    ) -> Result<Option<(FileRegion, i64)>, LogError> {
        let end = self.size_bytes();
        let start = first.position;
        let byte_limit = start.saturating_add(max_bytes);
        let mut position = start;
        let mut next_offset = first.header.base_offset;
        let mut header = Some(first.header);
        let mut buffer = Vec::new();
        while let Some(h) = header {
            if h.base_offset >= max_offset || h.base_offset != next_offset && position != start {
                break;
            }
            let batch_end = position + h.size_bytes() as u64;
            if batch_end > byte_limit && !(position == start && min_one_batch) {
                break;
            }
            if !self.is_verified(position) {
                buffer.resize(h.size_bytes(), 0);
                match self.log.read_exact_at(&mut buffer, position) {
                    Ok(()) => {}
                    // Cut by a concurrent truncation: the region ends here.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(LogError::io("read batch", &self.log_path(), e)),
                }
                if let Err(e) = validate_batch(&buffer) {
                    if self.log_len()? < batch_end {
                        // Cut by a concurrent truncation while it was read (the bytes read
                        // may be the zeroes the kernel leaves past the cut): the region ends.
                        break;
                    }
                    if position == start {
                        return Err(self.corruption(position, &e.to_string()));
                    }
                    warn!(segment = self.base_offset, position, error = %e, "corrupt batch; read stops before it");
                    break;
                }
                self.mark_verified(position, batch_end);
            }
            next_offset = h.next_offset();
            position = batch_end;
            // No batch is smaller than its header: past the byte bound, stop without reading.
            let room = byte_limit.saturating_sub(position) >= BATCH_HEADER_SIZE as u64;
            header = if position < end && room {
                self.header_at(position, end)?
            } else {
                None
            };
        }
        if position == start {
            return Ok(None);
        }
        let region = FileRegion {
            file: Arc::clone(&self.log),
            position: start,
            len: position - start,
        };
        Ok(Some((region, next_offset)))
    }

    /// The length of the segment file now (shorter than a region read from it once a
    /// truncation cut it).
    fn log_len(&self) -> Result<u64, LogError> {
        self.log
            .metadata()
            .map(|m| m.len())
            .map_err(|e| LogError::io("stat segment", &self.log_path(), e))
    }

    fn is_verified(&self, position: u64) -> bool {
        position < self.verified_prefix_bytes.load(Ordering::Acquire)
            || position >= self.verified_suffix_from.load(Ordering::Acquire)
    }

    fn mark_verified(&self, position: u64, batch_end: u64) {
        let _ = self.verified_prefix_bytes.compare_exchange(
            position,
            batch_end,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    fn corruption(&self, position: u64, detail: &str) -> LogError {
        LogError::Corruption {
            path: self.log_path(),
            position,
            detail: detail.to_string(),
        }
    }

    /// Deletes the segment's files. Readers holding a region keep reading the unlinked file.
    ///
    /// # Errors
    /// I/O errors removing a file other than "not found".
    pub fn delete_files(&self) -> Result<(), LogError> {
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let path = format::segment_path(&self.dir, self.base_offset, suffix);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("delete segment file", &path, e)),
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("base_offset", &self.base_offset)
            .field("size_bytes", &self.size_bytes())
            .field("next_offset", &self.next_offset())
            .finish()
    }
}

/// Splits `bytes` into batches and validates each; nothing is written by this function.
///
/// # Errors
/// The index and error of the first invalid batch.
pub fn validate_batches(bytes: &[u8], batch_bytes_max: usize) -> Result<Vec<BatchAt>, LogError> {
    let mut batches = Vec::new();
    let mut position = 0usize;
    while position < bytes.len() {
        let rest = &bytes[position..];
        let size =
            batch_size_from_prefix(rest, rest.len()).map_err(|source| LogError::InvalidBatch {
                batch_index: batches.len(),
                source,
            })?;
        if size > batch_bytes_max {
            return Err(LogError::BatchTooLarge {
                size_bytes: size,
                max_bytes: batch_bytes_max,
            });
        }
        let header = validate_batch(&rest[..size]).map_err(|source| LogError::InvalidBatch {
            batch_index: batches.len(),
            source,
        })?;
        if header.record_count == 0 {
            return Err(LogError::EmptyBatch {
                batch_index: batches.len(),
            });
        }
        batches.push(BatchAt {
            position: position as u64,
            header,
        });
        position += size;
    }
    if batches.is_empty() {
        return Err(LogError::NoBatches);
    }
    Ok(batches)
}
