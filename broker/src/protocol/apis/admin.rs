//! Topic administration and cluster description: CreateTopics, DeleteTopics,
//! CreatePartitions, DescribeCluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest,
    DescribeClusterResponse,
};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::str_bytes;
use crate::broker::Broker;
use crate::cluster::{spread_replicas, Cluster, Refusal};
use crate::controller::metadata::{ClusterMetadata, Command};
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;
use crate::topics::{config as topic_config, TopicError};

/// Config source codes of DescribeConfigs/CreateTopics.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// The Kafka error and message of a refused topic request.
pub fn topic_refusal(error: &TopicError) -> Refusal {
    let code = match error {
        TopicError::InvalidName { .. } => ResponseError::InvalidTopicException,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
    };
    Refusal::new(code, error.to_string())
}

pub async fn create_topics(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: CreateTopicsRequest = frame.decode()?;
    let response = create(broker, &request, frame.version).await;
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

pub async fn delete_topics(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: DeleteTopicsRequest = frame.decode()?;
    // The metadata says what exists and the controller deletes.
    let metadata = broker.cluster.metadata();
    let v6 = frame.version >= 6;
    let mut responses = Vec::new();
    for (name, id) in topics_to_delete(&request) {
        let found: Option<(String, Uuid)> = match &name {
            Some(name) => metadata.topics.get(name).map(|t| (name.clone(), t.id)),
            None => metadata
                .topics
                .iter()
                .find(|(_, t)| t.id == id)
                .map(|(n, t)| (n.clone(), t.id)),
        };
        let mut result = DeletableTopicResult::default()
            .with_name(Some(super::topic_name(name.as_deref().unwrap_or_default())))
            .with_topic_id(if v6 { id } else { Uuid::nil() });
        let Some((found_name, found_id)) = found else {
            result.error_code = if name.is_some() {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                ResponseError::UnknownTopicId.code()
            };
            responses.push(result);
            continue;
        };
        result.name = Some(super::topic_name(&found_name));
        if v6 {
            result.topic_id = found_id;
        }
        let deleted = broker
            .cluster
            .write(&Command::DeleteTopic { name: found_name })
            .await;
        if let Err(refused) = deleted {
            result.error_code = refused.code.code();
            if frame.version >= 5 {
                result.error_message = Some(str_bytes(&refused.message));
            }
        }
        responses.push(result);
    }
    let response = DeleteTopicsResponse::default().with_responses(responses);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

/// The topics a DeleteTopics request names: v0-5 by name in `topic_names`, v6 by name or id
/// in `topics`.
fn topics_to_delete(request: &DeleteTopicsRequest) -> Vec<(Option<String>, Uuid)> {
    request
        .topic_names
        .iter()
        .map(|n| (Some(n.0.as_str().to_string()), Uuid::nil()))
        .chain(request.topics.iter().map(|t| {
            (
                t.name.as_ref().map(|n| n.0.as_str().to_string()),
                t.topic_id,
            )
        }))
        .collect()
}

pub async fn create_partitions(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: CreatePartitionsRequest = frame.decode()?;
    let mut results = Vec::with_capacity(request.topics.len());
    for wanted in &request.topics {
        let mut result = CreatePartitionsTopicResult::default().with_name(wanted.name.clone());
        if let Err(refused) = add_partitions(&broker.cluster, wanted, request.validate_only).await {
            result.error_code = refused.code.code();
            result.error_message = Some(str_bytes(&refused.message));
        }
        results.push(result);
    }
    let response = CreatePartitionsResponse::default().with_results(results);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

/// The replicas of the partitions a CreatePartitions request adds to a topic: the request's
/// assignment, or placed like the topic's first partitions.
fn plan_new_partitions(
    metadata: &ClusterMetadata,
    wanted: &CreatePartitionsTopic,
) -> Result<Vec<Vec<i32>>, Refusal> {
    let name = wanted.name.0.as_str();
    let topic = metadata.topics.get(name).ok_or_else(|| {
        Refusal::new(
            ResponseError::UnknownTopicOrPartition,
            format!("topic `{name}` does not exist"),
        )
    })?;
    let current = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
    if wanted.count <= current || wanted.count > 100_000 {
        return Err(Refusal::new(
            ResponseError::InvalidPartitions,
            format!(
                "topic has {current} partitions; {} must be more, and at most 100000",
                wanted.count
            ),
        ));
    }
    let adding = wanted.count - current;
    let replication_factor = topic.partitions.first().map_or(1, |p| {
        if p.original.is_empty() {
            p.replicas.len()
        } else {
            p.original.len()
        }
    });
    if let Some(assignments) = &wanted.assignments {
        if assignments.len() != usize::try_from(adding).unwrap_or(0) {
            return Err(Refusal::new(
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "{} assignments for {adding} new partitions",
                    assignments.len()
                ),
            ));
        }
        let assignment: Vec<Vec<i32>> = assignments
            .iter()
            .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
            .collect();
        for replicas in &assignment {
            let distinct: std::collections::BTreeSet<&i32> = replicas.iter().collect();
            if replicas.len() != replication_factor || distinct.len() != replicas.len() {
                return Err(Refusal::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!("replicas {replicas:?} must be {replication_factor} distinct brokers"),
                ));
            }
            if let Some(unknown) = replicas.iter().find(|r| !metadata.brokers.contains_key(r)) {
                return Err(Refusal::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!("broker {unknown} is not registered"),
                ));
            }
        }
        return Ok(assignment);
    }
    let live: Vec<i32> = metadata.placement_brokers().into_iter().collect();
    crate::controller::metadata::assign_replicas(
        &live,
        adding,
        i16::try_from(replication_factor).unwrap_or(i16::MAX),
        current,
    )
    .map_err(|e| Refusal::new(ResponseError::InvalidReplicationFactor, e.to_string()))
}

