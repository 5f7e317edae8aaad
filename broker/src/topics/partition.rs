//! A hosted partition: its log plus the idempotent-producer state that guards appends.
//!
//! Appends are serialised by the partition's append lock so that the producer sequence check
//! and the log append are one atomic step. Reads go straight to the log and never take it.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::{Mutex, MutexGuard};
use tracing::{info, warn};
use uuid::Uuid;

use crate::log::format::BatchHeader;
use crate::log::high_watermark;
use crate::log::{AppendInfo, LogConfig, LogError, PartitionLog};
use crate::producer::{
    last_sequence, BatchMeta, ProducerSnapshot, ProducerStateMap, SequenceCheck, SequenceError,
    SnapshotError, SNAPSHOT_FILE,
};

/// Why an append was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("an idempotent produce must carry exactly one batch per partition, got {0}")]
    MultipleIdempotentBatches(usize),
    #[error("transactional batches are not supported")]
    Transactional,
}

/// The outcome of an accepted append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The batch was a retry of one already in the log: nothing was written.
    pub duplicate: bool,
}

pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    pub log: PartitionLog,
    producers: Mutex<ProducerStateMap>,
    mode: ReplicaMode,
    /// The high watermark last checkpointed (replicated mode), to skip rewriting it unchanged.
    checkpointed_high_watermark: AtomicI64,
}

/// Who decides what is committed in a partition, which sets where its high watermark
/// starts at open and who moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaMode {
    /// A single broker owns everything: the high watermark is the log end offset, always.
    Standalone,
    /// Replication moves the high watermark; it is restored at open from the
    /// [`high_watermark`] checkpoint (the log start when there is none) and kept within the log.
    Replicated,
}

/// Exclusive appends to a partition (see [`Partition::lock_appends`]).
pub struct AppendGuard<'a> {
    partition: &'a Partition,
    producers: MutexGuard<'a, ProducerStateMap>,
}

impl AppendGuard<'_> {
    /// The partition's log, for reads under the lock (its end offset cannot move).
    pub fn log(&self) -> &PartitionLog {
        &self.partition.log
    }

    /// Appends as [`Partition::append`] does, under the lock already held.
    ///
    /// # Errors
    /// [`AppendError`].
    pub fn append(
        &mut self,
        records: &mut [u8],
        leader_epoch: i32,
    ) -> Result<Appended, AppendError> {
        self.partition
            .append_locked(&mut self.producers, records, leader_epoch)
    }
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({}-{})", self.topic, self.index)
    }
}

/// Producer fields of the single batch of an idempotent append.
fn idempotent_batch(records: &[u8]) -> Result<Option<BatchHeader>, AppendError> {
    let Ok(header) = BatchHeader::parse(records) else {
        return Ok(None);
    };
    if header.is_transactional() {
        return Err(AppendError::Transactional);
    }
    if header.producer_id < 0 {
        return Ok(None);
    }
    if header.size_bytes() != records.len() {
        let mut count = 0;
        let mut position = 0usize;
        while position + 12 <= records.len() {
            let length = i32::from_be_bytes([
                records[position + 8],
                records[position + 9],
                records[position + 10],
                records[position + 11],
            ]);
            count += 1;
            position += 12 + length.max(0) as usize;
        }
        return Err(AppendError::MultipleIdempotentBatches(count));
    }
    Ok(Some(header))
}

impl Partition {
    /// Opens the partition's log in `dir` as [`ReplicaMode::Standalone`] (see
    /// [`open_as`](Self::open_as)).
    ///
    /// # Errors
    /// As [`open_as`](Self::open_as).
    pub fn open(
        topic: &str,
        topic_id: Uuid,
        index: i32,
        dir: &Path,
        config: LogConfig,
    ) -> Result<Self, LogError> {
        Self::open_as(topic, topic_id, index, dir, config, ReplicaMode::Standalone)
    }

    /// Opens the partition's log in `dir`, rebuilds its producer state from the snapshot and
    /// the batches after it, and sets the high watermark as `mode` says.
    ///
    /// # Errors
    /// Log errors; a damaged snapshot or high-watermark checkpoint is not an error (the log is
    /// replayed, the high watermark starts at the log start).
    pub fn open_as(
        topic: &str,
        topic_id: Uuid,
        index: i32,
        dir: &Path,
        config: LogConfig,
        mode: ReplicaMode,
    ) -> Result<Self, LogError> {
        let log = PartitionLog::open(dir, config)?;
        let state = load_producers(&log, topic, index)?;
        let restored = match mode {
            ReplicaMode::Standalone => log.log_end_offset(),
            ReplicaMode::Replicated => {
                high_watermark::read(dir)?.unwrap_or_else(|| log.log_start_offset())
            }
        };
        let high_watermark = log.set_high_watermark(restored);
        info!(
            topic,
            partition = index,
            log_end_offset = log.log_end_offset(),
            producers = state.len(),
            high_watermark,
            ?mode,
            "opened partition"
        );
        Ok(Self {
            topic: topic.to_string(),
            topic_id,
            index,
            log,
            producers: Mutex::new(state),
            mode,
            checkpointed_high_watermark: AtomicI64::new(high_watermark),
        })
    }

