//! The storage side of replication: a follower's log copies the leader's batches with their
//! offsets and epochs, refuses what does not continue it, keeps a leader-epoch cache that
//! survives restarts and truncation, and converges with a new leader after a divergence.

use std::path::Path;

use tokafka_broker::log::epochs::{EpochEntry, LEADER_EPOCH_CHECKPOINT_FILE};
use tokafka_broker::log::test_batches::{batch, BatchSpec};
use tokafka_broker::log::{LogConfig, LogError, PartitionLog, ReadLimits};

/// Small segments, so that every scenario crosses segment boundaries.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, config()).expect("open log")
}

/// Appends `batches` batches of 3 records as leader of `epoch`; `seed` sets their content.
fn lead(log: &PartitionLog, epoch: i32, batches: u64, seed: u64) {
    for i in 0..batches {
        log.append_with_leader_epoch(&mut batch(&BatchSpec::records(3).seed(seed + i)), epoch)
            .expect("leader append");
    }
}

/// Every stored byte of `log` from `from` to its end.
fn bytes_from(log: &PartitionLog, from: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = from;
    // Each read returns at least one batch, so this ends within the log's record count.
    while offset < log.log_end_offset() {
        let read = log.read(offset, ReadLimits::bytes(700)).expect("read");
        let region = read.region.expect("a batch at every offset below the end");
        out.extend(region.to_vec().expect("region bytes"));
        assert!(read.next_offset > offset, "reads move forward");
        offset = read.next_offset;
    }
    out
}

/// Copies what `follower` lacks from `leader`, a few batches per append, as a fetcher does.
fn replicate(leader: &PartitionLog, follower: &PartitionLog) {
    while follower.log_end_offset() < leader.log_end_offset() {
        let read = leader
            .read(follower.log_end_offset(), ReadLimits::bytes(700))
            .expect("leader read");
        let mut chunk = read
            .region
            .expect("leader batches")
            .to_vec()
            .expect("bytes");
        follower
            .append_replicated(&mut chunk)
            .expect("replicated append");
    }
}

/// The batches of `log` from `from`, one `Vec` each.
fn batches_from(log: &PartitionLog, from: i64) -> Vec<Vec<u8>> {
    let bytes = bytes_from(log, from);
    let mut out = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let header = tokafka_broker::log::format::BatchHeader::parse(&bytes[position..])
            .expect("stored header");
        out.push(bytes[position..position + header.size_bytes()].to_vec());
        position += header.size_bytes();
    }
    out
}

fn entries(pairs: &[(i32, i64)]) -> Vec<EpochEntry> {
    pairs
        .iter()
        .map(|&(epoch, start_offset)| EpochEntry {
            epoch,
            start_offset,
        })
        .collect()
}

#[test]
fn replicated_batches_keep_the_leaders_offsets_and_epochs() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, follower) = (open(leader_dir.path()), open(follower_dir.path()));
    lead(&leader, 0, 10, 0);
    lead(&leader, 3, 10, 100);
    replicate(&leader, &follower);

    assert_eq!(follower.log_end_offset(), 60);
    assert!(follower.segment_count() > 1, "small segments roll");
    assert_eq!(bytes_from(&follower, 0), bytes_from(&leader, 0));
    assert_eq!(follower.epoch_entries(), entries(&[(0, 0), (3, 30)]));
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(follower.latest_epoch(), Some(3));
    assert_eq!(follower.epoch_start_offset(3), Some(30));
}

#[test]
fn a_follower_refuses_batches_that_do_not_continue_its_log_and_writes_nothing() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, follower) = (open(leader_dir.path()), open(follower_dir.path()));
    lead(&leader, 1, 6, 0);
    let batches = batches_from(&leader, 0);
    follower
        .append_replicated(&mut batches[0].clone())
        .expect("first batch");

    // A gap: the third batch where the second belongs.
    let err = follower
        .append_replicated(&mut batches[2].clone())
        .expect_err("gap");
    assert!(
        matches!(
            err,
            LogError::UnexpectedBaseOffset {
                batch_index: 0,
                base_offset: 6,
                expected_offset: 3
            }
        ),
        "{err}"
    );
    // A batch already there.
    let err = follower
        .append_replicated(&mut batches[0].clone())
        .expect_err("overlap");
    assert!(
        matches!(err, LogError::UnexpectedBaseOffset { .. }),
        "{err}"
    );
    // Two batches that do not continue each other: the good first one is not written either.
    let mut skipping = [batches[1].clone(), batches[3].clone()].concat();
    let err = follower
        .append_replicated(&mut skipping)
        .expect_err("inner gap");
    assert!(
        matches!(
            err,
            LogError::UnexpectedBaseOffset {
                batch_index: 1,
                base_offset: 9,
                expected_offset: 6
            }
        ),
        "{err}"
    );
    assert_eq!(follower.log_end_offset(), 3);
    assert_eq!(bytes_from(&follower, 0), batches[0]);
}

