//! Committed offsets and stable group metadata of consumer groups, written to the internal
//! `__consumer_offsets` topic so they survive restarts (offsets are also kept in memory).
//!
//! Records use Kafka's own formats: an offset commit is key version 1 (group, topic,
//! partition) with value version 3 (offset, leader epoch, metadata, commit timestamp); a
//! group's metadata is key version 2 (group) with value version 3 (protocol, generation,
//! leader, members and their assignments). A deletion is a tombstone (null value). A group's
//! records all go to partition `abs(java_hash(group)) % partitions`, so replaying each
//! partition in order rebuilds the latest state of its groups.
//!
//! The topic is compacted ([`OffsetStore::compact`], decisions in [`super::compaction`]), so
//! that it holds about one record per live key instead of every commit ever made.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use parking_lot::{Mutex, RwLock};
use tracing::{debug, info, warn};

use super::compaction::{self, LatestRecords};
use super::membership::{GroupSnapshot, MemberSnapshot};
use crate::log::{LogError, PartitionLog};
use crate::topics::{AppendError, Partition, TopicError, TopicRegistry};

/// Name of the internal offsets topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
const KEY_VERSION_OFFSET_COMMIT: i16 = 1;
const KEY_VERSION_GROUP_METADATA: i16 = 2;
const VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum OffsetStoreError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("cannot encode offset records: {0}")]
    Encode(String),
    /// This broker does not (or no longer) coordinate the groups of this offsets partition.
    #[error("offsets partition {0} is not loaded here")]
    NotLoaded(i32),
}

/// Where a write landed: it is committed once the partition's high watermark reaches `end`.
#[derive(Debug, Clone)]
pub struct CommitPoint {
    pub partition: Arc<Partition>,
    pub end: i64,
}

/// An offsets partition whose groups this broker coordinates.
struct Loaded {
    partition: Arc<Partition>,
    /// The leader epoch its appends are stamped with (0 on a standalone broker).
    leader_epoch: i32,
}

/// Called after every append to an offsets partition (a cluster moves its high watermark
/// and wakes waiting fetches).
pub type AfterAppend = Box<dyn Fn(&Partition) + Send + Sync>;

/// Java's `String.hashCode`, so groups map to the same offsets partition as in Kafka.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The offsets partition of a group.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    (java_string_hash(group) & 0x7fff_ffff) % partitions.max(1)
}

fn put_string(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

fn get_string(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len < 0 {
        return Some(String::new());
    }
    let len = len as usize;
    if buf.remaining() < len {
        return None;
    }
    String::from_utf8(buf.split_to(len).to_vec()).ok()
}

/// The record key of a committed offset.
pub fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + group.len() + topic.len());
    buf.put_i16(KEY_VERSION_OFFSET_COMMIT);
    put_string(&mut buf, group);
    put_string(&mut buf, topic);
    buf.put_i32(partition);
    buf.freeze()
}

/// The record value of a committed offset.
pub fn encode_value(offset: &CommittedOffset) -> Bytes {
    let mut buf = BytesMut::with_capacity(32 + offset.metadata.len());
    buf.put_i16(VALUE_VERSION);
    buf.put_i64(offset.offset);
    buf.put_i32(offset.leader_epoch);
    put_string(&mut buf, &offset.metadata);
    buf.put_i64(offset.commit_timestamp_ms);
    buf.freeze()
}

/// The key of a `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordKey {
    /// A committed offset of (group, topic, partition).
    Offset(String, String, i32),
    /// The metadata of a group.
    Group(String),
}

/// Decodes a record key; `None` for kinds this broker does not read.
pub fn decode_key(mut key: Bytes) -> Option<RecordKey> {
    if key.remaining() < 2 {
        return None;
    }
    match key.get_i16() {
        0..=KEY_VERSION_OFFSET_COMMIT => {
            let group = get_string(&mut key)?;
            let topic = get_string(&mut key)?;
            (key.remaining() >= 4).then(|| RecordKey::Offset(group, topic, key.get_i32()))
        }
        KEY_VERSION_GROUP_METADATA => get_string(&mut key).map(RecordKey::Group),
        _ => None,
    }
}