    pub fn mode(&self) -> ReplicaMode {
        self.mode
    }

    /// A follower's append of batches copied from the leader, with the leader's offsets and
    /// epochs (see [`PartitionLog::append_replicated`]). The producer state learns every
    /// idempotent batch, so that this replica dedupes retries once it leads; nothing is
    /// refused on sequence grounds (the leader decided). The high watermark is not moved.
    ///
    /// # Errors
    /// As [`PartitionLog::append_replicated`]; nothing is written then.
    pub fn append_replicated(&self, records: &mut [u8]) -> Result<AppendInfo, LogError> {
        let mut producers = self.producers.lock();
        let info = self.log.append_replicated(records)?;
        let mut position = 0usize;
        // The log validated every batch: each header parses and its size moves forward.
        while let Some(header) = records
            .get(position..)
            .and_then(|rest| BatchHeader::parse(rest).ok())
        {
            record_producer(&mut producers, &header);
            position += header.size_bytes();
        }
        Ok(info)
    }

    /// Removes every batch at or after `offset` (see [`PartitionLog::truncate_to`]) and
    /// forgets the producer batches that went with them. Returns the new log end offset.
    ///
    /// # Errors
    /// Log errors.
    pub fn truncate_to(&self, offset: i64) -> Result<i64, LogError> {
        let mut producers = self.producers.lock();
        let old_end = self.log.log_end_offset();
        let new_end = self.log.truncate_to(offset)?;
        if new_end < old_end {
            // Forget the cut batches in memory; the snapshot is rewritten at the new end (one
            // left past it is deleted at the next open).
            producers.truncate_to(new_end);
            drop(producers);
            self.snapshot_after_truncation();
        }
        Ok(new_end)
    }

    /// Deletes the whole log and restarts it, empty, at `offset` (see
    /// [`PartitionLog::truncate_fully_and_start_at`]), forgetting every producer.
    ///
    /// # Errors
    /// Log errors; I/O errors deleting the snapshot.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), LogError> {
        let mut producers = self.producers.lock();
        remove_snapshot(self.log.dir())?;
        self.log.truncate_fully_and_start_at(offset)?;
        *producers = ProducerStateMap::default();
        drop(producers);
        self.snapshot_after_truncation();
        Ok(())
    }

    fn snapshot_after_truncation(&self) {
        if let Err(e) = self.snapshot_producers() {
            warn!(topic = %self.topic, partition = self.index, error = %e, "producer snapshot after truncation failed");
        }
    }

    /// Writes the high watermark to the partition's checkpoint when it moved since the last
    /// one (replicated mode; a standalone partition's high watermark is its log end, which
    /// needs no checkpoint). Durable when this returns.
    ///
    /// # Errors
    /// I/O errors; the previous checkpoint then stays.
    pub fn checkpoint_high_watermark(&self) -> Result<(), LogError> {
        if self.mode == ReplicaMode::Standalone {
            return Ok(());
        }
        let high_watermark = self.log.high_watermark();
        if self.checkpointed_high_watermark.load(Ordering::Acquire) == high_watermark {
            return Ok(());
        }
        high_watermark::write(self.log.dir(), high_watermark)?;
        self.checkpointed_high_watermark
            .store(high_watermark, Ordering::Release);
        Ok(())
    }

    /// Appends `records` (already a mutable copy of the request bytes). Idempotent batches are
    /// checked against the producer state first: a retry is answered with its original offsets
    /// and nothing is written; an out-of-order or fenced batch is refused.
    ///
    /// # Errors
    /// [`AppendError`].
    pub fn append(&self, records: &mut [u8], leader_epoch: i32) -> Result<Appended, AppendError> {
        let mut producers = self.producers.lock();
        self.append_locked(&mut producers, records, leader_epoch)
    }

    fn append_locked(
        &self,
        producers: &mut ProducerStateMap,
        records: &mut [u8],
        leader_epoch: i32,
    ) -> Result<Appended, AppendError> {
        let producer = idempotent_batch(records)?;
        let Some(header) = producer else {
            let info = self.log.append_with_leader_epoch(records, leader_epoch)?;
            return Ok(self.after_append(info));
        };
        let last_seq = last_sequence(header.base_sequence, header.record_count);
        match producers.check(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            last_seq,
        )? {
            SequenceCheck::Duplicate(meta) => Ok(Appended {
                base_offset: meta.first_offset,
                last_offset: meta.last_offset,
                duplicate: true,
            }),
            SequenceCheck::Append => {
                let info = self.log.append_with_leader_epoch(records, leader_epoch)?;
                producers.record(
                    header.producer_id,
                    header.producer_epoch,
                    BatchMeta {
                        first_sequence: header.base_sequence,
                        last_sequence: last_seq,
                        first_offset: info.base_offset,
                        last_offset: info.last_offset,
                    },
                );
                Ok(self.after_append(info))
            }
        }
    }

    /// Takes the append lock and keeps it until the guard is dropped: no other append to this
    /// partition happens meanwhile, so a writer can decide what to append from what the log
    /// holds (the compaction of `__consumer_offsets` does). Reads are not blocked.
    pub fn lock_appends(&self) -> AppendGuard<'_> {
        AppendGuard {
            partition: self,
            producers: self.producers.lock(),
        }
    }

    fn after_append(&self, info: AppendInfo) -> Appended {
        // Without replication every appended record is committed at once.
        if self.mode == ReplicaMode::Standalone {
            self.log.set_high_watermark(self.log.log_end_offset());
        }
        Appended {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            duplicate: false,
        }
    }

    /// Writes the producer-state snapshot for the current log end.
    ///
    /// # Errors
    /// I/O errors.
    pub fn snapshot_producers(&self) -> Result<(), SnapshotError> {
        let producers = self.producers.lock();
        let snapshot = ProducerSnapshot {
            offset: self.log.log_end_offset(),
            state: producers.clone(),
        };
        drop(producers);
        snapshot.write(self.log.dir())
    }

    /// Flushes, snapshots producer state and closes the log cleanly.
    ///
    /// # Errors
    /// Log errors (the snapshot failure is logged: the log replay covers it).
    pub fn close(&self) -> Result<(), LogError> {
        if let Err(e) = self.snapshot_producers() {
            warn!(topic = %self.topic, partition = self.index, error = %e, "producer snapshot failed");
        }
        self.checkpoint_high_watermark()?;
        self.log.close()
    }
}

