//! Kafka wire protocol: request frame parsing, the table of supported API versions, and
//! response encoding. Message types come from the `kafka-protocol` crate; this module only
//! frames them and decides which versions the broker speaks.
//!
//! Every decoding step returns an error instead of panicking, and no request body is decoded
//! before its API key and version are known to be supported.

pub mod apis;
pub mod dispatch;
pub mod encode;
pub mod versions;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;

pub use encode::{EncodedResponse, Part};

/// Why a request frame cannot be served. All of these close the connection (as Kafka does),
/// except an unsupported ApiVersions version, which is answered.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request frame of {0} bytes is too short for a header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{api:?} version {version} is not supported")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        correlation_id: i32,
    },
    #[error("malformed {api:?} v{version} request header: {reason}")]
    BadHeader {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("malformed {api:?} v{version} request: {reason}")]
    BadBody {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// A request whose header is decoded and whose API version is supported.
#[derive(Debug, Clone)]
pub struct RequestFrame {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub version: i16,
    /// The undecoded body.
    pub body: Bytes,
    /// The client's address as Kafka reports it (`/IP`), for group membership.
    pub client_host: String,
    /// Who sent it, on which listener.
    pub identity: std::sync::Arc<crate::security::session::Identity>,
}

impl RequestFrame {
    /// Decodes the body as `T`.
    ///
    /// # Errors
    /// [`FrameError::BadBody`] when the bytes do not decode.
    pub fn decode<T: Decodable>(&self) -> Result<T, FrameError> {
        let mut body = self.body.clone();
        let message = T::decode(&mut body, self.version).map_err(|e| FrameError::BadBody {
            api: self.api_key,
            version: self.version,
            reason: e.to_string(),
        })?;
        if !body.is_empty() {
            // Like Kafka, tolerate bytes after a complete message: some clients send fields
            // of other versions (librdkafka's Metadata v12 without topics carries 3 more).
            tracing::debug!(api = ?self.api_key, version = self.version, trailing = body.len(), "trailing request bytes ignored");
        }
        Ok(message)
    }
}

/// Parses the header of a request frame (the bytes after the 4-byte size prefix).
///
/// # Errors
/// [`FrameError`] for short frames, unknown keys, unsupported versions and bad headers.
pub fn parse_frame(mut frame: Bytes) -> Result<RequestFrame, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::TooShort(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(key).map_err(|()| FrameError::UnknownApiKey(key))?;
    let Some(range) = versions::supported(api_key) else {
        return Err(FrameError::UnknownApiKey(key));
    };
    if version < range.min || version > range.max {
        return Err(FrameError::UnsupportedVersion {
            api: api_key,
            version,
            correlation_id,
        });
    }
    let header_version = api_key.request_header_version(version);
    let header =
        RequestHeader::decode(&mut frame, header_version).map_err(|e| FrameError::BadHeader {
            api: api_key,
            version,
            reason: e.to_string(),
        })?;
    Ok(RequestFrame {
        header,
        api_key,
        version,
        body: frame,
        client_host: String::new(),
        identity: crate::security::session::Identity::anonymous(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::MetadataRequest;
    use kafka_protocol::protocol::{encode_request_header_into_buffer, Encodable, StrBytes};

    fn frame(api: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut buf = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        encode_request_header_into_buffer(&mut buf, &header).expect("header");
        body.encode(&mut buf, version).expect("body");
        buf.freeze()
    }

    #[test]
    fn a_supported_request_parses_and_decodes() {
        let bytes = frame(ApiKey::Metadata, 12, &MetadataRequest::default());
        let request = parse_frame(bytes).expect("parse");
        assert_eq!(request.header.correlation_id, 42);
        assert_eq!(request.api_key, ApiKey::Metadata);
        let _: MetadataRequest = request.decode().expect("decode");
    }

    #[test]
    fn unknown_keys_and_versions_are_refused() {
        let mut bytes =
            BytesMut::from(&frame(ApiKey::Metadata, 12, &MetadataRequest::default())[..]);
        bytes[0..2].copy_from_slice(&999i16.to_be_bytes());
        assert!(matches!(
            parse_frame(bytes.freeze()),
            Err(FrameError::UnknownApiKey(999))
        ));
        let bytes = frame(ApiKey::Metadata, 12, &MetadataRequest::default());
        let mut raw = BytesMut::from(&bytes[..]);
        raw[2..4].copy_from_slice(&99i16.to_be_bytes());
        assert!(matches!(
            parse_frame(raw.freeze()),
            Err(FrameError::UnsupportedVersion {
                version: 99,
                correlation_id: 42,
                ..
            })
        ));
    }

    /// A 14-byte Metadata v4 frame whose topics array claims `count` entries and holds none.
    fn metadata_frame_with_array_count(count: i32) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(ApiKey::Metadata as i16);
        buf.put_i16(4);
        buf.put_i32(7); // correlation id
        buf.put_i16(-1); // null client id
        buf.put_i32(count); // topics
        buf.freeze()
    }

    #[test]
    fn a_huge_array_count_in_a_tiny_frame_is_an_error_not_an_abort() {
        let request = parse_frame(metadata_frame_with_array_count(i32::MAX)).expect("header");
        assert!(request.decode::<MetadataRequest>().is_err());
    }

    #[test]
    fn an_array_count_beyond_the_frame_is_an_error() {
        // A count the allocator can still serve: the decoder runs out of bytes and says so.
        let request = parse_frame(metadata_frame_with_array_count(1000)).expect("header");
        assert!(request.decode::<MetadataRequest>().is_err());
    }

    #[test]
    fn every_truncation_of_a_request_is_an_error_not_a_panic() {
        let bytes = frame(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        );
        for cut in 0..bytes.len() {
            if let Ok(request) = parse_frame(bytes.slice(..cut)) {
                assert!(request.decode::<MetadataRequest>().is_err(), "cut at {cut}");
            }
        }
    }
}
