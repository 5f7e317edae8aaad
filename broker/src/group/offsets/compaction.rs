//! Compaction passes over the offsets partitions this broker leads: the reads and appends of
//! the method the pure decisions in [`super::compaction_plan`] describe (and prove correct).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::codec::{
    decode_key, encode_batch, for_each_record, keys_into, RECORD_OVERHEAD_BYTES_MAX,
    SNAPSHOT_BATCH_BYTES_MAX,
};
use super::compaction_plan::{self, LatestRecords};
use super::{OffsetStore, OffsetStoreError};
use crate::replica::Partition;

#[derive(Debug)]
struct Carried {
    key: Bytes,
    value: Bytes,
    timestamp: i64,
}

/// What a compaction pass of one offsets partition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Records replayed from the sealed segments.
    pub sealed_records: u64,
    /// Records appended as the snapshot.
    pub snapshot_records: usize,
    /// The sealed segments below this offset are superseded by the snapshot.
    pub superseded_below: i64,
    /// The log end after the snapshot: it must be committed before anything it supersedes
    /// goes on a replicated partition.
    pub snapshot_end: i64,
    /// Sealed segments deleted (0 until [`OffsetStore::compact`] deletes them).
    pub segments_deleted: usize,
}

impl OffsetStore {
    /// Compacts every offsets partition that has a sealed segment (see
    /// [`compact`](Self::compact)); a failure is logged and leaves that partition as it was.
    /// Returns the number of segments deleted.
    pub fn compact_all(&self) -> usize {
        let mut deleted = 0;
        for index in self.loaded_partitions() {
            match self.compact(index) {
                Ok(Some(done)) => {
                    info!(
                        partition = index,
                        sealed_records = done.sealed_records,
                        snapshot_records = done.snapshot_records,
                        segments_deleted = done.segments_deleted,
                        log_start_offset = done.superseded_below,
                        "compacted offsets partition"
                    );
                    deleted += done.segments_deleted;
                }
                Ok(None) => {}
                Err(e) => warn!(partition = index, error = %e, "offsets compaction failed"),
            }
        }
        deleted
    }

    /// Compacts one offsets partition (the method and why it is correct are in
    /// [`super::compaction_plan`]): [`write_snapshot`](Self::write_snapshot), then deletes the
    /// sealed segments the snapshot supersedes, oldest first. `None` when the partition has
    /// no sealed segment or the pass would not at least halve what it replaces.
    ///
    /// Durability: the snapshot is flushed before any segment goes; a crash at any point
    /// leaves a log that replays to the same state. Commits wait only while the pass holds
    /// the append lock: to read the keys appended since it started and append the snapshot.
    ///
    /// The leader deletes only once the snapshot is below the high watermark (at once when it
    /// is alone in the ISR, else in a later pass): a new leader elected before that still has
    /// the superseded segments, and no replica ever lacks both. Followers copy the leader's bytes, snapshot
    /// included, and drop the segments below the leader's log start as they fetch.
    ///
    /// # Errors
    /// Reading, appending or deleting failed; the log then still replays to the same state.
    pub fn compact(&self, index: i32) -> Result<Option<Compaction>, OffsetStoreError> {
        let mut skipped = self.compaction.lock();
        let partition = self.offsets_partition(index)?;
        let waiting = self.awaiting_commit.lock().get(&index).copied();
        if let Some((snapshot_end, superseded_below)) = waiting {
            if partition.log.high_watermark() < snapshot_end {
                return Ok(None);
            }
            self.awaiting_commit.lock().remove(&index);
            let deleted = partition.log.delete_segments_below(superseded_below)?;
            return Ok(Some(Compaction {
                sealed_records: 0,
                snapshot_records: 0,
                superseded_below,
                snapshot_end,
                segments_deleted: deleted,
            }));
        }
        let Some(mut done) = self.write_snapshot_locked(index, &mut skipped)? else {
            return Ok(None);
        };
        if partition.log.high_watermark() < done.snapshot_end {
            self.awaiting_commit
                .lock()
                .insert(index, (done.snapshot_end, done.superseded_below));
            return Ok(Some(done));
        }
        done.segments_deleted = partition.log.delete_segments_below(done.superseded_below)?;
        Ok(Some(done))
    }

