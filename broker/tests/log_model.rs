//! The partition log as a state machine, checked against a model.
//!
//! proptest generates random sequences of operations: appends of one or more batches of random
//! sizes and timestamps (some with a leader epoch), invalid appends that must change nothing,
//! flushes, clock advances, retention passes by time and size, high-watermark updates,
//! truncations, full resets, clean reopens, crashes (drop without close), power losses (the
//! active segment cut somewhere in its unflushed tail), reads at random offsets with random byte
//! and offset bounds, and timestamp lookups. Each runs against a real log in a temporary
//! directory and against a plain in-memory model (a vector of batches with their offsets,
//! timestamps and bytes); after every step the two must agree. Small segments and indexes make
//! rolls on size, age and full index happen within a few operations.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use tempfile::TempDir;
use tokafka_broker::log::format::{segment_path, LOG_SUFFIX};
use tokafka_broker::log::test_batches::{batch, split_batches, BatchSpec};
use tokafka_broker::log::{BatchError, FlushPolicy, LogConfig, LogError, PartitionLog, ReadLimits};

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

const START_MS: i64 = 1_000_000_000;
const MAX_MESSAGE_BYTES: usize = 4096;

// ----- operations -----

/// A position in the log's offset range, resolved against the state when the step runs.
#[derive(Debug, Clone, Copy)]
enum Pick {
    Start,
    End,
    BelowStart,
    AboveEnd,
    Within(u16),
}

#[derive(Debug, Clone)]
struct BatchGen {
    records: usize,
    value_bytes: usize,
    ts_delta_ms: i64,
}

#[derive(Debug, Clone, Copy)]
enum Invalid {
    Crc,
    Magic,
    LengthPastEnd,
    LengthTooSmall,
    TornHeader,
    Empty,
    TooLarge,
    NoBatches,
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        batches: Vec<BatchGen>,
        leader_epoch: Option<i32>,
    },
    AppendInvalid {
        valid_before: Vec<BatchGen>,
        kind: Invalid,
    },
    Flush,
    MaybeFlush,
    AdvanceClock(i64),
    Retention {
        /// The owner first moves the high watermark to the log end.
        high_watermark_to_end: bool,
        retention_ms: Option<i64>,
        retention_bytes: Option<u64>,
    },
    SetHighWatermark(Pick),
    TruncateTo(Pick),
    TruncateFully(Pick, i64),
    CloseReopen,
    CrashReopen {
        flush_first: bool,
    },
    PowerLoss(u16),
    Read {
        offset: Pick,
        max_bytes: u64,
        min_one_batch: bool,
        max_offset: Option<Pick>,
    },
    OffsetForTimestamp(i64),
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        2 => Just(Pick::Start),
        2 => Just(Pick::End),
        1 => Just(Pick::BelowStart),
        1 => Just(Pick::AboveEnd),
        8 => any::<u16>().prop_map(Pick::Within),
    ]
}

fn batch_gen() -> impl Strategy<Value = BatchGen> {
    (1usize..=8, 0usize..=200, -3000i64..=1000).prop_map(|(records, value_bytes, ts_delta_ms)| {
        BatchGen {
            records,
            value_bytes,
            ts_delta_ms,
        }
    })
}

fn batches(max: usize) -> impl Strategy<Value = Vec<BatchGen>> {
    prop_oneof![
        3 => proptest::collection::vec(batch_gen(), 1..=1),
        2 => proptest::collection::vec(batch_gen(), 1..=max),
    ]
}

