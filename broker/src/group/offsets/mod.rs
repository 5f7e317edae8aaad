//! Committed offsets and stable group metadata of the consumer groups this broker
//! coordinates, written to the internal `__consumer_offsets` topic (records in Kafka's own
//! formats, see [`codec`]) and kept in memory for reads.
//!
//! A group's coordinator is the leader of its offsets partition: a partition is loaded when
//! this broker comes to lead it ([`OffsetStore::load`] replays it) and unloaded when it stops;
//! memory holds exactly the groups of loaded partitions. Writes append through the replica
//! layer as any leader's appends do ([`Partition::append_as_leader`], fenced by the epoch the
//! partition was loaded in) and are answered once committed ([`CommitPoint`]).
//!
//! The topic is compacted ([`compaction`], decisions in [`compaction_plan`]), so that it holds
//! about one record per live key instead of every commit ever made.

pub mod codec;
mod compaction;
pub mod compaction_plan;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Record;
use parking_lot::{Mutex, RwLock};
use tracing::debug;

use crate::group::membership::GroupSnapshot;
use crate::log::LogError;
use crate::replica::{AppendError, AppendOrigin, NotCommitted, Partition};
pub use codec::{
    decode_group_value, decode_key, decode_value, encode_group_key, encode_group_value, encode_key,
    encode_value, java_string_hash, partition_for, CommittedOffset, EncodeError, RecordKey,
};
use codec::{encode_batch, for_each_record};
pub use compaction::Compaction;

/// Name of the internal offsets topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

#[derive(Debug, thiserror::Error)]
pub enum OffsetStoreError {
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// This broker does not (or no longer) coordinate the groups of this offsets partition.
    #[error("offsets partition {0} is not loaded here")]
    NotLoaded(i32),
}

/// Where a write landed: it is committed once the partition's high watermark reaches `end`
/// while its leader is still in `leader_epoch`.
#[derive(Debug, Clone)]
pub struct CommitPoint {
    pub partition: Arc<Partition>,
    pub end: i64,
    pub leader_epoch: i32,
}

impl CommitPoint {
    /// Waits until the write is committed.
    ///
    /// # Errors
    /// As [`Partition::wait_for_high_watermark`].
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn committed(&self, timeout: std::time::Duration) -> Result<(), NotCommitted> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.partition
            .wait_for_high_watermark(self.end, self.leader_epoch, deadline)
            .await
    }
}

/// An offsets partition whose groups this broker coordinates.
struct Loaded {
    partition: Arc<Partition>,
    /// The leader epoch it was loaded in; its appends are refused in any other.
    leader_epoch: i32,
}

type GroupOffsets = BTreeMap<(String, i32), CommittedOffset>;

/// The committed offsets of the groups this broker coordinates, backed by
/// `__consumer_offsets`.
pub struct OffsetStore {
    partition_count: i32,
    loaded: RwLock<HashMap<i32, Loaded>>,
    /// Partitions whose compaction snapshot is written but maybe not committed yet: the
    /// snapshot's end and the offset below which its segments are superseded (see
    /// [`compact`](Self::compact)).
    awaiting_commit: Mutex<HashMap<i32, (i64, i64)>>,
    offsets: RwLock<HashMap<String, GroupOffsets>>,
    /// One per offsets partition, held from append to in-memory update, so that memory
    /// applies a partition's writes in log order (what a restart replays).
    write_order: Vec<Mutex<()>>,
    /// Group metadata found by the replay of a partition being loaded.
    replayed_groups: Mutex<HashMap<String, GroupSnapshot>>,
    /// Sequence number of the last group metadata written per group (see
    /// [`write_group`](Self::write_group)).
    group_seq: Mutex<HashMap<String, u64>>,
    /// One compaction pass at a time; per partition, the (log start, active segment base)
    /// last found not worth compacting, so it is not replayed again until that changes.
    compaction: Mutex<HashMap<i32, (i64, i64)>>,
}

