//! The leader-epoch cache of a partition (Kafka's `leader-epoch-checkpoint`): for each leader
//! epoch that wrote records to this log, the offset of its first record.
//!
//! A follower that rejoins after a failover asks the leader where its own latest epoch ends in
//! the leader's log ([`EpochCache::end_offset_for`], Kafka's OffsetForLeaderEpoch) and cuts its
//! divergent tail there. The computations here are pure; [`PartitionLog`](super::PartitionLog)
//! keeps the cache in step with appends and truncations and persists it with
//! [`write_checkpoint`].
//!
//! The checkpoint is framed as every checkpoint is ([`checkpoint`](super::checkpoint)), with a
//! body of the entry count, then per entry the epoch and its start offset; it is replaced
//! atomically. A damaged or foreign file reads as absent and the log rebuilds the cache from
//! its batch headers.

use std::path::Path;

use tracing::warn;

use super::checkpoint::{
    self, Body, Checkpoint, Corruption, EPOCH_COUNT_SIZE, EPOCH_ENTRIES_MAX, EPOCH_ENTRY_SIZE,
};
use super::LogError;

/// File name of the checkpoint in a partition directory.
pub use super::checkpoint::LEADER_EPOCH_CHECKPOINT_FILE;
/// Kafka's `UNDEFINED_EPOCH`: a batch or request that carries no leader epoch.
pub const UNDEFINED_EPOCH: i32 = -1;

