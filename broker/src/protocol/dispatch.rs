//! Request dispatch: parse a frame, route it to its API handler, encode the answer.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::ResponseError;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::apis;
use super::encode::{encode_response, EncodeError, RecordsSource};
use super::{parse_frame, EncodedResponse, FrameError, RequestFrame};
use crate::broker::Broker;
use crate::security::session::Session;

/// What the connection does with a request.
#[derive(Debug)]
pub enum Outcome {
    /// Write this response.
    Respond(EncodedResponse),
    /// Nothing to write (produce with acks=0).
    Silent,
    /// Close the connection: the request cannot be served (the reason is logged).
    Close(String),
    /// Write this response after `delay`, then close (a failed authentication).
    RespondThenClose {
        response: EncodedResponse,
        delay: std::time::Duration,
    },
}

/// A handler's answer before encoding.
pub struct Answer<T> {
    pub body: T,
    pub records: RecordsSource,
}

impl<T> Answer<T> {
    pub fn new(body: T) -> Self {
        Self {
            body,
            records: RecordsSource::new(),
        }
    }
}

/// Encodes a handler's answer for `frame`.
pub fn respond<T: kafka_protocol::protocol::Encodable>(
    frame: &RequestFrame,
    answer: Answer<T>,
) -> Result<EncodedResponse, EncodeError> {
    let header_version = frame.api_key.response_header_version(frame.version);
    encode_response(
        frame.header.correlation_id,
        header_version,
        &answer.body,
        frame.version,
        answer.records,
    )
}

/// Handles one request frame from an anonymous client of a plaintext listener (in-process
/// callers and tests).
pub async fn handle(broker: &Arc<Broker>, frame: Bytes, client_host: &str) -> Outcome {
    let mut session = Session::plaintext(client_host);
    handle_until(broker, frame, &mut session, &CancellationToken::new()).await
}

/// Handles one request frame (the bytes after the size prefix) from a client of `session`;
/// requests that wait (long-polling fetches) are answered early once `shutdown` is
/// cancelled.
///
/// On a SASL listener nothing but ApiVersions, SaslHandshake and SaslAuthenticate is served
/// until the client has authenticated; anything else closes the connection, as in Kafka.
pub async fn handle_until(
    broker: &Arc<Broker>,
    frame: Bytes,
    session: &mut Session,
    shutdown: &CancellationToken,
) -> Outcome {
    let started = Instant::now();
    let request = match parse_frame(frame) {
        Ok(mut request) => {
            request.client_host.clone_from(&session.client_host);
            request.identity = session.identity();
            request
        }
        Err(FrameError::UnsupportedVersion {
            api: ApiKey::ApiVersions,
            version,
            correlation_id,
        }) => {
            // Kafka answers an unknown ApiVersions version with v0 and the supported ranges,
            // so that the client can retry with a version both sides know.
            debug!(version, "unsupported ApiVersions version");
            let body = apis::api_versions::supported_versions()
                .with_error_code(ResponseError::UnsupportedVersion.code());
            return match encode_response::<ApiVersionsResponse>(
                correlation_id,
                0,
                &body,
                0,
                RecordsSource::new(),
            ) {
                Ok(encoded) => Outcome::Respond(encoded),
                Err(e) => Outcome::Close(e.to_string()),
            };
        }
        Err(e) => return Outcome::Close(e.to_string()),
    };
    let api = api_name(request.api_key);
    let outcome = match request.api_key {
        ApiKey::SaslHandshake => apis::sasl::handshake(broker, &request, session),
        ApiKey::SaslAuthenticate => apis::sasl::authenticate(broker, &request, session),
        ApiKey::ApiVersions => route(broker, &request, shutdown).await,
        _ if !session.may_serve(Instant::now()) => {
            let expired = session
                .sasl
                .as_ref()
                .is_some_and(|s| s.expired(Instant::now()));
            Outcome::Close(if expired {
                format!("{api} after the SASL session expired without re-authentication")
            } else {
                format!("{api} before SASL authentication")
            })
        }
        _ => route(broker, &request, shutdown).await,
    };
    broker.metrics.observe_request(api, started.elapsed());
    outcome
}

async fn route(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
    shutdown: &CancellationToken,
) -> Outcome {
    let result = match frame.api_key {
        ApiKey::ApiVersions => apis::api_versions::handle(frame),
        ApiKey::Metadata => apis::metadata::handle(broker, frame).await,
        ApiKey::Produce => apis::produce::handle(broker, frame).await,
        ApiKey::Fetch => apis::fetch::handle(broker, frame, shutdown).await,
        ApiKey::ListOffsets => apis::list_offsets::handle(broker, frame),
        ApiKey::CreateTopics => apis::admin::create_topics(broker, frame).await,
        ApiKey::DeleteTopics => apis::admin::delete_topics(broker, frame).await,
        ApiKey::CreatePartitions => apis::admin::create_partitions(broker, frame).await,
        ApiKey::DescribeConfigs => apis::configs::describe_configs(broker, frame),
        ApiKey::IncrementalAlterConfigs => {
            apis::configs::incremental_alter_configs(broker, frame).await
        }
        ApiKey::DescribeCluster => apis::admin::describe_cluster(broker, frame),
        ApiKey::InitProducerId => apis::init_producer_id::handle(broker, frame).await,
        ApiKey::FindCoordinator => apis::groups::find_coordinator(broker, frame).await,
        ApiKey::JoinGroup => apis::groups::join_group(broker, frame).await,
        ApiKey::SyncGroup => apis::groups::sync_group(broker, frame).await,
        ApiKey::Heartbeat => apis::groups::heartbeat(broker, frame),
        ApiKey::LeaveGroup => apis::groups::leave_group(broker, frame),
        ApiKey::ListGroups => apis::groups::list_groups(broker, frame),
        ApiKey::DescribeGroups => apis::groups::describe_groups(broker, frame),
        ApiKey::DeleteGroups => apis::groups::delete_groups(broker, frame),
        ApiKey::OffsetCommit => apis::offsets::offset_commit(broker, frame).await,
        ApiKey::OffsetFetch => apis::offsets::offset_fetch(broker, frame),
        ApiKey::OffsetDelete => apis::offsets::offset_delete(broker, frame).await,
        ApiKey::OffsetForLeaderEpoch => apis::leader_epochs::handle(broker, frame),
        ApiKey::ElectLeaders => apis::reassignments::elect_leaders(broker, frame).await,
        ApiKey::AlterPartitionReassignments => {
            apis::reassignments::alter_partition_reassignments(broker, frame).await
        }
        ApiKey::ListPartitionReassignments => {
            apis::reassignments::list_partition_reassignments(broker, frame)
        }
        ApiKey::DescribeUserScramCredentials => apis::scram_credentials::describe(broker, frame),
        ApiKey::AlterUserScramCredentials => apis::scram_credentials::alter(broker, frame).await,
        other => Err(HandlerError::Frame(FrameError::UnknownApiKey(other as i16))),
    };
    match result {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Close(e.to_string()),
    }
}

/// Errors that make a request unanswerable.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// A fixed, bounded name for each API (metric labels).
pub fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::ElectLeaders => "ElectLeaders",
        ApiKey::AlterPartitionReassignments => "AlterPartitionReassignments",
        ApiKey::ListPartitionReassignments => "ListPartitionReassignments",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::DescribeUserScramCredentials => "DescribeUserScramCredentials",
        ApiKey::AlterUserScramCredentials => "AlterUserScramCredentials",
        _ => "Other",
    }
}