/// Replays the producer fields of every batch from `from` to the log end into `state`.
fn replay(log: &PartitionLog, from: i64, state: &mut ProducerStateMap) -> Result<(), LogError> {
    for batch in log.batches(from, log.log_end_offset()) {
        let batch = batch?;
        let Ok(header) = BatchHeader::parse(&batch) else {
            continue;
        };
        if header.last_offset() >= from {
            record_producer(state, &header);
        }
    }
    Ok(())
}

/// Records the producer fields of an appended batch (batches without a producer id carry
/// none).
fn record_producer(state: &mut ProducerStateMap, header: &BatchHeader) {
    if header.producer_id < 0 {
        return;
    }
    state.record(
        header.producer_id,
        header.producer_epoch,
        BatchMeta {
            first_sequence: header.base_sequence,
            last_sequence: last_sequence(header.base_sequence, header.record_count),
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
        },
    );
}

/// The producer state of `log`: the snapshot when it lies within the log, then the batches
/// after it. A snapshot past the log end (the log was truncated below it) is deleted, so that
/// it is never believed once the log grows past it again with other batches.
fn load_producers(
    log: &PartitionLog,
    topic: &str,
    index: i32,
) -> Result<ProducerStateMap, LogError> {
    let mut state = ProducerStateMap::default();
    let mut replay_from = log.log_start_offset();
    match ProducerSnapshot::read(log.dir()) {
        Ok(Some(snapshot)) if snapshot.offset > log.log_end_offset() => {
            warn!(
                topic,
                partition = index,
                snapshot_offset = snapshot.offset,
                "producer snapshot is past the log end; deleting it"
            );
            remove_snapshot(log.dir())?;
        }
        Ok(Some(snapshot)) if snapshot.offset >= log.log_start_offset() => {
            state = snapshot.state;
            replay_from = snapshot.offset;
        }
        Ok(_) => {}
        Err(e) => {
            warn!(topic, partition = index, error = %e, "cannot read producer snapshot; replaying the log")
        }
    }
    replay(log, replay_from, &mut state)?;
    Ok(state)
}

/// Deletes the producer snapshot in `dir`, if any, durably.
fn remove_snapshot(dir: &Path) -> Result<(), LogError> {
    let path = dir.join(SNAPSHOT_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| LogError::io("fsync directory", dir, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io("remove producer snapshot", &path, e)),
    }
}
