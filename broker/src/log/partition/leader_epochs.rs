//! The leader epochs of a log as it serves: the queries a leader answers and a follower asks
//! (OffsetForLeaderEpoch, where to truncate), the epoch a new leader begins, and the cache
//! kept in step with appends, truncations and deletions. The cache is checkpointed before the
//! change it records is published, and always covers the log.

use std::sync::Arc;

use super::PartitionLog;
use crate::log::epochs::{self, EpochCache, EpochEntry};
use crate::log::segment::BatchAt;
use crate::log::LogError;

impl PartitionLog {
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
    pub(super) fn epochs_after(&self, batches: &[BatchAt]) -> Result<Option<EpochCache>, LogError> {
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
    pub(super) fn update_epochs(
        &self,
        change: impl FnOnce(&mut EpochCache) -> bool,
    ) -> Result<(), LogError> {
        let mut next = EpochCache::clone(&self.epochs.load());
        if change(&mut next) {
            epochs::write_checkpoint(&self.dir, &next)?;
            self.epochs.store(Arc::new(next));
        }
        Ok(())
    }
}
