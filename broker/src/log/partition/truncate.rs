//! Serving deletions: retention, deletion of the segments below an offset (compaction),
//! truncation of a diverged tail, and the reset of a log that must start anew. Each runs
//! under the writer lock, publishes the shorter log to readers before any file goes, and
//! deletes files in an order that leaves, after a crash midway, a log the loader reads as a
//! prefix or a suffix of the old one.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::info;

use super::{PartitionLog, Writer};
use crate::log::epochs::EpochCache;
use crate::log::recovery_point::RecoveryPoint;
use crate::log::retention::{retention_plan, RetentionLimits, SegmentStats};
use crate::log::segment::{Segment, SegmentLimits};
use crate::log::{durable, LogError};

impl PartitionLog {
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
        let segment = Segment::create(&self.dir, new_end, SegmentLimits::of(&writer.config))?;
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
            SegmentLimits::of(&writer.config),
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
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{log_of, small_segments};
    use super::*;
    use crate::log::ReadLimits;

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
}
