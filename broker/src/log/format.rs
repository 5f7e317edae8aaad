//! The on-disk format of a partition log's segments: file names, the Kafka v2 record-batch
//! header, and the entry layouts of the offset and time indexes. (The checkpoint files beside
//! the segments have theirs in [`checkpoint`](super::checkpoint).)
//!
//! Everything that gives a byte on disk its meaning lives here, so that the segment, index and
//! recovery code never hard-code an offset into a header. Record batches are stored exactly as
//! Kafka's v2 (magic 2) format defines them; the only bytes the log ever changes in a batch it
//! is given are the base offset and the partition leader epoch, which the CRC does not cover.

use std::path::{Path, PathBuf};

/// Suffix of a segment's record-batch file.
pub const LOG_SUFFIX: &str = "log";
/// Suffix of a segment's sparse offset index.
pub const INDEX_SUFFIX: &str = "index";
/// Suffix of a segment's sparse time index.
pub const TIME_INDEX_SUFFIX: &str = "timeindex";
/// Marker file written by a clean close and removed on open.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
/// Checkpoint of the flushed position of the active segment (the checkpoint files and their
/// framing are [`checkpoint`](super::checkpoint)'s).
pub use super::checkpoint::RECOVERY_POINT_FILE;
/// Digits of the zero-padded base offset in segment file names.
pub const SEGMENT_NAME_DIGITS: usize = 20;

/// Bytes before `batchLength`'s payload: `baseOffset` (8) + `batchLength` (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 record-batch header, records excluded.
pub const BATCH_HEADER_SIZE: usize = 61;
/// The only record-batch format this log stores.
pub const MAGIC_V2: i8 = 2;

// Field positions inside a v2 record batch.
const BASE_OFFSET_POS: usize = 0;
const BATCH_LENGTH_POS: usize = 8;
const LEADER_EPOCH_POS: usize = 12;
const MAGIC_POS: usize = 16;
const CRC_POS: usize = 17;
/// The CRC32C covers everything from `attributes` to the end of the batch.
const CRC_COVERED_FROM: usize = 21;
const ATTRIBUTES_POS: usize = 21;
const LAST_OFFSET_DELTA_POS: usize = 23;
const BASE_TIMESTAMP_POS: usize = 27;
const MAX_TIMESTAMP_POS: usize = 35;
const PRODUCER_ID_POS: usize = 43;
const PRODUCER_EPOCH_POS: usize = 51;
const BASE_SEQUENCE_POS: usize = 53;
const RECORD_COUNT_POS: usize = 57;

/// Mask of the compression codec in the batch attributes.
const COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit: timestamps are LogAppendTime.
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
/// Attribute bit: the batch belongs to a transaction.
const TRANSACTIONAL_BIT: i16 = 0x10;
/// Attribute bit: the batch is a control batch.
const CONTROL_BIT: i16 = 0x20;

/// Size of one offset-index entry: relative offset (u32) + file position (u32).
pub const OFFSET_INDEX_ENTRY_SIZE: usize = 8;
/// Size of one time-index entry: timestamp (i64) + relative offset (u32).
pub const TIME_INDEX_ENTRY_SIZE: usize = 12;

/// What is wrong with a byte range that claims to be a record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: {available} bytes available, {needed} needed")]
    Truncated { available: usize, needed: usize },
    #[error("record batch length {length} is invalid (minimum {min}, maximum {max})")]
    BadLength { length: i64, min: usize, max: usize },
    #[error("unsupported record batch magic {magic} (only v2 is stored)")]
    BadMagic { magic: i8 },
    #[error("record batch CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("record batch declares {record_count} records but a last offset delta of {last_offset_delta}")]
    BadRecordCount {
        record_count: i32,
        last_offset_delta: i32,
    },
}

