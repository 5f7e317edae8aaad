//! Behaviour of one partition log through its public API: appends, reads, rolls, reopen.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokafka_broker::log::test_batches::{batch, BatchSpec};
use tokafka_broker::log::{FlushPolicy, LogConfig, LogError, PartitionLog, ReadLimits};

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn batches_in(bytes: &[u8]) -> Vec<(i64, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let header = tokafka_broker::log::format::validate_batch(
            &bytes[pos..pos
                + 12
                + i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize],
        )
        .expect("valid batch");
        out.push((header.base_offset, header.record_count as usize));
        pos += header.size_bytes();
    }
    out
}

#[test]
fn appends_get_consecutive_offsets_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
    for i in 0..50 {
        let info = log
            .append(&mut batch(&BatchSpec::records(3).seed(i)))
            .unwrap();
        assert_eq!(info.base_offset, i as i64 * 3);
        assert_eq!(info.last_offset, i as i64 * 3 + 2);
    }
    assert_eq!(log.log_end_offset(), 150);
    assert!(log.segment_count() > 1, "small segments roll");
    let mut offset = 0;
    let mut seen = 0;
    while offset < log.log_end_offset() {
        let read = log.read(offset, ReadLimits::bytes(1000)).unwrap();
        let bytes = read.region.expect("data").to_vec().unwrap();
        for (base, count) in batches_in(&bytes) {
            assert_eq!(base, offset);
            offset += count as i64;
            seen += count;
        }
        assert_eq!(read.next_offset, offset);
    }
    assert_eq!(seen, 150);
}

#[test]
fn a_bad_batch_in_an_append_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
    log.append(&mut batch(&BatchSpec::records(2))).unwrap();
    let mut two = batch(&BatchSpec::records(2));
    let mut bad = batch(&BatchSpec::records(2));
    let last = bad.len() - 1;
    bad[last] ^= 1;
    two.extend_from_slice(&bad);
    let err = log.append(&mut two).unwrap_err();
    assert!(
        matches!(err, LogError::InvalidBatch { batch_index: 1, .. }),
        "{err}"
    );
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.size_bytes(), batch(&BatchSpec::records(2)).len() as u64);
}

#[test]
fn reopen_after_clean_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
        for i in 0..40 {
            log.append(&mut batch(&BatchSpec::records(2).seed(i)))
                .unwrap();
        }
        log.close().unwrap();
    }
    let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
    assert_eq!(log.log_end_offset(), 80);
    let read = log.read(41, ReadLimits::bytes(1)).unwrap();
    let bytes = read.region.unwrap().to_vec().unwrap();
    assert_eq!(batches_in(&bytes), vec![(40, 2)]);
    log.append(&mut batch(&BatchSpec::records(1))).unwrap();
    assert_eq!(log.log_end_offset(), 81);
}

#[test]
fn reopen_after_crash_recovers_flushed_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
        for i in 0..40 {
            log.append(&mut batch(&BatchSpec::records(2).seed(i)))
                .unwrap();
        }
        log.flush().unwrap();
    }
    let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
    assert_eq!(log.log_end_offset(), 80);
    let read = log.read(0, ReadLimits::bytes(u64::MAX)).unwrap();
    assert!(read.region.is_some());
}

#[test]
fn timestamps_find_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
    for i in 0..30i64 {
        log.append(&mut batch(&BatchSpec::records(4).timestamp(1000 + i * 10)))
            .unwrap();
    }
    let hit = log
        .offset_for_timestamp(1000 + 7 * 10 + 2)
        .unwrap()
        .unwrap();
    assert_eq!(hit.offset, 7 * 4 + 2);
    assert_eq!(hit.timestamp, 1072);
    assert!(log.offset_for_timestamp(100_000).unwrap().is_none());
    assert_eq!(log.offset_for_timestamp(0).unwrap().unwrap().offset, 0);
}

