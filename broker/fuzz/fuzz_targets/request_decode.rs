//! Request decoding must never panic or abort, whatever bytes a client sends.
//!
//! Each input is one request frame (the bytes after the 4-byte size prefix). It goes through
//! `parse_frame` exactly as the connection hands it over; when the header parses (a supported
//! API key and version), the body is decoded as that API's request type with
//! `RequestFrame::decode`, as its handler does. Every request type of the `kafka-protocol`
//! crate is listed, so an API the broker starts to serve is fuzzed without touching this file.
//!
//! Each input is tried twice: as it is, and with its version folded into the supported range
//! of its API, so that most inputs reach the body decoders instead of stopping at the version
//! check.
#![no_main]

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;
use tokafka_broker::protocol::{parse_frame, versions, RequestFrame};

/// Decodes the body as `T`; the result is dropped: only panics and aborts matter here.
fn decode<T: Decodable>(frame: &RequestFrame) {
    let _ = frame.decode::<T>();
}

/// Decodes the body as the request type of the frame's API.
fn decode_body(frame: &RequestFrame) {
    match frame.api_key {
        ApiKey::Produce => decode::<ProduceRequest>(frame),
        ApiKey::Fetch => decode::<FetchRequest>(frame),
        ApiKey::ListOffsets => decode::<ListOffsetsRequest>(frame),
        ApiKey::Metadata => decode::<MetadataRequest>(frame),
        ApiKey::OffsetCommit => decode::<OffsetCommitRequest>(frame),
        ApiKey::OffsetFetch => decode::<OffsetFetchRequest>(frame),
        ApiKey::FindCoordinator => decode::<FindCoordinatorRequest>(frame),
        ApiKey::JoinGroup => decode::<JoinGroupRequest>(frame),
        ApiKey::Heartbeat => decode::<HeartbeatRequest>(frame),
        ApiKey::LeaveGroup => decode::<LeaveGroupRequest>(frame),
        ApiKey::SyncGroup => decode::<SyncGroupRequest>(frame),
        ApiKey::DescribeGroups => decode::<DescribeGroupsRequest>(frame),
        ApiKey::ListGroups => decode::<ListGroupsRequest>(frame),
        ApiKey::SaslHandshake => decode::<SaslHandshakeRequest>(frame),
        ApiKey::ApiVersions => decode::<ApiVersionsRequest>(frame),
        ApiKey::CreateTopics => decode::<CreateTopicsRequest>(frame),
        ApiKey::DeleteTopics => decode::<DeleteTopicsRequest>(frame),
        ApiKey::DeleteRecords => decode::<DeleteRecordsRequest>(frame),
        ApiKey::InitProducerId => decode::<InitProducerIdRequest>(frame),
        ApiKey::OffsetForLeaderEpoch => decode::<OffsetForLeaderEpochRequest>(frame),
        ApiKey::AddPartitionsToTxn => decode::<AddPartitionsToTxnRequest>(frame),
        ApiKey::AddOffsetsToTxn => decode::<AddOffsetsToTxnRequest>(frame),
        ApiKey::EndTxn => decode::<EndTxnRequest>(frame),
        ApiKey::WriteTxnMarkers => decode::<WriteTxnMarkersRequest>(frame),
        ApiKey::TxnOffsetCommit => decode::<TxnOffsetCommitRequest>(frame),
        ApiKey::DescribeAcls => decode::<DescribeAclsRequest>(frame),
        ApiKey::CreateAcls => decode::<CreateAclsRequest>(frame),
        ApiKey::DeleteAcls => decode::<DeleteAclsRequest>(frame),
        ApiKey::DescribeConfigs => decode::<DescribeConfigsRequest>(frame),
        ApiKey::AlterConfigs => decode::<AlterConfigsRequest>(frame),
        ApiKey::AlterReplicaLogDirs => decode::<AlterReplicaLogDirsRequest>(frame),
        ApiKey::DescribeLogDirs => decode::<DescribeLogDirsRequest>(frame),
        ApiKey::SaslAuthenticate => decode::<SaslAuthenticateRequest>(frame),
        ApiKey::CreatePartitions => decode::<CreatePartitionsRequest>(frame),
        ApiKey::CreateDelegationToken => decode::<CreateDelegationTokenRequest>(frame),
        ApiKey::RenewDelegationToken => decode::<RenewDelegationTokenRequest>(frame),
        ApiKey::ExpireDelegationToken => decode::<ExpireDelegationTokenRequest>(frame),
        ApiKey::DescribeDelegationToken => decode::<DescribeDelegationTokenRequest>(frame),
        ApiKey::DeleteGroups => decode::<DeleteGroupsRequest>(frame),
        ApiKey::ElectLeaders => decode::<ElectLeadersRequest>(frame),
        ApiKey::IncrementalAlterConfigs => decode::<IncrementalAlterConfigsRequest>(frame),
        ApiKey::AlterPartitionReassignments => decode::<AlterPartitionReassignmentsRequest>(frame),
        ApiKey::ListPartitionReassignments => decode::<ListPartitionReassignmentsRequest>(frame),
        ApiKey::OffsetDelete => decode::<OffsetDeleteRequest>(frame),
        ApiKey::DescribeClientQuotas => decode::<DescribeClientQuotasRequest>(frame),
        ApiKey::AlterClientQuotas => decode::<AlterClientQuotasRequest>(frame),
        ApiKey::DescribeUserScramCredentials => {
            decode::<DescribeUserScramCredentialsRequest>(frame)
        }
        ApiKey::AlterUserScramCredentials => decode::<AlterUserScramCredentialsRequest>(frame),
        ApiKey::Vote => decode::<VoteRequest>(frame),
        ApiKey::BeginQuorumEpoch => decode::<BeginQuorumEpochRequest>(frame),
        ApiKey::EndQuorumEpoch => decode::<EndQuorumEpochRequest>(frame),
        ApiKey::DescribeQuorum => decode::<DescribeQuorumRequest>(frame),
        ApiKey::AlterPartition => decode::<AlterPartitionRequest>(frame),
        ApiKey::UpdateFeatures => decode::<UpdateFeaturesRequest>(frame),
        ApiKey::Envelope => decode::<EnvelopeRequest>(frame),
        ApiKey::FetchSnapshot => decode::<FetchSnapshotRequest>(frame),
        ApiKey::DescribeCluster => decode::<DescribeClusterRequest>(frame),
        ApiKey::DescribeProducers => decode::<DescribeProducersRequest>(frame),
        ApiKey::BrokerRegistration => decode::<BrokerRegistrationRequest>(frame),
        ApiKey::BrokerHeartbeat => decode::<BrokerHeartbeatRequest>(frame),
        ApiKey::UnregisterBroker => decode::<UnregisterBrokerRequest>(frame),
        ApiKey::DescribeTransactions => decode::<DescribeTransactionsRequest>(frame),
        ApiKey::ListTransactions => decode::<ListTransactionsRequest>(frame),
        ApiKey::AllocateProducerIds => decode::<AllocateProducerIdsRequest>(frame),
        ApiKey::ConsumerGroupHeartbeat => decode::<ConsumerGroupHeartbeatRequest>(frame),
        ApiKey::ConsumerGroupDescribe => decode::<ConsumerGroupDescribeRequest>(frame),
        ApiKey::ControllerRegistration => decode::<ControllerRegistrationRequest>(frame),
        ApiKey::GetTelemetrySubscriptions => decode::<GetTelemetrySubscriptionsRequest>(frame),
        ApiKey::PushTelemetry => decode::<PushTelemetryRequest>(frame),
        ApiKey::AssignReplicasToDirs => decode::<AssignReplicasToDirsRequest>(frame),
        ApiKey::ListConfigResources => decode::<ListConfigResourcesRequest>(frame),
        ApiKey::DescribeTopicPartitions => decode::<DescribeTopicPartitionsRequest>(frame),
        ApiKey::ShareGroupHeartbeat => decode::<ShareGroupHeartbeatRequest>(frame),
        ApiKey::ShareGroupDescribe => decode::<ShareGroupDescribeRequest>(frame),
        ApiKey::ShareFetch => decode::<ShareFetchRequest>(frame),
        ApiKey::ShareAcknowledge => decode::<ShareAcknowledgeRequest>(frame),
        ApiKey::AddRaftVoter => decode::<AddRaftVoterRequest>(frame),
        ApiKey::RemoveRaftVoter => decode::<RemoveRaftVoterRequest>(frame),
        ApiKey::UpdateRaftVoter => decode::<UpdateRaftVoterRequest>(frame),
        ApiKey::InitializeShareGroupState => decode::<InitializeShareGroupStateRequest>(frame),
        ApiKey::ReadShareGroupState => decode::<ReadShareGroupStateRequest>(frame),
        ApiKey::WriteShareGroupState => decode::<WriteShareGroupStateRequest>(frame),
        ApiKey::DeleteShareGroupState => decode::<DeleteShareGroupStateRequest>(frame),
        ApiKey::ReadShareGroupStateSummary => decode::<ReadShareGroupStateSummaryRequest>(frame),
        ApiKey::DescribeShareGroupOffsets => decode::<DescribeShareGroupOffsetsRequest>(frame),
        ApiKey::AlterShareGroupOffsets => decode::<AlterShareGroupOffsetsRequest>(frame),
        ApiKey::DeleteShareGroupOffsets => decode::<DeleteShareGroupOffsetsRequest>(frame),
        #[allow(unreachable_patterns)]
        _ => {}
    }
}

/// The input with its API version mapped into the broker's supported range for that API.
fn fold_version(data: &[u8]) -> Option<Bytes> {
    if data.len() < 4 {
        return None;
    }
    let api = ApiKey::try_from(i16::from_be_bytes([data[0], data[1]])).ok()?;
    let range = versions::supported(api)?;
    let span = (range.max - range.min + 1) as u16;
    let version = range.min + (u16::from_be_bytes([data[2], data[3]]) % span) as i16;
    let mut bytes = BytesMut::from(data);
    bytes[2..4].copy_from_slice(&version.to_be_bytes());
    Some(bytes.freeze())
}

fuzz_target!(|data: &[u8]| {
    let frames = std::iter::once(Bytes::copy_from_slice(data)).chain(fold_version(data));
    for frame in frames {
        if let Ok(frame) = parse_frame(frame) {
            decode_body(&frame);
        }
    }
});