fn invalid() -> impl Strategy<Value = Invalid> {
    prop_oneof![
        Just(Invalid::Crc),
        Just(Invalid::Magic),
        Just(Invalid::LengthPastEnd),
        Just(Invalid::LengthTooSmall),
        Just(Invalid::TornHeader),
        Just(Invalid::Empty),
        Just(Invalid::TooLarge),
        Just(Invalid::NoBatches),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (batches(12), proptest::option::weighted(0.2, 0i32..5))
            .prop_map(|(batches, leader_epoch)| Op::Append { batches, leader_epoch }),
        4 => (proptest::collection::vec(batch_gen(), 0..3), invalid())
            .prop_map(|(valid_before, kind)| Op::AppendInvalid { valid_before, kind }),
        3 => Just(Op::Flush),
        2 => Just(Op::MaybeFlush),
        6 => (0i64..6000).prop_map(Op::AdvanceClock),
        5 => (
            proptest::bool::weighted(0.7),
            proptest::option::of(0i64..3000),
            proptest::option::of(0u64..20_000),
        )
            .prop_map(|(high_watermark_to_end, retention_ms, retention_bytes)| Op::Retention {
                high_watermark_to_end,
                retention_ms,
                retention_bytes,
            }),
        5 => pick().prop_map(Op::SetHighWatermark),
        3 => pick().prop_map(Op::TruncateTo),
        1 => (pick(), 0i64..50).prop_map(|(p, extra)| Op::TruncateFully(p, extra)),
        2 => Just(Op::CloseReopen),
        2 => any::<bool>().prop_map(|flush_first| Op::CrashReopen { flush_first }),
        2 => any::<u16>().prop_map(Op::PowerLoss),
        15 => (pick(), 0u64..6000, any::<bool>(), proptest::option::of(pick())).prop_map(
            |(offset, max_bytes, min_one_batch, max_offset)| Op::Read {
                offset,
                max_bytes,
                min_one_batch,
                max_offset,
            }
        ),
        5 => (-4000i64..2000).prop_map(Op::OffsetForTimestamp),
    ]
}

fn config() -> impl Strategy<Value = LogConfig> {
    (
        prop_oneof![Just(600u64), Just(2048), Just(8192)],
        prop_oneof![Just(0u64), Just(150), Just(500)],
        prop_oneof![Just(16usize), Just(40), Just(96), Just(4096)],
        prop_oneof![Just(1500i64), Just(1_000_000_000)],
        prop_oneof![
            Just(FlushPolicy::default()),
            (1u64..6).prop_map(|n| FlushPolicy {
                every_records: Some(n),
                every_ms: None
            }),
            (100i64..3000).prop_map(|ms| FlushPolicy {
                every_records: None,
                every_ms: Some(ms)
            }),
        ],
    )
        .prop_map(
            |(segment_bytes, index_interval_bytes, segment_index_bytes, segment_ms, flush)| {
                LogConfig {
                    segment_bytes,
                    segment_ms,
                    segment_index_bytes,
                    index_interval_bytes,
                    retention_ms: None,
                    retention_bytes: None,
                    max_message_bytes: MAX_MESSAGE_BYTES,
                    flush,
                }
            },
        )
}

// ----- the model -----

#[derive(Debug, Clone)]
struct ModelBatch {
    base: i64,
    next: i64,
    base_ts: i64,
    max_ts: i64,
    bytes: Vec<u8>,
    /// Which append wrote the batch (segments holding several appends respect segment.bytes).
    append_id: u64,
}

impl ModelBatch {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

#[derive(Debug, Default)]
struct Model {
    start: i64,
    end: i64,
    high_watermark: i64,
    /// Contiguous batches from `start` to `end`.
    batches: Vec<ModelBatch>,
    /// Everything below this offset has been flushed.
    durable_end: i64,
    unflushed_records: u64,
    first_unflushed_ms: Option<i64>,
    appends: u64,
}

impl Model {
    fn resolve(&self, pick: Pick) -> i64 {
        match pick {
            Pick::Start => self.start,
            Pick::End => self.end,
            Pick::BelowStart => self.start - 1,
            Pick::AboveEnd => self.end + 1,
            Pick::Within(x) => self.start + (i64::from(x) * (self.end - self.start + 1)) / 65536,
        }
    }

    /// Index of the batch holding `offset`.
    fn batch_holding(&self, offset: i64) -> Option<usize> {
        let i = self.batches.partition_point(|b| b.next <= offset);
        (i < self.batches.len() && self.batches[i].base <= offset).then_some(i)
    }

    fn size_bytes(&self) -> u64 {
        self.batches.iter().map(ModelBatch::size).sum()
    }

    fn batches_from(&self, base: i64) -> impl Iterator<Item = &ModelBatch> {
        self.batches.iter().filter(move |b| b.base >= base)
    }

    fn forget_unflushed(&mut self) {
        self.unflushed_records = 0;
        self.first_unflushed_ms = None;
    }

    fn flushed(&mut self) {
        self.durable_end = self.end;
        self.forget_unflushed();
    }

