//! The connection a follower keeps to a partition leader: Kafka's wire protocol over one TCP
//! stream, with message types from the `kafka-protocol` crate.
//!
//! It exists so that replication speaks to a leader exactly as Apache Kafka's followers do:
//! the same Fetch (replica id set, topic ids from v13) and OffsetForLeaderEpoch requests, with
//! versions negotiated through ApiVersions at connect. A tokafka follower can therefore
//! replicate from a tokafka leader or from Apache Kafka.
//!
//! Invariants:
//! - one request is in flight at a time (`&mut self`); each response must carry the
//!   correlation id of the request it answers;
//! - every read is bounded: a response frame longer than
//!   [`ConnectionConfig::max_response_bytes`] is refused before anything is allocated, and no
//!   byte from the network can make this module panic;
//! - after any failure once a request has been written (I/O error, timeout, bad frame,
//!   undecodable response, or a request future dropped mid-way) the stream is no longer known
//!   to be at a frame boundary, so the connection refuses further requests with
//!   [`ClientError::Broken`]; the caller reconnects;
//! - record batches are returned as the leader sent them, byte for byte, never decoded.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Message, Request, StrBytes, VersionRange,
};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;
use uuid::Uuid;

/// Fetch versions this client sends. 9 is the first carrying `current_leader_epoch` (without
/// it a leader cannot fence a follower of a stale epoch); 17 is the last whose fields this
/// client fills knowingly (18 adds the follower's high watermark).
pub const FETCH_VERSIONS: VersionRange = VersionRange { min: 9, max: 17 };

/// OffsetForLeaderEpoch versions this client sends: 3 is the first carrying the replica id,
/// without which the leader takes the request for a consumer's.
pub const OFFSET_FOR_LEADER_EPOCH_VERSIONS: VersionRange = VersionRange { min: 3, max: 4 };

/// The name and version this client reports in ApiVersions v3+ (Kafka validates both).
const SOFTWARE_NAME: &str = "tokafka-follower";
const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Size of the length prefix of every frame.
const LENGTH_PREFIX_BYTES: usize = 4;

/// Smallest response frame: a correlation id.
const RESPONSE_MIN_BYTES: usize = 4;

/// How to reach and talk to a leader.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// `client_id` of every request header (shows up in the leader's logs and quotas).
    pub client_id: String,
    /// Bound on the TCP connect plus the ApiVersions exchange.
    pub connect_timeout: Duration,
    /// Bound on one request: writing it and reading its whole response. A fetch adds its own
    /// `max_wait_ms` to this, since the leader may hold it that long.
    pub request_timeout: Duration,
    /// Largest response frame accepted (size prefix excluded). Must exceed the fetch
    /// `max_bytes` asked for, plus some room for the response's own fields.
    pub max_response_bytes: usize,
}

impl ConnectionConfig {
    /// Defaults in line with Kafka's follower settings (`replica.socket.timeout.ms` 30 s,
    /// `socket.request.max.bytes` 100 MiB).
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 100 << 20,
        }
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }
}

/// Why a request to the leader failed. Each variant names the leader's address.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("I/O with {address}: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
    #[error("{operation} with {address} timed out after {timeout:?}")]
    Timeout {
        address: String,
        operation: &'static str,
        timeout: Duration,
    },
    #[error("response frame of {size} bytes from {address} exceeds the limit of {max} bytes")]
    FrameTooLarge {
        address: String,
        size: usize,
        max: usize,
    },
    #[error("{api:?} response from {address} has correlation id {actual}, expected {expected}")]
    CorrelationMismatch {
        address: String,
        api: ApiKey,
        expected: i32,
        actual: i32,
    },
    #[error("cannot decode {api:?} v{version} response from {address}: {reason}")]
    Decode {
        address: String,
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("cannot encode {api:?} v{version} request for {address}: {reason}")]
    Encode {
        address: String,
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("malformed response from {address}: {reason}")]
    Protocol { address: String, reason: String },
    #[error(
        "{address} supports no {api:?} version this client speaks \
         (client {client_min}..={client_max}, leader {leader:?})"
    )]
    UnsupportedVersion {
        address: String,
        api: ApiKey,
        client_min: i16,
        client_max: i16,
        /// The leader's advertised (min, max), or `None` when it does not serve the API.
        leader: Option<(i16, i16)>,
    },
    #[error("ApiVersions to {address} failed with error code {error_code}")]
    ApiVersions { address: String, error_code: i16 },
    #[error("connection to {address} is unusable after an earlier failed or cancelled request")]
    Broken { address: String },
}