#[test]
fn a_follower_refuses_a_batch_with_a_bad_crc_and_writes_nothing() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, follower) = (open(leader_dir.path()), open(follower_dir.path()));
    lead(&leader, 1, 2, 0);
    let mut both = bytes_from(&leader, 0);
    let last = both.len() - 1;
    both[last] ^= 0x40; // a record byte of the second batch
    let err = follower.append_replicated(&mut both).expect_err("bad CRC");
    assert!(
        matches!(err, LogError::InvalidBatch { batch_index: 1, .. }),
        "{err}"
    );
    assert_eq!(follower.log_end_offset(), 0);
    assert_eq!(follower.size_bytes(), 0);
    assert_eq!(follower.latest_epoch(), None);
}

#[test]
fn the_epoch_cache_survives_a_clean_and_an_unclean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let expected = entries(&[(0, 0), (2, 12), (5, 24)]);
    {
        let log = open(dir.path());
        lead(&log, 0, 4, 0);
        lead(&log, 2, 4, 10);
        lead(&log, 5, 4, 20);
        assert_eq!(log.epoch_entries(), expected);
        log.close().unwrap();
    }
    {
        let log = open(dir.path());
        assert_eq!(log.epoch_entries(), expected);
        lead(&log, 6, 1, 30);
        // Dropped without close: the next open recovers.
    }
    let log = open(dir.path());
    assert_eq!(
        log.epoch_entries(),
        entries(&[(0, 0), (2, 12), (5, 24), (6, 36)])
    );
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 24)));
    assert_eq!(log.end_offset_for_epoch(6), Some((6, 39)));
}

#[test]
fn the_epoch_cache_is_rebuilt_from_the_batches_when_its_checkpoint_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
    let expected = entries(&[(1, 0), (4, 30), (9, 45)]);
    {
        let log = open(dir.path());
        lead(&log, 1, 10, 0);
        lead(&log, 4, 5, 10);
        lead(&log, 9, 5, 20);
        assert!(log.segment_count() > 1, "small segments roll");
        log.close().unwrap();
    }
    std::fs::remove_file(&checkpoint).unwrap();
    {
        let log = open(dir.path());
        assert_eq!(log.epoch_entries(), expected);
        log.close().unwrap();
    }
    assert!(checkpoint.exists(), "the rebuilt cache is checkpointed");
    std::fs::write(&checkpoint, b"not a checkpoint").unwrap();
    assert_eq!(open(dir.path()).epoch_entries(), expected);
}

#[test]
fn truncation_cuts_the_epoch_cache_and_a_reset_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        lead(&log, 0, 5, 0);
        lead(&log, 2, 5, 10);
        lead(&log, 5, 5, 20);
        assert_eq!(log.truncate_to(20).unwrap(), 18);
        assert_eq!(log.epoch_entries(), entries(&[(0, 0), (2, 15)]));
        assert_eq!(log.end_offset_for_epoch(2), Some((2, 18)));
        assert_eq!(log.end_offset_for_epoch(5), None);
        log.close().unwrap();
    }
    let log = open(dir.path());
    assert_eq!(log.epoch_entries(), entries(&[(0, 0), (2, 15)]));
    log.truncate_to(15).unwrap();
    assert_eq!(log.epoch_entries(), entries(&[(0, 0)]));

    log.truncate_fully_and_start_at(100).unwrap();
    assert_eq!(log.epoch_entries(), vec![]);
    let leader_dir = tempfile::tempdir().unwrap();
    let leader = open(leader_dir.path());
    leader.truncate_fully_and_start_at(100).unwrap();
    lead(&leader, 7, 2, 0);
    replicate(&leader, &log);
    assert_eq!(log.epoch_entries(), entries(&[(7, 100)]));
    drop(log);
    assert_eq!(open(dir.path()).epoch_entries(), entries(&[(7, 100)]));
}