    /// Drops every batch at or after `offset` (a batch boundary).
    fn cut(&mut self, offset: i64) {
        self.batches.retain(|b| b.base < offset);
        self.end = offset;
        self.high_watermark = self.high_watermark.min(offset);
        self.durable_end = self.durable_end.min(offset);
    }

    fn reset(&mut self, offset: i64) {
        self.batches.clear();
        self.start = offset;
        self.end = offset;
        self.high_watermark = offset;
        self.durable_end = offset;
        self.forget_unflushed();
    }
}

/// The log and the model side by side.
struct Harness {
    dir: TempDir,
    config: LogConfig,
    now_ms: Arc<AtomicI64>,
    log: Option<PartitionLog>,
    model: Model,
    seed: u64,
}

impl Harness {
    fn new(config: LogConfig) -> Self {
        let mut harness = Self {
            dir: scratch_dir(),
            config,
            now_ms: Arc::new(AtomicI64::new(START_MS)),
            log: None,
            model: Model::default(),
            seed: 0,
        };
        harness.open();
        harness
    }

    fn open(&mut self) {
        let now = Arc::clone(&self.now_ms);
        let log = PartitionLog::open_with_clock(
            self.dir.path(),
            self.config.clone(),
            Arc::new(move || now.load(Ordering::SeqCst)),
        )
        .expect("open");
        self.log = Some(log);
        // A reopened log knows no high watermark yet and has flushed everything it found.
        self.model.high_watermark = self.model.start;
        self.model.flushed();
    }

    fn log(&self) -> &PartitionLog {
        self.log.as_ref().expect("log is open")
    }

    fn now(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn encode(&mut self, gens: &[BatchGen]) -> Vec<u8> {
        let now = self.now();
        let mut bytes = Vec::new();
        for g in gens {
            self.seed += 1;
            bytes.extend_from_slice(&batch(
                &BatchSpec::records(g.records)
                    .value_bytes(g.value_bytes)
                    .timestamp(now + g.ts_delta_ms)
                    .seed(self.seed),
            ));
        }
        bytes
    }

    fn active_file_len(&self) -> u64 {
        let base = *self.log().segment_base_offsets().last().expect("active");
        std::fs::metadata(segment_path(self.dir(), base, LOG_SUFFIX))
            .expect("stat active")
            .len()
    }

    fn flush_due(&self, now: i64) -> bool {
        let m = &self.model;
        let policy = self.config.flush;
        m.unflushed_records > 0
            && (policy
                .every_records
                .is_some_and(|n| m.unflushed_records >= n)
                || matches!((policy.every_ms, m.first_unflushed_ms), (Some(ms), Some(first)) if now - first >= ms))
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Append {
                batches,
                leader_epoch,
            } => self.append(batches, *leader_epoch),
            Op::AppendInvalid { valid_before, kind } => self.append_invalid(valid_before, *kind),
            Op::Flush => {
                self.log().flush().expect("flush");
                self.model.flushed();
            }
            Op::MaybeFlush => {
                let due = self.flush_due(self.now());
                assert_eq!(self.log().maybe_flush().expect("maybe_flush"), due);
                if due {
                    self.model.flushed();
                }
            }
            Op::AdvanceClock(ms) => {
                self.now_ms.fetch_add(*ms, Ordering::SeqCst);
            }
            Op::Retention {
                high_watermark_to_end,
                retention_ms,
                retention_bytes,
            } => {
                if *high_watermark_to_end {
                    self.run(&Op::SetHighWatermark(Pick::End));
                }
                self.retention(*retention_ms, *retention_bytes);
            }
            Op::SetHighWatermark(p) => {
                let target = self.model.resolve(*p);
                let expected = target.clamp(self.model.start, self.model.end);
                assert_eq!(self.log().set_high_watermark(target), expected);
                self.model.high_watermark = expected;
            }
            Op::TruncateTo(p) => self.truncate_to(self.model.resolve(*p)),
            Op::TruncateFully(p, extra) => {
                let offset = (self.model.resolve(*p) + extra).max(0);
                self.log()
                    .truncate_fully_and_start_at(offset)
                    .expect("reset");
                self.model.reset(offset);
            }
            Op::CloseReopen => {
                let log = self.log.take().expect("open");
                log.close().expect("close");
                assert!(matches!(
                    log.append(&mut batch(&BatchSpec::records(1))),
                    Err(LogError::Closed)
                ));
                drop(log);
                self.open();
            }
            Op::CrashReopen { flush_first } => {
                if *flush_first {
                    self.log().flush().expect("flush");
                }
                // Dropped without close: no clean-shutdown marker. The process died, the page
                // cache did not, so every appended byte is still there.
                self.log = None;
                self.open();
            }
            Op::PowerLoss(keep) => self.power_loss(*keep),
            Op::Read {
                offset,
                max_bytes,
                min_one_batch,
                max_offset,
            } => {
                let limits = ReadLimits {
                    max_bytes: *max_bytes,
                    min_one_batch: *min_one_batch,
                    max_offset: max_offset.map(|p| self.model.resolve(p)),
                };
                self.check_read(self.model.resolve(*offset), limits);
            }
            Op::OffsetForTimestamp(delta) => self.check_timestamp_lookup(self.now() + delta),
        }
    }