/// The record key of a group's metadata.
pub fn encode_group_key(group: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + group.len());
    buf.put_i16(KEY_VERSION_GROUP_METADATA);
    put_string(&mut buf, group);
    buf.freeze()
}

fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(buf, s),
        None => buf.put_i16(-1),
    }
}

fn get_nullable_string(buf: &mut Bytes) -> Option<Option<String>> {
    if buf.remaining() < 2 {
        return None;
    }
    if i16::from_be_bytes([buf[0], buf[1]]) < 0 {
        buf.advance(2);
        return Some(None);
    }
    get_string(buf).map(Some)
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

fn get_bytes(buf: &mut Bytes) -> Option<Bytes> {
    if buf.remaining() < 4 {
        return None;
    }
    let len = buf.get_i32();
    let len = usize::try_from(len).unwrap_or(0);
    (buf.remaining() >= len).then(|| buf.split_to(len))
}

fn get_i32(buf: &mut Bytes) -> Option<i32> {
    (buf.remaining() >= 4).then(|| buf.get_i32())
}

/// The record value of a group's metadata (`GroupMetadataValue` version 3).
pub fn encode_group_value(group: &GroupSnapshot, now_ms: i64) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(GROUP_VALUE_VERSION);
    put_string(&mut buf, &group.protocol_type);
    buf.put_i32(group.generation);
    put_nullable_string(&mut buf, group.protocol.as_deref());
    put_nullable_string(&mut buf, group.leader.as_deref());
    buf.put_i64(now_ms); // current state timestamp
    buf.put_i32(group.members.len() as i32);
    for m in &group.members {
        put_string(&mut buf, &m.id);
        put_nullable_string(&mut buf, m.instance_id.as_deref());
        put_string(&mut buf, &m.client_id);
        put_string(&mut buf, &m.client_host);
        buf.put_i32(m.rebalance_timeout_ms);
        buf.put_i32(m.session_timeout_ms);
        put_bytes(&mut buf, &m.subscription);
        put_bytes(&mut buf, &m.assignment);
    }
    buf.freeze()
}

/// Decodes a group's metadata (`GroupMetadataValue` versions 0 to 3).
pub fn decode_group_value(mut value: Bytes) -> Option<GroupSnapshot> {
    let buf = &mut value;
    if buf.remaining() < 2 {
        return None;
    }
    let version = buf.get_i16();
    if !(0..=GROUP_VALUE_VERSION).contains(&version) {
        return None;
    }
    let protocol_type = get_string(buf)?;
    let generation = get_i32(buf)?;
    let protocol = get_nullable_string(buf)?;
    let leader = get_nullable_string(buf)?;
    if version >= 2 {
        if buf.remaining() < 8 {
            return None;
        }
        buf.advance(8); // current state timestamp
    }
    let count = usize::try_from(get_i32(buf)?).unwrap_or(0);
    let mut members = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let id = get_string(buf)?;
        let instance_id = if version >= 3 {
            get_nullable_string(buf)?
        } else {
            None
        };
        let client_id = get_string(buf)?;
        let client_host = get_string(buf)?;
        let rebalance_timeout_ms = if version >= 1 { get_i32(buf)? } else { -1 };
        let session_timeout_ms = get_i32(buf)?;
        let rebalance_timeout_ms = if rebalance_timeout_ms < 0 {
            session_timeout_ms
        } else {
            rebalance_timeout_ms
        };
        members.push(MemberSnapshot {
            id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription: get_bytes(buf)?,
            assignment: get_bytes(buf)?,
        });
    }
    Some(GroupSnapshot {
        protocol_type,
        generation,
        protocol,
        leader,
        members,
    })
}