/// The version chosen for one API, with what the leader advertised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Negotiated {
    /// The leader's advertised range, `None` when it does not serve the API.
    pub leader: Option<VersionRange>,
    /// The highest version both sides speak, `None` when there is none.
    pub chosen: Option<i16>,
}

/// Versions negotiated at connect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NegotiatedVersions {
    pub fetch: Negotiated,
    pub offset_for_leader_epoch: Negotiated,
}

/// The highest version in both `client` and `leader`, if any.
pub fn pick_version(client: VersionRange, leader: Option<VersionRange>) -> Option<i16> {
    let common = client.intersect(&leader?);
    (!common.is_empty()).then_some(common.max)
}

/// What a follower's Fetch asks for, apart from its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchParams {
    /// This broker's id (`-1` fetches as a consumer would). Sent in `replica_id` below
    /// Fetch v15 and in `replica_state` from v15.
    pub replica_id: i32,
    /// This broker's epoch in the metadata quorum (Fetch v15+), `-1` when unknown.
    pub replica_epoch: i64,
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
}

/// One partition of a Fetch. The topic is named both ways: by id from Fetch v13, by name below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFetch {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: i32,
    pub fetch_offset: i64,
    /// The leader epoch the follower believes current; the leader fences a mismatch.
    pub current_leader_epoch: i32,
    /// Epoch of the last batch the follower holds (sent from Fetch v12, where the leader
    /// answers a divergence with `diverging_epoch`); `None` when the log is empty.
    pub last_fetched_epoch: Option<i32>,
    /// The follower's log start offset.
    pub log_start_offset: i64,
    pub partition_max_bytes: i32,
}

/// An epoch and the offset where it ends on the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: i32,
    pub end_offset: i64,
}

/// One partition of a Fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: i32,
    /// Kafka error code (0 = none; see `kafka_protocol::ResponseError`).
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// `-1` when the leader does not say (it always does from Fetch v5).
    pub log_start_offset: i64,
    /// Set by the leader (Fetch v12+) when the follower's log diverges from its own: the
    /// follower truncates to `end_offset` of this epoch before fetching again.
    pub diverging_epoch: Option<EpochEnd>,
    /// Record batches exactly as the leader sent them (possibly ending in a partial batch).
    pub records: Bytes,
}

/// A whole Fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOutcome {
    /// Top-level error (fetch sessions, Fetch v7+), 0 when none.
    pub error_code: i16,
    pub throttle_time_ms: i32,
    pub partitions: Vec<FetchedPartition>,
}

/// One partition of an OffsetForLeaderEpoch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochQuery {
    pub topic: String,
    pub partition: i32,
    /// The leader epoch the follower believes current; the leader fences a mismatch.
    pub current_leader_epoch: i32,
    /// The epoch whose end offset is asked for.
    pub leader_epoch: i32,
}

/// One partition of an OffsetForLeaderEpoch response: the largest epoch the leader holds that
/// is at most the one asked for, and the offset where it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionEpochEnd {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    pub leader_epoch: i32,
    pub end_offset: i64,
}

/// A follower's connection to a leader. See the module documentation for its invariants.
#[derive(Debug)]
pub struct LeaderConnection {
    stream: TcpStream,
    address: String,
    config: ConnectionConfig,
    client_id: StrBytes,
    next_correlation_id: i32,
    versions: NegotiatedVersions,
    /// Set while a request is outstanding and left set when it fails or is dropped.
    broken: bool,
}