/// Leader `epoch` wrote its first record of this log at `start_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The epochs of a log, oldest first.
///
/// Invariant: epochs are non-negative and strictly increasing, start offsets are
/// non-negative and strictly increasing (an epoch that wrote nothing before the next one
/// started is replaced by it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// A cache of `entries`, or `None` when they break the invariant.
    pub fn from_entries(entries: Vec<EpochEntry>) -> Option<Self> {
        let valid = entries.iter().all(|e| e.epoch >= 0 && e.start_offset >= 0)
            && entries
                .windows(2)
                .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset < w[1].start_offset);
        valid.then_some(Self { entries })
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.latest().map(|e| e.epoch)
    }

    /// The start offset of `epoch`, if it wrote to this log.
    pub fn start_offset_of(&self, epoch: i32) -> Option<i64> {
        self.entries
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| e.start_offset)
    }

    /// Whether an appended batch stamped `epoch` at `base_offset` would change the cache:
    /// only an epoch above the latest one does (Kafka's append rule).
    pub fn is_new_epoch(&self, epoch: i32) -> bool {
        epoch >= 0 && self.latest_epoch().is_none_or(|latest| epoch > latest)
    }

    /// Records a batch appended at `base_offset` with partition leader epoch `epoch`; returns
    /// whether the cache changed.
    pub fn observe_batch(&mut self, epoch: i32, base_offset: i64) -> bool {
        self.is_new_epoch(epoch) && self.assign(epoch, base_offset)
    }

    /// Records that `epoch` starts at `start_offset` (a new leader does so at its log end
    /// before it appends). Entries that would break the order (an epoch at least as high, or
    /// starting at or after `start_offset`) are removed first, as Kafka does. Returns whether
    /// the cache changed.
    ///
    /// # Panics
    /// When `epoch` or `start_offset` is negative.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        assert!(epoch >= 0, "leader epoch {epoch} is negative");
        assert!(start_offset >= 0, "start offset {start_offset} is negative");
        let new = EpochEntry {
            epoch,
            start_offset,
        };
        if self
            .latest()
            .is_some_and(|l| l.epoch == epoch && l.start_offset <= start_offset)
        {
            return false;
        }
        let kept = self
            .entries
            .iter()
            .rposition(|e| e.epoch < epoch && e.start_offset < start_offset)
            .map_or(0, |i| i + 1);
        let removed = self.entries.split_off(kept);
        if removed.len() > 1
            || removed
                .first()
                .is_some_and(|r| r.start_offset != start_offset)
        {
            warn!(
                epoch,
                start_offset,
                ?removed,
                "new leader epoch replaces conflicting entries"
            );
        }
        self.entries.push(new);
        true
    }

    /// Drops the entries starting at or after `end_offset` (the log was truncated there).
    /// Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let kept = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        let changed = kept < self.entries.len();
        self.entries.truncate(kept);
        changed
    }

    /// Forgets the history below `start_offset` (the log start moved there): entries wholly
    /// below it go, and the last entry starting at or below it now starts at `start_offset`.
    /// Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let covering = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let Some(last_below) = covering.checked_sub(1) else {
            return false;
        };
        let before = self.entries.len();
        let moved = self.entries[last_below].start_offset != start_offset;
        self.entries.drain(..last_below);
        self.entries[0].start_offset = start_offset;
        moved || self.entries.len() != before
    }

    /// Forgets everything; returns whether the cache changed.
    pub fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// Kafka's OffsetForLeaderEpoch answer for a log ending at `log_end_offset`: the largest
    /// epoch at most `requested` and the offset where it ends, which is the start of the next
    /// epoch, or the log end when `requested` is the latest epoch.
    ///
    /// Edge cases, as Kafka's `LeaderEpochFileCache.endOffsetFor`:
    /// - `requested` is [`UNDEFINED_EPOCH`], the cache is empty, or `requested` is above the
    ///   latest epoch: `None` (the wire answer is UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET);
    /// - `requested` is below the earliest epoch known (its records are gone): `requested`
    ///   with the start of the earliest epoch, so a follower truncates to where the log's
    ///   known history begins.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        if requested == UNDEFINED_EPOCH {
            return None;
        }
        let latest = self.latest()?;
        if requested == latest.epoch {
            return Some((requested, log_end_offset));
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let next = self.entries.get(higher)?;
        let floor_epoch = higher
            .checked_sub(1)
            .map_or(requested, |i| self.entries[i].epoch);
        Some((floor_epoch, next.start_offset))
    }

    /// The checkpoint file's bytes of this cache, in the current version.
    pub fn encode(&self) -> Vec<u8> {
        checkpoint::encode(Checkpoint::LeaderEpochs, &self.body())
    }

    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(EPOCH_COUNT_SIZE + self.entries.len() * EPOCH_ENTRY_SIZE);
        let count = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for entry in &self.entries {
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.extend_from_slice(&entry.start_offset.to_be_bytes());
        }
        out
    }

    /// Decodes a checkpoint file's bytes (current or legacy version).
    ///
    /// # Errors
    /// The [`Corruption`] found: a frame check, an entry count that does not match the body,
    /// or entries out of order.
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        checkpoint::decode(Checkpoint::LeaderEpochs, bytes, Self::read_body)
    }

    fn read_body(body: &mut Body<'_>) -> Result<Self, Corruption> {
        let count = body.u32()? as usize;
        let present = body.remaining() / EPOCH_ENTRY_SIZE;
        if count > EPOCH_ENTRIES_MAX || count != present {
            return Err(body.invalid(format!(
                "{count} entries declared, {} bytes of entries",
                body.remaining()
            )));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(EpochEntry {
                epoch: body.i32()?,
                start_offset: body.i64()?,
            });
        }
        Self::from_entries(entries).ok_or_else(|| body.invalid("entries out of order".into()))
    }
}

/// Reads the checkpoint in `dir`; `None` when there is none or it is damaged.
///
/// Contract on `None`: the caller rebuilds the cache from the batch headers of the log (and
/// checkpoints it again), so a damaged file costs a scan, never an epoch. A damaged file is
/// logged, never an error.
///
/// # Errors
/// I/O errors other than "not found".
pub fn read_checkpoint(dir: &Path) -> Result<Option<EpochCache>, LogError> {
    checkpoint::read(
        dir,
        Checkpoint::LeaderEpochs,
        "the leader epochs are rebuilt from the batch headers",
        EpochCache::read_body,
    )
}