/// Decodes an offset-commit value (versions 1 and 3).
pub fn decode_value(mut value: Bytes) -> Option<CommittedOffset> {
    if value.remaining() < 2 {
        return None;
    }
    let version = value.get_i16();
    if value.remaining() < 8 {
        return None;
    }
    let offset = value.get_i64();
    let leader_epoch = if version >= 3 && value.remaining() >= 4 {
        value.get_i32()
    } else {
        -1
    };
    let metadata = get_string(&mut value)?;
    let commit_timestamp_ms = if value.remaining() >= 8 {
        value.get_i64()
    } else {
        -1
    };
    Some(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

/// Record batch v2 layout: the attributes sit at `BATCH_ATTRIBUTES`, the record count at
/// `BATCH_RECORD_COUNT`, the records start at `BATCH_RECORDS`.
const BATCH_ATTRIBUTES: usize = 21;
const BATCH_RECORD_COUNT: usize = 57;
const BATCH_RECORDS: usize = 61;
/// The smallest encoded record: length, attributes, timestamp delta, offset delta, key
/// length, value length and header count, one byte each.
const RECORD_BYTES_MIN: usize = 7;
/// Most records a compressed batch may claim (its bytes do not bound the count).
const COMPRESSED_BATCH_RECORDS_MAX: usize = 1 << 20;

/// Why a stored batch must not be decoded, if it must not: the decoder reserves memory for
/// the record count the batch claims, so a batch claiming more records than it can hold
/// (say `i32::MAX`, produced by a client) would abort the broker at every start.
fn implausible_batch(batch: &[u8]) -> Option<&'static str> {
    if batch.len() < BATCH_RECORDS {
        return Some("shorter than a batch header");
    }
    let count = i32::from_be_bytes([
        batch[BATCH_RECORD_COUNT],
        batch[BATCH_RECORD_COUNT + 1],
        batch[BATCH_RECORD_COUNT + 2],
        batch[BATCH_RECORD_COUNT + 3],
    ]);
    let count = usize::try_from(count).ok()?;
    let compressed = batch[BATCH_ATTRIBUTES + 1] & 0x07 != 0;
    let max = if compressed {
        COMPRESSED_BATCH_RECORDS_MAX
    } else {
        (batch.len() - BATCH_RECORDS) / RECORD_BYTES_MIN
    };
    (count > max).then_some("claims more records than it can hold")
}

/// Snapshot batches stay at most this large (and at most half of `max.message.bytes`).
const SNAPSHOT_BATCH_BYTES_MAX: usize = 256 << 10;
/// Bytes a record adds to a batch besides its key and value (length, attributes, deltas,
/// key and value lengths, header count: varints, at most this many together).
const RECORD_OVERHEAD_BYTES_MAX: usize = 32;

/// Calls `apply` with every record of the batches whose base offset is in `[from, until)`,
/// in log order. A batch that cannot be decoded is skipped with a warning, not the rest of
/// the range: its length still says where the next one starts (the log only stores batches
/// whose length and CRC were checked).
fn for_each_record(
    log: &PartitionLog,
    from: i64,
    until: i64,
    mut apply: impl FnMut(Record),
) -> Result<(), LogError> {
    for batch in log.batches(from, until) {
        let mut batch = batch?;
        if let Some(reason) = implausible_batch(&batch) {
            warn!(dir = %log.dir().display(), reason, "unreadable offsets batch skipped");
            continue;
        }
        match RecordBatchDecoder::decode(&mut batch) {
            Ok(set) => set.records.into_iter().for_each(&mut apply),
            Err(e) => {
                warn!(dir = %log.dir().display(), error = %e, "undecodable offsets batch skipped");
            }
        }
    }
    Ok(())
}

/// A record visitor that collects the (decoded) keys of the records it sees.
fn keys_into(keys: &mut HashSet<RecordKey>) -> impl FnMut(Record) + '_ {
    |record| {
        if let Some(key) = record.key.and_then(decode_key) {
            keys.insert(key);
        }
    }
}