    fn append(&mut self, gens: &[BatchGen], leader_epoch: Option<i32>) {
        let mut bytes = self.encode(gens);
        let bases_before = self.log().segment_base_offsets();
        let active_base = *bases_before.last().expect("active");
        let now = self.now();
        let info = match leader_epoch {
            Some(epoch) => self.log().append_with_leader_epoch(&mut bytes, epoch),
            None => self.log().append(&mut bytes),
        }
        .expect("valid append");

        let stored = split_batches(&bytes).expect("the log keeps batches valid");
        let first_base = self.model.end;
        assert_eq!(info.base_offset, first_base);
        assert_eq!(info.batch_count, gens.len());
        assert_eq!(info.size_bytes, bytes.len());
        let mut next = first_base;
        let mut max_ts = i64::MIN;
        for ((header, _), g) in stored.iter().zip(gens) {
            assert_eq!(
                header.base_offset, next,
                "offsets are assigned contiguously"
            );
            assert_eq!(header.record_count as usize, g.records);
            assert_eq!(header.partition_leader_epoch, leader_epoch.unwrap_or(-1));
            next = header.next_offset();
            max_ts = max_ts.max(header.max_timestamp);
        }
        assert_eq!(info.last_offset, next - 1);
        assert_eq!(info.max_timestamp, max_ts);
        let records: u64 = gens.iter().map(|g| g.records as u64).sum();
        assert_eq!(info.record_count, records);

        // Did the active segment roll, and was it allowed to?
        let bases_after = self.log().segment_base_offsets();
        let active_batches: Vec<&ModelBatch> = self.model.batches_from(active_base).collect();
        let active_size: u64 = active_batches.iter().map(|b| b.size()).sum();
        let too_big = active_size + bytes.len() as u64 > self.config.segment_bytes;
        let too_old = active_batches
            .first()
            .is_some_and(|first| max_ts.saturating_sub(first.max_ts) > self.config.segment_ms);
        let offset_slots = self.config.segment_index_bytes / 8;
        let time_slots = self.config.segment_index_bytes / 12;
        // Each batch takes at most one entry per index, and appends leave a time slot free.
        let index_may_be_full =
            active_batches.len() + gens.len() + 1 > offset_slots.min(time_slots);
        let rolled = bases_after != bases_before;
        if rolled {
            let mut expected = bases_before.clone();
            expected.push(first_base);
            assert_eq!(
                bases_after, expected,
                "a roll adds one segment at the log end"
            );
            assert!(!active_batches.is_empty(), "an empty segment never rolls");
            assert!(
                too_big || too_old || index_may_be_full,
                "rolled without a reason: active {active_size} bytes, {} batches",
                active_batches.len()
            );
            self.model.durable_end = first_base;
            self.model.forget_unflushed();
        } else if !active_batches.is_empty() {
            assert!(!too_big, "segment.bytes exceeded without a roll");
            assert!(!too_old, "segment.ms exceeded without a roll");
        }

        self.model.appends += 1;
        for (header, range) in stored {
            self.model.batches.push(ModelBatch {
                base: header.base_offset,
                next: header.next_offset(),
                base_ts: header.base_timestamp,
                max_ts: header.max_timestamp,
                bytes: bytes[range].to_vec(),
                append_id: self.model.appends,
            });
        }
        self.model.end = next;
        self.model.unflushed_records += records;
        self.model.first_unflushed_ms.get_or_insert(now);
        let due = self.flush_due(now);
        assert_eq!(info.flushed, due, "flush policy {:?}", self.config.flush);
        if due {
            self.model.flushed();
        }
    }