#[test]
fn retention_by_time_deletes_old_segments_and_moves_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(1_000_000));
    let clock_now = Arc::clone(&now);
    let config = LogConfig {
        retention_ms: Some(1000),
        ..small_segments()
    };
    let log = PartitionLog::open_with_clock(
        dir.path(),
        config,
        Arc::new(move || clock_now.load(Ordering::SeqCst)),
    )
    .unwrap();
    for i in 0..60i64 {
        log.append(&mut batch(&BatchSpec::records(2).timestamp(1_000_000 + i)))
            .unwrap();
    }
    log.set_high_watermark(log.log_end_offset());
    assert_eq!(log.apply_retention().unwrap(), 0);
    now.store(1_000_000 + 60 + 1001, Ordering::SeqCst);
    let segments_before = log.segment_count();
    let deleted = log.apply_retention().unwrap();
    assert_eq!(deleted, segments_before - 1);
    assert_eq!(
        log.log_start_offset(),
        *log.segment_base_offsets().first().unwrap()
    );
    assert!(matches!(
        log.read(0, ReadLimits::bytes(100)),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn truncation_cuts_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
    for _ in 0..60 {
        log.append(&mut batch(&BatchSpec::records(3))).unwrap();
    }
    log.set_high_watermark(180);
    assert_eq!(log.truncate_to(100).unwrap(), 99);
    assert_eq!(log.log_end_offset(), 99);
    assert_eq!(log.high_watermark(), 99);
    let info = log.append(&mut batch(&BatchSpec::records(1))).unwrap();
    assert_eq!(info.base_offset, 99);
    log.truncate_fully_and_start_at(500).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
    assert_eq!(log.segment_count(), 1);
}

fn clock_at(start_ms: i64) -> (Arc<AtomicI64>, tokafka_broker::log::partition::Clock) {
    let now = Arc::new(AtomicI64::new(start_ms));
    let clock_now = Arc::clone(&now);
    (now, Arc::new(move || clock_now.load(Ordering::SeqCst)))
}

#[test]
fn a_region_held_across_a_truncation_never_shows_other_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
    for i in 0..10 {
        log.append(&mut batch(&BatchSpec::records(2).seed(i)))
            .unwrap();
    }
    let read = log.read(8, ReadLimits::bytes(u64::MAX)).unwrap();
    let region = read.region.unwrap();
    let before = region.to_vec().unwrap();
    assert_eq!(log.truncate_to(4).unwrap(), 4);
    for i in 0..10 {
        log.append(&mut batch(
            &BatchSpec::records(3).value_bytes(40).seed(100 + i),
        ))
        .unwrap();
    }
    // The region lay past the cut: it may end early, but never holds other bytes.
    match region.to_vec() {
        Ok(after) => assert_eq!(after, before),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
    }
    let read = log.read(4, ReadLimits::bytes(1)).unwrap();
    let bytes = read.region.unwrap().to_vec().unwrap();
    assert_eq!(batches_in(&bytes), vec![(4, 3)]);
}

/// A truncation at the end of a segment that an earlier truncation had cut must not append
/// to that segment again: a region taken before the first cut would then show new bytes.
#[test]
fn a_region_held_across_two_truncations_never_shows_other_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
    for i in 0..10 {
        log.append(&mut batch(&BatchSpec::records(2).seed(i)))
            .unwrap();
    }
    let region = log
        .read(8, ReadLimits::bytes(u64::MAX))
        .unwrap()
        .region
        .unwrap();
    let before = region.to_vec().unwrap();
    // Cut the segment at 4 (appends go to a new segment at 4), then truncate to 4 again
    // after appending there: only the new segment goes.
    assert_eq!(log.truncate_to(4).unwrap(), 4);
    log.append(&mut batch(&BatchSpec::records(2).seed(50)))
        .unwrap();
    assert_eq!(log.truncate_to(4).unwrap(), 4);
    for i in 0..10 {
        log.append(&mut batch(
            &BatchSpec::records(3).value_bytes(40).seed(100 + i),
        ))
        .unwrap();
    }
    match region.to_vec() {
        Ok(after) => assert_eq!(after, before),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
    }
    let bytes = log
        .read(4, ReadLimits::bytes(1))
        .unwrap()
        .region
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(batches_in(&bytes), vec![(4, 3)]);
}

#[test]
fn flush_policy_every_n_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy {
            every_records: Some(5),
            every_ms: None,
        },
        ..small_segments()
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    let flushed: Vec<bool> = (0..6)
        .map(|_| {
            log.append(&mut batch(&BatchSpec::records(2)))
                .unwrap()
                .flushed
        })
        .collect();
    assert_eq!(flushed, [false, false, true, false, false, true]);
}