async fn add_partitions(
    cluster: &Cluster,
    wanted: &CreatePartitionsTopic,
    validate_only: bool,
) -> Result<(), Refusal> {
    let metadata = cluster.metadata();
    let assignment = plan_new_partitions(&metadata, wanted)?;
    if validate_only {
        return Ok(());
    }
    let name = wanted.name.0.to_string();
    cluster
        .write(&Command::CreatePartitions {
            name: name.clone(),
            assignment,
        })
        .await?;
    let count = usize::try_from(wanted.count).unwrap_or(usize::MAX);
    cluster
        .wait_for_metadata(SEE_CREATED_WITHIN, |m| {
            m.topics
                .get(&name)
                .is_some_and(|t| t.partitions.len() >= count)
        })
        .await;
    Ok(())
}

/// DescribeCluster endpoint type for brokers (controllers are not exposed separately).
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub fn describe_cluster(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: DescribeClusterRequest = frame.decode()?;
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(&broker.cluster_id()))
        .with_controller_id(BrokerId(broker.config.node_id))
        .with_endpoint_type(request.endpoint_type);
    if frame.version >= 1 && request.endpoint_type != ENDPOINT_TYPE_BROKERS {
        response.error_code = ResponseError::UnsupportedEndpointType.code();
        response.error_message = Some(str_bytes("only the broker endpoint type is served"));
    } else {
        // Every broker that serves: registered and unfenced, as Kafka lists them.
        response.brokers = broker
            .cluster
            .metadata()
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| {
                let (host, port) = b.address_for(&frame.identity.listener);
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.id))
                    .with_host(str_bytes(host))
                    .with_port(port)
                    .with_rack(b.rack.as_deref().map(str_bytes))
            })
            .collect();
    }
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