impl OffsetStore {
    /// A store for `partitions` offsets partitions (the topic's count), none loaded yet.
    pub fn new(partitions: i32) -> Self {
        let write_order = (0..partitions.max(1)).map(|_| Mutex::new(())).collect();
        Self {
            partition_count: partitions.max(1),
            loaded: RwLock::new(HashMap::new()),
            awaiting_commit: Mutex::new(HashMap::new()),
            offsets: RwLock::new(HashMap::new()),
            write_order,
            replayed_groups: Mutex::new(HashMap::new()),
            group_seq: Mutex::new(HashMap::new()),
            compaction: Mutex::new(HashMap::new()),
        }
    }

    /// Loads `partition` as its leader in `leader_epoch`: replays it into memory and returns
    /// the stable groups found, for the coordinator to restore. Already loaded: only the
    /// epoch changes, and no group is returned.
    ///
    /// # Errors
    /// Reading the log failed; the partition is then not loaded.
    pub fn load(
        &self,
        partition: Arc<Partition>,
        leader_epoch: i32,
    ) -> Result<HashMap<String, GroupSnapshot>, OffsetStoreError> {
        let index = partition.index;
        let _in_log_order = self.lock_partition(index);
        if let Some(loaded) = self.loaded.write().get_mut(&index) {
            loaded.leader_epoch = leader_epoch;
            return Ok(HashMap::new());
        }
        self.forget_groups_of(index);
        let records = self.replay(&partition)?;
        let count = self.partition_count;
        let groups: HashMap<String, GroupSnapshot> = {
            let mut replayed = self.replayed_groups.lock();
            let ids: Vec<String> = replayed
                .keys()
                .filter(|g| partition_for(g, count) == index)
                .cloned()
                .collect();
            ids.into_iter()
                .filter_map(|g| replayed.remove(&g).map(|s| (g, s)))
                .collect()
        };
        self.loaded.write().insert(
            index,
            Loaded {
                partition,
                leader_epoch,
            },
        );
        debug!(
            partition = index,
            records,
            stable_groups = groups.len(),
            "loaded offsets partition"
        );
        Ok(groups)
    }

    /// Stops coordinating the groups of offsets partition `index`: their offsets leave
    /// memory (the log keeps them for the next leader).
    pub fn unload(&self, index: i32) {
        let _in_log_order = self.lock_partition(index);
        if self.loaded.write().remove(&index).is_some() {
            self.forget_groups_of(index);
            self.awaiting_commit.lock().remove(&index);
            debug!(partition = index, "unloaded offsets partition");
        }
    }

    fn forget_groups_of(&self, index: i32) {
        let count = self.partition_count;
        self.offsets
            .write()
            .retain(|g, _| partition_for(g, count) != index);
        self.group_seq
            .lock()
            .retain(|g, _| partition_for(g, count) != index);
        self.replayed_groups
            .lock()
            .retain(|g, _| partition_for(g, count) != index);
    }

    /// The offsets partitions loaded here.
    pub fn loaded_partitions(&self) -> Vec<i32> {
        self.loaded.read().keys().copied().collect()
    }

    /// The leader epoch offsets partition `index` was loaded in, if it is loaded.
    pub fn loaded_epoch(&self, index: i32) -> Option<i32> {
        self.loaded.read().get(&index).map(|l| l.leader_epoch)
    }

    pub fn is_loaded(&self, index: i32) -> bool {
        self.loaded.read().contains_key(&index)
    }

    /// Applies every record of `partition` in log order.
    fn replay(&self, partition: &Partition) -> Result<usize, OffsetStoreError> {
        let log = &partition.log;
        let mut applied = 0;
        for_each_record(
            log,
            log.log_start_offset(),
            log.log_end_offset(),
            |record| {
                applied += usize::from(self.apply(record));
            },
        )?;
        Ok(applied)
    }

