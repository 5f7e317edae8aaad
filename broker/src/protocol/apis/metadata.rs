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

pub fn handle(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: MetadataRequest = frame.decode()?;
    let v = frame.version;
    let allow_create = broker.config.auto_create_topics
        && (frame.version < 4 || request.allow_auto_topic_creation);
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
        .with_cluster_id((v >= 2).then(|| str_bytes(&broker.cluster_id)))
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
