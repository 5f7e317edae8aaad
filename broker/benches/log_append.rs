//! Append throughput of the partition log next to a raw-write baseline, and the time of an
//! offset lookup in a log with over a million index entries.
//!
//! A benchmark, not a test: it prints figures and asserts nothing about speed. For each batch
//! size (1 KiB records in batches of 16 KiB to 1 MiB) it appends the same bytes through the
//! log and writes them with plain sequential `write(2)` into the same directory, with flushing
//! off and with an fsync per batch. Runs alternate between the log and the baseline, round
//! after round, so that both see the same disk and the same noise. Other work on the machine
//! only ever slows a run down, so the table shows the best run of each side, their ratio, and
//! the median of the per-round ratios; and the CPU time the writing thread spent per GiB
//! (from `/proc/thread-self/schedstat`), which waiting does not inflate.
//!
//! The data directory is `CARGO_TARGET_TMPDIR` (under `target/`, on the repository's disk).
//! Settings by environment: `LOG_BENCH_MB` (MiB per run with flushing off, default 512; runs
//! stay below `segment.bytes`, so they measure appends, not the fsync of a roll),
//! `LOG_BENCH_FLUSH_MB` (MiB per run with a flush per batch, default 32), `LOG_BENCH_ROUNDS`
//! (default 3), `LOG_BENCH_BATCH_KIB` (one batch size only), `LOG_BENCH_LOOKUP_ENTRIES`
//! (default 1_100_000; 0 skips the lookup figures).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokafka_broker::log::segment::{Segment, SegmentLimits};
use tokafka_broker::log::test_batches::{batch, BatchSpec};
use tokafka_broker::log::{FlushPolicy, LogConfig, PartitionLog, ReadLimits};

const RECORD_BYTES: usize = 1024;
/// Value bytes that make a record of about [`RECORD_BYTES`] with its framing.
const VALUE_BYTES: usize = RECORD_BYTES - 16;
const BATCH_BYTES: [usize; 4] = [16 << 10, 64 << 10, 256 << 10, 1 << 20];
/// Distinct batches cycled through per run, so the log does not see one buffer only.
const DISTINCT_BATCHES: usize = 8;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flush {
    Off,
    EveryBatch,
}

/// What one run wrote, how long it took, and the CPU time the thread spent on it.
#[derive(Clone, Copy)]
struct Run {
    bytes: u64,
    records: u64,
    elapsed: Duration,
    cpu: Duration,
}

/// Time this thread has spent on a CPU (user and kernel), from the scheduler's statistics.
fn thread_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

impl Run {
    fn cpu_ms_per_gib(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e3 / (self.bytes as f64 / f64::from(1u32 << 30))
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

fn bench_config(flush: Flush) -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 30,
        max_message_bytes: 2 << 20,
        retention_ms: None,
        flush: match flush {
            Flush::Off => FlushPolicy::default(),
            Flush::EveryBatch => FlushPolicy::every_append(),
        },
        ..LogConfig::default()
    }
}

fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clear bench dir");
    }
    std::fs::create_dir_all(&dir).expect("create bench dir");
    dir
}

/// Appends `count` batches (cycling through `batches`) to a new log.
fn run_log(root: &Path, batches: &mut [Vec<u8>], count: usize, flush: Flush) -> Run {
    let dir = fresh_dir(root, "log");
    let log = PartitionLog::open(&dir, bench_config(flush)).expect("open log");
    let mut bytes = 0u64;
    let mut records = 0u64;
    let cpu_started = thread_cpu_time();
    let started = Instant::now();
    for i in 0..count {
        let info = log.append(&mut batches[i % batches.len()]).expect("append");
        assert_eq!(info.flushed, flush == Flush::EveryBatch);
        bytes += info.size_bytes as u64;
        records += info.record_count;
    }
    let elapsed = started.elapsed();
    let cpu = thread_cpu_time().saturating_sub(cpu_started);
    drop(log);
    std::fs::remove_dir_all(&dir).expect("remove bench dir");
    Run {
        bytes,
        records,
        elapsed,
        cpu,
    }
}

