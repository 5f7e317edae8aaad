//! What a compaction of one `__consumer_offsets` partition keeps: pure decisions, no I/O
//! (the reads and appends are in [`OffsetStore::compact`](super::OffsetStore::compact)).
//!
//! Snapshot compaction. The topic is internal (clients may not produce to it and nobody
//! consumes it), so its records may move to new offsets. Let `S` be the base offset of the
//! active segment when a pass starts and `E2` the log end once the pass holds the append
//! lock. The pass replays the sealed segments `[log start, S)` into the latest record of
//! each key ([`LatestRecords`]), collects the keys written in `[S, E2)`, appends as a
//! snapshot the latest record of every key that is not a tombstone and not written in
//! `[S, E2)`, in the order of their old offsets ([`LatestRecords::snapshot`]), flushes, and
//! then deletes the sealed segments below `S`, oldest first.
//!
//! Why replay stays correct, also after a crash at any point of the deletion: the log is
//! then some suffix of the old records below `S`, then `[S, E2)`, then the snapshot, then
//! later appends. Replaying it yields the state at `E2` (and later): a key written in
//! `[S, E2)` is not in the snapshot, so its last record is the same as before; any other key
//! that was live at `S` has its latest record from below `S` again in the snapshot, after
//! everything older; a key whose latest record below `S` was a tombstone is not in the
//! snapshot, and either that tombstone is in the surviving suffix (after the key's older
//! records) or every record of the key is gone. Without the crash the suffix is empty and
//! the log holds one record per live key plus what came since `S`.

use std::collections::HashMap;
use std::hash::Hash;

/// A pass is worth its rewrite only if the snapshot is at most this share of the records it
/// replaces (Kafka's `min.cleanable.dirty.ratio` is 0.5 too). Without a bound, a partition
/// whose live state is larger than a segment would roll on every snapshot and be rewritten
/// at every pass.
pub const SNAPSHOT_SHARE_MAX: f64 = 0.5;

/// The latest record of each key among records applied in log order.
#[derive(Debug)]
pub struct LatestRecords<K, V> {
    latest: HashMap<K, (i64, Option<V>)>,
    records: u64,
}

impl<K, V> Default for LatestRecords<K, V> {
    fn default() -> Self {
        Self {
            latest: HashMap::new(),
            records: 0,
        }
    }
}

impl<K: Eq + Hash, V> LatestRecords<K, V> {
    /// Applies the record at `offset` (`None`: a tombstone). Records come in log order.
    pub fn apply(&mut self, key: K, value: Option<V>, offset: i64) {
        self.records += 1;
        self.latest.insert(key, (offset, value));
    }

    /// Records applied so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Latest records that are not tombstones and whose key is not in `written_since`, in
    /// the order of their offsets.
    pub fn snapshot(self, written_since: impl Fn(&K) -> bool) -> Vec<(K, V)> {
        let mut kept: Vec<(i64, K, V)> = self
            .latest
            .into_iter()
            .filter(|(key, _)| !written_since(key))
            .filter_map(|(key, (offset, value))| value.map(|value| (offset, key, value)))
            .collect();
        kept.sort_unstable_by_key(|(offset, _, _)| *offset);
        kept.into_iter()
            .map(|(_, key, value)| (key, value))
            .collect()
    }
}

/// Whether a snapshot of `snapshot_records` records is worth replacing `sealed_records`.
pub fn worth_compacting(sealed_records: u64, snapshot_records: usize) -> bool {
    sealed_records > 0 && (snapshot_records as f64) <= sealed_records as f64 * SNAPSHOT_SHARE_MAX
}

/// Splits `records` into consecutive runs whose `size` sum stays at most `batch_bytes_max`
/// (a record larger than that gets a run of its own).
pub fn split_batches<T>(
    records: Vec<T>,
    batch_bytes_max: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut batches = Vec::new();
    let mut current = Vec::new();
    let mut current_bytes = 0;
    for record in records {
        let bytes = size(&record);
        if !current.is_empty() && current_bytes + bytes > batch_bytes_max {
            batches.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += bytes;
        current.push(record);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn latest(records: &[(&'static str, Option<u32>)]) -> LatestRecords<&'static str, u32> {
        let mut latest = LatestRecords::default();
        for (offset, (key, value)) in records.iter().enumerate() {
            latest.apply(*key, *value, offset as i64);
        }
        latest
    }

    #[test]
    fn the_snapshot_keeps_the_latest_value_of_each_key_in_offset_order() {
        let latest = latest(&[
            ("a", Some(1)),
            ("b", Some(1)),
            ("a", Some(2)),
            ("c", Some(1)),
            ("b", Some(2)),
        ]);
        assert_eq!(latest.records(), 5);
        assert_eq!(
            latest.snapshot(|_| false),
            vec![("a", 2), ("c", 1), ("b", 2)]
        );
    }

    #[test]
    fn keys_whose_latest_record_is_a_tombstone_are_dropped() {
        let latest = latest(&[
            ("a", Some(1)),
            ("b", Some(1)),
            ("a", None),
            ("c", None),
            ("c", Some(3)),
        ]);
        assert_eq!(latest.snapshot(|_| false), vec![("b", 1), ("c", 3)]);
    }

    #[test]
    fn keys_written_since_the_snapshot_point_are_left_to_their_newer_records() {
        let latest = latest(&[("a", Some(1)), ("b", Some(1)), ("c", Some(1))]);
        let since: HashSet<&str> = ["b", "z"].into_iter().collect();
        assert_eq!(
            latest.snapshot(|k| since.contains(k)),
            vec![("a", 1), ("c", 1)]
        );
    }

    #[test]
    fn a_pass_runs_only_when_it_halves_what_it_replaces() {
        assert!(!worth_compacting(0, 0));
        assert!(worth_compacting(10, 0));
        assert!(worth_compacting(10, 5));
        assert!(!worth_compacting(10, 6));
        assert!(worth_compacting(1_000_000, 12));
    }

    #[test]
    fn batches_stay_under_the_size_bound_and_keep_order() {
        let sizes = vec![3, 4, 2, 9, 12, 1, 1];
        let batches = split_batches(sizes, 9, |s| *s);
        assert_eq!(batches, vec![vec![3, 4, 2], vec![9], vec![12], vec![1, 1]]);
        assert!(split_batches(Vec::<usize>::new(), 9, |s| *s).is_empty());
    }
}
