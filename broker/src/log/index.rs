//! Sparse, memory-mapped indexes of a segment: the offset index (relative offset → file
//! position) and the time index (max timestamp so far → relative offset).
//!
//! Both are preallocated files of fixed-size entries mapped with memmap2. One writer appends
//! and truncates; any number of readers search concurrently without locks:
//! - an entry is written into the mapping before the entry count that covers it is published
//!   (release store), and readers only read entries below the count they loaded (acquire);
//! - every entry word is accessed through an atomic of its own size, so a reader racing with a
//!   truncation followed by a rewrite sees old or new words, never torn ones. Entries read this
//!   way are hints: callers check the batch header an entry points at before trusting it.
//!
//! While a segment is active its files keep their preallocated size; when it rolls or closes
//! they are trimmed to their entries, and a sealed segment's files are reopened as they are.
//! The mapping always spans the capacity; the writer extends the file before it writes a slot
//! beyond its end, and readers never touch a slot beyond the published count, so no access
//! ever reaches past the end of the file.
//!
//! Dropped entries (truncation, recovery) are zeroed after the lower count is published, so a
//! stale entry never reappears as a plausible one when the file is reopened after a crash.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use parking_lot::Mutex;

use super::format::{OFFSET_INDEX_ENTRY_SIZE, TIME_INDEX_ENTRY_SIZE};
use super::LogError;

/// A preallocated, memory-mapped file of fixed-size entries.
struct EntryFile {
    path: PathBuf,
    file: File,
    map: MmapRaw,
    entry_size: usize,
    capacity_entries: usize,
    /// Slots the file holds (the capacity, or the entries once trimmed).
    backed_entries: AtomicUsize,
    /// Entries published to readers.
    entries: AtomicUsize,
    /// Serialises the writer's resize operations (trim/untrim); readers never take it.
    resize: Mutex<()>,
}

impl EntryFile {
    /// Opens or creates the file. Existing whole entries are kept, a trailing partial entry is
    /// ignored. With `preallocate`, the file is extended to `capacity_bytes` (rounded down to
    /// whole entries) unless it already holds more entries than that; without, it is left as
    /// it is until an entry must be written past its end.
    fn open(
        path: &Path,
        entry_size: usize,
        capacity_bytes: usize,
        preallocate: bool,
    ) -> Result<Self, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| LogError::io("open index", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| LogError::io("stat index", path, e))?
            .len() as usize;
        let existing = len / entry_size;
        let capacity_entries = (capacity_bytes / entry_size).max(existing).max(1);
        let backed_entries = if preallocate {
            file.set_len((capacity_entries * entry_size) as u64)
                .map_err(|e| LogError::io("preallocate index", path, e))?;
            capacity_entries
        } else {
            existing
        };
        let map = MmapOptions::new()
            .len(capacity_entries * entry_size)
            .map_raw(&file)
            .map_err(|e| LogError::io("map index", path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            map,
            entry_size,
            capacity_entries,
            backed_entries: AtomicUsize::new(backed_entries),
            entries: AtomicUsize::new(existing),
            resize: Mutex::new(()),
        })
    }

    fn len(&self) -> usize {
        self.entries.load(Ordering::Acquire)
    }

    fn is_full(&self) -> bool {
        self.len() >= self.capacity_entries
    }

    /// Pointer to the first byte of slot `i`.
    ///
    /// # Panics
    /// When `i` is not below the capacity.
    fn slot(&self, i: usize) -> *mut u8 {
        assert!(i < self.capacity_entries, "index slot {i} beyond capacity");
        // SAFETY: i < capacity, and the mapping spans capacity * entry_size bytes.
        unsafe { self.map.as_mut_ptr().add(i * self.entry_size) }
    }

    fn publish(&self, entries: usize) {
        self.entries.store(entries, Ordering::Release);
    }

    /// Shrinks the file to its entries (the mapping stays; readers stay below the count).
    fn trim(&self) -> Result<(), LogError> {
        let _guard = self.resize.lock();
        self.flush()?;
        let entries = self.len();
        self.backed_entries.store(entries, Ordering::Release);
        self.file
            .set_len((entries * self.entry_size) as u64)
            .map_err(|e| LogError::io("trim index", &self.path, e))
    }

    /// Grows the file back to its full capacity so that it can take entries again.
    fn untrim(&self) -> Result<(), LogError> {
        let _guard = self.resize.lock();
        self.file
            .set_len((self.capacity_entries * self.entry_size) as u64)
            .map_err(|e| LogError::io("extend index", &self.path, e))?;
        self.backed_entries
            .store(self.capacity_entries, Ordering::Release);
        Ok(())
    }

    /// Makes sure the file holds slot `i` before the writer stores into it.
    fn ensure_backed(&self, i: usize) -> Result<(), LogError> {
        if i >= self.backed_entries.load(Ordering::Acquire) {
            self.untrim()?;
        }
        Ok(())
    }

    /// Whether the file holds more slots than entries (it is not trimmed).
    fn untrimmed(&self) -> bool {
        self.backed_entries.load(Ordering::Acquire) > self.len()
    }

    fn flush(&self) -> Result<(), LogError> {
        let bytes = self.len() * self.entry_size;
        if bytes > 0 {
            self.map
                .flush_range(0, bytes)
                .map_err(|e| LogError::io("flush index", &self.path, e))?;
        }
        Ok(())
    }
}

