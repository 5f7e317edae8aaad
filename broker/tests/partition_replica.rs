//! A hosted partition as a replica: its high watermark survives restarts in replicated mode,
//! replicated appends teach it the producers' sequences, and truncation rebuilds them.

use std::path::Path;

use tokafka_broker::log::high_watermark;
use tokafka_broker::log::test_batches::{batch, BatchSpec};
use tokafka_broker::log::{LogConfig, ReadLimits};
use tokafka_broker::topics::partition::{Partition, ReplicaMode};
use uuid::Uuid;

fn open(dir: &Path, mode: ReplicaMode) -> Partition {
    Partition::open_as("t", Uuid::nil(), 0, dir, LogConfig::default(), mode)
        .expect("open partition")
}

/// An idempotent batch of `records` records from producer 7, epoch 0, starting at `sequence`.
fn idempotent(sequence: i32, records: usize) -> Vec<u8> {
    batch(&BatchSpec {
        producer_id: 7,
        producer_epoch: 0,
        base_sequence: sequence,
        ..BatchSpec::records(records).seed(sequence as u64)
    })
}

/// Copies what `follower` lacks from `leader`.
fn replicate(leader: &Partition, follower: &Partition) {
    while follower.log.log_end_offset() < leader.log.log_end_offset() {
        let read = leader
            .log
            .read(follower.log.log_end_offset(), ReadLimits::bytes(1 << 20))
            .expect("leader read");
        let mut chunk = read.region.expect("batches").to_vec().expect("bytes");
        follower
            .append_replicated(&mut chunk)
            .expect("replicated append");
    }
}

#[test]
fn a_replicated_partition_restores_its_checkpointed_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    {
        let partition = open(dir.path(), ReplicaMode::Replicated);
        for _ in 0..5 {
            partition
                .append(&mut batch(&BatchSpec::records(2)), 0)
                .unwrap();
        }
        assert_eq!(partition.log.high_watermark(), 0, "replication moves it");
        partition.log.set_high_watermark(6);
        partition.checkpoint_high_watermark().unwrap();
        partition.log.set_high_watermark(8);
        partition.close().unwrap();
    }
    let partition = open(dir.path(), ReplicaMode::Replicated);
    assert_eq!(partition.log.high_watermark(), 8, "close checkpoints it");
    drop(partition);

    // A checkpoint past the log end is clamped to it; none at all means the log start.
    high_watermark::write(dir.path(), 10_000).unwrap();
    let partition = open(dir.path(), ReplicaMode::Replicated);
    assert_eq!(partition.log.high_watermark(), 10);
    drop(partition);
    std::fs::remove_file(dir.path().join(high_watermark::HIGH_WATERMARK_FILE)).unwrap();
    assert_eq!(
        open(dir.path(), ReplicaMode::Replicated)
            .log
            .high_watermark(),
        0
    );
    // Standalone, the high watermark is the log end as always.
    assert_eq!(
        open(dir.path(), ReplicaMode::Standalone)
            .log
            .high_watermark(),
        10
    );
}

#[test]
fn a_follower_that_becomes_leader_dedupes_retries_of_replicated_batches() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = open(leader_dir.path(), ReplicaMode::Replicated);
    let follower = open(follower_dir.path(), ReplicaMode::Replicated);
    leader
        .append(&mut batch(&BatchSpec::records(2)), 3)
        .unwrap();
    leader.append(&mut idempotent(0, 3), 3).unwrap();
    leader.append(&mut idempotent(3, 2), 3).unwrap();
    replicate(&leader, &follower);
    assert_eq!(
        follower.log.high_watermark(),
        0,
        "a follower's append commits nothing"
    );

    // The producer retries its last batch against the new leader: answered, not rewritten.
    let retry = follower.append(&mut idempotent(3, 2), 4).unwrap();
    assert!(retry.duplicate);
    assert_eq!((retry.base_offset, retry.last_offset), (5, 6));
    assert_eq!(follower.log.log_end_offset(), 7);
    // Its next batch continues the sequence.
    let next = follower.append(&mut idempotent(5, 1), 4).unwrap();
    assert!(!next.duplicate);
    assert_eq!(next.base_offset, 7);
}

#[test]
fn truncation_rebuilds_the_producer_state_of_the_shorter_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let partition = open(dir.path(), ReplicaMode::Replicated);
        partition.append(&mut idempotent(0, 2), 0).unwrap();
        partition.append(&mut idempotent(2, 2), 0).unwrap();
        partition.append(&mut idempotent(4, 2), 0).unwrap();
        // The snapshot written at close covers offsets up to 6.
        partition.close().unwrap();
    }
    let partition = open(dir.path(), ReplicaMode::Replicated);
    assert_eq!(partition.truncate_to(4).unwrap(), 4);
    // The batch at sequence 4 is gone: it is new again, not a duplicate.
    let again = partition.append(&mut idempotent(4, 2), 1).unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.base_offset, 4);
    drop(partition);

    // After a crash (no close) the reopened partition agrees: sequence 4 is at offset 4.
    let partition = open(dir.path(), ReplicaMode::Replicated);
    let retry = partition.append(&mut idempotent(4, 2), 1).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, 4);

    partition.truncate_fully_and_start_at(50).unwrap();
    let fresh = partition.append(&mut idempotent(0, 1), 2).unwrap();
    assert_eq!((fresh.base_offset, fresh.duplicate), (50, false));
}
