//! Committed offsets of consumer groups, kept in memory and written to the internal
//! `__consumer_offsets` topic so they survive restarts.
//!
//! Records use Kafka's own formats: key version 1 (group, topic, partition) and value version 3
//! (offset, leader epoch, metadata, commit timestamp); a deletion is a tombstone (null value).
//! A group's records all go to partition `abs(java_hash(group)) % partitions`, so replaying
//! each partition in order rebuilds the latest state of its groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use parking_lot::{Mutex, RwLock};
use tracing::{info, warn};

use crate::log::{LogError, ReadLimits};
use crate::topics::{AppendError, Partition, Topic, TopicError, TopicRegistry};

/// Name of the internal offsets topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
const KEY_VERSION_OFFSET_COMMIT: i16 = 1;
const VALUE_VERSION: i16 = 3;

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
}

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

/// Decodes an offset-commit key; `None` for other record kinds (e.g. group metadata).
pub fn decode_key(mut key: Bytes) -> Option<(String, String, i32)> {
    if key.remaining() < 2 || key.get_i16() > KEY_VERSION_OFFSET_COMMIT {
        return None;
    }
    let group = get_string(&mut key)?;
    let topic = get_string(&mut key)?;
    (key.remaining() >= 4).then(|| (group, topic, key.get_i32()))
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

type GroupOffsets = BTreeMap<(String, i32), CommittedOffset>;

/// The committed offsets of every group, backed by `__consumer_offsets`.
pub struct OffsetStore {
    topic: Arc<Topic>,
    offsets: RwLock<HashMap<String, GroupOffsets>>,
    /// One per offsets partition, held from append to in-memory update, so that memory
    /// applies a partition's writes in log order (what a restart replays).
    write_order: Vec<Mutex<()>>,
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
                let mut configs = BTreeMap::new();
                configs.insert("cleanup.policy".to_string(), "compact".to_string());
                configs.insert("segment.bytes".to_string(), (100 << 20).to_string());
                topics.create(OFFSETS_TOPIC, partitions, 1, configs)?
            }
        };
        let write_order = (0..topic.partition_count())
            .map(|_| Mutex::new(()))
            .collect();
        let store = Self {
            topic,
            offsets: RwLock::new(HashMap::new()),
            write_order,
        };
        let mut records = 0usize;
        for partition in store.topic.partitions() {
            records += store.replay(&partition)?;
        }
        info!(
            groups = store.offsets.read().len(),
            records, "loaded committed offsets"
        );
        Ok(store)
    }

    fn replay(&self, partition: &Partition) -> Result<usize, OffsetStoreError> {
        let log = &partition.log;
        let mut offset = log.log_start_offset();
        let mut applied = 0;
        while offset < log.log_end_offset() {
            let read = log.read(offset, ReadLimits::bytes(4 << 20))?;
            let Some(region) = read.region else { break };
            let bytes = region
                .to_vec()
                .map_err(|e| LogError::io("replay offsets", log.dir(), e))?;
            let mut buf = Bytes::from(bytes);
            while buf.has_remaining() {
                match RecordBatchDecoder::decode(&mut buf) {
                    Ok(set) => {
                        for record in set.records {
                            applied += usize::from(self.apply(record));
                        }
                    }
                    Err(e) => {
                        warn!(partition = partition.index, error = %e, "undecodable offsets batch skipped");
                        break;
                    }
                }
            }
            if read.next_offset <= offset {
                break;
            }
            offset = read.next_offset;
        }
        Ok(applied)
    }

    fn apply(&self, record: Record) -> bool {
        let Some((group, topic, partition)) = record.key.and_then(decode_key) else {
            return false;
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
        self.topic.partition_count()
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
    ) -> Result<(), OffsetStoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let index = partition_for(group, self.partition_count());
        let partition = self.topic.partition(index).ok_or_else(|| {
            OffsetStoreError::Encode(format!("offsets partition {index} is missing"))
        })?;
        let records: Vec<Record> = entries
            .iter()
            .enumerate()
            .map(|(i, ((topic, p), value))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: now_ms,
                key: Some(encode_key(group, topic, *p)),
                value: value.as_ref().map(encode_value),
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
        let slot = index as usize % self.write_order.len().max(1);
        let _in_log_order = self.write_order.get(slot).map(Mutex::lock);
        partition.append(&mut buf, 0)?;
        partition.log.flush()?;
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
        Ok(())
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
        assert_eq!(decode_key(key), Some(("g".into(), "orders".into(), 7)));
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