impl LeaderConnection {
    /// Connects to `address` (`host:port`) and negotiates versions with ApiVersions.
    ///
    /// # Errors
    /// [`ClientError::Connect`], [`ClientError::Timeout`] past `config.connect_timeout`, and
    /// any error of the ApiVersions exchange.
    ///
    /// # Cancel safety
    /// Dropping the future closes the half-open connection; nothing else is affected.
    pub async fn connect(address: &str, config: ConnectionConfig) -> Result<Self, ClientError> {
        let timeout = config.connect_timeout;
        tokio::time::timeout(timeout, Self::connect_unbounded(address, config))
            .await
            .map_err(|_| ClientError::Timeout {
                address: address.to_string(),
                operation: "connect",
                timeout,
            })?
    }

    async fn connect_unbounded(
        address: &str,
        config: ConnectionConfig,
    ) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|source| ClientError::Connect {
                address: address.to_string(),
                source,
            })?;
        stream
            .set_nodelay(true)
            .map_err(|source| ClientError::Connect {
                address: address.to_string(),
                source,
            })?;
        let unknown = Negotiated {
            leader: None,
            chosen: None,
        };
        let mut connection = Self {
            stream,
            address: address.to_string(),
            client_id: StrBytes::from_string(config.client_id.clone()),
            config,
            next_correlation_id: 0,
            versions: NegotiatedVersions {
                fetch: unknown,
                offset_for_leader_epoch: unknown,
            },
            broken: false,
        };
        connection.versions = connection.negotiate().await?;
        debug!(
            address,
            fetch_version = ?connection.versions.fetch.chosen,
            offset_for_leader_epoch_version = ?connection.versions.offset_for_leader_epoch.chosen,
            "connected to leader"
        );
        Ok(connection)
    }

    /// The address this connection was opened with.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The versions negotiated at connect.
    pub fn versions(&self) -> NegotiatedVersions {
        self.versions
    }

    /// Sends a follower Fetch and returns each partition's answer, records untouched.
    ///
    /// Sessionless (full) fetch at `READ_UNCOMMITTED`. Fields a negotiated version cannot
    /// carry are left out (`last_fetched_epoch` below v12).
    ///
    /// # Errors
    /// [`ClientError::UnsupportedVersion`] when no Fetch version is shared; transport,
    /// framing and decoding errors; [`ClientError::Protocol`] when the response names a topic
    /// that was not asked for. Partition errors are in [`FetchedPartition::error_code`].
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped fetch leaves the connection [`ClientError::Broken`].
    pub async fn fetch(
        &mut self,
        params: &FetchParams,
        partitions: &[PartitionFetch],
    ) -> Result<FetchOutcome, ClientError> {
        let version = self.require(ApiKey::Fetch, FETCH_VERSIONS, self.versions.fetch)?;
        let request = fetch_request(params, partitions, version);
        let wait = Duration::from_millis(u64::try_from(params.max_wait_ms).unwrap_or(0));
        let timeout = self.config.request_timeout + wait;
        let response: FetchResponse = self.call(ApiKey::Fetch, &request, version, timeout).await?;
        let fetched =
            fetched_partitions(response.responses, partitions, version).map_err(|reason| {
                self.broken = true;
                ClientError::Protocol {
                    address: self.address.clone(),
                    reason,
                }
            })?;
        Ok(FetchOutcome {
            error_code: response.error_code,
            throttle_time_ms: response.throttle_time_ms,
            partitions: fetched,
        })
    }

    /// Asks the leader where each queried epoch ends, as a follower (`replica_id`) does
    /// before truncating its log after a leader change.
    ///
    /// # Errors
    /// [`ClientError::UnsupportedVersion`] when the leader serves no version this client
    /// speaks; transport, framing and decoding errors. Partition errors are in
    /// [`PartitionEpochEnd::error_code`].
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped request leaves the connection [`ClientError::Broken`].
    pub async fn offset_for_leader_epoch(
        &mut self,
        replica_id: i32,
        queries: &[EpochQuery],
    ) -> Result<Vec<PartitionEpochEnd>, ClientError> {
        let version = self.require(
            ApiKey::OffsetForLeaderEpoch,
            OFFSET_FOR_LEADER_EPOCH_VERSIONS,
            self.versions.offset_for_leader_epoch,
        )?;
        let request = epoch_request(replica_id, queries);
        let timeout = self.config.request_timeout;
        let response: OffsetForLeaderEpochResponse = self
            .call(ApiKey::OffsetForLeaderEpoch, &request, version, timeout)
            .await?;
        Ok(epoch_ends(response))
    }

    /// The negotiated version of `api`, or why there is none.
    fn require(
        &self,
        api: ApiKey,
        client: VersionRange,
        negotiated: Negotiated,
    ) -> Result<i16, ClientError> {
        negotiated
            .chosen
            .ok_or_else(|| ClientError::UnsupportedVersion {
                address: self.address.clone(),
                api,
                client_min: client.min,
                client_max: client.max,
                leader: negotiated.leader.map(|r| (r.min, r.max)),
            })
    }

    /// ApiVersions at the highest version this client knows, once more at the leader's
    /// highest if it refuses that one (Kafka then answers v0 with its own ranges).
    async fn negotiate(&mut self) -> Result<NegotiatedVersions, ClientError> {
        let mut version = ApiVersionsRequest::VERSIONS.max;
        let response = loop {
            let response = self.api_versions(version).await?;
            if response.error_code != ResponseError::UnsupportedVersion.code() {
                break response;
            }
            let leader = advertised(&response, ApiKey::ApiVersions);
            match pick_version(ApiVersionsRequest::VERSIONS, leader) {
                Some(lower) if lower < version => version = lower,
                _ => break response,
            }
        };
        if response.error_code != 0 {
            return Err(ClientError::ApiVersions {
                address: self.address.clone(),
                error_code: response.error_code,
            });
        }
        let negotiated = |api, client| {
            let leader = advertised(&response, api);
            Negotiated {
                leader,
                chosen: pick_version(client, leader),
            }
        };
        Ok(NegotiatedVersions {
            fetch: negotiated(ApiKey::Fetch, FETCH_VERSIONS),
            offset_for_leader_epoch: negotiated(
                ApiKey::OffsetForLeaderEpoch,
                OFFSET_FOR_LEADER_EPOCH_VERSIONS,
            ),
        })
    }

    /// One ApiVersions exchange. An `UNSUPPORTED_VERSION` answer is encoded as v0 whatever
    /// version was asked for, so the error code is read first to pick the decoding version.
    async fn api_versions(&mut self, version: i16) -> Result<ApiVersionsResponse, ClientError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(SOFTWARE_NAME))
            .with_client_software_version(StrBytes::from_static_str(SOFTWARE_VERSION));
        let api = ApiKey::ApiVersions;
        let timeout = self.config.connect_timeout;
        let body = self.call_raw(api, &request, version, timeout).await?;
        let refused =
            body.get(..2) == Some(&ResponseError::UnsupportedVersion.code().to_be_bytes());
        let decode_version = if refused { 0 } else { version };
        self.decode_body(api, body, decode_version)
    }

    /// Sends `request` at `version` and decodes its response.
    async fn call<R: Request>(
        &mut self,
        api: ApiKey,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, ClientError> {
        let body = self.call_raw(api, request, version, timeout).await?;
        self.decode_body(api, body, version)
    }

    /// Sends `request` and returns the body of its response, the header checked and removed.
    async fn call_raw<R: Request>(
        &mut self,
        api: ApiKey,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        debug_assert_eq!(api as i16, R::KEY, "the API key matches the request type");
        if self.broken {
            return Err(ClientError::Broken {
                address: self.address.clone(),
            });
        }
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(request, version, correlation_id, &self.client_id).map_err(
            |reason| ClientError::Encode {
                address: self.address.clone(),
                api,
                version,
                reason,
            },
        )?;
        debug!(address = %self.address, ?api, version, correlation_id, request_bytes = frame.len(), "request to leader");
        self.broken = true;
        let mut response = tokio::time::timeout(timeout, self.exchange(&frame))
            .await
            .map_err(|_| ClientError::Timeout {
                address: self.address.clone(),
                operation: "request",
                timeout,
            })??;
        let header_version = R::Response::header_version(version);
        let header = ResponseHeader::decode(&mut response, header_version).map_err(|e| {
            ClientError::Decode {
                address: self.address.clone(),
                api,
                version,
                reason: format!("response header: {e}"),
            }
        })?;
        if header.correlation_id != correlation_id {
            return Err(ClientError::CorrelationMismatch {
                address: self.address.clone(),
                api,
                expected: correlation_id,
                actual: header.correlation_id,
            });
        }
        Ok(response)
    }

    /// Decodes a response body; the connection stays usable only if it decodes.
    fn decode_body<T: Decodable>(
        &mut self,
        api: ApiKey,
        mut body: Bytes,
        version: i16,
    ) -> Result<T, ClientError> {
        let message = T::decode(&mut body, version).map_err(|e| ClientError::Decode {
            address: self.address.clone(),
            api,
            version,
            reason: e.to_string(),
        })?;
        if !body.is_empty() {
            debug!(address = %self.address, ?api, version, trailing = body.len(), "trailing response bytes ignored");
        }
        self.broken = false;
        Ok(message)
    }

    /// Writes one frame and reads one whole response frame (size prefix removed).
    async fn exchange(&mut self, frame: &[u8]) -> Result<Bytes, ClientError> {
        let io = |source| ClientError::Io {
            address: self.address.clone(),
            source,
        };
        self.stream.write_all(frame).await.map_err(io)?;
        let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
        self.stream.read_exact(&mut prefix).await.map_err(io)?;
        let len = response_length(
            i32::from_be_bytes(prefix),
            self.config.max_response_bytes,
            &self.address,
        )?;
        // Grown as bytes arrive: a length prefix alone reserves at most 1 MiB.
        let mut body = Vec::with_capacity(len.min(1 << 20));
        (&mut self.stream)
            .take(len as u64)
            .read_to_end(&mut body)
            .await
            .map_err(io)?;
        if body.len() < len {
            let eof = std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("response frame ended after {} of {len} bytes", body.len()),
            );
            return Err(io(eof));
        }
        Ok(Bytes::from(body))
    }
}

