//! A small encoder of uncompressed Kafka v2 record batches for tests and benchmarks.
//!
//! The broker itself never builds client batches (clients do, and the wire layer uses the
//! `kafka-protocol` crate); this exists so the log engine's tests and benchmarks can make
//! well-formed batches of known content without a network.

use std::ops::Range;

use super::format::{
    batch_size_from_prefix, validate_batch, BatchError, BatchHeader, BATCH_HEADER_SIZE,
    LOG_OVERHEAD, MAGIC_V2,
};

/// What a test batch should contain. Record `i` has timestamp `timestamp + i`, key
/// `k<i>` and a value of `value_bytes` bytes derived from `seed` and `i`.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    pub record_count: usize,
    pub value_bytes: usize,
    pub timestamp: i64,
    pub seed: u64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl BatchSpec {
    pub fn records(record_count: usize) -> Self {
        Self {
            record_count,
            value_bytes: 16,
            timestamp: 1_700_000_000_000,
            seed: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    pub fn value_bytes(mut self, value_bytes: usize) -> Self {
        self.value_bytes = value_bytes;
        self
    }

    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Encodes the batch described by `spec` with base offset 0.
pub fn batch(spec: &BatchSpec) -> Vec<u8> {
    let mut records = Vec::with_capacity(spec.record_count * (spec.value_bytes + 16));
    for i in 0..spec.record_count {
        let key = format!("k{i}");
        let value = value_of(spec.seed, i, spec.value_bytes);
        let mut body = Vec::with_capacity(value.len() + key.len() + 12);
        body.push(0u8); // attributes
        put_varint(&mut body, i as i64); // timestamp delta
        put_varint(&mut body, i as i64); // offset delta
        put_varint(&mut body, key.len() as i64);
        body.extend_from_slice(key.as_bytes());
        put_varint(&mut body, value.len() as i64);
        body.extend_from_slice(&value);
        put_varint(&mut body, 0); // headers
        put_varint(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let count = spec.record_count as i32;
    let last_offset_delta = (count - 1).max(0);
    let max_timestamp = spec.timestamp + i64::from(last_offset_delta);

    let mut out = Vec::with_capacity(BATCH_HEADER_SIZE + records.len());
    out.extend_from_slice(&0i64.to_be_bytes()); // base offset
    let batch_length = (BATCH_HEADER_SIZE - LOG_OVERHEAD + records.len()) as i32;
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes()); // crc placeholder
    out.extend_from_slice(&0i16.to_be_bytes()); // attributes
    out.extend_from_slice(&last_offset_delta.to_be_bytes());
    out.extend_from_slice(&spec.timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&spec.producer_id.to_be_bytes());
    out.extend_from_slice(&spec.producer_epoch.to_be_bytes());
    out.extend_from_slice(&spec.base_sequence.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&records);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The value bytes of record `index` for `seed`: deterministic, so tests can check content.
pub fn value_of(seed: u64, index: usize, len: usize) -> Vec<u8> {
    let mut state = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A batch found in a byte buffer: its header and where it lies.
pub type BatchSpan = (BatchHeader, Range<usize>);

/// Splits bytes read from the log (a region) into whole batches, validating each one's length,
/// magic, record count and CRC32C. Returns each batch's header and byte range.
///
/// # Errors
/// The first invalid or incomplete batch, with the position where it starts.
pub fn split_batches(bytes: &[u8]) -> Result<Vec<BatchSpan>, (usize, BatchError)> {
    let mut out = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let rest = &bytes[position..];
        let size = batch_size_from_prefix(rest, rest.len()).map_err(|e| (position, e))?;
        let header = validate_batch(&rest[..size]).map_err(|e| (position, e))?;
        out.push((header, position..position + size));
        position += size;
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        if zigzag < 0x80 {
            out.push(zigzag as u8);
            return;
        }
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
}