/// One offset-index entry: the batch starting at `position` has base offset
/// `segment_base + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// The sparse offset index of one segment.
pub struct OffsetIndex {
    entries: EntryFile,
}

impl OffsetIndex {
    /// Opens (or creates) the index at `path`, with room for `capacity_bytes` of entries,
    /// preallocated in the file when `preallocate` (an active segment's index).
    ///
    /// # Errors
    /// I/O errors opening, sizing or mapping the file.
    pub fn open(path: &Path, capacity_bytes: usize, preallocate: bool) -> Result<Self, LogError> {
        Ok(Self {
            entries: EntryFile::open(path, OFFSET_INDEX_ENTRY_SIZE, capacity_bytes, preallocate)?,
        })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: slots are 8-byte aligned (page-aligned mapping, 8-byte entries) and live as
        // long as `self`; all accesses to index memory go through atomics.
        unsafe { &*(self.entries.slot(i) as *const AtomicU64) }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self) -> bool {
        self.entries.is_full()
    }

    pub fn capacity_entries(&self) -> usize {
        self.entries.capacity_entries
    }

    /// Entry `i`, which must be below [`len`](Self::len).
    pub fn entry(&self, i: usize) -> OffsetEntry {
        let raw = u64::from_be(self.word(i).load(Ordering::Relaxed));
        OffsetEntry {
            relative_offset: (raw >> 32) as u32,
            position: raw as u32,
        }
    }

    pub fn last(&self) -> Option<OffsetEntry> {
        self.len().checked_sub(1).map(|i| self.entry(i))
    }

    /// Appends an entry. Writer only.
    ///
    /// # Errors
    /// I/O errors extending a trimmed file.
    ///
    /// # Panics
    /// When the index is full, or the entry does not increase both the offset and the position
    /// (an invariant of the log, not of input).
    pub fn append(&self, entry: OffsetEntry) -> Result<(), LogError> {
        let n = self.len();
        self.entries.ensure_backed(n)?;
        if let Some(last) = self.last() {
            assert!(
                entry.relative_offset > last.relative_offset,
                "offset index must increase"
            );
            assert!(
                entry.position > last.position,
                "index positions must increase"
            );
        }
        let raw = (u64::from(entry.relative_offset) << 32) | u64::from(entry.position);
        self.word(n).store(raw.to_be(), Ordering::Relaxed);
        self.entries.publish(n + 1);
        Ok(())
    }

    /// The last entry whose relative offset is at most `relative_offset`.
    pub fn floor_by_offset(&self, relative_offset: u32) -> Option<OffsetEntry> {
        self.floor(|e| e.relative_offset <= relative_offset)
    }

    /// The last entry whose position is at most `position`.
    pub fn floor_by_position(&self, position: u32) -> Option<OffsetEntry> {
        self.floor(|e| e.position <= position)
    }

