//! Metadata: brokers, controller, topics with their partitions, leaders and replicas; topics
//! are auto-created on request when `auto.create.topics.enable` allows it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::ResponseError;
use tracing::warn;
use uuid::Uuid;

use super::{str_bytes, topic_name};
use crate::broker::Broker;
use crate::cluster::spread_replicas;
use crate::controller::metadata::{ClusterMetadata, TopicRecord, NO_LEADER};
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;

fn error_entry(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(name.unwrap_or_default())))
        .with_topic_id(id)
        .with_error_code(error.code())
}

pub async fn handle(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: MetadataRequest = frame.decode()?;
    let allow_create = broker.config.auto_create_topics
        && (frame.version < 4 || request.allow_auto_topic_creation);
    let response = metadata_response(broker, &request, allow_create, frame).await;
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

/// One topic of the cluster metadata as the Metadata response shows it.
fn cluster_topic_entry(
    name: &str,
    topic: &TopicRecord,
    metadata: &ClusterMetadata,
    version: i16,
) -> MetadataResponseTopic {
    let registered = |id: &i32| {
        metadata
            .brokers
            .get(id)
            .is_some_and(|b| !b.fenced || b.shutting_down)
    };
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let offline: Vec<BrokerId> = p
                .replicas
                .iter()
                .filter(|r| !registered(r) || p.offline.contains(r))
                .map(|r| BrokerId(*r))
                .collect();
            let mut entry = MetadataResponsePartition::default()
                .with_partition_index(i32::try_from(index).unwrap_or(i32::MAX))
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(if version >= 7 { p.leader_epoch } else { -1 })
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect())
                .with_offline_replicas(if version >= 5 { offline } else { Vec::new() });
            if p.leader == NO_LEADER {
                entry.error_code = ResponseError::LeaderNotAvailable.code();
            }
            entry
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_topic_id(if version >= 10 { topic.id } else { Uuid::nil() })
        .with_is_internal(version >= 1 && name.starts_with("__"))
        .with_partitions(partitions)
}

/// The Metadata answer: brokers, leaders, replicas and ISR from the metadata the quorum agreed
/// on; auto-creation goes through the controller (the new topic is reported
/// LEADER_NOT_AVAILABLE until this broker sees it, and the client asks again, as with Kafka).
async fn metadata_response(
    broker: &Broker,
    request: &MetadataRequest,
    allow_create: bool,
    frame: &RequestFrame,
) -> MetadataResponse {
    let v = frame.version;
    let cluster = &broker.cluster;
    let metadata = cluster.metadata();
    let all =
        request.topics.is_none() || (v == 0 && request.topics.as_ref().is_some_and(Vec::is_empty));
    let mut topics = Vec::new();
    if all {
        for (name, topic) in &metadata.topics {
            topics.push(cluster_topic_entry(name, topic, &metadata, v));
        }
    } else {
        for wanted in request.topics.iter().flatten() {
            let name = match &wanted.name {
                Some(name) => name.0.to_string(),
                None => match metadata
                    .topics
                    .iter()
                    .find(|(_, t)| t.id == wanted.topic_id)
                {
                    Some((name, _)) => name.clone(),
                    None => {
                        topics.push(error_entry(
                            None,
                            wanted.topic_id,
                            ResponseError::UnknownTopicId,
                        ));
                        continue;
                    }
                },
            };
            if let Some(topic) = metadata.topics.get(&name) {
                topics.push(cluster_topic_entry(&name, topic, &metadata, v));
                continue;
            }
            let error = if crate::topics::validate_topic_name(&name).is_err() {
                ResponseError::InvalidTopicException
            } else if !allow_create {
                ResponseError::UnknownTopicOrPartition
            } else {
                let created = match spread_replicas(
                    &metadata,
                    broker.config.num_partitions,
                    broker.config.default_replication_factor,
                ) {
                    Ok(assignment) => {
                        cluster
                            .create_topic(&name, assignment, BTreeMap::new())
                            .await
                    }
                    Err(refused) => Err(refused),
                };
                match created {
                    Ok(_) => ResponseError::LeaderNotAvailable,
                    Err(refused) if refused.code == ResponseError::TopicAlreadyExists => {
                        ResponseError::LeaderNotAvailable
                    }
                    Err(refused) => {
                        warn!(topic = %name, error = %refused, "auto-creation failed");
                        refused.code
                    }
                }
            };
            topics.push(error_entry(Some(&name), Uuid::nil(), error));
        }
    }
    let brokers = metadata
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| {
            let (host, port) = b.address_for(&frame.identity.listener);
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(host))
                .with_port(port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id((v >= 2).then(|| str_bytes(&broker.cluster_id())))
        .with_controller_id(BrokerId(if v >= 1 { cluster.me } else { -1 }))
        .with_topics(topics)
}
