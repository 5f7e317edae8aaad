//! One writer and many readers on one partition log.
//!
//! The writer appends batches, moves the high watermark, flushes, runs retention (deleting
//! whole segments under the readers) and truncates above the high watermark, as a follower
//! does after a leader change. Reader threads tail the log at the same time: some up to the
//! high watermark, as consumers do, some up to the log end, as followers do. Every batch a
//! reader sees must be valid, continue the offsets before it, and be a batch the writer wrote
//! at that offset; below the high watermark it must be the last batch written there, since
//! truncation never goes below it. Nothing is measured by time; a deadline only turns a
//! hang into a failure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use tokafka_broker::log::format::set_base_offset;
use tokafka_broker::log::test_batches::{batch, split_batches, BatchSpec};
use tokafka_broker::log::{LogConfig, LogError, PartitionLog, ReadLimits};

const APPENDS: usize = 10_000;
const DEADLINE: Duration = Duration::from_secs(120);

/// A scratch directory, on tmpfs when there is one (the test is about concurrency, not about
/// how fast the disk syncs).
fn scratch_dir() -> TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

/// Every batch ever written, by base offset (truncation can put a second one at an offset).
#[derive(Default)]
struct History {
    by_offset: RwLock<HashMap<i64, Vec<Vec<u8>>>>,
}

impl History {
    fn record(&self, bytes: &[u8], base_offset: i64) {
        self.by_offset
            .write()
            .expect("history")
            .entry(base_offset)
            .or_default()
            .push(bytes.to_vec());
    }

    /// Checks that a batch read at `base_offset` is one written there; returns whether it is
    /// the latest one written there.
    fn check(&self, base_offset: i64, bytes: &[u8]) -> bool {
        let history = self.by_offset.read().expect("history");
        let versions = history
            .get(&base_offset)
            .unwrap_or_else(|| panic!("no batch was written at {base_offset}"));
        let which = versions
            .iter()
            .position(|v| v == bytes)
            .unwrap_or_else(|| panic!("the batch read at {base_offset} is not one written there"));
        which + 1 == versions.len()
    }
}

/// State the writer shares with the readers.
struct Shared {
    /// The high watermark only ever grows here; truncation stays above it.
    log: PartitionLog,
    history: History,
    done: AtomicBool,
    final_end: AtomicI64,
    /// Most segments the writer saw at once (rolls happened).
    max_segments: AtomicI64,
}

fn writer(shared: &Shared, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let log = &shared.log;
    // Log end offsets after recent appends: the high watermark is one of them (a batch
    // boundary, as the minimum of the replicas' log end offsets is).
    let mut recent_ends = std::collections::VecDeque::new();
    for i in 0..APPENDS {
        // Encode the append with the offsets the log will assign (the single writer knows the
        // log end), so that readers can check what they see against the history.
        let mut bytes = Vec::new();
        let mut next = log.log_end_offset();
        let mut batches = Vec::new();
        for _ in 0..rng.gen_range(1..=3) {
            let records = rng.gen_range(1..=5);
            let mut one = batch(
                &BatchSpec::records(records)
                    .value_bytes(rng.gen_range(0..400))
                    .timestamp(1_000_000 + i as i64)
                    .seed(rng.gen()),
            );
            set_base_offset(&mut one, next);
            batches.push((next, one.clone()));
            bytes.extend_from_slice(&one);
            next += records as i64;
        }
        for (base, one) in &batches {
            shared.history.record(one, *base);
        }
        let info = log.append(&mut bytes).expect("append");
        assert_eq!(info.last_offset + 1, next, "offsets as predicted");
        shared
            .max_segments
            .fetch_max(log.segment_count() as i64, Ordering::SeqCst);

        let end = log.log_end_offset();
        recent_ends.push_back(end);
        if recent_ends.len() > 8 {
            recent_ends.pop_front();
        }
        let candidate = recent_ends[rng.gen_range(0..recent_ends.len())];
        if candidate > log.high_watermark() {
            log.set_high_watermark(candidate);
        }
        match rng.gen_range(0..100) {
            0..=4 => log.flush().expect("flush"),
            5..=9 => {
                log.apply_retention().expect("retention");
            }
            10..=12 => {
                // A follower truncating its divergent tail: never below the high watermark.
                let hw = log.high_watermark();
                let to = rng.gen_range(hw..=end);
                let new_end = log.truncate_to(to).expect("truncate");
                assert!(new_end >= hw, "truncation stays above the high watermark");
                recent_ends.retain(|&e| e <= new_end);
            }
            _ => {}
        }
    }
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    shared.final_end.store(end, Ordering::SeqCst);
    shared.done.store(true, Ordering::SeqCst);
}