    fn append_invalid(&mut self, valid_before: &[BatchGen], kind: Invalid) {
        let mut bytes = if matches!(kind, Invalid::NoBatches) {
            Vec::new()
        } else {
            self.encode(valid_before)
        };
        let prefix = bytes.len();
        let k = valid_before.len();
        let mut bad = batch(&BatchSpec::records(3).timestamp(self.now()));
        match kind {
            Invalid::Crc => {
                let last = bad.len() - 1;
                bad[last] ^= 0x10;
            }
            Invalid::Magic => bad[16] = 1,
            Invalid::LengthPastEnd => {
                let too_long = (bad.len() as i32) - 12 + 100;
                bad[8..12].copy_from_slice(&too_long.to_be_bytes());
            }
            Invalid::LengthTooSmall => bad[8..12].copy_from_slice(&5i32.to_be_bytes()),
            Invalid::TornHeader => bad.truncate(7),
            Invalid::Empty => bad = batch(&BatchSpec::records(0)),
            Invalid::TooLarge => bad = batch(&BatchSpec::records(1).value_bytes(MAX_MESSAGE_BYTES)),
            Invalid::NoBatches => bad.clear(),
        }
        bytes.extend_from_slice(&bad);
        let before = (
            self.log().log_end_offset(),
            self.log().size_bytes(),
            self.log().segment_base_offsets(),
            self.active_file_len(),
        );
        let err = self.log().append(&mut bytes).expect_err("invalid append");
        let matches_kind = match kind {
            Invalid::Crc => {
                matches!(err, LogError::InvalidBatch { batch_index, source: BatchError::BadCrc { .. } } if batch_index == k)
            }
            Invalid::Magic => {
                matches!(err, LogError::InvalidBatch { batch_index, source: BatchError::BadMagic { .. } } if batch_index == k)
            }
            Invalid::LengthPastEnd | Invalid::LengthTooSmall => {
                matches!(err, LogError::InvalidBatch { batch_index, source: BatchError::BadLength { .. } } if batch_index == k)
            }
            Invalid::TornHeader => {
                matches!(err, LogError::InvalidBatch { batch_index, source: BatchError::Truncated { .. } } if batch_index == k)
            }
            Invalid::Empty => {
                matches!(err, LogError::EmptyBatch { batch_index } if batch_index == k)
            }
            Invalid::TooLarge => matches!(err, LogError::BatchTooLarge { .. }),
            Invalid::NoBatches => matches!(err, LogError::NoBatches),
        };
        assert!(
            matches_kind,
            "{kind:?} after {k} valid batches gave {err:?}"
        );
        let after = (
            self.log().log_end_offset(),
            self.log().size_bytes(),
            self.log().segment_base_offsets(),
            self.active_file_len(),
        );
        assert_eq!(before, after, "a rejected append changes nothing");
        assert!(prefix <= bytes.len());
    }