#[test]
fn flush_policy_every_append() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::every_append(),
        ..small_segments()
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    for _ in 0..3 {
        assert!(
            log.append(&mut batch(&BatchSpec::records(1)))
                .unwrap()
                .flushed
        );
    }
}

#[test]
fn flush_policy_every_t_ms_by_append_or_by_the_periodic_check() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = clock_at(10_000);
    let config = LogConfig {
        flush: FlushPolicy {
            every_records: None,
            every_ms: Some(100),
        },
        ..small_segments()
    };
    let log = PartitionLog::open_with_clock(dir.path(), config, clock).unwrap();
    assert!(
        !log.append(&mut batch(&BatchSpec::records(1)))
            .unwrap()
            .flushed
    );
    now.fetch_add(99, Ordering::SeqCst);
    assert!(!log.maybe_flush().unwrap(), "not yet due");
    now.fetch_add(1, Ordering::SeqCst);
    assert!(
        log.append(&mut batch(&BatchSpec::records(1)))
            .unwrap()
            .flushed
    );
    assert!(!log.maybe_flush().unwrap(), "nothing left to flush");
    log.append(&mut batch(&BatchSpec::records(1))).unwrap();
    now.fetch_add(100, Ordering::SeqCst);
    assert!(log.maybe_flush().unwrap());
}

#[test]
fn segments_roll_by_age_also_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // An index entry per batch, so that a reopen does not walk the segment from its start.
    let config = LogConfig {
        segment_ms: 1000,
        index_interval_bytes: 0,
        ..LogConfig::default()
    };
    {
        let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        log.append(&mut batch(&BatchSpec::records(1).timestamp(50_000)))
            .unwrap();
        log.append(&mut batch(&BatchSpec::records(1).timestamp(50_900)))
            .unwrap();
        assert_eq!(log.segment_count(), 1);
        log.close().unwrap();
    }
    let log = PartitionLog::open(dir.path(), config).unwrap();
    log.append(&mut batch(&BatchSpec::records(1).timestamp(51_001)))
        .unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 2], "rolled by age");
}

#[test]
fn retention_by_size_keeps_at_least_retention_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(8192),
        retention_ms: None,
        ..small_segments()
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    for i in 0..100 {
        log.append(&mut batch(&BatchSpec::records(2).value_bytes(60).seed(i)))
            .unwrap();
    }
    let before = log.size_bytes();
    assert_eq!(
        log.apply_retention().unwrap(),
        0,
        "nothing below the high watermark"
    );
    log.set_high_watermark(log.log_end_offset());
    let deleted = log.apply_retention().unwrap();
    assert!(deleted > 0);
    assert!(log.size_bytes() >= 8192 && log.size_bytes() < before);
    assert_eq!(
        log.log_start_offset(),
        log.segment_base_offsets()[0],
        "the log start moved to the first kept segment"
    );
}

#[test]
fn writer_operations_after_close_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
    log.append(&mut batch(&BatchSpec::records(1))).unwrap();
    log.close().unwrap();
    assert!(matches!(log.apply_retention(), Err(LogError::Closed)));
    assert!(matches!(log.truncate_to(0), Err(LogError::Closed)));
    assert!(matches!(
        log.truncate_fully_and_start_at(9),
        Err(LogError::Closed)
    ));
    assert!(log
        .read(0, ReadLimits::bytes(100))
        .unwrap()
        .region
        .is_some());
}

#[test]
fn a_reset_cut_short_by_a_crash_still_starts_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
        log.append(&mut batch(&BatchSpec::records(3))).unwrap();
        assert!(log.truncate_fully_and_start_at(-1).is_err());
        log.truncate_fully_and_start_at(500).unwrap();
    }
    // As if the process died after the old segments were deleted and before the new one
    // was created.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if tokafka_broker::log::format::parse_segment_file_name(
            path.file_name().unwrap().to_str().unwrap(),
        )
        .is_some()
        {
            std::fs::remove_file(path).unwrap();
        }
    }
    let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
}