    fn apply(&self, record: Record) -> bool {
        let (group, topic, partition) = match record.key.and_then(decode_key) {
            Some(RecordKey::Offset(group, topic, partition)) => (group, topic, partition),
            Some(RecordKey::Group(group)) => {
                let mut groups = self.replayed_groups.lock();
                match record.value.and_then(decode_group_value) {
                    Some(snapshot) if !snapshot.members.is_empty() => {
                        groups.insert(group, snapshot);
                    }
                    _ => {
                        groups.remove(&group);
                    }
                }
                return true;
            }
            None => return false,
        };
        let mut offsets = self.offsets.write();
        match record.value.and_then(decode_value) {
            Some(committed) => {
                offsets
                    .entry(group)
                    .or_default()
                    .insert((topic, partition), committed);
            }
            None => {
                if let Some(group_offsets) = offsets.get_mut(&group) {
                    group_offsets.remove(&(topic, partition));
                    if group_offsets.is_empty() {
                        offsets.remove(&group);
                    }
                }
            }
        }
        true
    }

    pub fn partition_count(&self) -> i32 {
        self.partition_count
    }

    /// Durably records `entries` (None = delete) for `group`, then makes them visible.
    /// Concurrent writes for groups of one offsets partition become visible in the order
    /// they were appended, so what readers see is what a restart replays.
    ///
    /// # Errors
    /// Encoding or appending failed; nothing is then visible.
    pub fn write(
        &self,
        group: &str,
        entries: &[((String, i32), Option<CommittedOffset>)],
        now_ms: i64,
    ) -> Result<Option<CommitPoint>, OffsetStoreError> {
        if entries.is_empty() {
            return Ok(None);
        }
        let records = entries
            .iter()
            .map(|((topic, p), value)| {
                (
                    encode_key(group, topic, *p),
                    value.as_ref().map(encode_value),
                )
            })
            .collect();
        let (_in_log_order, point) = self.append(group, records, now_ms)?;
        let mut offsets = self.offsets.write();
        for ((topic, p), value) in entries {
            match value {
                Some(v) => {
                    offsets
                        .entry(group.to_string())
                        .or_default()
                        .insert((topic.clone(), *p), v.clone());
                }
                None => {
                    if let Some(g) = offsets.get_mut(group) {
                        g.remove(&(topic.clone(), *p));
                    }
                }
            }
        }
        if offsets.get(group).is_some_and(BTreeMap::is_empty) {
            offsets.remove(group);
        }
        Ok(Some(point))
    }

    /// Durably records a group's metadata (`None`: it has no members; a tombstone).
    /// Snapshots are taken in `seq` order but may arrive here in another: one older than the
    /// last written for the group is dropped. Returns whether it was written.
    ///
    /// # Errors
    /// Appending failed.
    pub fn write_group(
        &self,
        group: &str,
        seq: u64,
        snapshot: Option<&GroupSnapshot>,
        now_ms: i64,
    ) -> Result<bool, OffsetStoreError> {
        let index = partition_for(group, self.partition_count());
        let _in_log_order = self.lock_partition(index);
        if self
            .group_seq
            .lock()
            .get(group)
            .is_some_and(|&last| last >= seq)
        {
            return Ok(false);
        }
        let value = snapshot.map(|g| encode_group_value(g, now_ms));
        self.append_locked(index, vec![(encode_group_key(group), value)], now_ms)?;
        self.group_seq.lock().insert(group.to_string(), seq);
        Ok(true)
    }