/// Tails the log until the writer is done and everything is read; returns batches seen.
fn reader(shared: &Shared, seed: u64, up_to_high_watermark: bool) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let log = &shared.log;
    let started = Instant::now();
    let mut offset = log.log_start_offset();
    let mut seen = 0;
    loop {
        assert!(
            started.elapsed() < DEADLINE,
            "reader made no progress before the deadline"
        );
        let done = shared.done.load(Ordering::SeqCst);
        if done && offset >= shared.final_end.load(Ordering::SeqCst) {
            return seen;
        }
        let limits = ReadLimits {
            max_bytes: rng.gen_range(1..20_000),
            min_one_batch: true,
            max_offset: up_to_high_watermark.then(|| log.high_watermark()),
        };
        let read = match log.read(offset, limits) {
            Ok(read) => read,
            Err(LogError::OffsetOutOfRange {
                log_start_offset,
                log_end_offset,
                ..
            }) => {
                if offset < log_start_offset {
                    // Retention deleted what this reader had not read yet.
                    offset = log_start_offset;
                } else {
                    assert!(
                        !up_to_high_watermark,
                        "offsets below the high watermark stay"
                    );
                    // The tail this reader was reading got truncated.
                    offset = log_end_offset;
                }
                continue;
            }
            Err(e) => panic!("read at {offset}: {e}"),
        };
        if rng.gen_range(0..50) == 0 {
            log.offset_for_timestamp(1_000_000 + rng.gen_range(0..APPENDS as i64))
                .expect("timestamp lookup");
        }
        let Some(region) = read.region else {
            std::thread::yield_now();
            continue;
        };
        let bytes = match region.to_vec() {
            Ok(bytes) => bytes,
            // A truncation cut the region short; its bytes were never rewritten.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !up_to_high_watermark => {
                continue;
            }
            Err(e) => panic!("region at {offset}: {e}"),
        };
        let batches = split_batches(&bytes).unwrap_or_else(|(at, e)| {
            panic!("invalid batch at byte {at} of a read at {offset}: {e}")
        });
        let first = &batches[0].0;
        assert!(
            first.base_offset <= offset && offset <= first.last_offset(),
            "a read at {offset} starts with the batch holding it, not {}",
            first.base_offset
        );
        let mut next = first.base_offset;
        for (header, range) in &batches {
            assert_eq!(header.base_offset, next, "batches continue each other");
            let latest = shared
                .history
                .check(header.base_offset, &bytes[range.clone()]);
            if up_to_high_watermark {
                // Truncation never goes below the high watermark, so what lies below it is
                // final: an offset rewritten earlier (while above it) shows its last batch.
                assert!(
                    latest,
                    "an old batch at {} below the high watermark",
                    header.base_offset
                );
            }
            next = header.next_offset();
            seen += 1;
        }
        assert_eq!(read.next_offset, next);
        offset = next;
    }
}

#[test]
fn readers_see_only_valid_contiguous_batches_while_the_writer_works() {
    let dir = scratch_dir();
    let config = LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 512,
        segment_index_bytes: 1024,
        retention_bytes: Some(128 * 1024),
        ..LogConfig::default()
    };
    let shared = Shared {
        log: PartitionLog::open(dir.path(), config).expect("open"),
        history: History::default(),
        done: AtomicBool::new(false),
        final_end: AtomicI64::new(i64::MAX),
        max_segments: AtomicI64::new(0),
    };
    let seen: Vec<usize> = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..4)
            .map(|i| {
                let shared = &shared;
                scope.spawn(move || reader(shared, 100 + i, i % 2 == 0))
            })
            .collect();
        scope.spawn(|| writer(&shared, 1));
        readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .collect()
    });
    assert!(
        seen.iter().all(|&n| n > 0),
        "every reader read something: {seen:?}"
    );
    assert!(
        shared.max_segments.load(Ordering::SeqCst) > 2,
        "segments rolled"
    );
}