/// One uncompressed v2 batch of `(key, value, timestamp)` records, without producer id.
fn encode_batch(
    records: impl IntoIterator<Item = (Bytes, Option<Bytes>, i64)>,
) -> Result<BytesMut, OffsetStoreError> {
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value, timestamp))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp,
            key: Some(key),
            value,
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| OffsetStoreError::Encode(e.to_string()))?;
    Ok(buf)
}

/// A live record carried into a snapshot, as it was stored.
#[derive(Debug)]
struct Carried {
    key: Bytes,
    value: Bytes,
    timestamp: i64,
}

/// What a compaction pass of one offsets partition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Records replayed from the sealed segments.
    pub sealed_records: u64,
    /// Records appended as the snapshot.
    pub snapshot_records: usize,
    /// The sealed segments below this offset are superseded by the snapshot.
    pub superseded_below: i64,
    /// The log end after the snapshot: it must be committed before anything it supersedes
    /// goes on a replicated partition.
    pub snapshot_end: i64,
    /// Sealed segments deleted (0 until [`OffsetStore::compact`] deletes them).
    pub segments_deleted: usize,
}

type GroupOffsets = BTreeMap<(String, i32), CommittedOffset>;

/// The committed offsets of the groups this broker coordinates, backed by
/// `__consumer_offsets`.
///
/// Standalone, every offsets partition is loaded at open. In a cluster, a partition is
/// loaded when this broker becomes its leader ([`load`](Self::load)) and unloaded when it
/// stops leading; memory then holds exactly the groups of loaded partitions.
pub struct OffsetStore {
    partition_count: i32,
    loaded: RwLock<HashMap<i32, Loaded>>,
    /// Replicated partitions (a cluster's) delete superseded segments only once the snapshot
    /// is committed: see [`compact`](Self::compact).
    replicated: bool,
    /// Replicated partitions whose snapshot is written but maybe not committed yet: the
    /// snapshot's end and the offset below which its segments are superseded.
    awaiting_commit: Mutex<HashMap<i32, (i64, i64)>>,
    after_append: std::sync::OnceLock<AfterAppend>,
    offsets: RwLock<HashMap<String, GroupOffsets>>,
    /// One per offsets partition, held from append to in-memory update, so that memory
    /// applies a partition's writes in log order (what a restart replays).
    write_order: Vec<Mutex<()>>,
    /// Group metadata found by the replay, until the coordinator takes it.
    replayed_groups: Mutex<HashMap<String, GroupSnapshot>>,
    /// Sequence number of the last group metadata written per group (see
    /// [`write_group`](Self::write_group)).
    group_seq: Mutex<HashMap<String, u64>>,
    /// One compaction pass at a time; per partition, the (log start, active segment base)
    /// last found not worth compacting, so it is not replayed again until that changes.
    compaction: Mutex<HashMap<i32, (i64, i64)>>,
}

impl OffsetStore {
    /// Opens (creating if needed) the offsets topic and replays it.
    ///
    /// # Errors
    /// Creating the topic or reading its partitions failed.
    pub fn open(topics: &TopicRegistry, partitions: i32) -> Result<Self, OffsetStoreError> {
        let topic = match topics.get(OFFSETS_TOPIC) {
            Some(topic) => topic,
            None => {
                let segment_bytes = topics.broker_config().offsets_topic_segment_bytes;
                let mut configs = BTreeMap::new();
                configs.insert("cleanup.policy".to_string(), "compact".to_string());
                configs.insert("segment.bytes".to_string(), segment_bytes.to_string());
                topics.create(OFFSETS_TOPIC, partitions, 1, configs)?
            }
        };
        let store = Self::empty(topic.partition_count(), false);
        *store.loaded.write() = topic
            .partitions()
            .into_iter()
            .map(|partition| {
                (
                    partition.index,
                    Loaded {
                        partition,
                        leader_epoch: 0,
                    },
                )
            })
            .collect();
        let mut records = 0usize;
        for partition in topic.partitions() {
            records += store.replay(&partition)?;
        }
        info!(
            groups = store.offsets.read().len(),
            stable_groups = store.replayed_groups.lock().len(),
            records,
            "loaded committed offsets and group metadata"
        );
        Ok(store)
    }

