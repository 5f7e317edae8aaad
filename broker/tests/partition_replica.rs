//! A hosted partition as a replica: its high watermark survives restarts, replicated appends
//! teach it the producers' sequences, and truncation rebuilds them.

use std::path::Path;

use tokafka_broker::log::high_watermark;
use tokafka_broker::log::test_batches::{batch, BatchSpec};
use tokafka_broker::log::{LogConfig, ReadLimits};
use tokafka_broker::replica::{AppendOrigin, Appended, Partition, ReplicaRole};
use uuid::Uuid;

fn open(dir: &Path) -> Partition {
    Partition::open("t", Uuid::nil(), 0, dir, LogConfig::default()).expect("open partition")
}

/// Makes broker 1 the leader of `partition` in `epoch`, with replicas 1 and 2 and `isr`.
fn lead(partition: &Partition, epoch: i32, isr: &[i32]) {
    let role = ReplicaRole {
        topic_id: Uuid::nil(),
        leader: 1,
        leader_epoch: epoch,
        partition_epoch: epoch,
        replicas: vec![1, 2],
        isr: isr.to_vec(),
    };
    partition.apply_role(1, &role, 1, 0).expect("lead");
}

/// A producer's append (acks=1) to a partition this broker leads.
fn append(partition: &Partition, mut records: Vec<u8>) -> Appended {
    partition
        .append_as_leader(&mut records, AppendOrigin::Client { acks: 1 })
        .expect("append")
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
            .append_as_follower(&mut chunk)
            .expect("replicated append");
    }
}

#[test]
fn a_replicated_partition_restores_its_checkpointed_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    {
        let partition = open(dir.path());
        lead(&partition, 0, &[1, 2]);
        for _ in 0..5 {
            append(&partition, batch(&BatchSpec::records(2)));
        }
        assert_eq!(partition.log.high_watermark(), 0, "replication moves it");
        partition.log.set_high_watermark(6);
        partition.checkpoint_high_watermark().unwrap();
        partition.log.set_high_watermark(8);
        partition.close().unwrap();
    }
    let partition = open(dir.path());
    assert_eq!(partition.log.high_watermark(), 8, "close checkpoints it");
    drop(partition);

    // A checkpoint past the log end is clamped to it; none at all means the log start.
    high_watermark::write(dir.path(), 10_000).unwrap();
    let partition = open(dir.path());
    assert_eq!(partition.log.high_watermark(), 10);
    drop(partition);
    std::fs::remove_file(dir.path().join(high_watermark::HIGH_WATERMARK_FILE)).unwrap();
    assert_eq!(open(dir.path()).log.high_watermark(), 0);
}

#[test]
fn a_follower_that_becomes_leader_dedupes_retries_of_replicated_batches() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = open(leader_dir.path());
    let follower = open(follower_dir.path());
    lead(&leader, 3, &[1, 2]);
    append(&leader, batch(&BatchSpec::records(2)));
    append(&leader, idempotent(0, 3));
    append(&leader, idempotent(3, 2));
    replicate(&leader, &follower);
    assert_eq!(
        follower.log.high_watermark(),
        0,
        "a follower's append commits nothing"
    );

    // The producer retries its last batch against the new leader: answered, not rewritten.
    lead(&follower, 4, &[1]);
    let retry = append(&follower, idempotent(3, 2));
    assert!(retry.duplicate);
    assert_eq!((retry.base_offset, retry.last_offset), (5, 6));
    assert_eq!(follower.log.log_end_offset(), 7);
    // Its next batch continues the sequence.
    let next = append(&follower, idempotent(5, 1));
    assert!(!next.duplicate);
    assert_eq!(next.base_offset, 7);
}

#[test]
fn truncation_rebuilds_the_producer_state_of_the_shorter_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let partition = open(dir.path());
        lead(&partition, 0, &[1]);
        append(&partition, idempotent(0, 2));
        append(&partition, idempotent(2, 2));
        append(&partition, idempotent(4, 2));
        // The snapshot written at close covers offsets up to 6.
        partition.close().unwrap();
    }
    let partition = open(dir.path());
    assert_eq!(partition.truncate_to(4).unwrap(), 4);
    // The batch at sequence 4 is gone: it is new again, not a duplicate.
    lead(&partition, 1, &[1]);
    let again = append(&partition, idempotent(4, 2));
    assert!(!again.duplicate);
    assert_eq!(again.base_offset, 4);
    drop(partition);

    // After a crash (no close) the reopened partition agrees: sequence 4 is at offset 4.
    let partition = open(dir.path());
    lead(&partition, 2, &[1]);
    let retry = append(&partition, idempotent(4, 2));
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, 4);

    partition.truncate_fully_and_start_at(50).unwrap();
    let fresh = append(&partition, idempotent(0, 1));
    assert_eq!((fresh.base_offset, fresh.duplicate), (50, false));
}