/// The fixed header of a v2 record batch, read from its first [`BATCH_HEADER_SIZE`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the `batchLength` field; the whole batch is `batch_length + LOG_OVERHEAD`.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header fields without validating them.
    ///
    /// # Errors
    /// [`BatchError::Truncated`] when `bytes` is shorter than a header.
    pub fn parse(bytes: &[u8]) -> Result<Self, BatchError> {
        if bytes.len() < BATCH_HEADER_SIZE {
            return Err(BatchError::Truncated {
                available: bytes.len(),
                needed: BATCH_HEADER_SIZE,
            });
        }
        Ok(Self {
            base_offset: read_i64(bytes, BASE_OFFSET_POS),
            batch_length: read_i32(bytes, BATCH_LENGTH_POS),
            partition_leader_epoch: read_i32(bytes, LEADER_EPOCH_POS),
            magic: bytes[MAGIC_POS] as i8,
            crc: read_i32(bytes, CRC_POS) as u32,
            attributes: read_i16(bytes, ATTRIBUTES_POS),
            last_offset_delta: read_i32(bytes, LAST_OFFSET_DELTA_POS),
            base_timestamp: read_i64(bytes, BASE_TIMESTAMP_POS),
            max_timestamp: read_i64(bytes, MAX_TIMESTAMP_POS),
            producer_id: read_i64(bytes, PRODUCER_ID_POS),
            producer_epoch: read_i16(bytes, PRODUCER_EPOCH_POS),
            base_sequence: read_i32(bytes, BASE_SEQUENCE_POS),
            record_count: read_i32(bytes, RECORD_COUNT_POS),
        })
    }

    /// Total size of the batch on disk, overhead included.
    pub fn size_bytes(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Offset right after the batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// Reads the total on-disk size of the batch starting at `bytes` from its first
/// [`LOG_OVERHEAD`] bytes, checking only that the length is plausible.
///
/// # Errors
/// [`BatchError::Truncated`] without 12 bytes, [`BatchError::BadLength`] when the length field
/// is smaller than a header or larger than `max_batch_bytes`.
pub fn batch_size_from_prefix(bytes: &[u8], max_batch_bytes: usize) -> Result<usize, BatchError> {
    if bytes.len() < LOG_OVERHEAD {
        return Err(BatchError::Truncated {
            available: bytes.len(),
            needed: LOG_OVERHEAD,
        });
    }
    let length = i64::from(read_i32(bytes, BATCH_LENGTH_POS));
    let min = BATCH_HEADER_SIZE - LOG_OVERHEAD;
    if length < min as i64 || length as u64 + LOG_OVERHEAD as u64 > max_batch_bytes as u64 {
        return Err(BatchError::BadLength {
            length,
            min,
            max: max_batch_bytes,
        });
    }
    Ok(length as usize + LOG_OVERHEAD)
}

/// Validates one complete record batch: length, magic, record count and CRC32C.
///
/// `bytes` must be exactly the batch (as sized by its length field).
///
/// # Errors
/// The first [`BatchError`] found.
pub fn validate_batch(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    let size = batch_size_from_prefix(bytes, bytes.len())?;
    if size != bytes.len() {
        return Err(BatchError::BadLength {
            length: i64::from(header.batch_length),
            min: BATCH_HEADER_SIZE - LOG_OVERHEAD,
            max: bytes.len() - LOG_OVERHEAD,
        });
    }
    if header.magic != MAGIC_V2 {
        return Err(BatchError::BadMagic {
            magic: header.magic,
        });
    }
    if header.last_offset_delta < 0
        || header.record_count < 0
        || (header.record_count > 0 && header.record_count - 1 != header.last_offset_delta)
    {
        return Err(BatchError::BadRecordCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    let computed = crc32c::crc32c(&bytes[CRC_COVERED_FROM..]);
    if computed != header.crc {
        return Err(BatchError::BadCrc {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Overwrites the base offset of the batch at the start of `bytes`. The CRC does not cover
/// this field, so the batch stays valid.
pub fn set_base_offset(bytes: &mut [u8], base_offset: i64) {
    bytes[BASE_OFFSET_POS..BASE_OFFSET_POS + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites the partition leader epoch of the batch at the start of `bytes` (not covered by
/// the CRC).
pub fn set_partition_leader_epoch(bytes: &mut [u8], epoch: i32) {
    bytes[LEADER_EPOCH_POS..LEADER_EPOCH_POS + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Finds the first record whose timestamp is at least `target_timestamp` in an uncompressed
/// batch and returns its (offset, timestamp), or `None` when no record qualifies or the batch
/// is compressed (its records cannot be walked without decompression).
pub fn first_offset_at_or_after(batch: &[u8], target_timestamp: i64) -> Option<(i64, i64)> {
    let header = BatchHeader::parse(batch).ok()?;
    if header.compression() != 0 {
        return None;
    }
    let mut pos = BATCH_HEADER_SIZE;
    for _ in 0..header.record_count {
        let (length, n) = read_varint(batch.get(pos..)?)?;
        let record_start = pos + n;
        let record_end = record_start.checked_add(usize::try_from(length).ok()?)?;
        let record = batch.get(record_start..record_end)?;
        // attributes: int8, timestampDelta: varlong, offsetDelta: varint
        let (timestamp_delta, n1) = read_varint(record.get(1..)?)?;
        let (offset_delta, _) = read_varint(record.get(1 + n1..)?)?;
        let timestamp = header.base_timestamp.saturating_add(timestamp_delta);
        if timestamp >= target_timestamp {
            return Some((header.base_offset + offset_delta, timestamp));
        }
        pos = record_end;
    }
    None
}

/// Reads a zig-zag varint (up to 64 bits); returns the value and the bytes consumed.
fn read_varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Some((decoded, i + 1));
        }
    }
    None
}

/// Name of a segment file: the base offset zero-padded to 20 digits, then the suffix.
pub fn segment_file_name(base_offset: i64, suffix: &str) -> String {
    format!(
        "{base_offset:0width$}.{suffix}",
        width = SEGMENT_NAME_DIGITS
    )
}

/// Path of a segment file inside a partition directory.
pub fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(segment_file_name(base_offset, suffix))
}

/// Parses a segment file name back into (base offset, suffix); `None` for other files.
pub fn parse_segment_file_name(name: &str) -> Option<(i64, &str)> {
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != SEGMENT_NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let base_offset = stem.parse::<i64>().ok()?;
    Some((base_offset, suffix))
}

fn read_i16(bytes: &[u8], pos: usize) -> i16 {
    i16::from_be_bytes([bytes[pos], bytes[pos + 1]])
}

fn read_i32(bytes: &[u8], pos: usize) -> i32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[pos..pos + 4]);
    i32::from_be_bytes(raw)
}

fn read_i64(bytes: &[u8], pos: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[pos..pos + 8]);
    i64::from_be_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_batches::{batch, BatchSpec};

    #[test]
    fn segment_names_round_trip() {
        for offset in [0, 1, 42, i64::MAX] {
            let name = segment_file_name(offset, LOG_SUFFIX);
            assert_eq!(name.len(), SEGMENT_NAME_DIGITS + 4);
            assert_eq!(parse_segment_file_name(&name), Some((offset, LOG_SUFFIX)));
        }
        assert_eq!(
            segment_file_name(7, INDEX_SUFFIX),
            "00000000000000000007.index"
        );
        assert_eq!(parse_segment_file_name("7.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000x.log"), None);
        assert_eq!(parse_segment_file_name(RECOVERY_POINT_FILE), None);
    }

    #[test]
    fn a_well_formed_batch_validates() {
        let bytes = batch(&BatchSpec::records(3).timestamp(1000));
        let header = validate_batch(&bytes).expect("valid");
        assert_eq!(header.record_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.size_bytes(), bytes.len());
        assert_eq!(header.max_timestamp, 1002);
    }

    #[test]
    fn a_flipped_payload_byte_fails_the_crc() {
        let mut bytes = batch(&BatchSpec::records(2));
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        assert!(matches!(
            validate_batch(&bytes),
            Err(BatchError::BadCrc { .. })
        ));
    }

    #[test]
    fn wrong_magic_is_refused() {
        let mut bytes = batch(&BatchSpec::records(1));
        bytes[MAGIC_POS] = 1;
        assert_eq!(
            validate_batch(&bytes),
            Err(BatchError::BadMagic { magic: 1 })
        );
    }

    #[test]
    fn length_field_must_match_the_bytes() {
        let mut bytes = batch(&BatchSpec::records(1));
        bytes.push(0);
        assert!(matches!(
            validate_batch(&bytes),
            Err(BatchError::BadLength { .. })
        ));
        assert!(matches!(
            validate_batch(&bytes[..20]),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn base_offset_rewrite_keeps_the_crc_valid() {
        let mut bytes = batch(&BatchSpec::records(4));
        set_base_offset(&mut bytes, 1234);
        set_partition_leader_epoch(&mut bytes, 9);
        let header = validate_batch(&bytes).expect("still valid");
        assert_eq!(header.base_offset, 1234);
        assert_eq!(header.partition_leader_epoch, 9);
        assert_eq!(header.last_offset(), 1237);
    }

    #[test]
    fn timestamp_search_walks_uncompressed_records() {
        let mut bytes = batch(&BatchSpec::records(5).timestamp(100));
        set_base_offset(&mut bytes, 10);
        // record i has timestamp 100 + i
        assert_eq!(first_offset_at_or_after(&bytes, 0), Some((10, 100)));
        assert_eq!(first_offset_at_or_after(&bytes, 102), Some((12, 102)));
        assert_eq!(first_offset_at_or_after(&bytes, 104), Some((14, 104)));
        assert_eq!(first_offset_at_or_after(&bytes, 105), None);
    }
}
