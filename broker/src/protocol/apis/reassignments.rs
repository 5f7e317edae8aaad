//! Leadership and replica placement: ElectLeaders, AlterPartitionReassignments and
//! ListPartitionReassignments.
//!
//! Each request becomes commands through the controller quorum; whether an election or a move
//! is possible is decided by the pure functions of [`crate::controller::placement`] first, so
//! that every partition gets the precise Kafka error (a single node's partitions have nowhere
//! to move and already lead where they can).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_name};
use crate::broker::Broker;
use crate::cluster::{Cluster, Refusal};
use crate::controller::metadata::{ClusterMetadata, Command, CommandError, PartitionRecord};
use crate::controller::placement::{preferred_election, unclean_election, Election};
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;

/// ElectLeaders election types.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// How long ElectLeaders waits for this broker to see the leaders it elected.
const SEE_ELECTED_WITHIN: Duration = Duration::from_secs(5);

/// The partitions a request names, or every partition of the cluster for `None`.
fn named_or_all(
    metadata: &ClusterMetadata,
    named: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, i32)> {
    match named {
        Some(topics) => topics
            .into_iter()
            .flat_map(|(topic, partitions)| partitions.into_iter().map(move |p| (topic.clone(), p)))
            .collect(),
        None => metadata
            .partitions()
            .map(|(topic, partition, _)| (topic.to_string(), partition))
            .collect(),
    }
}

fn unknown_partition(topic: &str, partition: i32) -> Refusal {
    Refusal::new(
        ResponseError::UnknownTopicOrPartition,
        format!("partition {topic}-{partition} does not exist"),
    )
}

/// Whether an election of `election_type` on `record` can be made, or the error saying why
/// not.
fn election_check(
    metadata: &ClusterMetadata,
    election_type: i8,
    record: &PartitionRecord,
) -> Result<(), Refusal> {
    let (outcome, unavailable) = match election_type {
        PREFERRED => (
            preferred_election(metadata, record),
            Refusal::new(
                ResponseError::PreferredLeaderNotAvailable,
                format!(
                    "preferred leader {} is not alive and in the ISR",
                    record.preferred_leader()
                ),
            ),
        ),
        UNCLEAN => (
            unclean_election(metadata, record),
            Refusal::new(
                ResponseError::EligibleLeadersNotAvailable,
                "no replica is alive",
            ),
        ),
        other => {
            return Err(Refusal::new(
                ResponseError::InvalidRequest,
                format!("unknown election type {other}"),
            ))
        }
    };
    match outcome {
        Election::Possible => Ok(()),
        Election::NotNeeded => Err(Refusal::new(
            ResponseError::ElectionNotNeeded,
            format!("leader {} is already the one elected", record.leader),
        )),
        Election::NotAvailable => Err(unavailable),
    }
}