/// The configs a CreateTopics request sets for one topic (null values are left out).
fn requested_configs(
    wanted: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> BTreeMap<String, String> {
    wanted
        .configs
        .iter()
        .filter_map(|c| {
            c.value
                .as_ref()
                .map(|v| (c.name.as_str().to_string(), v.as_str().to_string()))
        })
        .collect()
}

/// Every topic config with its effective value, as CreateTopics v5+ answers.
fn described_configs(
    configs: &BTreeMap<String, String>,
    broker: &crate::config::BrokerConfig,
) -> Vec<CreatableTopicConfigs> {
    topic_config::effective(configs, broker)
        .into_iter()
        .map(|(key, value, is_default)| {
            CreatableTopicConfigs::default()
                .with_name(str_bytes(key))
                .with_value(Some(str_bytes(&value)))
                .with_config_source(if is_default {
                    SOURCE_DEFAULT
                } else {
                    SOURCE_TOPIC
                })
        })
        .collect()
}

/// How long CreateTopics waits for this broker to see the topics it created.
const SEE_CREATED_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Checks one creation against the cluster: name, counts, configs, a manual assignment.
/// Returns the replica assignment to commit.
fn plan_creation(
    broker: &Broker,
    metadata: &ClusterMetadata,
    wanted: &kafka_protocol::messages::create_topics_request::CreatableTopic,
    configs: &BTreeMap<String, String>,
) -> Result<Vec<Vec<i32>>, Refusal> {
    let name = wanted.name.0.as_str();
    crate::topics::validate_topic_name(name).map_err(|e| topic_refusal(&e))?;
    if metadata.topics.contains_key(name) {
        return Err(Refusal::new(
            ResponseError::TopicAlreadyExists,
            format!("topic `{name}` already exists"),
        ));
    }
    for (key, value) in configs {
        topic_config::validate_entry(key, value)
            .map_err(|e| topic_refusal(&TopicError::InvalidConfig(e)))?;
    }
    if !wanted.assignments.is_empty() {
        let mut assignment = Vec::with_capacity(wanted.assignments.len());
        for a in &wanted.assignments {
            let replicas: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
            if let Some(unknown) = replicas.iter().find(|r| !metadata.brokers.contains_key(r)) {
                return Err(Refusal::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!("broker {unknown} is not registered"),
                ));
            }
            assignment.push(replicas);
        }
        return Ok(assignment);
    }
    let partitions = crate::topics::partition_count(wanted.num_partitions, &broker.config)
        .map_err(|e| topic_refusal(&e))?;
    let replication_factor = if wanted.replication_factor == -1 {
        broker.config.default_replication_factor
    } else {
        wanted.replication_factor
    };
    spread_replicas(metadata, partitions, replication_factor)
}

/// Creates the requested topics through the controller, each refused alone when it breaks a
/// rule (nothing is written for it then), and waits until this broker sees the new ones.
async fn create(
    broker: &Broker,
    request: &CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let cluster = &broker.cluster;
    let metadata = cluster.metadata();
    let mut results = Vec::with_capacity(request.topics.len());
    let mut created = Vec::new();
    for wanted in &request.topics {
        let name = wanted.name.0.as_str().to_string();
        let mut result = CreatableTopicResult::default()
            .with_name(wanted.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let configs = requested_configs(wanted);
        let outcome = match plan_creation(broker, &metadata, wanted, &configs) {
            Err(e) => Err(e),
            Ok(assignment) if request.validate_only => Ok((assignment, Uuid::nil())),
            Ok(assignment) => cluster
                .create_topic(&name, assignment.clone(), configs.clone())
                .await
                .map(|id| (assignment, id)),
        };
        match outcome {
            Ok((assignment, id)) => {
                if !request.validate_only {
                    created.push(name.clone());
                }
                if version >= 5 {
                    result.num_partitions = i32::try_from(assignment.len()).unwrap_or(i32::MAX);
                    result.replication_factor = assignment
                        .first()
                        .map_or(0, |r| i16::try_from(r.len()).unwrap_or(i16::MAX));
                    result.configs = Some(described_configs(&configs, &broker.config));
                    if version >= 7 {
                        result.topic_id = id;
                    }
                }
            }
            Err(refused) => {
                result.error_code = refused.code.code();
                if version >= 1 {
                    result.error_message = Some(str_bytes(&refused.message));
                }
            }
        }
        results.push(result);
    }
    if !created.is_empty() {
        cluster
            .wait_for_metadata(SEE_CREATED_WITHIN, |m| {
                created.iter().all(|n| m.topics.contains_key(n))
            })
            .await;
    }
    CreateTopicsResponse::default().with_topics(results)
}
