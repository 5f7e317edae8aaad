//! The API versions this broker speaks, as advertised in ApiVersions.
//!
//! Each range is the intersection of what the `kafka-protocol` crate can decode and what the
//! handlers implement. Ranges are chosen to cover what librdkafka 2.x, kafka-python and the
//! Java 3.x/4.x clients negotiate; a request outside them closes the connection, as in Kafka.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

/// Supported APIs and their version ranges.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    // v0 is advertised because librdkafka needs it to see SASL at all; after either version
    // the tokens must come in SaslAuthenticate requests (the raw tokens of pre-1.0 clients
    // are not read).
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
];

/// The supported range of `api`, or `None` when the broker does not serve it.
pub fn supported(api: ApiKey) -> Option<VersionRange> {
    SUPPORTED
        .iter()
        .find(|(key, _, _)| *key == api)
        .map(|&(_, min, max)| VersionRange { min, max })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_ranges_are_decodable_by_the_protocol_crate() {
        for &(api, min, max) in SUPPORTED {
            let crate_range = api.valid_versions();
            assert!(min <= max, "{api:?}");
            assert!(
                min >= crate_range.min && max <= crate_range.max,
                "{api:?} {min}..{max} vs {crate_range}"
            );
        }
    }
}