pub async fn elect_leaders(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: ElectLeadersRequest = frame.decode()?;
    let election_type = if frame.version >= 1 {
        request.election_type
    } else {
        PREFERRED
    };
    let named = request.topic_partitions.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let outcomes = elect(&broker.cluster, election_type, named).await;
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, outcome) in outcomes {
        let (code, message) = match outcome {
            Ok(()) => (0, None),
            Err(refused) => (refused.code.code(), Some(str_bytes(&refused.message))),
        };
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(message);
        match results.last_mut().filter(|r| r.topic.0.as_str() == topic) {
            Some(last) => last.partition_result.push(result),
            None => results.push(
                ReplicaElectionResult::default()
                    .with_topic(topic_name(&topic))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    let response = ElectLeadersResponse::default().with_replica_election_results(results);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

/// Elects leaders through the controller; one outcome per named partition.
async fn elect(
    cluster: &Cluster,
    election_type: i8,
    named: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, i32, Result<(), Refusal>)> {
    let metadata = cluster.metadata();
    let everything = named.is_none();
    let mut outcomes: Vec<(String, i32, Result<(), Refusal>)> = named_or_all(&metadata, named)
        .into_iter()
        .map(|(topic, partition)| {
            let outcome = match metadata.partition(&topic, partition) {
                None => Err(unknown_partition(&topic, partition)),
                Some(record) => election_check(&metadata, election_type, record),
            };
            (topic, partition, outcome)
        })
        .collect();
    if everything {
        // Kafka answers an election over all partitions with the ones it elected.
        outcomes.retain(|(_, _, outcome)| outcome.is_ok());
    }
    let electable: Vec<(String, i32)> = outcomes
        .iter()
        .filter(|(_, _, outcome)| outcome.is_ok())
        .map(|(topic, partition, _)| (topic.clone(), *partition))
        .collect();
    if electable.is_empty() {
        return outcomes;
    }
    let command = if election_type == UNCLEAN {
        Command::ElectUncleanLeaders {
            partitions: electable.clone(),
        }
    } else {
        Command::ElectPreferredLeaders {
            partitions: electable.clone(),
        }
    };
    if let Err(refusal) = cluster.write(&command).await {
        for (_, _, outcome) in &mut outcomes {
            if outcome.is_ok() {
                *outcome = Err(refusal.clone());
            }
        }
        return outcomes;
    }
    // The election was committed; answer once this broker's metadata shows it, so that a
    // client's next Metadata request here sees the new leaders.
    let before = metadata;
    cluster
        .wait_for_metadata(SEE_ELECTED_WITHIN, |m| {
            electable.iter().all(|(topic, partition)| {
                m.partition(topic, *partition).map(|p| p.leader_epoch)
                    != before.partition(topic, *partition).map(|p| p.leader_epoch)
            })
        })
        .await;
    outcomes
}

/// Why a reassignment of `record` to `target` is refused, before asking the controller.
fn reassignment_check(
    metadata: &ClusterMetadata,
    record: &PartitionRecord,
    target: &[i32],
    allow_replication_factor_change: bool,
) -> Result<(), Refusal> {
    let distinct: std::collections::BTreeSet<&i32> = target.iter().collect();
    if target.is_empty() || distinct.len() != target.len() {
        return Err(Refusal::new(
            ResponseError::InvalidReplicaAssignment,
            format!("target replicas {target:?} must be distinct and non-empty"),
        ));
    }
    if let Some(unknown) = target.iter().find(|b| !metadata.brokers.contains_key(b)) {
        return Err(Refusal::new(
            ResponseError::InvalidReplicaAssignment,
            format!("broker {unknown} is not registered"),
        ));
    }
    let current = if record.original.is_empty() {
        record.replicas.len()
    } else {
        record.original.len()
    };
    if !allow_replication_factor_change && current != target.len() {
        return Err(Refusal::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "target has {} replicas, the partition {current}, and the request does not \
                 allow changing the replication factor",
                target.len()
            ),
        ));
    }
    Ok(())
}

/// The Kafka error for a reassignment command the controller refused.
fn reassignment_refusal(error: &CommandError) -> Refusal {
    let code = match error {
        CommandError::Invalid(_) | CommandError::UnknownBroker(_) => {
            ResponseError::InvalidReplicaAssignment
        }
        other => crate::cluster::command_error_code(other),
    };
    Refusal::new(code, error.to_string())
}

pub async fn alter_partition_reassignments(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: AlterPartitionReassignmentsRequest = frame.decode()?;
    let allow_rf_change = frame.version < 1 || request.allow_replication_factor_change;
    let cluster = &broker.cluster;
    let metadata = cluster.metadata();
    let mut responses = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.name.0.as_str();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in &topic.partitions {
            let index = wanted.partition_index;
            let target: Option<Vec<i32>> = wanted
                .replicas
                .as_ref()
                .map(|r| r.iter().map(|b| b.0).collect());
            let outcome = reassign(cluster, &metadata, name, index, target, allow_rf_change).await;
            let (code, message) = match outcome {
                Ok(()) => (0, None),
                Err(refused) => (refused.code.code(), Some(str_bytes(&refused.message))),
            };
            partitions.push(
                ReassignablePartitionResponse::default()
                    .with_partition_index(index)
                    .with_error_code(code)
                    .with_error_message(message),
            );
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    let response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_responses(responses);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

async fn reassign(
    cluster: &Cluster,
    metadata: &ClusterMetadata,
    topic: &str,
    partition: i32,
    target: Option<Vec<i32>>,
    allow_rf_change: bool,
) -> Result<(), Refusal> {
    let record = metadata
        .partition(topic, partition)
        .ok_or_else(|| unknown_partition(topic, partition))?;
    let command = match target {
        None => Command::CancelReassignment {
            topic: topic.to_string(),
            partition,
        },
        Some(target) => {
            reassignment_check(metadata, record, &target, allow_rf_change)?;
            Command::Reassign {
                topic: topic.to_string(),
                partition,
                target,
            }
        }
    };
    match cluster
        .quorum
        .write(&command, crate::cluster::ADMIN_DEADLINE)
        .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(reassignment_refusal(&e)),
        Err(e) => Err(Refusal::new(ResponseError::RequestTimedOut, e.to_string())),
    }
}

pub fn list_partition_reassignments(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: ListPartitionReassignmentsRequest = frame.decode()?;
    let mut response = ListPartitionReassignmentsResponse::default();
    let metadata = broker.cluster.metadata();
    let named = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    for (topic, partition) in named_or_all(&metadata, named) {
        let Some(record) = metadata.partition(&topic, partition) else {
            continue;
        };
        if record.adding.is_empty() && record.removing.is_empty() {
            continue;
        }
        let ongoing = OngoingPartitionReassignment::default()
            .with_partition_index(partition)
            .with_replicas(record.replicas.iter().map(|&b| BrokerId(b)).collect())
            .with_adding_replicas(record.adding.iter().map(|&b| BrokerId(b)).collect())
            .with_removing_replicas(record.removing.iter().map(|&b| BrokerId(b)).collect());
        match response
            .topics
            .last_mut()
            .filter(|t| t.name.0.as_str() == topic)
        {
            Some(last) => last.partitions.push(ongoing),
            None => response.topics.push(
                OngoingTopicReassignment::default()
                    .with_name(topic_name(&topic))
                    .with_partitions(vec![ongoing]),
            ),
        }
    }
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::testing::{cluster, create};

    fn metadata() -> ClusterMetadata {
        let mut m = cluster(&[1, 2, 3]);
        create(&mut m, "t", vec![vec![1, 2]]);
        m
    }

    #[test]
    fn bad_targets_get_the_kafka_errors() {
        let m = metadata();
        let record = m.partition("t", 0).expect("p");
        let code = |target: &[i32], allow| {
            reassignment_check(&m, record, target, allow)
                .err()
                .map(|refused| refused.code)
        };
        assert_eq!(
            code(&[], true),
            Some(ResponseError::InvalidReplicaAssignment)
        );
        assert_eq!(
            code(&[2, 2], true),
            Some(ResponseError::InvalidReplicaAssignment)
        );
        assert_eq!(
            code(&[2, 9], true),
            Some(ResponseError::InvalidReplicaAssignment)
        );
        assert_eq!(
            code(&[3], false),
            Some(ResponseError::InvalidReplicationFactor)
        );
        assert_eq!(code(&[3], true), None);
        assert_eq!(code(&[3, 1], false), None);
    }

    #[test]
    fn elections_map_to_the_kafka_errors() {
        let m = metadata();
        let record = m.partition("t", 0).expect("p");
        let code = |kind| {
            election_check(&m, kind, record)
                .err()
                .map(|refused| refused.code)
        };
        assert_eq!(code(PREFERRED), Some(ResponseError::ElectionNotNeeded));
        assert_eq!(code(UNCLEAN), Some(ResponseError::ElectionNotNeeded));
        assert_eq!(code(7), Some(ResponseError::InvalidRequest));
    }
}