    /// A store for a broker in a cluster: `partitions` offsets partitions (the cluster's
    /// topic), none loaded yet.
    pub fn replicated(partitions: i32) -> Self {
        Self::empty(partitions, true)
    }

    fn empty(partitions: i32, replicated: bool) -> Self {
        let write_order = (0..partitions.max(1)).map(|_| Mutex::new(())).collect();
        Self {
            partition_count: partitions.max(1),
            loaded: RwLock::new(HashMap::new()),
            replicated,
            awaiting_commit: Mutex::new(HashMap::new()),
            after_append: std::sync::OnceLock::new(),
            offsets: RwLock::new(HashMap::new()),
            write_order,
            replayed_groups: Mutex::new(HashMap::new()),
            group_seq: Mutex::new(HashMap::new()),
            compaction: Mutex::new(HashMap::new()),
        }
    }

    /// Sets what runs after every append (once).
    pub fn set_after_append(&self, hook: AfterAppend) {
        if self.after_append.set(hook).is_err() {
            warn!("the offsets append hook was already set");
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
        info!(
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
            info!(partition = index, "unloaded offsets partition");
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

    /// The stable groups found in the log at open, once (for the coordinator to restore).
    pub fn take_replayed_groups(&self) -> HashMap<String, GroupSnapshot> {
        std::mem::take(&mut *self.replayed_groups.lock())
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
        let appended = partition.append(&mut buf, leader_epoch)?;
        partition.log.flush()?;
        if let Some(hook) = self.after_append.get() {
            hook(&partition);
        }
        Ok(CommitPoint {
            partition,
            end: appended.last_offset + 1,
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

    /// Compacts every offsets partition that has a sealed segment (see
    /// [`compact`](Self::compact)); a failure is logged and leaves that partition as it was.
    /// Returns the number of segments deleted.
    pub fn compact_all(&self) -> usize {
        let mut deleted = 0;
        for index in self.loaded_partitions() {
            match self.compact(index) {
                Ok(Some(done)) => {
                    info!(
                        partition = index,
                        sealed_records = done.sealed_records,
                        snapshot_records = done.snapshot_records,
                        segments_deleted = done.segments_deleted,
                        log_start_offset = done.superseded_below,
                        "compacted offsets partition"
                    );
                    deleted += done.segments_deleted;
                }
                Ok(None) => {}
                Err(e) => warn!(partition = index, error = %e, "offsets compaction failed"),
            }
        }
        deleted
    }

    /// Compacts one offsets partition (the method and why it is correct are in
    /// [`super::compaction`]): [`write_snapshot`](Self::write_snapshot), then deletes the
    /// sealed segments the snapshot supersedes, oldest first. `None` when the partition has
    /// no sealed segment or the pass would not at least halve what it replaces.
    ///
    /// Durability: the snapshot is flushed before any segment goes; a crash at any point
    /// leaves a log that replays to the same state. Commits wait only while the pass holds
    /// the append lock: to read the keys appended since it started and append the snapshot.
    ///
    /// A replicated partition (on its leader) deletes in a later pass, once the snapshot is
    /// below the high watermark: a new leader elected before that still has the superseded
    /// segments, and no replica ever lacks both. Followers copy the leader's bytes, snapshot
    /// included, and drop the segments below the leader's log start as they fetch.
    ///
    /// # Errors
    /// Reading, appending or deleting failed; the log then still replays to the same state.
    pub fn compact(&self, index: i32) -> Result<Option<Compaction>, OffsetStoreError> {
        let mut skipped = self.compaction.lock();
        let partition = self.offsets_partition(index)?;
        if self.replicated {
            let waiting = self.awaiting_commit.lock().get(&index).copied();
            if let Some((snapshot_end, superseded_below)) = waiting {
                if partition.log.high_watermark() < snapshot_end {
                    return Ok(None);
                }
                self.awaiting_commit.lock().remove(&index);
                let deleted = partition.log.delete_segments_below(superseded_below)?;
                return Ok(Some(Compaction {
                    sealed_records: 0,
                    snapshot_records: 0,
                    superseded_below,
                    snapshot_end,
                    segments_deleted: deleted,
                }));
            }
        }
        let Some(mut done) = self.write_snapshot_locked(index, &mut skipped)? else {
            return Ok(None);
        };
        if self.replicated && partition.log.high_watermark() < done.snapshot_end {
            self.awaiting_commit
                .lock()
                .insert(index, (done.snapshot_end, done.superseded_below));
            return Ok(Some(done));
        }
        done.segments_deleted = partition.log.delete_segments_below(done.superseded_below)?;
        Ok(Some(done))
    }

    /// The first half of [`compact`](Self::compact): appends and flushes the snapshot of the
    /// partition's sealed segments, deleting nothing. The log then replays to the same state
    /// as before, with or without the superseded segments.
    ///
    /// # Errors
    /// As [`compact`](Self::compact).
    pub fn write_snapshot(&self, index: i32) -> Result<Option<Compaction>, OffsetStoreError> {
        let mut skipped = self.compaction.lock();
        self.write_snapshot_locked(index, &mut skipped)
    }

    fn offsets_partition(&self, index: i32) -> Result<Arc<Partition>, OffsetStoreError> {
        self.loaded
            .read()
            .get(&index)
            .map(|l| Arc::clone(&l.partition))
            .ok_or(OffsetStoreError::NotLoaded(index))
    }

    fn write_snapshot_locked(
        &self,
        index: i32,
        skipped: &mut HashMap<i32, (i64, i64)>,
    ) -> Result<Option<Compaction>, OffsetStoreError> {
        let partition = self.offsets_partition(index)?;
        let log = &partition.log;
        let start = log.log_start_offset();
        let sealed_end = log.active_segment_base_offset();
        if sealed_end <= start || skipped.get(&index) == Some(&(start, sealed_end)) {
            return Ok(None);
        }
        // 1. The latest record of each key in the sealed segments, without the lock.
        let mut latest = LatestRecords::default();
        for_each_record(log, start, sealed_end, |record| {
            let Some(raw_key) = record.key else { return };
            // Keys are compared decoded: two encodings of one key must not both survive.
            let Some(key) = decode_key(raw_key.clone()) else {
                return;
            };
            let carried = record.value.map(|value| Carried {
                key: raw_key,
                value,
                timestamp: record.timestamp,
            });
            latest.apply(key, carried, record.offset);
        })?;
        // 2. Keys written since, up to the log end as it is now, still without the lock.
        let mut written_since = HashSet::new();
        let seen_end = log.log_end_offset();
        for_each_record(log, sealed_end, seen_end, keys_into(&mut written_since))?;
        let sealed_records = latest.records();
        let mut snapshot = latest.snapshot(|key| written_since.contains(key));
        if !compaction::worth_compacting(sealed_records, snapshot.len()) {
            debug!(
                partition = index,
                sealed_records,
                snapshot_records = snapshot.len(),
                "offsets partition not worth compacting yet"
            );
            skipped.insert(index, (start, sealed_end));
            return Ok(None);
        }
        // 3. Under the append lock: keys written since step 2, then the snapshot.
        let batch_bytes_max = SNAPSHOT_BATCH_BYTES_MAX.min(log.config().max_message_bytes / 2);
        let leader_epoch = self
            .loaded
            .read()
            .get(&index)
            .map(|l| l.leader_epoch)
            .ok_or(OffsetStoreError::NotLoaded(index))?;
        let mut appends = partition.lock_appends();
        let end = appends.log().log_end_offset();
        for_each_record(appends.log(), seen_end, end, keys_into(&mut written_since))?;
        snapshot.retain(|(key, _)| !written_since.contains(key));
        let snapshot_records = snapshot.len();
        let batches = compaction::split_batches(snapshot, batch_bytes_max, |(_, c)| {
            c.key.len() + c.value.len() + RECORD_OVERHEAD_BYTES_MAX
        });
        for batch in batches {
            let records = batch
                .into_iter()
                .map(|(_, c)| (c.key, Some(c.value), c.timestamp));
            let mut buf = encode_batch(records)?;
            appends.append(&mut buf, leader_epoch)?;
        }
        let snapshot_end = appends.log().log_end_offset();
        drop(appends);
        if let Some(hook) = self.after_append.get() {
            hook(&partition);
        }
        // 4. Durable before anything it supersedes may go.
        log.flush()?;
        skipped.remove(&index);
        Ok(Some(Compaction {
            sealed_records,
            snapshot_records,
            superseded_below: sealed_end,
            snapshot_end,
            segments_deleted: 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    #[test]
    fn java_hash_matches_known_values() {
        // "".hashCode() == 0, "a".hashCode() == 97, "hello".hashCode() == 99162322
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        // overflows wrap as in Java: "polygenelubricants".hashCode() == Integer.MIN_VALUE
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert!((0..50).contains(&partition_for("my-group", 50)));
    }

    #[test]
    fn keys_and_values_round_trip() {
        let key = encode_key("g", "orders", 7);
        assert_eq!(
            decode_key(key),
            Some(RecordKey::Offset("g".into(), "orders".into(), 7))
        );
        assert_eq!(
            decode_key(encode_group_key("g")),
            Some(RecordKey::Group("g".into()))
        );
        let value = CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp_ms: 99,
        };
        assert_eq!(decode_value(encode_value(&value)), Some(value));
        assert_eq!(decode_key(Bytes::from_static(&[0, 1, 0])), None);
    }

    #[test]
    fn concurrent_commits_leave_memory_as_the_log_replays() {
        // Each round ends with threads racing to commit last; the last one in the log must be
        // the one in memory, or a restart changes the committed offset.
        const ROUNDS: usize = 30;
        const THREADS: i64 = 4;
        const COMMITS: i64 = 10;
        for round in 0..ROUNDS {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = Arc::new(BrokerConfig::for_tests(dir.path()));
            let in_memory = {
                let topics = TopicRegistry::open(Arc::clone(&config)).expect("topics");
                let store = OffsetStore::open(&topics, 1).expect("store");
                std::thread::scope(|scope| {
                    for thread in 0..THREADS {
                        let store = &store;
                        scope.spawn(move || {
                            for i in 0..COMMITS {
                                let offset = CommittedOffset {
                                    offset: thread * 1_000 + i,
                                    leader_epoch: -1,
                                    metadata: String::new(),
                                    commit_timestamp_ms: i,
                                };
                                store
                                    .write("g", &[(("t".into(), 0), Some(offset))], i)
                                    .expect("commit");
                            }
                        });
                    }
                });
                let seen = store.get("g", "t", 0).map(|c| c.offset);
                topics.close_all().expect("close");
                seen
            };
            let topics = TopicRegistry::open(config).expect("topics");
            let store = OffsetStore::open(&topics, 1).expect("store");
            let replayed = store.get("g", "t", 0).map(|c| c.offset);
            assert_eq!(replayed, in_memory, "round {round}");
        }
    }

    fn snapshot(generation: i32) -> GroupSnapshot {
        GroupSnapshot {
            protocol_type: "consumer".into(),
            generation,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            members: vec![
                MemberSnapshot {
                    id: "m-1".into(),
                    instance_id: None,
                    client_id: "c1".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 30_000,
                    session_timeout_ms: 6_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"p0"),
                },
                MemberSnapshot {
                    id: "m-2".into(),
                    instance_id: Some("host-2".into()),
                    client_id: "c2".into(),
                    client_host: "/127.0.0.2".into(),
                    rebalance_timeout_ms: 20_000,
                    session_timeout_ms: 10_000,
                    subscription: Bytes::new(),
                    assignment: Bytes::from_static(b"p1"),
                },
            ],
        }
    }

    #[test]
    fn group_metadata_round_trips() {
        let group = snapshot(7);
        assert_eq!(
            decode_group_value(encode_group_value(&group, 5)),
            Some(group.clone())
        );
        // truncated values are refused, not misread
        let bytes = encode_group_value(&group, 5);
        for cut in 0..bytes.len() {
            assert_eq!(decode_group_value(bytes.slice(..cut)), None, "cut at {cut}");
        }
    }

    #[test]
    fn group_metadata_survives_reopen_and_tombstones_remove_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Arc::new(BrokerConfig::for_tests(dir.path()));
        {
            let topics = TopicRegistry::open(Arc::clone(&config)).expect("topics");
            let store = OffsetStore::open(&topics, 3).expect("store");
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
            topics.close_all().expect("close");
        }
        let topics = TopicRegistry::open(config).expect("topics");
        let store = OffsetStore::open(&topics, 3).expect("store");
        let groups = store.take_replayed_groups();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups.get("g1"), Some(&snapshot(3)));
        assert!(store.take_replayed_groups().is_empty());
    }

    /// A record batch with a valid CRC that claims `count` records and holds none.
    fn batch_claiming(count: i32) -> Vec<u8> {
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
        batch.put_i32(4 + 1 + 4 + after_crc.len() as i32);
        batch.put_i32(0); // partition leader epoch
        batch.put_i8(2); // magic
        batch.put_u32(crc32c::crc32c(&after_crc));
        batch.put_slice(&after_crc);
        batch.to_vec()
    }

    #[test]
    fn replay_skips_a_batch_claiming_more_records_than_it_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Arc::new(BrokerConfig::for_tests(dir.path()));
        let committed = |offset| CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 1,
        };
        {
            let topics = TopicRegistry::open(Arc::clone(&config)).expect("topics");
            let store = OffsetStore::open(&topics, 1).expect("store");
            store
                .write("g", &[(("t".into(), 0), Some(committed(1)))], 1)
                .expect("commit");
            // what a client could produce into the topic: replaying it must neither reserve
            // memory for i32::MAX records nor lose the commits around it
            let partition = topics
                .get(OFFSETS_TOPIC)
                .and_then(|t| t.partition(0))
                .expect("partition");
            partition
                .append(&mut batch_claiming(i32::MAX), 0)
                .expect("append bomb");
            store
                .write("g", &[(("t".into(), 1), Some(committed(2)))], 2)
                .expect("commit");
            topics.close_all().expect("close");
        }
        let topics = TopicRegistry::open(config).expect("topics");
        let store = OffsetStore::open(&topics, 1).expect("store");
        assert_eq!(store.get("g", "t", 0), Some(committed(1)));
        assert_eq!(store.get("g", "t", 1), Some(committed(2)));
    }

    #[test]
    fn commits_and_deletes_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Arc::new(BrokerConfig::for_tests(dir.path()));
        {
            let topics = TopicRegistry::open(Arc::clone(&config)).expect("topics");
            let store = OffsetStore::open(&topics, 3).expect("store");
            let committed = |offset| {
                Some(CommittedOffset {
                    offset,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_timestamp_ms: 1,
                })
            };
            store
                .write(
                    "g1",
                    &[
                        (("t".into(), 0), committed(10)),
                        (("t".into(), 1), committed(20)),
                    ],
                    1,
                )
                .expect("commit");
            store
                .write("g1", &[(("t".into(), 0), committed(11))], 2)
                .expect("commit");
            store
                .write("g2", &[(("t".into(), 0), committed(5))], 3)
                .expect("commit");
            store
                .write("g2", &[(("t".into(), 0), None)], 4)
                .expect("delete");
            topics.close_all().expect("close");
        }
        let topics = TopicRegistry::open(config).expect("topics");
        let store = OffsetStore::open(&topics, 3).expect("store");
        assert_eq!(store.get("g1", "t", 0).map(|c| c.offset), Some(11));
        assert_eq!(store.get("g1", "t", 1).map(|c| c.offset), Some(20));
        assert!(!store.has_group("g2"));
    }
}
