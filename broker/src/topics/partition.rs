//! A hosted partition: its log plus the idempotent-producer state that guards appends.
//!
//! Appends are serialised by the partition's append lock so that the producer sequence check
//! and the log append are one atomic step. Reads go straight to the log and never take it.

use std::path::Path;

use parking_lot::{Mutex, MutexGuard};
use tracing::{info, warn};
use uuid::Uuid;

use crate::log::format::BatchHeader;
use crate::log::{AppendInfo, LogConfig, LogError, PartitionLog};
use crate::producer::{
    last_sequence, BatchMeta, ProducerSnapshot, ProducerStateMap, SequenceCheck, SequenceError,
    SnapshotError,
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
    /// Opens the partition's log in `dir` and rebuilds its producer state from the snapshot
    /// and the batches after it.
    ///
    /// # Errors
    /// Log errors; a damaged snapshot is not an error (the log is replayed instead).
    pub fn open(
        topic: &str,
        topic_id: Uuid,
        index: i32,
        dir: &Path,
        config: LogConfig,
    ) -> Result<Self, LogError> {
        let log = PartitionLog::open(dir, config)?;
        let mut state = ProducerStateMap::default();
        let mut replay_from = log.log_start_offset();
        match ProducerSnapshot::read(dir) {
            Ok(Some(snapshot))
                if snapshot.offset <= log.log_end_offset()
                    && snapshot.offset >= log.log_start_offset() =>
            {
                state = snapshot.state;
                replay_from = snapshot.offset;
            }
            Ok(_) => {}
            Err(e) => {
                warn!(topic, partition = index, error = %e, "cannot read producer snapshot; replaying the log")
            }
        }
        replay(&log, replay_from, &mut state)?;
        // A single broker owns everything it has written.
        log.set_high_watermark(log.log_end_offset());
        info!(
            topic,
            partition = index,
            log_end_offset = log.log_end_offset(),
            producers = state.len(),
            "opened partition"
        );
        Ok(Self {
            topic: topic.to_string(),
            topic_id,
            index,
            log,
            producers: Mutex::new(state),
        })
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
        self.log.set_high_watermark(self.log.log_end_offset());
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
        if header.producer_id >= 0 && header.last_offset() >= from {
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
    }
    Ok(())
}
