//! Crash and damage tests of the partition log.
//!
//! Each trial builds a log of several segments (sealed ones, a flushed part of the active one
//! and an unflushed tail), stops it (crash or clean close), damages a copy of its directory with
//! seeded randomness (cut `.log`, `.index` and `.timeindex` files at random bytes, flip random
//! bytes in them and in the recovery-point file, delete an index, remove the clean-shutdown
//! marker) and reopens it. The contract checked:
//! - opening never fails or panics;
//! - every batch that lies wholly before the damage in its segment (all of them when only
//!   indexes or the checkpoint were damaged) reads back with identical bytes;
//! - every batch any read returns is valid (CRC32C), continues the offsets of the one before,
//!   and is the batch the log wrote at that offset;
//! - the log takes appends again and reads them back, also after a further reopen.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use tokafka_broker::log::format::{
    segment_path, CLEAN_SHUTDOWN_FILE, INDEX_SUFFIX, LOG_SUFFIX, RECOVERY_POINT_FILE,
    TIME_INDEX_SUFFIX,
};
use tokafka_broker::log::test_batches::{batch, split_batches, BatchSpec};
use tokafka_broker::log::{LogConfig, LogError, PartitionLog, ReadLimits};

/// A scratch directory, on tmpfs when there is one: these tests check what the log does with
/// its files, not how fast the disk syncs them, and a process crash keeps the page cache.
fn scratch_dir() -> TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

/// Bytes of a batch the CRC does not cover and a flip can change undetected: the partition
/// leader epoch. (A flipped base offset must be caught by offset continuity instead.)
const LEADER_EPOCH_BYTES: std::ops::Range<usize> = 12..16;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 200,
        segment_index_bytes: 160,
        ..LogConfig::default()
    }
}

/// A batch as the log wrote it, and where.
#[derive(Debug, Clone)]
struct Stored {
    base: i64,
    next: i64,
    bytes: Vec<u8>,
    segment: i64,
    position: u64,
}

impl Stored {
    fn end_position(&self) -> u64 {
        self.position + self.bytes.len() as u64
    }
}

/// How the process that wrote the log stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Crash,
    Clean,
}

/// A log on disk and what was written to it.
struct Built {
    dir: TempDir,
    batches: Vec<Stored>,
}

/// Appends random batches (with flushes now and then, and an unflushed tail), then stops.
fn build(rng: &mut StdRng, stop: Stop) -> Built {
    let dir = scratch_dir();
    let log = PartitionLog::open(dir.path(), config()).expect("open");
    let appends = rng.gen_range(20..60);
    let mut seed = 0;
    for i in 0..appends {
        let mut bytes = Vec::new();
        for _ in 0..rng.gen_range(1..=3) {
            seed += 1;
            bytes.extend(batch(
                &BatchSpec::records(rng.gen_range(1..=6))
                    .value_bytes(rng.gen_range(0..300))
                    .timestamp(1_000_000 + i64::from(i) * 10 + rng.gen_range(-30..30))
                    .seed(seed),
            ));
        }
        log.append(&mut bytes).expect("append");
        if rng.gen_bool(0.15) {
            log.flush().expect("flush");
        }
    }
    let batches = stored_batches(&log);
    match stop {
        Stop::Clean => log.close().expect("close"),
        Stop::Crash => drop(log),
    }
    Built { dir, batches }
}

/// Reads every batch back with its segment and position.
fn stored_batches(log: &PartitionLog) -> Vec<Stored> {
    let bases = log.segment_base_offsets();
    let mut out = Vec::new();
    for (i, &segment) in bases.iter().enumerate() {
        let end = bases.get(i + 1).copied().unwrap_or(log.log_end_offset());
        let mut offset = segment;
        let mut position = 0;
        while offset < end {
            let read = log
                .read(offset, ReadLimits::bytes(u64::MAX))
                .expect("read back");
            let bytes = read.region.expect("data").to_vec().expect("region");
            for (header, range) in split_batches(&bytes).expect("valid") {
                out.push(Stored {
                    base: header.base_offset,
                    next: header.next_offset(),
                    bytes: bytes[range.clone()].to_vec(),
                    segment,
                    position,
                });
                position += range.len() as u64;
            }
            offset = read.next_offset;
        }
    }
    out
}

/// One way to damage the files.
#[derive(Debug, Clone)]
enum Damage {
    Cut { path: PathBuf, len: u64 },
    Flip { path: PathBuf, at: u64, mask: u8 },
    Delete { path: PathBuf },
}