    /// The first half of [`compact`](Self::compact): appends and flushes the snapshot of the
    /// partition's sealed segments, deleting nothing. The log then replays to the same state
    /// as before, with or without the superseded segments.
    ///
    /// # Errors
    /// As [`compact`](Self::compact).
    pub fn write_snapshot(&self, index: i32) -> Result<Option<Compaction>, OffsetStoreError> {
        let mut skipped = self.compaction.lock();
        self.write_snapshot_locked(index, &mut skipped)
    }

    fn offsets_partition(&self, index: i32) -> Result<Arc<Partition>, OffsetStoreError> {
        self.loaded
            .read()
            .get(&index)
            .map(|l| Arc::clone(&l.partition))
            .ok_or(OffsetStoreError::NotLoaded(index))
    }

    fn write_snapshot_locked(
        &self,
        index: i32,
        skipped: &mut HashMap<i32, (i64, i64)>,
    ) -> Result<Option<Compaction>, OffsetStoreError> {
        let partition = self.offsets_partition(index)?;
        let log = &partition.log;
        let start = log.log_start_offset();
        let sealed_end = log.active_segment_base_offset();
        if sealed_end <= start || skipped.get(&index) == Some(&(start, sealed_end)) {
            return Ok(None);
        }
        // 1. The latest record of each key in the sealed segments, without the lock.
        let mut latest = LatestRecords::default();
        for_each_record(log, start, sealed_end, |record| {
            let Some(raw_key) = record.key else { return };
            // Keys are compared decoded: two encodings of one key must not both survive.
            let Some(key) = decode_key(raw_key.clone()) else {
                return;
            };
            let carried = record.value.map(|value| Carried {
                key: raw_key,
                value,
                timestamp: record.timestamp,
            });
            latest.apply(key, carried, record.offset);
        })?;
        // 2. Keys written since, up to the log end as it is now, still without the lock.
        let mut written_since = HashSet::new();
        let seen_end = log.log_end_offset();
        for_each_record(log, sealed_end, seen_end, keys_into(&mut written_since))?;
        let sealed_records = latest.records();
        let mut snapshot = latest.snapshot(|key| written_since.contains(key));
        if !compaction_plan::worth_compacting(sealed_records, snapshot.len()) {
            debug!(
                partition = index,
                sealed_records,
                snapshot_records = snapshot.len(),
                "offsets partition not worth compacting yet"
            );
            skipped.insert(index, (start, sealed_end));
            return Ok(None);
        }
        // 3. Under the append lock: keys written since step 2, then the snapshot.
        let batch_bytes_max = SNAPSHOT_BATCH_BYTES_MAX.min(log.config().max_message_bytes / 2);
        let leader_epoch = self
            .loaded
            .read()
            .get(&index)
            .map(|l| l.leader_epoch)
            .ok_or(OffsetStoreError::NotLoaded(index))?;
        let mut appends = partition.lock_appends_as_leader(leader_epoch)?;
        let end = appends.log().log_end_offset();
        for_each_record(appends.log(), seen_end, end, keys_into(&mut written_since))?;
        snapshot.retain(|(key, _)| !written_since.contains(key));
        let snapshot_records = snapshot.len();
        let batches = compaction_plan::split_batches(snapshot, batch_bytes_max, |(_, c)| {
            c.key.len() + c.value.len() + RECORD_OVERHEAD_BYTES_MAX
        });
        for batch in batches {
            let records = batch
                .into_iter()
                .map(|(_, c)| (c.key, Some(c.value), c.timestamp));
            let mut buf = encode_batch(records)?;
            appends.append(&mut buf)?;
        }
        let snapshot_end = appends.log().log_end_offset();
        drop(appends);
        // 4. Durable before anything it supersedes may go.
        log.flush()?;
        skipped.remove(&index);
        Ok(Some(Compaction {
            sealed_records,
            snapshot_records,
            superseded_below: sealed_end,
            snapshot_end,
            segments_deleted: 0,
        }))
    }
}
