//! The idempotent-producer state of one replica as its log defines it: loading it at open
//! (the snapshot, then the batches after it), learning each appended batch, and recognising
//! the single batch of an idempotent append. The decisions themselves are
//! [`ProducerStateMap`]'s ([`crate::producer`]).

use std::path::Path;

use tracing::warn;

use super::AppendError;
use crate::log::format::BatchHeader;
use crate::log::{LogError, PartitionLog};
use crate::producer::{
    last_sequence, BatchMeta, ProducerSnapshot, ProducerStateMap, SNAPSHOT_FILE,
};

/// The producer state of one replica.
pub type Producers = ProducerStateMap;

/// Producer fields of the single batch of an idempotent append; `None` for an append without
/// a producer id (or one the log will refuse as malformed).
///
/// # Errors
/// An idempotent append of more than one batch, or a transactional batch.
pub fn idempotent_batch(records: &[u8]) -> Result<Option<BatchHeader>, AppendError> {
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
        return Err(AppendError::MultipleIdempotentBatches(count_batches(
            records,
        )));
    }
    Ok(Some(header))
}

/// Batches in `records` as their length fields chain them (for the error message only).
fn count_batches(records: &[u8]) -> usize {
    let mut count = 0;
    let mut position = 0usize;
    while let Some(length) = records.get(position + 8..position + 12) {
        let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        count += 1;
        position += 12 + usize::try_from(length).unwrap_or(0);
    }
    count
}

/// Records the producer fields of an appended batch (batches without a producer id carry
/// none).
pub fn record_producer(state: &mut ProducerStateMap, header: &BatchHeader) {
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

/// The producer state of `log`: the snapshot when it lies within the log, then the batches
/// after it. A snapshot past the log end (the log was truncated below it) is deleted, so that
/// it is never believed once the log grows past it again with other batches.
///
/// # Errors
/// Reading the log failed; a damaged snapshot is not an error (the log is replayed).
pub fn load_producers(
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
///
/// # Errors
/// I/O errors removing the file or syncing the directory.
pub fn remove_snapshot(dir: &Path) -> Result<(), LogError> {
    let path = dir.join(SNAPSHOT_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| LogError::io("fsync directory", dir, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io("remove producer snapshot", &path, e)),
    }
}