    fn retention(&mut self, retention_ms: Option<i64>, retention_bytes: Option<u64>) {
        self.config.retention_ms = retention_ms;
        self.config.retention_bytes = retention_bytes;
        self.log()
            .update_config(self.config.clone())
            .expect("config");
        let bases = self.log().segment_base_offsets();
        let now = self.now();
        let m = &self.model;
        // Segment stats from the model: (next offset, size, max timestamp).
        let stats: Vec<(i64, u64, i64)> = bases
            .iter()
            .enumerate()
            .map(|(i, &base)| {
                let next = bases.get(i + 1).copied().unwrap_or(m.end);
                let in_segment = m.batches.iter().filter(|b| b.base >= base && b.base < next);
                let (size, max_ts) =
                    in_segment.fold((0, i64::MIN), |(s, t), b| (s + b.size(), t.max(b.max_ts)));
                (next, size, max_ts)
            })
            .collect();
        // Kafka's rules: delete the longest prefix of closed segments that all expired, or the
        // longest prefix whose removal leaves at least retention.bytes; never the active
        // segment, never a segment with records at or above the high watermark.
        let expired = |&(_, _, max_ts): &(i64, u64, i64)| {
            retention_ms.is_some_and(|ms| max_ts != i64::MIN && now - max_ts > ms)
        };
        let below_hw = |&(next, _, _): &(i64, u64, i64)| next <= m.high_watermark;
        let closed = &stats[..stats.len() - 1];
        let by_time = closed
            .iter()
            .take_while(|s| expired(s) && below_hw(s))
            .count();
        let mut by_size = 0;
        if let Some(limit) = retention_bytes {
            let mut excess = m.size_bytes().saturating_sub(limit);
            for s in closed {
                if s.1 > excess || !below_hw(s) {
                    break;
                }
                excess -= s.1;
                by_size += 1;
            }
        }
        let active = stats.last().expect("active");
        let roll_active =
            by_time == closed.len() && active.1 > 0 && expired(active) && below_hw(active);
        let deleted = by_time.max(by_size);

        assert_eq!(self.log().apply_retention().expect("retention"), deleted);
        let mut expected_bases = bases[deleted..].to_vec();
        if roll_active {
            expected_bases.push(m.end);
        }
        assert_eq!(self.log().segment_base_offsets(), expected_bases);
        let new_start = expected_bases[0];
        let m = &mut self.model;
        m.batches.retain(|b| b.base >= new_start);
        m.start = new_start;
        m.high_watermark = m.high_watermark.max(new_start);
        if roll_active {
            m.durable_end = m.end;
            m.forget_unflushed();
        }
    }

    fn truncate_to(&mut self, offset: i64) {
        let new_end = self.log().truncate_to(offset).expect("truncate");
        let m = &mut self.model;
        if offset >= m.end {
            assert_eq!(new_end, m.end);
            return;
        }
        if offset <= m.start {
            let start = m.start;
            m.reset(start);
        } else {
            let i = m.batch_holding(offset).expect("offset inside the log");
            let cut = m.batches[i].base;
            m.cut(cut);
            m.flushed();
        }
        assert_eq!(new_end, self.model.end);
    }

    /// The machine lost power: the active segment keeps everything flushed and an arbitrary
    /// part of its unflushed tail.
    fn power_loss(&mut self, keep: u16) {
        let active_base = *self
            .log()
            .segment_base_offsets()
            .last()
            .expect("active segment");
        self.log = None;
        let m = &self.model;
        let in_active: Vec<&ModelBatch> = m.batches_from(active_base).collect();
        let durable: u64 = in_active
            .iter()
            .filter(|b| b.next <= m.durable_end)
            .map(|b| b.size())
            .sum();
        let len: u64 = in_active.iter().map(|b| b.size()).sum();
        let cut = durable + (u64::from(keep) * (len - durable)) / 65536;
        let path = segment_path(self.dir(), active_base, LOG_SUFFIX);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open active");
        file.set_len(cut).expect("cut");
        drop(file);
        // Whole batches below the cut survive; the first torn one and all after it go.
        let mut position = 0;
        let mut new_end = m.end;
        for b in &in_active {
            if position + b.size() > cut {
                new_end = b.base;
                break;
            }
            position += b.size();
        }
        self.model.cut(new_end);
        self.open();
    }