    fn lock_partition(&self, index: i32) -> Option<parking_lot::MutexGuard<'_, ()>> {
        let slot = index as usize % self.write_order.len().max(1);
        self.write_order.get(slot).map(Mutex::lock)
    }

    /// Appends and flushes `records` to the group's partition; the returned guard keeps
    /// other writes of that partition out until the caller has applied these in memory.
    fn append(
        &self,
        group: &str,
        records: Vec<(Bytes, Option<Bytes>)>,
        now_ms: i64,
    ) -> Result<(Option<parking_lot::MutexGuard<'_, ()>>, CommitPoint), OffsetStoreError> {
        let index = partition_for(group, self.partition_count());
        let guard = self.lock_partition(index);
        let point = self.append_locked(index, records, now_ms)?;
        Ok((guard, point))
    }

    fn append_locked(
        &self,
        index: i32,
        records: Vec<(Bytes, Option<Bytes>)>,
        now_ms: i64,
    ) -> Result<CommitPoint, OffsetStoreError> {
        let (partition, leader_epoch) = self
            .loaded
            .read()
            .get(&index)
            .map(|l| (Arc::clone(&l.partition), l.leader_epoch))
            .ok_or(OffsetStoreError::NotLoaded(index))?;
        let mut buf = encode_batch(records.into_iter().map(|(key, value)| (key, value, now_ms)))?;
        let appended =
            partition.append_as_leader(&mut buf, AppendOrigin::Coordinator { leader_epoch })?;
        partition.log.flush()?;
        Ok(CommitPoint {
            partition,
            end: appended.last_offset + 1,
            leader_epoch,
        })
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<CommittedOffset> {
        self.offsets
            .read()
            .get(group)
            .and_then(|g| g.get(&(topic.to_string(), partition)).cloned())
    }

    /// Every committed offset of a group.
    pub fn group_offsets(&self, group: &str) -> GroupOffsets {
        self.offsets.read().get(group).cloned().unwrap_or_default()
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.offsets.read().contains_key(group)
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        self.offsets.read().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::codec::tests::snapshot;
    use super::*;
    use crate::testing::led_alone;
    use std::path::Path;

    /// A store of `partitions` offsets partitions under `dir`, each led alone in a new epoch
    /// and loaded (replayed); returns it with the stable groups the replays found.
    fn store(
        dir: &Path,
        partitions: i32,
    ) -> (
        OffsetStore,
        Vec<Arc<Partition>>,
        HashMap<String, GroupSnapshot>,
    ) {
        let store = OffsetStore::new(partitions);
        let mut led = Vec::new();
        let mut groups = HashMap::new();
        for index in 0..partitions {
            let partition = led_alone(
                OFFSETS_TOPIC,
                index,
                &dir.join(format!("{OFFSETS_TOPIC}-{index}")),
                crate::log::LogConfig::default(),
            );
            let epoch = partition.leader_epoch(-1).expect("led");
            groups.extend(store.load(Arc::clone(&partition), epoch).expect("load"));
            led.push(partition);
        }
        (store, led, groups)
    }

    fn close(partitions: &[Arc<Partition>]) {
        for p in partitions {
            p.close().expect("close");
        }
    }

    fn committed(offset: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 1,
        }
    }

    #[test]
    fn concurrent_commits_leave_memory_as_the_log_replays() {
        // Each round ends with threads racing to commit last; the last one in the log must be
        // the one in memory, or a restart changes the committed offset.
        const ROUNDS: i32 = 30;
        const THREADS: i64 = 4;
        const COMMITS: i64 = 10;
        for round in 0..ROUNDS {
            let dir = tempfile::tempdir().expect("tempdir");
            let in_memory = {
                let (store, led, _) = store(dir.path(), 1);
                std::thread::scope(|scope| {
                    for thread in 0..THREADS {
                        let store = &store;
                        scope.spawn(move || {
                            for i in 0..COMMITS {
                                let offset = CommittedOffset {
                                    commit_timestamp_ms: i,
                                    ..committed(thread * 1_000 + i)
                                };
                                store
                                    .write("g", &[(("t".into(), 0), Some(offset))], i)
                                    .expect("commit");
                            }
                        });
                    }
                });
                let seen = store.get("g", "t", 0).map(|c| c.offset);
                close(&led);
                seen
            };
            let (store, _, _) = store(dir.path(), 1);
            let replayed = store.get("g", "t", 0).map(|c| c.offset);
            assert_eq!(replayed, in_memory, "round {round}");
        }
    }

    #[test]
    fn group_metadata_survives_reopen_and_tombstones_remove_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (store, led, _) = store(dir.path(), 3);
            assert!(store
                .write_group("g1", 1, Some(&snapshot(1)), 1)
                .expect("write"));
            assert!(store
                .write_group("g1", 3, Some(&snapshot(3)), 2)
                .expect("write"));
            // a snapshot taken before the last written one arrives late: dropped
            assert!(!store
                .write_group("g1", 2, Some(&snapshot(2)), 3)
                .expect("write"));
            assert!(store
                .write_group("g2", 4, Some(&snapshot(1)), 4)
                .expect("write"));
            assert!(store.write_group("g2", 5, None, 5).expect("tombstone"));
            close(&led);
        }
        let (_, _, groups) = store(dir.path(), 3);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups.get("g1"), Some(&snapshot(3)));
    }

    /// A record batch with a valid CRC that claims `count` records and holds none.
    fn batch_claiming(count: i32) -> Vec<u8> {
        use bytes::{BufMut, BytesMut};
        let mut after_crc = BytesMut::new();
        after_crc.put_i16(0); // attributes: no compression
        after_crc.put_i32(count - 1); // last offset delta
        after_crc.put_i64(0); // first timestamp
        after_crc.put_i64(0); // max timestamp
        after_crc.put_i64(-1); // producer id
        after_crc.put_i16(-1); // producer epoch
        after_crc.put_i32(-1); // base sequence
        after_crc.put_i32(count);
        let mut batch = BytesMut::new();
        batch.put_i64(0);
        batch.put_i32(4 + 1 + 4 + i32::try_from(after_crc.len()).expect("small"));
        batch.put_i32(0); // partition leader epoch
        batch.put_i8(2); // magic
        batch.put_u32(crc32c::crc32c(&after_crc));
        batch.put_slice(&after_crc);
        batch.to_vec()
    }

    #[test]
    fn replay_skips_a_batch_claiming_more_records_than_it_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (store, led, _) = store(dir.path(), 1);
            store
                .write("g", &[(("t".into(), 0), Some(committed(1)))], 1)
                .expect("commit");
            // what a client could produce into the topic: replaying it must neither reserve
            // memory for i32::MAX records nor lose the commits around it
            led[0]
                .append_as_leader(
                    &mut batch_claiming(i32::MAX),
                    AppendOrigin::Client { acks: 1 },
                )
                .expect("append bomb");
            store
                .write("g", &[(("t".into(), 1), Some(committed(2)))], 2)
                .expect("commit");
            close(&led);
        }
        let (store, _, _) = store(dir.path(), 1);
        assert_eq!(store.get("g", "t", 0), Some(committed(1)));
        assert_eq!(store.get("g", "t", 1), Some(committed(2)));
    }

    #[test]
    fn commits_and_deletes_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (store, led, _) = store(dir.path(), 3);
            store
                .write(
                    "g1",
                    &[
                        (("t".into(), 0), Some(committed(10))),
                        (("t".into(), 1), Some(committed(20))),
                    ],
                    1,
                )
                .expect("commit");
            store
                .write("g1", &[(("t".into(), 0), Some(committed(11)))], 2)
                .expect("commit");
            store
                .write("g2", &[(("t".into(), 0), Some(committed(5)))], 3)
                .expect("commit");
            store
                .write("g2", &[(("t".into(), 0), None)], 4)
                .expect("delete");
            close(&led);
        }
        let (store, _, _) = store(dir.path(), 3);
        assert_eq!(store.get("g1", "t", 0).map(|c| c.offset), Some(11));
        assert_eq!(store.get("g1", "t", 1).map(|c| c.offset), Some(20));
        assert!(!store.has_group("g2"));
    }

    #[test]
    fn a_write_in_an_epoch_no_longer_led_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, led, _) = store(dir.path(), 1);
        let loaded = led[0].leader_epoch(-1).expect("led");
        // Leadership moves on (another broker led meanwhile and this one leads again).
        let role = crate::replica::ReplicaRole {
            topic_id: uuid::Uuid::nil(),
            leader: 1,
            leader_epoch: loaded + 1,
            partition_epoch: loaded + 1,
            replicas: vec![1],
            isr: vec![1],
        };
        led[0].apply_role(1, &role, 1, 0).expect("new epoch");
        let refused = store.write("g", &[(("t".into(), 0), Some(committed(1)))], 1);
        assert!(
            matches!(
                refused,
                Err(OffsetStoreError::Append(AppendError::NotLeader))
            ),
            "{refused:?}"
        );
        assert_eq!(store.get("g", "t", 0), None, "nothing became visible");
    }
}
