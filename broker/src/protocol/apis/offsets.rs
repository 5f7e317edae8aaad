//! Committed-offset APIs: OffsetCommit, OffsetFetch, OffsetDelete.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse,
};
use kafka_protocol::ResponseError;
use tracing::warn;

use super::{str_bytes, topic_name};
use std::time::Duration;

use super::groups::coordinator_error;
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::group::coordinator::CommitCheck;
use crate::group::offsets::{CommitPoint, CommittedOffset, OffsetStoreError};
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;
use crate::replica::NotCommitted;

/// How long a commit waits for the offsets partition's in-sync replicas (Kafka's
/// `offsets.commit.timeout.ms`).
const COMMIT_REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `topic`-`partition` exists in the cluster's metadata.
fn partition_exists(broker: &Broker, topic: &str, partition: i32) -> bool {
    broker
        .cluster
        .metadata()
        .partition(topic, partition)
        .is_some()
}

/// Waits until `point` is replicated to the in-sync replicas of its offsets partition; the
/// error to answer otherwise.
async fn replicated(point: &CommitPoint) -> Result<(), ResponseError> {
    point
        .committed(COMMIT_REPLICATION_TIMEOUT)
        .await
        .map_err(|e| match e {
            NotCommitted::LeadershipLost => ResponseError::NotCoordinator,
            NotCommitted::TimedOut => ResponseError::RequestTimedOut,
        })
}

pub async fn offset_commit(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: OffsetCommitRequest = frame.decode()?;
    let group_id = request.group_id.0.as_str();
    let check = match coordinator_error(broker, group_id) {
        Some(error) => CommitCheck::Error(error.code()),
        None => broker.groups.check_commit(
            group_id,
            request.member_id.as_str(),
            request.group_instance_id.as_ref().map(|s| s.as_str()),
            request.generation_id_or_member_epoch,
        ),
    };
    let mut entries = Vec::new();
    // (topic index, partition index, error)
    let mut codes: Vec<Vec<i16>> = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.name.0.as_str();
        let mut topic_codes = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            // As in Kafka, an unknown topic or partition is reported before the group's verdict.
            let known = partition_exists(broker, name, p.partition_index);
            let code = match check {
                _ if !known => ResponseError::UnknownTopicOrPartition.code(),
                CommitCheck::Error(code) => code,
                CommitCheck::Ok => {
                    let metadata = p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.as_str().to_string())
                        .unwrap_or_default();
                    if metadata.len() > 4096 {
                        ResponseError::OffsetMetadataTooLarge.code()
                    } else {
                        entries.push((
                            (name.to_string(), p.partition_index),
                            CommittedOffset {
                                offset: p.committed_offset,
                                leader_epoch: p.committed_leader_epoch,
                                metadata,
                                commit_timestamp_ms: now_ms(),
                            },
                        ));
                        0
                    }
                }
            };
            topic_codes.push(code);
        }
        codes.push(topic_codes);
    }
    if !entries.is_empty() {
        let failure = match broker.groups.commit(group_id, entries) {
            Ok(None) => None,
            Ok(Some(point)) => replicated(&point).await.err(),
            Err(OffsetStoreError::NotLoaded(_)) => Some(ResponseError::NotCoordinator),
            Err(e) => {
                warn!(group = group_id, error = %e, "offset commit failed");
                Some(ResponseError::CoordinatorNotAvailable)
            }
        };
        if let Some(error) = failure {
            for topic_codes in &mut codes {
                for code in topic_codes.iter_mut().filter(|c| **c == 0) {
                    *code = error.code();
                }
            }
        }
    }
    let topics = request
        .topics
        .iter()
        .zip(codes)
        .map(|(topic, topic_codes)| {
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(
                    topic
                        .partitions
                        .iter()
                        .zip(topic_codes)
                        .map(|(p, code)| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    let response = OffsetCommitResponse::default().with_topics(topics);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

/// (partition, offset, leader epoch, metadata) of one committed offset, -1 when none.
fn lookup(broker: &Broker, group: &str, topic: &str, partition: i32) -> (i64, i32, String) {
    broker
        .groups
        .offsets
        .get(group, topic, partition)
        .map_or((-1, -1, String::new()), |c| {
            (c.offset, c.leader_epoch, c.metadata)
        })
}

/// The requested (topic, partitions) of a group, or all it has committed when `None`.
fn wanted_partitions(
    broker: &Broker,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, Vec<i32>)> {
    match topics {
        Some(topics) => topics,
        None => {
            let mut all: Vec<(String, Vec<i32>)> = Vec::new();
            for (topic, partition) in broker.groups.offsets.group_offsets(group).into_keys() {
                match all.last_mut() {
                    Some((t, ps)) if *t == topic => ps.push(partition),
                    _ => all.push((topic, vec![partition])),
                }
            }
            all
        }
    }
}

pub fn offset_fetch(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: OffsetFetchRequest = frame.decode()?;
    let v = frame.version;
    let mut response = OffsetFetchResponse::default();
    if v >= 8 {
        response.groups = request
            .groups
            .iter()
            .map(|g| {
                let group = g.group_id.0.as_str();
                if let Some(error) = coordinator_error(broker, group) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(error.code());
                }
                let topics = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let topics = wanted_partitions(broker, group, topics)
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(topic_name(&topic))
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|p| {
                                        let (offset, epoch, metadata) =
                                            lookup(broker, group, &topic, p);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(str_bytes(&metadata)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_topics(topics)
            })
            .collect();
    } else if let Some(error) = coordinator_error(broker, request.group_id.0.as_str()) {
        response.error_code = error.code();
    } else {
        let group = request.group_id.0.as_str();
        let topics = request.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes.clone()))
                .collect()
        });
        response.topics = wanted_partitions(broker, group, topics)
            .into_iter()
            .map(|(topic, partitions)| {
                OffsetFetchResponseTopic::default()
                    .with_name(topic_name(&topic))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|p| {
                                let (offset, epoch, metadata) = lookup(broker, group, &topic, p);
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(if v >= 5 { epoch } else { -1 })
                                    .with_metadata(Some(str_bytes(&metadata)))
                            })
                            .collect(),
                    )
            })
            .collect();
    }
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

pub async fn offset_delete(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: OffsetDeleteRequest = frame.decode()?;
    let group = request.group_id.0.as_str();
    let mut response = OffsetDeleteResponse::default();
    if let Some(error) = coordinator_error(broker, group) {
        response.error_code = error.code();
        return Ok(Outcome::Respond(respond(frame, Answer::new(response))?));
    }
    if broker.groups.describe(group).is_none() {
        response.error_code = ResponseError::GroupIdNotFound.code();
        return Ok(Outcome::Respond(respond(frame, Answer::new(response))?));
    }
    let subscribed = broker.groups.subscribed_topics(group);
    let mut to_delete = Vec::new();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.name.0.as_str();
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                // Offsets of a topic the group consumes cannot be deleted.
                let code = if subscribed.iter().any(|t| t == name) {
                    ResponseError::GroupSubscribedToTopic.code()
                } else if !partition_exists(broker, name, p.partition_index) {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    to_delete.push((name.to_string(), p.partition_index));
                    0
                };
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
            })
            .collect();
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    match broker.groups.delete_offsets(group, &to_delete) {
        Ok(Some(point)) => {
            if let Err(error) = replicated(&point).await {
                response.error_code = error.code();
            }
        }
        Ok(None) => {}
        Err(e) => {
            warn!(group, error = %e, "offset delete failed");
            response.error_code = ResponseError::CoordinatorNotAvailable.code();
        }
    }
    response.topics = topics;
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}