/// The body length announced by a response's size prefix, if acceptable.
fn response_length(size: i32, max: usize, address: &str) -> Result<usize, ClientError> {
    let Ok(len) = usize::try_from(size) else {
        return Err(ClientError::Protocol {
            address: address.to_string(),
            reason: format!("negative response frame size {size}"),
        });
    };
    if len < RESPONSE_MIN_BYTES {
        return Err(ClientError::Protocol {
            address: address.to_string(),
            reason: format!("response frame of {len} bytes has no room for a correlation id"),
        });
    }
    if len > max {
        return Err(ClientError::FrameTooLarge {
            address: address.to_string(),
            size: len,
            max,
        });
    }
    Ok(len)
}

/// A request frame: size prefix, header for the request's header version, body.
fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
) -> Result<Bytes, String> {
    let mut buf = BytesMut::with_capacity(128);
    buf.put_i32(0); // size, patched below
    RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()))
        .encode(&mut buf, R::header_version(version))
        .map_err(|e| format!("header: {e}"))?;
    request
        .encode(&mut buf, version)
        .map_err(|e| e.to_string())?;
    let size = buf.len() - LENGTH_PREFIX_BYTES;
    let size = i32::try_from(size).map_err(|_| format!("request of {size} bytes"))?;
    buf[..LENGTH_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// The range the leader advertised for `api`.
fn advertised(response: &ApiVersionsResponse, api: ApiKey) -> Option<VersionRange> {
    response
        .api_keys
        .iter()
        .find(|k| k.api_key == api as i16)
        .map(|k| VersionRange {
            min: k.min_version,
            max: k.max_version,
        })
}

/// The Fetch a follower sends: partitions grouped by topic in the order given.
fn fetch_request(
    params: &FetchParams,
    partitions: &[PartitionFetch],
    version: i16,
) -> FetchRequest {
    let mut topics: IndexMap<(&str, Uuid), Vec<FetchPartition>> = IndexMap::new();
    for p in partitions {
        let mut partition = FetchPartition::default()
            .with_partition(p.partition)
            .with_current_leader_epoch(p.current_leader_epoch)
            .with_fetch_offset(p.fetch_offset)
            .with_log_start_offset(p.log_start_offset)
            .with_partition_max_bytes(p.partition_max_bytes);
        if version >= 12 {
            partition = partition.with_last_fetched_epoch(p.last_fetched_epoch.unwrap_or(-1));
        }
        topics
            .entry((p.topic.as_str(), p.topic_id))
            .or_default()
            .push(partition);
    }
    let topics = topics
        .into_iter()
        .map(|((name, id), partitions)| {
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(name.to_string())))
                .with_topic_id(id)
                .with_partitions(partitions)
        })
        .collect();
    let request = FetchRequest::default()
        .with_max_wait_ms(params.max_wait_ms)
        .with_min_bytes(params.min_bytes)
        .with_max_bytes(params.max_bytes)
        .with_isolation_level(0)
        .with_topics(topics);
    if version >= 15 {
        request.with_replica_state(
            ReplicaState::default()
                .with_replica_id(BrokerId(params.replica_id))
                .with_replica_epoch(params.replica_epoch),
        )
    } else {
        request.with_replica_id(BrokerId(params.replica_id))
    }
}

