//! Behaviour of one partition log through its public API: appends, reads, rolls, reopen.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokafka_broker::log::test_batches::{batch, BatchSpec};
use tokafka_broker::log::{LogConfig, LogError, PartitionLog, ReadLimits};

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