#[test]
fn retention_folds_the_epochs_below_the_new_log_start_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(
        dir.path(),
        LogConfig {
            retention_bytes: Some(4096),
            ..config()
        },
    )
    .unwrap();
    lead(&log, 0, 10, 0);
    lead(&log, 1, 30, 10);
    lead(&log, 2, 30, 40);
    log.set_high_watermark(log.log_end_offset());
    assert!(log.apply_retention().unwrap() > 0);
    let start = log.log_start_offset();
    assert!(start > 30, "epochs 0 and 1 partly gone: start {start}");
    let kept = log.epoch_entries();
    assert_eq!(kept[0].start_offset, start, "{kept:?}");
    assert!(
        kept.len() <= 2 && kept.last().map(|e| e.epoch) == Some(2),
        "{kept:?}"
    );
    drop(log);
    assert_eq!(open(dir.path()).epoch_entries(), kept);
}

#[test]
fn a_diverged_follower_truncates_to_the_new_leaders_answer_and_converges() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(a_dir.path()), open(b_dir.path()));
    // Epoch 0: A leads, B follows and is in sync.
    lead(&a, 0, 8, 0);
    replicate(&a, &b);
    a.set_high_watermark(a.log_end_offset());
    b.set_high_watermark(a.log_end_offset());
    // Epoch 1: B leads briefly; what it writes reaches no one.
    b.begin_leader_epoch(1).unwrap();
    lead(&b, 1, 5, 100);
    // Epoch 2: A leads again and writes other records at the same offsets and beyond.
    a.begin_leader_epoch(2).unwrap();
    lead(&a, 2, 12, 200);
    assert_ne!(bytes_from(&a, 24), bytes_from(&b, 24));

    // B follows A: it asks about its latest epoch and cuts where A's answer says.
    for _ in 0..4 {
        let asked = b.latest_epoch().expect("B has epochs");
        let answer = a.end_offset_for_epoch(asked);
        let (cut, done) = b.truncation_point(answer);
        b.truncate_to(cut).unwrap();
        if done {
            break;
        }
    }
    assert_eq!(a.end_offset_for_epoch(1), Some((0, 24)));
    assert_eq!(b.log_end_offset(), 24);
    assert_eq!(b.epoch_entries(), entries(&[(0, 0)]));

    replicate(&a, &b);
    assert_eq!(b.log_end_offset(), a.log_end_offset());
    assert_eq!(bytes_from(&b, 0), bytes_from(&a, 0));
    assert_eq!(b.epoch_entries(), a.epoch_entries());
    assert_eq!(b.epoch_entries(), entries(&[(0, 0), (2, 24)]));
}

#[test]
fn a_new_leader_that_wrote_nothing_yet_answers_about_newer_epochs() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(a_dir.path()), open(b_dir.path()));
    lead(&a, 0, 4, 0);
    replicate(&a, &b);
    // B led epoch 1 alone; A now leads epoch 2 and has not appended yet.
    lead(&b, 1, 3, 50);
    a.begin_leader_epoch(2).unwrap();
    assert_eq!(a.end_offset_for_epoch(1), Some((0, 12)));
    let (cut, done) = b.truncation_point(a.end_offset_for_epoch(1));
    assert_eq!((cut, done), (12, true));
    // An epoch begun without records is not kept across a reopen.
    drop(a);
    assert_eq!(open(a_dir.path()).latest_epoch(), Some(0));
}

/// A follower that took an epoch and lost it before appending keeps an empty epoch at its
/// log end. Asking the new leader about it must still converge at the true divergence point:
/// the empty epoch goes with the first truncation (even one that removes no record), and the
/// follower then asks about its older epoch.
#[test]
fn an_empty_epoch_at_the_end_does_not_stall_the_truncation() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(a_dir.path()), open(b_dir.path()));
    // Both hold 0..24 of epoch 0; B then wrote 24..30 in epoch 0 that A never got.
    lead(&a, 0, 8, 0);
    replicate(&a, &b);
    lead(&b, 0, 2, 300);
    // B became leader of epoch 3 and lost it before writing anything.
    b.begin_leader_epoch(3).unwrap();
    // A led epoch 2 from 24, then epoch 4.
    a.begin_leader_epoch(2).unwrap();
    lead(&a, 2, 3, 400);
    a.begin_leader_epoch(4).unwrap();
    lead(&a, 4, 1, 500);

    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(
            rounds <= 4,
            "truncation must settle: {:?}",
            b.epoch_entries()
        );
        let asked = b.latest_epoch().expect("B has epochs");
        let (cut, done) = b.truncation_point(a.end_offset_for_epoch(asked));
        b.truncate_to(cut).unwrap();
        if done {
            break;
        }
    }
    assert_eq!(b.log_end_offset(), 24, "B's own epoch-0 tail is divergent");
    replicate(&a, &b);
    assert_eq!(bytes_from(&b, 0), bytes_from(&a, 0));
    assert_eq!(b.epoch_entries(), a.epoch_entries());
}
