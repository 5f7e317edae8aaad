//! Response encoding that keeps stored record batches out of user space.
//!
//! A fetch response is encoded by the `kafka-protocol` crate like any other message, except
//! that each partition's `records` field is a *placeholder*: a `Bytes` of the right length that
//! points into a static, never-touched region ([`PLACEHOLDER`]). The encoder writes the length
//! prefix itself and then hands the placeholder to `put_slice`; [`SplicingBuf`] recognises the
//! pointer, copies nothing, and records where the file region must be spliced in. The
//! connection then writes the bytes around it and `sendfile`s the region from the segment.

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::Encodable;

use crate::log::FileRegion;

/// Size of the placeholder region: the largest records field sent with zero copies. Larger
/// ones (possible only with a huge `max.message.bytes`) are read into memory instead.
pub const PLACEHOLDER_BYTES: usize = 256 << 20;

/// Zero bytes that are never read or written: only their addresses are used, so the pages of
/// this array are never touched and cost no memory.
static PLACEHOLDER: [u8; PLACEHOLDER_BYTES] = [0; PLACEHOLDER_BYTES];

/// One piece of an encoded response.
#[derive(Debug, Clone)]
pub enum Part {
    Bytes(Bytes),
    File(FileRegion),
}

/// A response frame ready to write: size prefix, header and body, with file regions to send
/// from the page cache.
#[derive(Debug, Clone, Default)]
pub struct EncodedResponse {
    pub parts: Vec<Part>,
}

impl EncodedResponse {
    /// Bytes on the wire, size prefix included.
    pub fn wire_len(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Bytes(b) => b.len() as u64,
                Part::File(r) => r.len,
            })
            .sum()
    }
}

/// Records to be placed in a response: either already in memory, or a file region.
#[derive(Debug, Clone)]
pub struct RecordsSource {
    regions: Vec<FileRegion>,
}

impl RecordsSource {
    pub fn new() -> Self {
        Self {
            regions: Vec::new(),
        }
    }

    /// The value to put in a `records` field for `region`: a placeholder the encoder will
    /// splice, or the bytes themselves when the region is too large for a placeholder.
    ///
    /// # Errors
    /// I/O errors reading a region that must be copied.
    pub fn records_field(&mut self, region: FileRegion) -> std::io::Result<Bytes> {
        let index = self.regions.len();
        let len = region.len as usize;
        if len == 0 {
            return Ok(Bytes::new());
        }
        if index + len > PLACEHOLDER_BYTES {
            return Ok(Bytes::from(region.to_vec()?));
        }
        self.regions.push(region);
        Ok(Bytes::from_static(&PLACEHOLDER[index..index + len]))
    }
}

impl Default for RecordsSource {
    fn default() -> Self {
        Self::new()
    }
}

/// A `ByteBufMut` that copies everything except placeholders, whose positions it records.
struct SplicingBuf {
    bytes: BytesMut,
    /// (position in `bytes`, placeholder index, length)
    splices: Vec<(usize, usize, usize)>,
}

fn placeholder_index(src: &[u8]) -> Option<usize> {
    let start = PLACEHOLDER.as_ptr() as usize;
    let ptr = src.as_ptr() as usize;
    (!src.is_empty() && ptr >= start && ptr + src.len() <= start + PLACEHOLDER_BYTES)
        .then(|| ptr - start)
}

// SAFETY: every method delegates to the inner `BytesMut`, which upholds `BufMut`'s contract;
// `put_slice` only skips the copy for placeholders.
unsafe impl BufMut for SplicingBuf {
    fn remaining_mut(&self) -> usize {
        self.bytes.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { self.bytes.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.bytes.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        match placeholder_index(src) {
            Some(index) => self.splices.push((self.bytes.len(), index, src.len())),
            None => self.bytes.put_slice(src),
        }
    }
}

impl ByteBufMut for SplicingBuf {
    fn offset(&self) -> usize {
        self.bytes.len()
    }