#[test]
fn reopening_leaves_sealed_segments_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
        for i in 0..200 {
            log.append(&mut batch(&BatchSpec::records(2).seed(i)))
                .unwrap();
        }
        log.close().unwrap();
    }
    type FileState = (String, u64, std::time::SystemTime);
    let sealed_indexes = |dir: &std::path::Path| -> Vec<FileState> {
        let mut out: Vec<FileState> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_str().unwrap().ends_with("index"))
            .map(|e| {
                let name = e.file_name().into_string().unwrap();
                let meta = e.metadata().unwrap();
                (name, meta.len(), meta.modified().unwrap())
            })
            .collect();
        out.sort();
        out.pop(); // the active segment's time index
        out.pop(); // ... and offset index (names sort .index before .timeindex per segment)
        out
    };
    let before = sealed_indexes(dir.path());
    assert!(before.len() >= 4, "several sealed segments");
    for _ in 0..2 {
        let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
        assert_eq!(
            sealed_indexes(dir.path()),
            before,
            "sealed indexes untouched"
        );
        drop(log); // a crash: the next open recovers, still without touching them
    }
}

#[test]
fn segments_roll_when_the_index_is_full() {
    let dir = tempfile::tempdir().unwrap();
    // Four offset entries and an entry per batch after the first: a segment holds five batches
    // before its index has no room for the next one's entry.
    let config = LogConfig {
        segment_index_bytes: 32,
        index_interval_bytes: 0,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    for _ in 0..12 {
        log.append(&mut batch(&BatchSpec::records(1))).unwrap();
    }
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 3, "rolled on a full index: {bases:?}");
    assert!(
        bases.windows(2).all(|w| w[1] - w[0] <= 5),
        "no segment outgrows its index: {bases:?}"
    );
}

#[test]
fn index_files_are_preallocated_while_active_and_trimmed_when_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 100,
        segment_index_bytes: 4000,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    for i in 0..40 {
        log.append(&mut batch(&BatchSpec::records(2).seed(i)))
            .unwrap();
    }
    let bases = log.segment_base_offsets();
    let len = |base: i64, suffix: &str| {
        std::fs::metadata(tokafka_broker::log::format::segment_path(
            dir.path(),
            base,
            suffix,
        ))
        .unwrap()
        .len()
    };
    let (active, sealed) = bases.split_last().unwrap();
    assert!(!sealed.is_empty());
    assert_eq!(len(*active, "index"), 4000, "preallocated");
    assert_eq!(
        len(*active, "timeindex"),
        3996,
        "preallocated to whole entries"
    );
    for &base in sealed {
        let index = len(base, "index");
        assert!(
            index > 0 && index < 4000 && index % 8 == 0,
            "trimmed: {index}"
        );
        let time = len(base, "timeindex");
        assert!(time > 0 && time < 3996 && time % 12 == 0, "trimmed: {time}");
    }
    log.close().unwrap();
    assert!(len(*active, "index") < 4000, "trimmed at close");
}

#[test]
fn recovery_validates_only_the_unflushed_tail() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(&BatchSpec::records(2));
    {
        let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
        for i in 0..10 {
            log.append(&mut batch(&BatchSpec::records(2).seed(i)))
                .unwrap();
        }
        log.flush().unwrap();
        for i in 10..14 {
            log.append(&mut batch(&BatchSpec::records(2).seed(i)))
                .unwrap();
        }
        assert_eq!(log.segment_count(), 1);
    }
    // Damage the payload of the third batch (flushed) and tear the last one (unflushed).
    let path = tokafka_broker::log::format::segment_path(dir.path(), 0, "log");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let batch_len = one.len() as u64;
    use std::os::unix::fs::FileExt;
    let at = 2 * batch_len + batch_len - 1;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x20], at).unwrap();
    file.set_len(14 * batch_len - 5).unwrap();
    drop(file);

    let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
    // The torn tail is cut; the flushed part was not scanned (a full scan would have cut the
    // log at the damaged third batch), so the damage is found by the read that reaches it.
    assert_eq!(log.log_end_offset(), 26);
    assert!(log.read(2, ReadLimits::bytes(1)).unwrap().region.is_some());
    assert!(matches!(
        log.read(4, ReadLimits::bytes(1)),
        Err(LogError::Corruption { .. })
    ));
    let read = log.read(0, ReadLimits::bytes(u64::MAX)).unwrap();
    assert_eq!(read.next_offset, 4, "a read stops before the damaged batch");
    assert!(log.read(6, ReadLimits::bytes(1)).unwrap().region.is_some());
}
