//! Idempotent-producer state of one partition: for each producer id, its epoch and the last
//! five batches it appended (first/last sequence and offsets), so that a retried batch is
//! recognised and answered with its original offset instead of being written twice.
//!
//! The decision ([`ProducerStateMap::check`]) is a pure function of the state and the batch;
//! the partition applies it under its append lock, so check and append are atomic together.
//! The state is snapshotted to disk with the log offset it covers and, on open, rebuilt by
//! replaying the batch headers after the snapshot.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::log::durable::{self, DurableError};

/// How many recent batches are remembered per producer (Kafka's max in-flight requests for
/// idempotence).
pub const BATCHES_REMEMBERED: usize = 5;
/// File name of the snapshot in a partition directory.
pub const SNAPSHOT_FILE: &str = "producer-state.json";

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// State of one producer id on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first; at most [`BATCHES_REMEMBERED`].
    pub batches: VecDeque<BatchMeta>,
}

/// Why a producer's batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer epoch {got} is older than the current epoch {current}")]
    InvalidEpoch { current: i16, got: i16 },
    #[error("out of order sequence: expected {expected}, got {got}")]
    OutOfOrder { expected: i32, got: i32 },
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New and in order: append it.
    Append,
    /// Already appended: answer with the original offsets, write nothing.
    Duplicate(BatchMeta),
}

/// The sequence number after `sequence` (sequences wrap from `i32::MAX` to 0).
pub fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

/// The last sequence of a batch of `record_count` records starting at `first_sequence`.
pub fn last_sequence(first_sequence: i32, record_count: i32) -> i32 {
    let last = i64::from(first_sequence) + i64::from(record_count) - 1;
    (last % (i64::from(i32::MAX) + 1)) as i32
}

/// The idempotent-producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStateMap {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStateMap {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Decides what to do with a batch `first_sequence..=last_sequence` from
    /// `producer_id`/`epoch`.
    ///
    /// # Errors
    /// [`SequenceError::InvalidEpoch`] for a fenced (older) epoch;
    /// [`SequenceError::OutOfOrder`] when the batch does not continue the producer's sequence
    /// (a gap, or a new producer or epoch not starting at 0).
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        last_sequence: i32,
    ) -> Result<SequenceCheck, SequenceError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return if first_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    expected: 0,
                    got: first_sequence,
                })
            };
        };
        if epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch {
                current: entry.epoch,
                got: epoch,
            });
        }
        if epoch > entry.epoch {
            return if first_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    expected: 0,
                    got: first_sequence,
                })
            };
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == first_sequence && b.last_sequence == last_sequence)
        {
            return Ok(SequenceCheck::Duplicate(*dup));
        }
        let expected = entry
            .batches
            .back()
            .map_or(0, |b| next_sequence(b.last_sequence));
        if first_sequence != expected {
            return Err(SequenceError::OutOfOrder {
                expected,
                got: first_sequence,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records an appended batch (after a successful append, or while replaying the log).
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchMeta) {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                batches: VecDeque::new(),
            });
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(batch);
        while entry.batches.len() > BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
    }

    /// Forgets everything at or after `offset` (the log was truncated there).
    pub fn truncate_to(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.last_offset < offset);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
    }
}

/// A snapshot of the state valid for the log up to (excluding) `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerSnapshot {
    pub offset: i64,
    pub state: ProducerStateMap,
}