    fn check_read(&self, offset: i64, limits: ReadLimits) {
        let m = &self.model;
        let result = self.log().read(offset, limits);
        if offset < m.start || offset > m.end {
            assert!(
                matches!(result, Err(LogError::OffsetOutOfRange { .. })),
                "read at {offset} outside [{}, {}]: {result:?}",
                m.start,
                m.end
            );
            return;
        }
        let result = result.expect("read");
        assert_eq!(
            (
                result.log_start_offset,
                result.log_end_offset,
                result.high_watermark
            ),
            (m.start, m.end, m.high_watermark)
        );
        // Expected: whole batches from the one holding `offset`, within one segment, below
        // max_offset, within max_bytes (the first even if larger when min_one_batch).
        let max_offset = limits.max_offset.unwrap_or(m.end).min(m.end);
        let mut expected: Vec<&ModelBatch> = Vec::new();
        if offset < max_offset {
            let first = m.batch_holding(offset).expect("batch");
            let bases = self.log().segment_base_offsets();
            let segment_end = bases
                .iter()
                .copied()
                .find(|&b| b > m.batches[first].base)
                .unwrap_or(i64::MAX);
            let mut total = 0u64;
            for b in &m.batches[first..] {
                if b.base >= max_offset || b.base >= segment_end {
                    break;
                }
                if total + b.size() > limits.max_bytes
                    && !(expected.is_empty() && limits.min_one_batch)
                {
                    break;
                }
                total += b.size();
                expected.push(b);
            }
        }
        let got = result
            .region
            .as_ref()
            .map(|r| r.to_vec().expect("region readable"))
            .unwrap_or_default();
        let want: Vec<u8> = expected
            .iter()
            .flat_map(|b| b.bytes.iter().copied())
            .collect();
        assert_eq!(
            got.len(),
            want.len(),
            "read at {offset} with {limits:?}: got {} bytes, want batches {:?}",
            got.len(),
            expected.iter().map(|b| b.base).collect::<Vec<_>>()
        );
        assert!(got == want, "read at {offset}: bytes differ");
        assert_eq!(result.region.is_some(), !expected.is_empty());
        let next = expected.last().map_or(offset, |b| b.next);
        assert_eq!(result.next_offset, next);
    }

    fn check_timestamp_lookup(&self, timestamp: i64) {
        let expected = self
            .model
            .batches
            .iter()
            .find(|b| b.max_ts >= timestamp)
            .map(|b| {
                // Test batches give record i the timestamp base_ts + i.
                let i = (timestamp - b.base_ts).max(0);
                (b.base + i, b.base_ts + i)
            });
        let got = self
            .log()
            .offset_for_timestamp(timestamp)
            .expect("timestamp lookup")
            .map(|hit| (hit.offset, hit.timestamp));
        assert_eq!(got, expected, "offset for timestamp {timestamp}");
    }

    /// Checks the offsets, segment layout and full contents against the model.
    fn check_state(&self, full_scan: bool) {
        let log = self.log();
        let m = &self.model;
        assert_eq!(log.log_start_offset(), m.start, "log start offset");
        assert_eq!(log.log_end_offset(), m.end, "log end offset");
        assert_eq!(log.high_watermark(), m.high_watermark, "high watermark");
        assert_eq!(log.size_bytes(), m.size_bytes(), "size in bytes");
        let bases = log.segment_base_offsets();
        assert_eq!(
            bases.first(),
            Some(&m.start),
            "first segment starts the log"
        );
        assert!(
            bases.windows(2).all(|w| w[0] < w[1]),
            "bases increase: {bases:?}"
        );
        for (i, base) in bases.iter().enumerate() {
            let is_active = i + 1 == bases.len();
            let at_boundary =
                m.batches.iter().any(|b| b.base == *base) || (is_active && *base == m.end);
            assert!(
                at_boundary,
                "segment {base} starts at a batch boundary: {bases:?}"
            );
        }
        // A segment that holds several appends respects segment.bytes.
        for (i, &base) in bases.iter().enumerate() {
            let next = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            let in_segment: Vec<&ModelBatch> = m
                .batches
                .iter()
                .filter(|b| b.base >= base && b.base < next)
                .collect();
            let several = in_segment
                .windows(2)
                .any(|w| w[0].append_id != w[1].append_id);
            let size: u64 = in_segment.iter().map(|b| b.size()).sum();
            assert!(
                !several || size <= self.config.segment_bytes,
                "segment {base} holds {size} bytes"
            );
        }
        if full_scan {
            let mut offset = m.start;
            let mut reads = 0;
            while offset < m.end {
                let read = log.read(offset, ReadLimits::bytes(u64::MAX)).expect("scan");
                let bytes = read
                    .region
                    .expect("data below the log end")
                    .to_vec()
                    .expect("region");
                let batches = split_batches(&bytes).expect("valid batches");
                for (header, range) in batches {
                    let i = m.batch_holding(header.base_offset).expect("known offset");
                    assert_eq!(m.batches[i].base, header.base_offset);
                    assert!(
                        bytes[range] == m.batches[i].bytes[..],
                        "batch {} differs",
                        header.base_offset
                    );
                    offset = header.next_offset();
                }
                assert_eq!(read.next_offset, offset);
                assert!(
                    bases.contains(&offset) || offset == m.end,
                    "a read stops at a segment end"
                );
                reads += 1;
            }
            assert!(reads <= bases.len());
        }
    }
}

fn run_ops(config: LogConfig, ops: &[Op]) {
    let mut harness = Harness::new(config);
    harness.check_state(true);
    for op in ops {
        harness.run(op);
        let structural = !matches!(
            op,
            Op::Read { .. } | Op::OffsetForTimestamp(_) | Op::AdvanceClock(_)
        );
        harness.check_state(structural);
    }
    // However it got here, the log closes, reopens with the same contents and takes appends.
    harness.run(&Op::CloseReopen);
    harness.check_state(true);
    harness.run(&Op::Append {
        batches: vec![BatchGen {
            records: 2,
            value_bytes: 10,
            ts_delta_ms: 0,
        }],
        leader_epoch: None,
    });
    harness.check_state(true);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_log_agrees_with_the_model(config in config(), ops in proptest::collection::vec(op(), 1..80)) {
        run_ops(config, &ops);
    }
}

fn small_index_config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        segment_ms: 1500,
        segment_index_bytes: 40,
        index_interval_bytes: 0,
        retention_ms: None,
        retention_bytes: None,
        max_message_bytes: MAX_MESSAGE_BYTES,
        flush: FlushPolicy::default(),
    }
}

