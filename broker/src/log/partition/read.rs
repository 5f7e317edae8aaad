//! Serving reads: whole batches from an offset, the first record at a timestamp, and
//! iteration over the stored batches of a range. Readers never take the writer lock: they
//! load the segment list and the offsets and read files with positional reads, retrying when
//! a concurrent truncation left their list stale.

use crate::log::format;
use crate::log::LogError;

use super::{PartitionLog, ReadLimits, ReadResult, TimestampHit};

impl PartitionLog {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::log_of;
    use super::*;

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
}