/// Snapshot I/O errors.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("producer snapshot {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("producer snapshot {path} is not valid: {source}")]
    Format {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl From<DurableError> for SnapshotError {
    fn from(error: DurableError) -> Self {
        SnapshotError::Io {
            path: error.path.display().to_string(),
            source: error.source,
        }
    }
}

impl ProducerSnapshot {
    /// Replaces the snapshot in `dir` atomically and durably (see
    /// [`durable::write_atomically`]).
    ///
    /// # Errors
    /// I/O errors, with the path.
    pub fn write(&self, dir: &Path) -> Result<(), SnapshotError> {
        let path = dir.join(SNAPSHOT_FILE);
        let bytes = serde_json::to_vec(self).map_err(|source| SnapshotError::Format {
            path: path.display().to_string(),
            source,
        })?;
        durable::write_atomically(&path, &bytes).map_err(SnapshotError::from)
    }

    /// Reads the snapshot; `Ok(None)` when there is none or it is damaged (the caller then
    /// replays the whole log).
    ///
    /// # Errors
    /// I/O errors other than "not found".
    pub fn read(dir: &Path) -> Result<Option<Self>, SnapshotError> {
        let bytes = durable::read(&dir.join(SNAPSHOT_FILE))?;
        Ok(bytes.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(first_sequence: i32, last_sequence: i32, first_offset: i64) -> BatchMeta {
        BatchMeta {
            first_sequence,
            last_sequence,
            first_offset,
            last_offset: first_offset + i64::from(last_sequence - first_sequence),
        }
    }

    #[test]
    fn a_new_producer_must_start_at_sequence_zero() {
        let state = ProducerStateMap::default();
        assert_eq!(state.check(7, 0, 0, 4), Ok(SequenceCheck::Append));
        assert_eq!(
            state.check(7, 0, 5, 9),
            Err(SequenceError::OutOfOrder {
                expected: 0,
                got: 5
            })
        );
    }

    #[test]
    fn retries_of_the_last_five_batches_are_duplicates() {
        let mut state = ProducerStateMap::default();
        for i in 0..7 {
            state.record(7, 0, meta(i * 10, i * 10 + 9, i64::from(i) * 10));
        }
        assert_eq!(
            state.check(7, 0, 60, 69),
            Ok(SequenceCheck::Duplicate(meta(60, 69, 60)))
        );
        assert_eq!(
            state.check(7, 0, 20, 29),
            Ok(SequenceCheck::Duplicate(meta(20, 29, 20)))
        );
        // older than the five remembered: neither duplicate nor in order
        assert_eq!(
            state.check(7, 0, 10, 19),
            Err(SequenceError::OutOfOrder {
                expected: 70,
                got: 10
            })
        );
        assert_eq!(state.check(7, 0, 70, 79), Ok(SequenceCheck::Append));
        assert_eq!(
            state.check(7, 0, 80, 89),
            Err(SequenceError::OutOfOrder {
                expected: 70,
                got: 80
            })
        );
    }

    #[test]
    fn epochs_fence_old_producers_and_restart_sequences() {
        let mut state = ProducerStateMap::default();
        state.record(7, 3, meta(0, 4, 0));
        assert_eq!(
            state.check(7, 2, 5, 9),
            Err(SequenceError::InvalidEpoch { current: 3, got: 2 })
        );
        assert_eq!(state.check(7, 4, 0, 4), Ok(SequenceCheck::Append));
        assert!(matches!(
            state.check(7, 4, 5, 9),
            Err(SequenceError::OutOfOrder { .. })
        ));
        state.record(7, 4, meta(0, 4, 5));
        assert_eq!(state.get(7).map(|e| e.batches.len()), Some(1));
    }

    #[test]
    fn sequences_wrap_around() {
        assert_eq!(next_sequence(i32::MAX), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 3), 0);
        let mut state = ProducerStateMap::default();
        state.record(
            1,
            0,
            BatchMeta {
                first_sequence: i32::MAX - 1,
                last_sequence: i32::MAX,
                first_offset: 0,
                last_offset: 1,
            },
        );
        assert_eq!(state.check(1, 0, 0, 3), Ok(SequenceCheck::Append));
    }

    #[test]
    fn truncation_forgets_batches_past_the_cut() {
        let mut state = ProducerStateMap::default();
        state.record(1, 0, meta(0, 9, 0));
        state.record(1, 0, meta(10, 19, 10));
        state.record(2, 0, meta(0, 9, 20));
        state.truncate_to(10);
        assert_eq!(state.get(1).map(|e| e.batches.len()), Some(1));
        assert!(state.get(2).is_none());
    }

    #[test]
    fn snapshots_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = ProducerStateMap::default();
        state.record(9, 1, meta(0, 2, 40));
        let snapshot = ProducerSnapshot { offset: 43, state };
        snapshot.write(dir.path()).expect("write");
        assert_eq!(
            ProducerSnapshot::read(dir.path()).expect("read"),
            Some(snapshot)
        );
        std::fs::write(dir.path().join(SNAPSHOT_FILE), b"{garbage").expect("damage");
        assert_eq!(ProducerSnapshot::read(dir.path()).expect("read"), None);
    }
}