/// Writes the same batches with plain sequential writes (and an fsync per batch).
fn run_raw(
    root: &Path,
    batches: &[Vec<u8>],
    records_per_batch: u64,
    count: usize,
    flush: Flush,
) -> Run {
    let dir = fresh_dir(root, "raw");
    let mut file = File::create(dir.join("raw.log")).expect("create raw file");
    let mut bytes = 0u64;
    let cpu_started = thread_cpu_time();
    let started = Instant::now();
    for i in 0..count {
        let one = &batches[i % batches.len()];
        file.write_all(one).expect("write");
        if flush == Flush::EveryBatch {
            file.sync_data().expect("fsync");
        }
        bytes += one.len() as u64;
    }
    let elapsed = started.elapsed();
    let cpu = thread_cpu_time().saturating_sub(cpu_started);
    drop(file);
    std::fs::remove_dir_all(&dir).expect("remove bench dir");
    Run {
        bytes,
        records: records_per_batch * count as u64,
        elapsed,
        cpu,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn human_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

fn append_table(root: &Path) {
    let no_flush_bytes = env_u64("LOG_BENCH_MB", 512) << 20;
    let flush_bytes = env_u64("LOG_BENCH_FLUSH_MB", 32) << 20;
    let rounds = env_u64("LOG_BENCH_ROUNDS", 3).max(1) as usize;
    println!(
        "append throughput: 1 KiB records, {} MiB per run with flushing off, {} MiB with a flush \
         per batch, best of {rounds} alternating rounds",
        no_flush_bytes >> 20,
        flush_bytes >> 20
    );
    println!(
        "{:>7} {:>5} | {:>8} {:>10} | {:>8} {:>10} | {:>6} {:>7} | {:>13}",
        "batch",
        "flush",
        "log MB/s",
        "log rec/s",
        "raw MB/s",
        "raw rec/s",
        "ratio",
        "median",
        "CPU ms/GiB"
    );
    let only = env_u64("LOG_BENCH_BATCH_KIB", 0) << 10;
    for batch_bytes in BATCH_BYTES
        .into_iter()
        .filter(|&b| only == 0 || b as u64 == only)
    {
        let records_per_batch = batch_bytes / RECORD_BYTES;
        let mut batches: Vec<Vec<u8>> = (0..DISTINCT_BATCHES)
            .map(|seed| {
                batch(
                    &BatchSpec::records(records_per_batch)
                        .value_bytes(VALUE_BYTES)
                        .seed(seed as u64),
                )
            })
            .collect();
        let size = batches[0].len() as u64;
        for flush in [Flush::Off, Flush::EveryBatch] {
            let total = match flush {
                Flush::Off => no_flush_bytes,
                Flush::EveryBatch => flush_bytes,
            };
            let count = (total / size).max(1) as usize;
            let mut log_runs = Vec::new();
            let mut raw_runs = Vec::new();
            for round in 0..rounds {
                // Alternate which goes first, so neither always follows the other's writeback.
                if round % 2 == 0 {
                    raw_runs.push(run_raw(
                        root,
                        &batches,
                        records_per_batch as u64,
                        count,
                        flush,
                    ));
                    log_runs.push(run_log(root, &mut batches, count, flush));
                } else {
                    log_runs.push(run_log(root, &mut batches, count, flush));
                    raw_runs.push(run_raw(
                        root,
                        &batches,
                        records_per_batch as u64,
                        count,
                        flush,
                    ));
                }
            }
            let ratios: Vec<f64> = log_runs
                .iter()
                .zip(&raw_runs)
                .map(|(l, r)| l.mb_per_s() / r.mb_per_s())
                .collect();
            let best = |runs: &[Run]| {
                *runs
                    .iter()
                    .max_by(|a, b| a.mb_per_s().total_cmp(&b.mb_per_s()))
                    .expect("a run")
            };
            let (log, raw) = (best(&log_runs), best(&raw_runs));
            println!(
                "{:>7} {:>5} | {:>8.0} {:>10.0} | {:>8.0} {:>10.0} | {:>5.0}% {:>6.0}% | {:>5.0} vs {:>4.0}",
                human_bytes(batch_bytes),
                match flush {
                    Flush::Off => "off",
                    Flush::EveryBatch => "batch",
                },
                log.mb_per_s(),
                log.records_per_s(),
                raw.mb_per_s(),
                raw.records_per_s(),
                log.mb_per_s() / raw.mb_per_s() * 100.0,
                median(ratios) * 100.0,
                median(log_runs.iter().map(Run::cpu_ms_per_gib).collect()),
                median(raw_runs.iter().map(Run::cpu_ms_per_gib).collect()),
            );
        }
    }
}

/// Builds one segment with an index entry per batch, then times lookups of random offsets.
fn lookup_table(root: &Path) {
    let entries_wanted = env_u64("LOG_BENCH_LOOKUP_ENTRIES", 1_100_000);
    if entries_wanted == 0 {
        return;
    }
    let dir = fresh_dir(root, "lookup");
    let config = LogConfig {
        segment_bytes: 1 << 30,
        index_interval_bytes: 0,
        segment_index_bytes: 16 << 20,
        retention_ms: None,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(&dir, config.clone()).expect("open");
    let one = batch(&BatchSpec::records(1).value_bytes(8));
    let per_append = 1000;
    let mut append: Vec<u8> = one.repeat(per_append);
    let started = Instant::now();
    let mut appended = 0u64;
    while appended < entries_wanted + 1 {
        log.append(&mut append).expect("append");
        appended += per_append as u64;
    }
    let build = started.elapsed();
    let end = log.log_end_offset();
    log.close().expect("close");
    drop(log);

    // The segment itself: index binary search plus the check of the batch header it points at.
    let limits = SegmentLimits {
        index_interval_bytes: config.index_interval_bytes,
        index_bytes_max: config.segment_index_bytes,
        batch_bytes_max: config.max_message_bytes,
    };
    let segment = Segment::open(&dir, 0, limits, false).expect("open segment");
    segment.load_tail(false).expect("load segment");
    let entries = segment.index_entries();
    let lookups = 1_000_000;
    let mut rng = StdRng::seed_from_u64(7);
    let offsets: Vec<i64> = (0..lookups).map(|_| rng.gen_range(0..end)).collect();
    let started = Instant::now();
    for &offset in &offsets {
        let at = segment.find_batch(offset).expect("find").expect("present");
        assert_eq!(at.header.base_offset, offset);
    }
    let find_ns = started.elapsed().as_nanos() as f64 / lookups as f64;
    drop(segment);

    // The whole read path: a log reopened after a clean close, one batch per read (the first
    // read of a batch also checks its CRC, as nothing is known valid after a reopen).
    let log = PartitionLog::open(&dir, config).expect("reopen");
    let started = Instant::now();
    for &offset in &offsets {
        let read = log.read(offset, ReadLimits::bytes(1)).expect("read");
        assert_eq!(read.next_offset, offset + 1);
    }
    let read_ns = started.elapsed().as_nanos() as f64 / lookups as f64;
    drop(log);
    std::fs::remove_dir_all(&dir).expect("remove bench dir");

    println!();
    println!(
        "offset lookup: one segment of {end} single-record batches with {entries} index entries \
         (built in {:.1} s)",
        build.as_secs_f64()
    );
    println!("  segment find_batch (index search + header check): {find_ns:>7.0} ns per lookup");
    println!("  PartitionLog::read of one batch:                  {read_ns:>7.0} ns per lookup");
    println!("  ({lookups} lookups of random offsets)");
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("log_append_bench");
    std::fs::create_dir_all(&root).expect("create bench root");
    println!("data directory: {}", root.display());
    append_table(&root);
    lookup_table(&root);
    std::fs::remove_dir_all(&root).expect("remove bench root");
}