/// Flattens a Fetch response, naming each topic both ways from the request. From v13 the
/// leader names topics by id, below by name.
fn fetched_partitions(
    topics: Vec<kafka_protocol::messages::fetch_response::FetchableTopicResponse>,
    requested: &[PartitionFetch],
    version: i16,
) -> Result<Vec<FetchedPartition>, String> {
    let mut fetched = Vec::new();
    for topic in topics {
        let known = if version >= 13 {
            requested.iter().find(|p| p.topic_id == topic.topic_id)
        } else {
            requested.iter().find(|p| p.topic == topic.topic.0.as_str())
        };
        let Some(known) = known else {
            return Err(format!(
                "fetch response names a topic not asked for ({:?} / {})",
                topic.topic.0.as_str(),
                topic.topic_id
            ));
        };
        for data in topic.partitions {
            let divergence = data.diverging_epoch;
            fetched.push(FetchedPartition {
                topic: known.topic.clone(),
                topic_id: known.topic_id,
                partition: data.partition_index,
                error_code: data.error_code,
                high_watermark: data.high_watermark,
                last_stable_offset: data.last_stable_offset,
                log_start_offset: data.log_start_offset,
                diverging_epoch: (version >= 12 && divergence.epoch >= 0).then_some(EpochEnd {
                    epoch: divergence.epoch,
                    end_offset: divergence.end_offset,
                }),
                records: data.records.unwrap_or_default(),
            });
        }
    }
    Ok(fetched)
}