fn one_record(ts_delta_ms: i64) -> BatchGen {
    BatchGen {
        records: 1,
        value_bytes: 0,
        ts_delta_ms,
    }
}

/// Found by the property test: a multi-batch append into an empty segment needs more offset
/// index entries than the index holds (it used to panic on the full index).
#[test]
fn an_append_larger_than_the_index_fits_an_empty_segment() {
    let config = LogConfig {
        segment_index_bytes: 16,
        ..small_index_config()
    };
    run_ops(
        config,
        &[Op::Append {
            batches: vec![one_record(0); 6],
            leader_epoch: None,
        }],
    );
}

/// Found by the property test: after a crash, a preallocated index slot that was never
/// written read as a first time entry (0, 0) and hid the real max timestamp on reopen.
#[test]
fn blank_index_slots_are_not_entries_after_a_crash() {
    run_ops(
        small_index_config(),
        &[
            Op::Append {
                batches: vec![one_record(0)],
                leader_epoch: None,
            },
            Op::CrashReopen { flush_first: false },
            Op::CrashReopen { flush_first: false },
            Op::Append {
                batches: vec![one_record(-1326)],
                leader_epoch: None,
            },
            Op::CloseReopen,
            Op::OffsetForTimestamp(0),
        ],
    );
}

/// Found by the property test: a reopened segment forgot that its full time index had
/// skipped entries, so truncating it (which drops the seal entry) lost the max timestamp.
#[test]
fn truncating_a_reopened_segment_with_a_full_time_index_keeps_its_max_timestamp() {
    let config = LogConfig {
        segment_index_bytes: 16,
        ..small_index_config()
    };
    let records = |records: usize, ts_delta_ms: i64| BatchGen {
        records,
        value_bytes: 0,
        ts_delta_ms,
    };
    run_ops(
        config,
        &[
            Op::Append {
                batches: vec![
                    records(4, 279),
                    records(8, 0),
                    records(7, 0),
                    records(7, 277),
                ],
                leader_epoch: None,
            },
            Op::Append {
                batches: vec![records(6, 0)],
                leader_epoch: None,
            },
            Op::CloseReopen,
            Op::TruncateTo(Pick::Within(23832)),
            Op::OffsetForTimestamp(8),
        ],
    );
}

/// A time entry made at a batch must cover the batches up to it and no further, or a
/// truncation that drops the entry loses the max timestamp of the batches it keeps.
#[test]
fn truncation_keeps_the_max_timestamp_of_what_remains() {
    run_ops(
        small_index_config(),
        &[
            Op::Append {
                batches: [0, 0, 0, -741, -741, 1].map(one_record).to_vec(),
                leader_epoch: None,
            },
            Op::Append {
                batches: vec![one_record(0)],
                leader_epoch: None,
            },
            Op::TruncateTo(Pick::Within(32768)),
            Op::OffsetForTimestamp(0),
        ],
    );
}