    /// Binary search for the last entry satisfying a predicate that holds for a prefix.
    fn floor(&self, in_prefix: impl Fn(OffsetEntry) -> bool) -> Option<OffsetEntry> {
        let n = self.len();
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if in_prefix(self.entry(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.entry(i))
    }

    /// Drops every entry at or after `position`. Writer only.
    pub fn truncate_to_position(&self, position: u32) {
        let keep = self.count_below(|e| e.position < position);
        self.keep_first(keep);
    }

    /// Drops every entry whose offset is at or after `relative_offset`. Writer only.
    pub fn truncate_to_offset(&self, relative_offset: u32) {
        let keep = self.count_below(|e| e.relative_offset < relative_offset);
        self.keep_first(keep);
    }

    fn count_below(&self, in_prefix: impl Fn(OffsetEntry) -> bool) -> usize {
        let n = self.len();
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if in_prefix(self.entry(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Checks that entries strictly increase in offset and position and stay below
    /// `log_size_bytes`; returns the number of leading entries that do. Entries are only made
    /// for batches after the first, so a zero position (a preallocated slot never written)
    /// ends the entries.
    pub fn valid_prefix(&self, log_size_bytes: u64) -> usize {
        let mut previous: Option<OffsetEntry> = None;
        for i in 0..self.len() {
            let entry = self.entry(i);
            let ordered = previous.is_none_or(|p| {
                entry.relative_offset > p.relative_offset && entry.position > p.position
            });
            if !ordered || entry.position == 0 || u64::from(entry.position) >= log_size_bytes {
                return i;
            }
            previous = Some(entry);
        }
        self.len()
    }

    pub fn trim(&self) -> Result<(), LogError> {
        self.entries.trim()
    }

    /// Whether the file holds more slots than entries.
    pub fn untrimmed(&self) -> bool {
        self.entries.untrimmed()
    }

    pub fn untrim(&self) -> Result<(), LogError> {
        self.entries.untrim()
    }

    pub fn flush(&self) -> Result<(), LogError> {
        self.entries.flush()
    }
}

/// One time-index entry: the largest timestamp of the segment up to and including the batch
/// with base offset `segment_base + relative_offset` is `timestamp`, and that batch is the first
/// to reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// The sparse time index of one segment.
pub struct TimeIndex {
    entries: EntryFile,
}

impl TimeIndex {
    /// Opens (or creates) the index at `path`, with room for `capacity_bytes` of entries,
    /// preallocated in the file when `preallocate` (an active segment's index).
    ///
    /// # Errors
    /// I/O errors opening, sizing or mapping the file.
    pub fn open(path: &Path, capacity_bytes: usize, preallocate: bool) -> Result<Self, LogError> {
        Ok(Self {
            entries: EntryFile::open(path, TIME_INDEX_ENTRY_SIZE, capacity_bytes, preallocate)?,
        })
    }

    fn words(&self, i: usize) -> [&AtomicU32; 3] {
        let base = self.entries.slot(i);
        // SAFETY: 12-byte entries in a page-aligned mapping are 4-byte aligned; all three
        // words lie inside slot i, and every access goes through atomics.
        unsafe {
            [
                &*(base as *const AtomicU32),
                &*(base.add(4) as *const AtomicU32),
                &*(base.add(8) as *const AtomicU32),
            ]
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self) -> bool {
        self.entries.is_full()
    }

    pub fn capacity_entries(&self) -> usize {
        self.entries.capacity_entries
    }

    /// Whether appends may add `entries` more entries: they leave the last slot free for the
    /// entry that seals the segment with its max timestamp.
    pub fn has_room_for_appends(&self, entries: usize) -> bool {
        self.len() + entries < self.capacity_entries()
    }

    pub fn entry(&self, i: usize) -> TimeEntry {
        let [hi, lo, off] = self.words(i);
        let hi = u32::from_be(hi.load(Ordering::Relaxed));
        let lo = u32::from_be(lo.load(Ordering::Relaxed));
        TimeEntry {
            timestamp: ((u64::from(hi) << 32) | u64::from(lo)) as i64,
            relative_offset: u32::from_be(off.load(Ordering::Relaxed)),
        }
    }

    pub fn last(&self) -> Option<TimeEntry> {
        self.len().checked_sub(1).map(|i| self.entry(i))
    }

    /// Appends an entry if its timestamp and offset are larger than the last one's. Writer
    /// only.
    ///
    /// # Errors
    /// I/O errors extending a trimmed file.
    ///
    /// # Panics
    /// When the index is full.
    pub fn maybe_append(&self, entry: TimeEntry) -> Result<(), LogError> {
        if let Some(last) = self.last() {
            if entry.timestamp <= last.timestamp || entry.relative_offset <= last.relative_offset {
                return Ok(());
            }
        }
        let n = self.len();
        self.entries.ensure_backed(n)?;
        let [hi, lo, off] = self.words(n);
        let ts = entry.timestamp as u64;
        hi.store(((ts >> 32) as u32).to_be(), Ordering::Relaxed);
        lo.store((ts as u32).to_be(), Ordering::Relaxed);
        off.store(entry.relative_offset.to_be(), Ordering::Relaxed);
        self.entries.publish(n + 1);
        Ok(())
    }

    /// The last entry whose timestamp is strictly below `timestamp`: every batch before its
    /// offset has a max timestamp below `timestamp` too.
    pub fn floor_below(&self, timestamp: i64) -> Option<TimeEntry> {
        let n = self.len();
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid).timestamp < timestamp {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.entry(i))
    }

    /// The last entry whose offset is at most `relative_offset`.
    pub fn floor_by_offset(&self, relative_offset: u32) -> Option<TimeEntry> {
        let n = self.len();
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid).relative_offset <= relative_offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.entry(i))
    }

    /// Drops every entry whose offset is at or after `relative_offset`. Writer only.
    pub fn truncate_to_offset(&self, relative_offset: u32) {
        let mut keep = self.len();
        while keep > 0 && self.entry(keep - 1).relative_offset >= relative_offset {
            keep -= 1;
        }
        self.keep_first(keep);
    }

    /// Number of leading entries that strictly increase in timestamp and offset and whose
    /// offsets stay below `relative_end`. An all-zero slot (preallocated, never written) ends
    /// the entries; a real entry of timestamp 0 for the first batch is forgotten with it,
    /// which costs nothing but a longer scan for timestamps at or below 0.
    pub fn valid_prefix(&self, relative_end: u64) -> usize {
        let mut previous: Option<TimeEntry> = None;
        for i in 0..self.len() {
            let entry = self.entry(i);
            let ordered = previous.is_none_or(|p| {
                entry.timestamp > p.timestamp && entry.relative_offset > p.relative_offset
            });
            let blank = entry.timestamp == 0 && entry.relative_offset == 0;
            if !ordered || blank || u64::from(entry.relative_offset) >= relative_end {
                return i;
            }
            previous = Some(entry);
        }
        self.len()
    }

    /// Forgets entries beyond the first `keep` and zeroes their slots. Writer only.
    pub fn keep_first(&self, keep: usize) {
        let old = self.len();
        if keep >= old {
            return;
        }
        self.entries.publish(keep);
        for i in keep..old {
            for word in self.words(i) {
                if word.load(Ordering::Relaxed) != 0 {
                    word.store(0, Ordering::Relaxed);
                }
            }
        }
    }

    pub fn trim(&self) -> Result<(), LogError> {
        self.entries.trim()
    }

    /// Whether the file holds more slots than entries.
    pub fn untrimmed(&self) -> bool {
        self.entries.untrimmed()
    }

    pub fn untrim(&self) -> Result<(), LogError> {
        self.entries.untrim()
    }

    pub fn flush(&self) -> Result<(), LogError> {
        self.entries.flush()
    }
}

impl OffsetIndex {
    /// Forgets entries beyond the first `keep` and zeroes their slots. Writer only.
    pub fn keep_first(&self, keep: usize) {
        let old = self.len();
        if keep >= old {
            return;
        }
        self.entries.publish(keep);
        for i in keep..old {
            let word = self.word(i);
            if word.load(Ordering::Relaxed) != 0 {
                word.store(0, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(relative_offset: u32, position: u32) -> OffsetEntry {
        OffsetEntry {
            relative_offset,
            position,
        }
    }

    #[test]
    fn offset_lookups_find_the_floor_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = OffsetIndex::open(&dir.path().join("a.index"), 80, true).expect("open");
        assert_eq!(index.capacity_entries(), 10);
        assert_eq!(index.floor_by_offset(5), None);
        for (o, p) in [(0, 0), (10, 4096), (20, 8192)] {
            index.append(entry(o, p)).expect("append");
        }
        assert_eq!(index.floor_by_offset(0), Some(entry(0, 0)));
        assert_eq!(index.floor_by_offset(15), Some(entry(10, 4096)));
        assert_eq!(index.floor_by_offset(99), Some(entry(20, 8192)));
        assert_eq!(index.floor_by_position(8191), Some(entry(10, 4096)));
        index.truncate_to_position(4096);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn trimmed_index_reopens_with_its_entries_and_room_to_grow() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.index");
        {
            let index = OffsetIndex::open(&path, 800, true).expect("open");
            index.append(entry(2, 50)).expect("append");
            index.append(entry(3, 100)).expect("append");
            index.trim().expect("trim");
        }
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 16);
        let index = OffsetIndex::open(&path, 800, true).expect("reopen");
        assert_eq!(index.len(), 2);
        assert_eq!(index.last(), Some(entry(3, 100)));
        assert_eq!(index.capacity_entries(), 100);
        index.append(entry(7, 200)).expect("append");
        assert_eq!(index.valid_prefix(1000), 3);
        assert_eq!(index.valid_prefix(150), 2);
    }

    #[test]
    fn blank_preallocated_slots_are_not_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e.index");
        {
            let index = OffsetIndex::open(&path, 80, true).expect("open");
            index.append(entry(2, 50)).expect("append");
            // dropped without trim, as in a crash: the file keeps its preallocated size
        }
        let index = OffsetIndex::open(&path, 80, true).expect("reopen");
        assert_eq!(index.len(), 10, "every slot counts until validated");
        assert_eq!(index.valid_prefix(1000), 1);
        index.keep_first(1);
        assert_eq!(index.last(), Some(entry(2, 50)));

        let time_path = dir.path().join("e.timeindex");
        {
            let index = TimeIndex::open(&time_path, 120, true).expect("open");
            index
                .maybe_append(TimeEntry {
                    timestamp: 100,
                    relative_offset: 3,
                })
                .expect("append");
        }
        let index = TimeIndex::open(&time_path, 120, true).expect("reopen");
        assert_eq!(index.valid_prefix(u64::from(u32::MAX)), 1);
    }

    #[test]
    fn dropped_entries_are_zeroed_so_they_never_come_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.index");
        {
            let index = OffsetIndex::open(&path, 80, true).expect("open");
            for (o, p) in [(1, 10), (2, 20), (3, 30)] {
                index.append(entry(o, p)).expect("append");
            }
            index.truncate_to_offset(2);
            assert_eq!(index.len(), 1);
        }
        let index = OffsetIndex::open(&path, 80, true).expect("reopen");
        assert_eq!(
            index.valid_prefix(1000),
            1,
            "the stale entries read as blank"
        );
    }

    #[test]
    fn appends_leave_the_last_time_slot_for_the_seal_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = TimeIndex::open(&dir.path().join("g.timeindex"), 36, true).expect("open");
        assert_eq!(index.capacity_entries(), 3);
        assert!(index.has_room_for_appends(2));
        assert!(!index.has_room_for_appends(3));
        index
            .maybe_append(TimeEntry {
                timestamp: 1,
                relative_offset: 1,
            })
            .expect("append");
        assert!(index.has_room_for_appends(1));
        index
            .maybe_append(TimeEntry {
                timestamp: 2,
                relative_offset: 2,
            })
            .expect("append");
        assert!(!index.has_room_for_appends(1));
        assert!(!index.is_full(), "one slot is left to seal the segment");
        assert_eq!(index.floor_by_offset(1).map(|e| e.timestamp), Some(1));
        assert_eq!(index.floor_by_offset(0), None);
    }

    #[test]
    fn full_index_reports_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = OffsetIndex::open(&dir.path().join("c.index"), 16, true).expect("open");
        index.append(entry(0, 0)).expect("append");
        assert!(!index.is_full());
        index.append(entry(1, 10)).expect("append");
        assert!(index.is_full());
    }

    #[test]
    fn time_index_keeps_increasing_timestamps_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = TimeIndex::open(&dir.path().join("d.timeindex"), 120, true).expect("open");
        index
            .maybe_append(TimeEntry {
                timestamp: 100,
                relative_offset: 0,
            })
            .expect("append");
        index
            .maybe_append(TimeEntry {
                timestamp: 90,
                relative_offset: 5,
            })
            .expect("append");
        index
            .maybe_append(TimeEntry {
                timestamp: 200,
                relative_offset: 9,
            })
            .expect("append");
        assert_eq!(index.len(), 2);
        assert_eq!(index.floor_below(100), None);
        assert_eq!(index.floor_below(101).map(|e| e.relative_offset), Some(0));
        assert_eq!(index.floor_below(1000).map(|e| e.timestamp), Some(200));
        index.truncate_to_offset(9);
        assert_eq!(index.len(), 1);
    }
}