impl Damage {
    fn apply(&self) {
        match self {
            Damage::Cut { path, len } => OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(*len))
                .expect("cut"),
            Damage::Flip { path, at, mask } => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .expect("open");
                let mut byte = [0u8];
                file.read_exact_at(&mut byte, *at).expect("read byte");
                byte[0] ^= mask;
                file.write_all_at(&byte, *at).expect("write byte");
            }
            Damage::Delete { path } => std::fs::remove_file(path).expect("delete"),
        }
    }

    /// The damaged segment and the first damaged byte of its `.log`, if it hit a `.log`.
    fn log_damage(&self) -> Option<(i64, u64)> {
        let (path, at) = match self {
            Damage::Cut { path, len } => (path, *len),
            Damage::Flip { path, at, .. } => (path, *at),
            Damage::Delete { path } => (path, 0),
        };
        let name = path.file_name()?.to_str()?;
        let (stem, suffix) = name.split_once('.')?;
        (suffix == LOG_SUFFIX).then(|| (stem.parse().expect("segment name"), at))
    }
}

fn marker_path(dir: &Path) -> PathBuf {
    dir.join(CLEAN_SHUTDOWN_FILE)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Picks 1 to 3 random damages to the files of the log in `dir`.
fn pick_damages(rng: &mut StdRng, dir: &Path, built: &Built) -> Vec<Damage> {
    let segments: Vec<i64> = {
        let mut s: Vec<i64> = built.batches.iter().map(|b| b.segment).collect();
        s.dedup();
        s
    };
    let mut damages = Vec::new();
    for _ in 0..rng.gen_range(1..=3) {
        let segment = segments[rng.gen_range(0..segments.len())];
        let log = segment_path(dir, segment, LOG_SUFFIX);
        let index = if rng.gen_bool(0.5) {
            segment_path(dir, segment, INDEX_SUFFIX)
        } else {
            segment_path(dir, segment, TIME_INDEX_SUFFIX)
        };
        // Earlier damages may have cut or deleted files: every choice checks what is there.
        let victim = {
            let in_segment: Vec<&Stored> = built
                .batches
                .iter()
                .filter(|b| b.segment == segment)
                .collect();
            in_segment[rng.gen_range(0..in_segment.len())]
        };
        let damage = match rng.gen_range(0..9) {
            0 | 1 => Damage::Cut {
                len: rng.gen_range(0..=file_len(&log)),
                path: log,
            },
            2 | 3 if file_len(&log) > 0 => Damage::Flip {
                at: rng.gen_range(0..file_len(&log)),
                mask: rng.gen_range(1..=255),
                path: log,
            },
            // The base offset, which the CRC does not cover.
            4 if victim.position + 8 <= file_len(&log) => Damage::Flip {
                at: victim.position + rng.gen_range(0..8),
                mask: rng.gen_range(1..=255),
                path: log,
            },
            5 if index.exists() => Damage::Cut {
                len: rng.gen_range(0..=file_len(&index)),
                path: index,
            },
            6 if file_len(&index) > 0 => Damage::Flip {
                at: rng.gen_range(0..file_len(&index)),
                mask: rng.gen_range(1..=255),
                path: index,
            },
            7 if index.exists() => Damage::Delete { path: index },
            _ => {
                let checkpoint = dir.join(RECOVERY_POINT_FILE);
                Damage::Flip {
                    at: rng.gen_range(0..file_len(&checkpoint)),
                    mask: rng.gen_range(1..=255),
                    path: checkpoint,
                }
            }
        };
        damage.apply();
        damages.push(damage);
    }
    damages
}

/// Whether a batch lies wholly before every damage to its segment's `.log`.
fn before_damage(b: &Stored, damages: &[Damage]) -> bool {
    damages
        .iter()
        .filter_map(Damage::log_damage)
        .filter(|(segment, _)| *segment == b.segment)
        .all(|(_, at)| b.end_position() <= at)
}

/// Checks one read's batches against what was written; returns the offset after them.
fn check_region(
    bytes: &[u8],
    offset: i64,
    written: &[Stored],
    damages: &[Damage],
    context: &str,
) -> i64 {
    let batches = split_batches(bytes)
        .unwrap_or_else(|(at, e)| panic!("{context}: invalid batch at byte {at}: {e}"));
    let mut expected_next = None;
    for (header, range) in &batches {
        if let Some(next) = expected_next {
            assert_eq!(header.base_offset, next, "{context}: offsets continue");
        } else {
            assert!(
                header.last_offset() >= offset,
                "{context}: first batch holds or follows {offset}"
            );
        }
        expected_next = Some(header.next_offset());
        let original = written
            .iter()
            .find(|b| b.base == header.base_offset)
            .unwrap_or_else(|| {
                panic!(
                    "{context}: batch at {} was never written",
                    header.base_offset
                )
            });
        let got = &bytes[range.clone()];
        assert_eq!(
            got.len(),
            original.bytes.len(),
            "{context}: batch {} size",
            original.base
        );
        if before_damage(original, damages) {
            assert!(
                got == original.bytes,
                "{context}: batch {} differs",
                original.base
            );
        } else {
            let masked = |b: &[u8]| {
                let mut v = b.to_vec();
                v[LEADER_EPOCH_BYTES].fill(0);
                v
            };
            assert!(
                masked(got) == masked(&original.bytes),
                "{context}: damaged batch {} returned",
                original.base
            );
        }
    }
    expected_next.unwrap_or(offset)
}

/// Damages a copy of `built`, reopens it and checks the contract.
fn trial(built: &Built, stop: Stop, damage_seed: u64) {
    let mut rng = StdRng::seed_from_u64(damage_seed);
    let copy = scratch_dir();
    for entry in std::fs::read_dir(built.dir.path()).expect("list") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copy");
    }
    let dir = copy.path();
    let mut damages = pick_damages(&mut rng, dir, built);
    if stop == Stop::Clean && rng.gen_bool(0.5) {
        let remove = Damage::Delete {
            path: marker_path(dir),
        };
        remove.apply();
        damages.push(remove);
    }
    let context = format!("seed {damage_seed} {stop:?} {damages:?}");

    let log = PartitionLog::open(dir, config()).unwrap_or_else(|e| panic!("{context}: open: {e}"));
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    let safe: Vec<&Stored> = built
        .batches
        .iter()
        .filter(|b| before_damage(b, &damages))
        .collect();
    for b in &safe {
        let read = log
            .read(b.base, ReadLimits::bytes(1))
            .unwrap_or_else(|e| panic!("{context}: read undamaged batch {}: {e}", b.base));
        let bytes = read
            .region
            .expect("undamaged batch")
            .to_vec()
            .expect("region");
        assert!(
            bytes == b.bytes,
            "{context}: undamaged batch {} differs",
            b.base
        );
    }
    // Random reads anywhere, with random bounds: whatever comes back is valid and original.
    for _ in 0..20 {
        let offset = rng.gen_range(start..=end);
        let limits = ReadLimits {
            max_bytes: rng.gen_range(0..6000),
            min_one_batch: rng.gen_bool(0.5),
            max_offset: rng.gen_bool(0.3).then(|| rng.gen_range(start..=end)),
        };
        match log.read(offset, limits) {
            Ok(read) => {
                if let Some(region) = read.region {
                    let bytes = region.to_vec().expect("region");
                    let next = check_region(&bytes, offset, &built.batches, &damages, &context);
                    assert_eq!(read.next_offset, next, "{context}");
                }
            }
            Err(LogError::Corruption { .. }) => {}
            Err(e) => panic!("{context}: read at {offset} in [{start}, {end}]: {e}"),
        }
    }
    match log.offset_for_timestamp(rng.gen_range(999_000..1_001_000)) {
        Ok(_) | Err(LogError::Corruption { .. }) => {}
        Err(e) => panic!("{context}: timestamp lookup: {e}"),
    }

    // The log takes appends again, and keeps them across another reopen.
    let mut written: Vec<Stored> = built
        .batches
        .iter()
        .filter(|b| b.next <= end)
        .cloned()
        .collect();
    let mut fresh = Vec::new();
    for i in 0..3 {
        let mut bytes = batch(&BatchSpec::records(2).value_bytes(100).seed(10_000 + i));
        let info = log
            .append(&mut bytes)
            .unwrap_or_else(|e| panic!("{context}: append: {e}"));
        assert_eq!(info.base_offset, end + 2 * i as i64, "{context}");
        fresh.push(Stored {
            base: info.base_offset,
            next: info.last_offset + 1,
            bytes,
            segment: i64::MIN,
            position: 0,
        });
    }
    written.extend(fresh.iter().cloned());
    let check_fresh = |log: &PartitionLog| {
        for b in &fresh {
            let read = log
                .read(b.base, ReadLimits::bytes(1))
                .expect("read appended");
            let bytes = read
                .region
                .expect("appended batch")
                .to_vec()
                .expect("region");
            assert!(
                bytes == b.bytes,
                "{context}: appended batch {} differs",
                b.base
            );
        }
        for b in &safe {
            let read = log
                .read(b.base, ReadLimits::bytes(1))
                .expect("read undamaged");
            let bytes = read.region.expect("undamaged").to_vec().expect("region");
            assert!(
                bytes == b.bytes,
                "{context}: undamaged batch {} differs",
                b.base
            );
        }
    };
    check_fresh(&log);
    if rng.gen_bool(0.5) {
        log.close().expect("close");
    }
    drop(log);
    let log =
        PartitionLog::open(dir, config()).unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
    assert_eq!(log.log_end_offset(), end + 6, "{context}");
    check_fresh(&log);
    let mut more = batch(&BatchSpec::records(1));
    assert_eq!(
        log.append(&mut more)
            .expect("append after reopen")
            .base_offset,
        end + 6
    );
}

