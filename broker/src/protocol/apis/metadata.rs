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
use crate::cluster::{spread_replicas, Cluster};
use crate::controller::metadata::{ClusterMetadata, TopicRecord, NO_LEADER};
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;
use crate::topics::{Topic, TopicError};

fn topic_entry(broker: &Broker, topic: &Topic, version: i16) -> MetadataResponseTopic {
    let node = BrokerId(broker.config.node_id);
    let partitions = topic
        .partitions()
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(node)
                .with_leader_epoch(if version >= 7 { 0 } else { -1 })
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(if version >= 10 { topic.id } else { Uuid::nil() })
        .with_is_internal(version >= 1 && topic.name.starts_with("__"))
        .with_partitions(partitions)
}

fn error_entry(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(name.unwrap_or_default())))
        .with_topic_id(id)
        .with_error_code(error.code())
}

pub async fn handle(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: MetadataRequest = frame.decode()?;
    let v = frame.version;
    let allow_create = broker.config.auto_create_topics
        && (frame.version < 4 || request.allow_auto_topic_creation);
    if let Some(cluster) = broker.cluster() {
        let response = cluster_metadata(broker, cluster, &request, allow_create, v).await;
        return Ok(Outcome::Respond(respond(frame, Answer::new(response))?));
    }
    let topics = match request.topics {
        // v0 used an empty list for "all topics"; v1+ uses null.
        None => broker
            .topics
            .list()
            .iter()
            .map(|t| topic_entry(broker, t, v))
            .collect(),
        Some(ref wanted) if wanted.is_empty() && v == 0 => broker
            .topics
            .list()
            .iter()
            .map(|t| topic_entry(broker, t, v))
            .collect(),
        Some(wanted) => wanted
            .iter()
            .map(|w| match &w.name {
                Some(name) => lookup_or_create(broker, name.0.as_str(), allow_create, v),
                None => match broker.topics.get_by_id(w.topic_id) {
                    Some(topic) => topic_entry(broker, &topic, v),
                    None => error_entry(None, w.topic_id, ResponseError::UnknownTopicId),
                },
            })
            .collect(),
    };
    let node = MetadataResponseBroker::default()
        .with_node_id(BrokerId(broker.config.node_id))
        .with_host(str_bytes(&broker.config.advertised_host))
        .with_port(broker.config.advertised_port);
    let response = MetadataResponse::default()
        .with_brokers(vec![node])
        .with_cluster_id((v >= 2).then(|| str_bytes(&broker.cluster_id())))
        .with_controller_id(BrokerId(if v >= 1 { broker.config.node_id } else { -1 }))
        .with_topics(topics);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

fn lookup_or_create(
    broker: &Broker,
    name: &str,
    allow_create: bool,
    v: i16,
) -> MetadataResponseTopic {
    if let Some(topic) = broker.topics.get(name) {
        return topic_entry(broker, &topic, v);
    }
    if crate::topics::validate_topic_name(name).is_err() {
        return error_entry(
            Some(name),
            Uuid::nil(),
            ResponseError::InvalidTopicException,
        );
    }
    if !allow_create {
        return error_entry(
            Some(name),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        );
    }
    match broker.topics.create(name, -1, -1, BTreeMap::new()) {
        Ok(topic) => topic_entry(broker, &topic, v),
        Err(TopicError::AlreadyExists(_)) => match broker.topics.get(name) {
            Some(topic) => topic_entry(broker, &topic, v),
            None => error_entry(Some(name), Uuid::nil(), ResponseError::LeaderNotAvailable),
        },
        Err(e) => {
            warn!(topic = name, error = %e, "auto-creation failed");
            error_entry(
                Some(name),
                Uuid::nil(),
                ResponseError::UnknownTopicOrPartition,
            )
        }
    }
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
                .filter(|r| !registered(r))
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

/// The Metadata answer of a broker in a cluster: brokers, leaders, replicas and ISR from the
/// metadata the quorum agreed on; auto-creation goes through the controller (the new topic is
/// reported LEADER_NOT_AVAILABLE until this broker sees it, and the client asks again).
async fn cluster_metadata(
    broker: &Broker,
    cluster: &Cluster,
    request: &MetadataRequest,
    allow_create: bool,
    v: i16,
) -> MetadataResponse {
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
                    Ok(_) | Err((ResponseError::TopicAlreadyExists, _)) => {
                        ResponseError::LeaderNotAvailable
                    }
                    Err((code, message)) => {
                        warn!(topic = %name, error = %message, "auto-creation failed");
                        code
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
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id((v >= 2).then(|| str_bytes(&broker.cluster_id())))
        .with_controller_id(BrokerId(if v >= 1 { cluster.me } else { -1 }))
        .with_topics(topics)
}