    fn seek(&mut self, offset: usize) {
        self.bytes.seek(offset);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        self.bytes.range(r)
    }
}

/// Errors of response encoding (an encoder refusing a value, which is a broker bug).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode response: {0}")]
pub struct EncodeError(pub String);

/// Encodes a response frame: size prefix, header for `header_version`, body for `version`,
/// with the regions of `records` spliced where their placeholders were encoded.
///
/// # Errors
/// [`EncodeError`] when the encoder refuses a field.
pub fn encode_response<T: Encodable>(
    correlation_id: i32,
    header_version: i16,
    body: &T,
    version: i16,
    records: RecordsSource,
) -> Result<EncodedResponse, EncodeError> {
    let mut buf = SplicingBuf {
        bytes: BytesMut::with_capacity(256),
        splices: Vec::new(),
    };
    buf.bytes.put_i32(0); // size, patched below
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .map_err(|e| EncodeError(e.to_string()))?;
    body.encode(&mut buf, version)
        .map_err(|e| EncodeError(e.to_string()))?;

    let spliced: usize = buf.splices.iter().map(|(_, _, len)| len).sum();
    let size = buf.bytes.len() - 4 + spliced;
    let size = i32::try_from(size).map_err(|_| EncodeError(format!("response of {size} bytes")))?;
    buf.bytes[0..4].copy_from_slice(&size.to_be_bytes());

    let mut bytes = buf.bytes.freeze();
    let mut parts = Vec::with_capacity(buf.splices.len() * 2 + 1);
    let mut consumed = 0;
    let mut regions: Vec<Option<FileRegion>> = records.regions.into_iter().map(Some).collect();
    for (position, index, len) in buf.splices {
        let region = regions
            .get_mut(index)
            .and_then(Option::take)
            .filter(|r| r.len as usize == len)
            .ok_or_else(|| EncodeError(format!("placeholder {index} has no matching region")))?;
        parts.push(Part::Bytes(bytes.split_to(position - consumed)));
        consumed = position;
        parts.push(Part::File(region));
    }
    parts.push(Part::Bytes(bytes));
    parts.retain(|p| !matches!(p, Part::Bytes(b) if b.is_empty()));
    Ok(EncodedResponse { parts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use std::io::Write;
    use std::sync::Arc;

    fn flatten(response: &EncodedResponse) -> Vec<u8> {
        let mut out = Vec::new();
        for part in &response.parts {
            match part {
                Part::Bytes(b) => out.extend_from_slice(b),
                Part::File(r) => out.extend_from_slice(&r.to_vec().expect("read region")),
            }
        }
        out
    }

    #[test]
    fn spliced_fetch_response_equals_a_plain_encoding() {
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(b"....batch-one....batch-two")
            .expect("write");
        let file = Arc::new(file);
        let regions = [
            FileRegion {
                file: Arc::clone(&file),
                position: 4,
                len: 9,
            },
            FileRegion {
                file: Arc::clone(&file),
                position: 17,
                len: 9,
            },
        ];
        for version in [4i16, 11, 12] {
            let mut source = RecordsSource::new();
            let mut partitions = Vec::new();
            let mut plain_partitions = Vec::new();
            for (i, region) in regions.iter().enumerate() {
                let field = source.records_field(region.clone()).expect("field");
                partitions.push(
                    PartitionData::default()
                        .with_partition_index(i as i32)
                        .with_records(Some(field)),
                );
                let real = Bytes::from(region.to_vec().expect("read"));
                plain_partitions.push(
                    PartitionData::default()
                        .with_partition_index(i as i32)
                        .with_records(Some(real)),
                );
            }
            let topic = |p| {
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(p)
            };
            let spliced = FetchResponse::default().with_responses(vec![topic(partitions)]);
            let plain = FetchResponse::default().with_responses(vec![topic(plain_partitions)]);
            let header_version = if version >= 12 { 1 } else { 0 };
            let zero_copy =
                encode_response(7, header_version, &spliced, version, source).expect("encode");
            assert_eq!(
                zero_copy
                    .parts
                    .iter()
                    .filter(|p| matches!(p, Part::File(_)))
                    .count(),
                2
            );
            let copied = encode_response(7, header_version, &plain, version, RecordsSource::new())
                .expect("encode");
            let bytes = flatten(&zero_copy);
            assert_eq!(bytes, flatten(&copied), "v{version}");
            assert_eq!(zero_copy.wire_len(), bytes.len() as u64);
            let size = i32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes"));
            assert_eq!(size as usize, bytes.len() - 4);
            let mut body = Bytes::from(bytes[4..].to_vec());
            let _header = ResponseHeader::decode(&mut body, header_version).expect("header");
            let decoded = FetchResponse::decode(&mut body, version).expect("decodes");
            let records = decoded.responses[0].partitions[1]
                .records
                .clone()
                .expect("records");
            assert_eq!(&records[..], b"batch-two");
        }
    }
}