fn seeds(default: u64) -> u64 {
    std::env::var("CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn damage_after_a_crash_loses_only_what_follows_it() {
    for build_seed in 0..seeds(12) {
        let built = build(&mut StdRng::seed_from_u64(build_seed), Stop::Crash);
        for damage_seed in 0..40 {
            trial(&built, Stop::Crash, build_seed * 1000 + damage_seed);
        }
    }
}

#[test]
fn damage_after_a_clean_close_loses_only_what_follows_it() {
    for build_seed in 0..seeds(12) {
        let built = build(&mut StdRng::seed_from_u64(100 + build_seed), Stop::Clean);
        for damage_seed in 0..40 {
            trial(
                &built,
                Stop::Clean,
                500_000 + build_seed * 1000 + damage_seed,
            );
        }
    }
}

/// Sets the base offset field of the batch at `position` of segment `segment`.
fn overwrite_base_offset(dir: &Path, segment: i64, position: u64, base_offset: i64) {
    let file = OpenOptions::new()
        .write(true)
        .open(segment_path(dir, segment, LOG_SUFFIX))
        .expect("open segment");
    file.write_all_at(&base_offset.to_be_bytes(), position)
        .expect("write base offset");
}

/// Reads every offset of the log with several byte bounds and checks every batch returned.
fn read_everything(log: &PartitionLog, written: &[Stored], damages: &[Damage], context: &str) {
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    for offset in start..end {
        for max_bytes in [1, 3000, u64::MAX] {
            match log.read(offset, ReadLimits::bytes(max_bytes)) {
                Ok(read) => {
                    if let Some(region) = read.region {
                        let bytes = region.to_vec().expect("region");
                        let next = check_region(&bytes, offset, written, damages, context);
                        assert_eq!(read.next_offset, next, "{context}");
                    }
                }
                Err(LogError::Corruption { .. }) => {}
                Err(e) => panic!("{context}: read at {offset}: {e}"),
            }
        }
    }
}

/// The CRC does not cover the base offset, so only offset continuity can tell that it was
/// damaged: whatever it was changed to, no read returns that batch (or any other) at an offset
/// the log did not write it at, and every batch before it stays readable.
#[test]
fn a_damaged_base_offset_is_never_served_at_a_wrong_offset() {
    for stop in [Stop::Crash, Stop::Clean] {
        let built = build(&mut StdRng::seed_from_u64(7), stop);
        let segments: Vec<i64> = {
            let mut s: Vec<i64> = built.batches.iter().map(|b| b.segment).collect();
            s.dedup();
            s
        };
        assert!(segments.len() >= 3, "the fixture spans several segments");
        let active = *segments.last().expect("active");
        // The first batch of a sealed segment, one in its middle, and the active segment's
        // first and last batches.
        let in_segment = |s: i64| built.batches.iter().filter(move |b| b.segment == s);
        let victims: Vec<&Stored> = [
            in_segment(segments[1]).next(),
            in_segment(segments[1]).nth(2),
            in_segment(active).next(),
            in_segment(active).next_back(),
        ]
        .into_iter()
        .flatten()
        .collect();
        for victim in victims {
            let neighbour = built
                .batches
                .iter()
                .find(|b| b.base == victim.next)
                .map_or(victim.next, |b| b.next);
            for wrong in [
                victim.base + 1,
                victim.base - 1,
                victim.next,
                neighbour,
                0,
                1 << 40,
            ] {
                let copy = scratch_dir();
                for entry in std::fs::read_dir(built.dir.path()).expect("list") {
                    let entry = entry.expect("entry");
                    std::fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copy");
                }
                overwrite_base_offset(copy.path(), victim.segment, victim.position, wrong);
                let damages = [Damage::Flip {
                    path: segment_path(copy.path(), victim.segment, LOG_SUFFIX),
                    at: victim.position,
                    mask: 0xff,
                }];
                let context = format!("{stop:?}: batch {} given base offset {wrong}", victim.base);
                let log = PartitionLog::open(copy.path(), config()).expect("open");
                for b in built.batches.iter().filter(|b| before_damage(b, &damages)) {
                    let read = log.read(b.base, ReadLimits::bytes(1)).expect("undamaged");
                    let bytes = read.region.expect("undamaged").to_vec().expect("region");
                    assert!(bytes == b.bytes, "{context}: batch {} differs", b.base);
                }
                read_everything(&log, &built.batches, &damages, &context);
                let mut more = batch(&BatchSpec::records(1));
                let info = log.append(&mut more).expect("append");
                assert_eq!(info.base_offset, log.log_end_offset() - 1, "{context}");
            }
        }
    }
}