/// Replaces the checkpoint in `dir` with `cache`, atomically and durably.
///
/// # Errors
/// I/O errors of the write, fsync or rename.
pub fn write_checkpoint(dir: &Path, cache: &EpochCache) -> Result<(), LogError> {
    checkpoint::write(dir, Checkpoint::LeaderEpochs, &cache.body())
}

/// Where a follower cuts its log after asking the leader about its latest epoch (Kafka's
/// `getOffsetTruncationState`), given the leader's answer, the follower's own answer for an
/// epoch (`follower_end_offset_for`, as [`EpochCache::end_offset_for`] on its log), its log
/// end and high watermark. Returns the offset to truncate to and whether it is final (when it
/// is not, the follower asks again about its latest epoch once cut).
///
/// - leader answered UNDEFINED (`None`): the leader cannot vouch for any of the follower's
///   history; the follower falls back to its high watermark;
/// - the follower has no epoch at or below the leader's: the shorter of the two logs;
/// - the follower's largest epoch at or below the leader's is another one: cut where the
///   follower's version of it ends, and ask again;
/// - same epoch on both sides: the smaller of the two end offsets.
pub fn follower_truncation(
    leader_answer: Option<(i32, i64)>,
    follower_end_offset_for: impl FnOnce(i32) -> Option<(i32, i64)>,
    follower_log_end_offset: i64,
    high_watermark: i64,
) -> (i64, bool) {
    let Some((leader_epoch, leader_end_offset)) = leader_answer else {
        return (high_watermark.min(follower_log_end_offset), true);
    };
    let shorter = leader_end_offset.min(follower_log_end_offset);
    match follower_end_offset_for(leader_epoch) {
        None => (shorter, true),
        Some((epoch, end_offset)) if epoch != leader_epoch => {
            (end_offset.min(follower_log_end_offset), false)
        }
        Some((_, end_offset)) => (shorter.min(end_offset), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::checkpoint::{assert_damage_detected, encode_legacy};

    /// (epoch, start offset) entries, oldest first.
    type Pairs = &'static [(i32, i64)];
    /// An OffsetForLeaderEpoch answer.
    type Answer = Option<(i32, i64)>;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        EpochCache::from_entries(
            entries
                .iter()
                .map(|&(epoch, start_offset)| EpochEntry {
                    epoch,
                    start_offset,
                })
                .collect(),
        )
        .expect("ordered entries")
    }

    fn pairs(cache: &EpochCache) -> Vec<(i32, i64)> {
        cache
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let log_end = 100;
        let epochs = cache(&[(2, 10), (4, 30), (7, 60)]);
        // (requested, expected answer)
        let table: &[(i32, Option<(i32, i64)>)] = &[
            (UNDEFINED_EPOCH, None),
            // below the earliest epoch: the requested epoch, ending where history begins
            (0, Some((0, 10))),
            (1, Some((1, 10))),
            // an epoch that wrote records ends where the next one starts
            (2, Some((2, 30))),
            (4, Some((4, 60))),
            // an epoch that never wrote here: the largest below it, ending at the next start
            (3, Some((2, 30))),
            (5, Some((4, 60))),
            (6, Some((4, 60))),
            // the latest epoch ends at the log end
            (7, Some((7, log_end))),
            // above the latest epoch: unknown
            (8, None),
            (i32::MAX, None),
        ];
        for &(requested, expected) in table {
            assert_eq!(
                epochs.end_offset_for(requested, log_end),
                expected,
                "requested epoch {requested}"
            );
        }
    }

    #[test]
    fn end_offset_for_an_empty_cache_is_unknown() {
        let empty = EpochCache::default();
        for requested in [UNDEFINED_EPOCH, 0, 5] {
            assert_eq!(empty.end_offset_for(requested, 42), None);
        }
    }

    #[test]
    fn only_a_higher_epoch_opens_an_entry_on_append() {
        let mut epochs = EpochCache::default();
        let table: &[(i32, i64, bool)] = &[
            (UNDEFINED_EPOCH, 0, false), // batches without an epoch are ignored
            (0, 0, true),
            (0, 5, false),
            (2, 10, true),
            (1, 12, false), // a lower epoch never rewrites history on append
            (2, 14, false),
            (3, 20, true),
        ];
        for &(epoch, base_offset, changed) in table {
            assert_eq!(
                epochs.observe_batch(epoch, base_offset),
                changed,
                "batch of epoch {epoch} at {base_offset}"
            );
        }
        assert_eq!(pairs(&epochs), vec![(0, 0), (2, 10), (3, 20)]);
    }

    #[test]
    fn assigning_an_epoch_removes_entries_that_would_break_the_order() {
        let mut epochs = cache(&[(0, 0), (2, 10), (3, 20)]);
        // A new leader's epoch starting where the last one started (it wrote nothing) replaces it.
        assert!(epochs.assign(5, 20));
        assert_eq!(pairs(&epochs), vec![(0, 0), (2, 10), (5, 20)]);
        // Re-assigning the latest epoch later is a no-op.
        assert!(!epochs.assign(5, 25));
        // An older epoch starting earlier drops everything at or after it.
        assert!(epochs.assign(1, 5));
        assert_eq!(pairs(&epochs), vec![(0, 0), (1, 5)]);
    }

    #[test]
    fn truncation_from_the_end_drops_epochs_starting_at_or_after_the_cut() {
        let table: &[(i64, Pairs, bool)] = &[
            (100, &[(0, 0), (2, 10), (3, 20)], false),
            (21, &[(0, 0), (2, 10), (3, 20)], false),
            (20, &[(0, 0), (2, 10)], true),
            (11, &[(0, 0), (2, 10)], true),
            (10, &[(0, 0)], true),
            (0, &[], true),
        ];
        for &(end_offset, expected, changed) in table {
            let mut epochs = cache(&[(0, 0), (2, 10), (3, 20)]);
            assert_eq!(
                epochs.truncate_from_end(end_offset),
                changed,
                "cut at {end_offset}"
            );
            assert_eq!(pairs(&epochs), expected, "cut at {end_offset}");
        }
    }

    #[test]
    fn truncation_from_the_start_keeps_the_epoch_covering_the_new_start() {
        let table: &[(i64, Pairs, bool)] = &[
            (0, &[(0, 0), (2, 10), (3, 20)], false),
            (5, &[(0, 5), (2, 10), (3, 20)], true),
            (10, &[(2, 10), (3, 20)], true),
            (15, &[(2, 15), (3, 20)], true),
            (20, &[(3, 20)], true),
            (99, &[(3, 99)], true),
        ];
        for &(start_offset, expected, changed) in table {
            let mut epochs = cache(&[(0, 0), (2, 10), (3, 20)]);
            assert_eq!(
                epochs.truncate_from_start(start_offset),
                changed,
                "start at {start_offset}"
            );
            assert_eq!(pairs(&epochs), expected, "start at {start_offset}");
        }
        // History starting above the new start is untouched.
        let mut epochs = cache(&[(4, 50)]);
        assert!(!epochs.truncate_from_start(10));
        assert_eq!(pairs(&epochs), vec![(4, 50)]);
    }

    #[test]
    fn checkpoint_round_trips_and_every_cut_or_flip_is_detected() {
        let epochs = cache(&[(0, 0), (2, 10), (3, 1 << 40)]);
        let bytes = epochs.encode();
        assert_eq!(EpochCache::decode(&bytes), Ok(epochs.clone()));
        assert_damage_detected(&bytes, EpochCache::decode);
        let empty = EpochCache::default().encode();
        assert_eq!(EpochCache::decode(&empty), Ok(EpochCache::default()));
        assert_damage_detected(&empty, EpochCache::decode);
    }

    #[test]
    fn a_checkpoint_written_by_0_1_0_is_read() {
        // orders-0/leader-epoch-checkpoint of broker/tests/fixtures/standalone-0.1.0.tar.gz.
        let legacy = [
            0x54, 0x4b, 0x4c, 0x45, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x93, 0x47, 0x07, 0x47,
        ];
        assert_eq!(EpochCache::decode(&legacy), Ok(cache(&[(0, 0)])));
        assert_damage_detected(&legacy, EpochCache::decode);
        let longer = cache(&[(1, 0), (4, 7)]);
        let legacy = encode_legacy(Checkpoint::LeaderEpochs, &longer.body());
        assert_eq!(EpochCache::decode(&legacy), Ok(longer.clone()));
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE), &legacy).expect("legacy");
        assert_eq!(
            read_checkpoint(dir.path()).expect("read"),
            Some(longer.clone())
        );
        write_checkpoint(dir.path(), &longer).expect("rewrite");
        let rewritten =
            std::fs::read(dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE)).expect("bytes");
        assert_eq!(rewritten, longer.encode(), "written in the current version");
    }

    #[test]
    fn a_declared_count_that_disagrees_with_the_entries_is_refused() {
        let mut body = cache(&[(1, 0), (4, 7)]).body();
        body[..EPOCH_COUNT_SIZE].copy_from_slice(&3u32.to_be_bytes());
        let bytes = checkpoint::encode(Checkpoint::LeaderEpochs, &body);
        let error = EpochCache::decode(&bytes).expect_err("count 3, two entries");
        assert_eq!(error.position, checkpoint::HEADER_SIZE + EPOCH_COUNT_SIZE);
        let out_of_order = checkpoint::encode(
            Checkpoint::LeaderEpochs,
            &EpochCache {
                entries: vec![
                    EpochEntry {
                        epoch: 4,
                        start_offset: 0,
                    },
                    EpochEntry {
                        epoch: 1,
                        start_offset: 7,
                    },
                ],
            }
            .body(),
        );
        assert!(EpochCache::decode(&out_of_order).is_err());
    }

    #[test]
    fn checkpoint_file_persists_and_a_damaged_one_reads_as_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_checkpoint(dir.path()).expect("read"), None);
        let epochs = cache(&[(1, 0), (4, 7)]);
        write_checkpoint(dir.path(), &epochs).expect("write");
        assert_eq!(
            read_checkpoint(dir.path()).expect("read"),
            Some(epochs.clone())
        );
        std::fs::write(dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE), b"junk").expect("damage");
        assert_eq!(read_checkpoint(dir.path()).expect("read"), None);
        let bytes = epochs.encode();
        for len in 1..bytes.len() {
            let path = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
            std::fs::write(path, &bytes[..len]).expect("cut");
            assert_eq!(
                read_checkpoint(dir.path()).expect("read"),
                None,
                "cut at {len}"
            );
        }
    }

    #[test]
    fn caches_out_of_order_are_refused() {
        let entry = |epoch, start_offset| EpochEntry {
            epoch,
            start_offset,
        };
        assert!(EpochCache::from_entries(vec![entry(1, 0), entry(1, 5)]).is_none());
        assert!(EpochCache::from_entries(vec![entry(1, 5), entry(2, 5)]).is_none());
        assert!(EpochCache::from_entries(vec![entry(2, 0), entry(1, 5)]).is_none());
        assert!(EpochCache::from_entries(vec![entry(-1, 0)]).is_none());
    }

    #[test]
    fn follower_truncation_follows_kafka() {
        let follower = cache(&[(0, 0), (2, 10)]);
        let follower_end = 16;
        let high_watermark = 8;
        // (leader answer, expected cut, final)
        let table: &[(Answer, i64, bool)] = &[
            // same epoch on both sides: the shorter version wins
            (Some((2, 12)), 12, true),
            (Some((2, 30)), 16, true),
            // the leader's epoch 1 is unknown here: cut where the follower's epoch 0 ends, then
            // ask again about epoch 0
            (Some((1, 20)), 10, false),
            (Some((0, 8)), 8, true),
            // unknown to the leader: back to the high watermark
            (None, 8, true),
        ];
        for &(answer, cut, done) in table {
            assert_eq!(
                follower_truncation(
                    answer,
                    |epoch| follower.end_offset_for(epoch, follower_end),
                    follower_end,
                    high_watermark
                ),
                (cut, done),
                "leader answered {answer:?}"
            );
        }
    }
}
