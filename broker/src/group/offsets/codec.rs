//! The record formats of `__consumer_offsets`, Kafka's own: an offset commit is key version
//! 1 (group, topic, partition) with value version 3 (offset, leader epoch, metadata, commit
//! timestamp); a group's metadata is key version 2 (group) with value version 3 (protocol,
//! generation, leader, members and their assignments). A deletion is a tombstone (null
//! value). A group's records all go to partition `abs(java_hash(group)) % partitions`.
//!
//! Also the batch-level reading and writing of those records. Decoding never trusts the
//! bytes: a malformed key, value or batch is skipped (`None`), never a panic or an
//! allocation sized by a length the bytes claim.

use std::collections::HashSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tracing::warn;

use crate::group::membership::{GroupSnapshot, MemberSnapshot};
use crate::log::{LogError, PartitionLog};

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
pub(super) fn implausible_batch(batch: &[u8]) -> Option<&'static str> {
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
pub(super) const SNAPSHOT_BATCH_BYTES_MAX: usize = 256 << 10;
/// Bytes a record adds to a batch besides its key and value (length, attributes, deltas,
/// key and value lengths, header count: varints, at most this many together).
pub(super) const RECORD_OVERHEAD_BYTES_MAX: usize = 32;

/// Calls `apply` with every record of the batches whose base offset is in `[from, until)`,
/// in log order. A batch that cannot be decoded is skipped with a warning, not the rest of
/// the range: its length still says where the next one starts (the log only stores batches
/// whose length and CRC were checked).
pub(super) fn for_each_record(
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
pub(super) fn keys_into(keys: &mut HashSet<RecordKey>) -> impl FnMut(Record) + '_ {
    |record| {
        if let Some(key) = record.key.and_then(decode_key) {
            keys.insert(key);
        }
    }
}

/// A batch of offsets records could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode offset records: {0}")]
pub struct EncodeError(String);

/// One uncompressed v2 batch of `(key, value, timestamp)` records, without producer id.
pub(super) fn encode_batch(
    records: impl IntoIterator<Item = (Bytes, Option<Bytes>, i64)>,
) -> Result<BytesMut, EncodeError> {
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
    .map_err(|e| EncodeError(e.to_string()))?;
    Ok(buf)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

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

    /// A group of two members in `generation`.
    pub(crate) fn snapshot(generation: i32) -> GroupSnapshot {
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
}