/// The OffsetForLeaderEpoch a follower sends: partitions grouped by topic in the order given.
fn epoch_request(replica_id: i32, queries: &[EpochQuery]) -> OffsetForLeaderEpochRequest {
    let mut topics: IndexMap<&str, Vec<OffsetForLeaderPartition>> = IndexMap::new();
    for q in queries {
        topics.entry(q.topic.as_str()).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(q.partition)
                .with_current_leader_epoch(q.current_leader_epoch)
                .with_leader_epoch(q.leader_epoch),
        );
    }
    let topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_string(name.to_string())))
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(replica_id))
        .with_topics(topics)
}

/// Flattens an OffsetForLeaderEpoch response.
fn epoch_ends(response: OffsetForLeaderEpochResponse) -> Vec<PartitionEpochEnd> {
    response
        .topics
        .into_iter()
        .flat_map(|topic| {
            let name = topic.topic.0.to_string();
            topic
                .partitions
                .into_iter()
                .map(move |p| PartitionEpochEnd {
                    topic: name.clone(),
                    partition: p.partition,
                    error_code: p.error_code,
                    leader_epoch: p.leader_epoch,
                    end_offset: p.end_offset,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(min: i16, max: i16) -> Option<VersionRange> {
        Some(VersionRange { min, max })
    }

    #[test]
    fn the_highest_common_version_is_picked() {
        assert_eq!(pick_version(FETCH_VERSIONS, range(4, 12)), Some(12));
        assert_eq!(pick_version(FETCH_VERSIONS, range(4, 18)), Some(17));
        assert_eq!(pick_version(FETCH_VERSIONS, range(4, 8)), None);
        assert_eq!(pick_version(FETCH_VERSIONS, None), None);
        assert_eq!(pick_version(FETCH_VERSIONS, range(12, 4)), None);
    }

    #[test]
    fn frame_sizes_out_of_bounds_are_refused() {
        assert!(matches!(
            response_length(-1, 1024, "a"),
            Err(ClientError::Protocol { .. })
        ));
        assert!(matches!(
            response_length(3, 1024, "a"),
            Err(ClientError::Protocol { .. })
        ));
        assert!(matches!(
            response_length(1025, 1024, "a"),
            Err(ClientError::FrameTooLarge {
                size: 1025,
                max: 1024,
                ..
            })
        ));
        assert_eq!(response_length(1024, 1024, "a").ok(), Some(1024));
    }

    fn partition(topic: &str, index: i32) -> PartitionFetch {
        PartitionFetch {
            topic: topic.to_string(),
            topic_id: Uuid::from_u128(topic.len() as u128),
            partition: index,
            fetch_offset: 10,
            current_leader_epoch: 3,
            last_fetched_epoch: Some(2),
            log_start_offset: 0,
            partition_max_bytes: 1 << 20,
        }
    }

    fn params() -> FetchParams {
        FetchParams {
            replica_id: 7,
            replica_epoch: 11,
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
        }
    }

    /// Encodes at `version` and decodes back, as the leader would read it.
    fn round_trip(request: &FetchRequest, version: i16) -> FetchRequest {
        let mut buf = BytesMut::new();
        request.encode(&mut buf, version).expect("encodes");
        FetchRequest::decode(&mut buf.freeze(), version).expect("decodes")
    }

    #[test]
    fn the_replica_id_travels_in_the_field_of_the_version() {
        let partitions = [partition("a", 0)];
        let old = round_trip(&fetch_request(&params(), &partitions, 12), 12);
        assert_eq!(old.replica_id, BrokerId(7));
        let new = round_trip(&fetch_request(&params(), &partitions, 15), 15);
        assert_eq!(new.replica_id, BrokerId(-1));
        assert_eq!(new.replica_state.replica_id, BrokerId(7));
        assert_eq!(new.replica_state.replica_epoch, 11);
    }

    #[test]
    fn every_fetch_version_encodes_and_groups_partitions_by_topic() {
        let partitions = [partition("a", 0), partition("bb", 0), partition("a", 1)];
        for version in FETCH_VERSIONS.min..=FETCH_VERSIONS.max {
            let decoded = round_trip(&fetch_request(&params(), &partitions, version), version);
            assert_eq!(decoded.topics.len(), 2, "v{version}");
            assert_eq!(decoded.topics[0].partitions.len(), 2, "v{version}");
            let first = &decoded.topics[0].partitions[1];
            assert_eq!(first.partition, 1);
            assert_eq!(first.fetch_offset, 10);
            assert_eq!(first.current_leader_epoch, 3);
            let expected_epoch = if version >= 12 { 2 } else { -1 };
            assert_eq!(first.last_fetched_epoch, expected_epoch, "v{version}");
        }
    }

    #[test]
    fn every_epoch_version_encodes() {
        let queries = [EpochQuery {
            topic: "a".into(),
            partition: 0,
            current_leader_epoch: 4,
            leader_epoch: 2,
        }];
        let versions = OFFSET_FOR_LEADER_EPOCH_VERSIONS;
        for version in versions.min..=versions.max {
            let mut buf = BytesMut::new();
            epoch_request(9, &queries)
                .encode(&mut buf, version)
                .expect("encodes");
            let decoded =
                OffsetForLeaderEpochRequest::decode(&mut buf.freeze(), version).expect("decodes");
            assert_eq!(decoded.replica_id, BrokerId(9), "v{version}");
            assert_eq!(decoded.topics[0].partitions[0].leader_epoch, 2);
        }
    }
}
