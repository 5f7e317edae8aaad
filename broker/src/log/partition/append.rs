//! Serving writes: appends (as leader or as follower), rolls, flushes by the flush policy,
//! and the clean close. All of it runs under the writer lock, one writer at a time; what a
//! reader may see of an append is published last (the log end offset), after the batches and
//! their epochs.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::debug;

use super::{AppendInfo, PartitionLog, Writer};
use crate::log::format::{self, CLEAN_SHUTDOWN_FILE};
use crate::log::recovery_point::RecoveryPoint;
use crate::log::retention::{roll_reason, RollInput};
use crate::log::segment::{validate_batches, BatchAt, Segment, SegmentLimits};
use crate::log::{durable, LogError};

/// How an append gives its batches their offsets.
#[derive(Debug, Clone, Copy)]
enum Offsets {
    /// From the log end offset (a leader), stamping the leader epoch when there is one.
    Assign { leader_epoch: Option<i32> },
    /// As the batches carry them, which must continue the log (a follower).
    Keep,
}

impl PartitionLog {
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
    pub(super) fn roll(&self, writer: &mut Writer) -> Result<Arc<Segment>, LogError> {
        let old = self.active();
        old.seal()?;
        let base = self.log_end_offset();
        let segment = Arc::new(Segment::create(
            &self.dir,
            base,
            SegmentLimits::of(&writer.config),
        )?);
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::log_of;

    #[test]
    fn roll_now_seals_the_active_segment_only_when_it_holds_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log_of(dir.path(), 1);
        assert_eq!(log.roll_now().expect("roll"), 2);
        assert_eq!(log.roll_now().expect("roll again"), 2);
        assert_eq!(log.segment_base_offsets(), vec![0, 2]);
    }
}
