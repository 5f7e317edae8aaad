//! DescribeConfigs and IncrementalAlterConfigs for topics (and a read-only view of the
//! broker's own configuration).

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::ResponseError;

use super::admin::{topic_refusal, SOURCE_DEFAULT, SOURCE_STATIC_BROKER, SOURCE_TOPIC};
use super::str_bytes;
use crate::broker::Broker;
use crate::cluster::Refusal;
use crate::config::KEYS;
use crate::controller::metadata::Command;
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;
use crate::topics::{apply_config_ops, config as topic_config, ConfigOp, TopicError};

/// Resource types of the config APIs.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn entry(name: &str, value: &str, source: i8, read_only: bool) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_config_source(source)
        .with_read_only(read_only)
}

pub fn describe_configs(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: DescribeConfigsRequest = frame.decode()?;
    let mut results = Vec::with_capacity(request.resources.len());
    for resource in &request.resources {
        let name = resource.resource_name.as_str();
        let wanted = |key: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
        };
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        match resource.resource_type {
            RESOURCE_TOPIC => match broker.cluster.metadata().topics.get(name) {
                Some(topic) => {
                    result.configs = topic_config::effective(&topic.configs, &broker.config)
                        .into_iter()
                        .filter(|(key, _, _)| wanted(key))
                        .map(|(key, value, is_default)| {
                            entry(
                                key,
                                &value,
                                if is_default {
                                    SOURCE_DEFAULT
                                } else {
                                    SOURCE_TOPIC
                                },
                                false,
                            )
                        })
                        .collect();
                }
                None => {
                    result.error_code = ResponseError::UnknownTopicOrPartition.code();
                    result.error_message =
                        Some(str_bytes(&format!("topic `{name}` does not exist")));
                }
            },
            RESOURCE_BROKER if name.is_empty() || name == broker.config.node_id.to_string() => {
                result.configs = KEYS
                    .iter()
                    .filter(|k| wanted(k.name))
                    .map(|k| {
                        let value =
                            broker_value(broker, k.name).unwrap_or_else(|| k.default.to_string());
                        let source = if value == k.default {
                            SOURCE_DEFAULT
                        } else {
                            SOURCE_STATIC_BROKER
                        };
                        entry(k.name, &value, source, true)
                    })
                    .collect();
            }
            RESOURCE_BROKER => {
                result.error_code = ResponseError::InvalidRequest.code();
                result.error_message = Some(str_bytes(&format!(
                    "this is broker {}, not `{name}`",
                    broker.config.node_id
                )));
            }
            other => {
                result.error_code = ResponseError::InvalidRequest.code();
                result.error_message = Some(str_bytes(&format!(
                    "resource type {other} is not supported"
                )));
            }
        }
        results.push(result);
    }
    let response = DescribeConfigsResponse::default().with_results(results);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

/// The effective value of a broker key, where the typed config holds it.
fn broker_value(broker: &Broker, key: &str) -> Option<String> {
    let c = &broker.config;
    Some(match key {
        "node.id" => c.node_id.to_string(),
        "log.dirs" => c.data_dir.display().to_string(),
        "listeners" => endpoints(c.listeners.listeners.iter().map(|l| &l.bind)),
        "advertised.listeners" => endpoints(c.listeners.listeners.iter().map(|l| &l.advertised)),
        "http.listeners" => c.http_listen.clone(),
        "num.partitions" => c.num_partitions.to_string(),
        "auto.create.topics.enable" => c.auto_create_topics.to_string(),
        "log.cleanup.policy" => c.cleanup_policy.clone(),
        _ => return None,
    })
}

/// `NAME://HOST:PORT,...` as Kafka shows listeners.
fn endpoints<'a>(endpoints: impl Iterator<Item = &'a crate::config::Endpoint>) -> String {
    endpoints
        .map(|e| format!("{}://{}", e.name, e.address()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Operation codes of IncrementalAlterConfigs.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// How long IncrementalAlterConfigs waits for this broker to see the change it committed.
const SEE_ALTERED_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Applies `ops` to topic `name` through the controller (all or nothing), and waits until
/// this broker's metadata shows the result.
async fn alter_topic(
    broker: &Broker,
    name: &str,
    ops: &[ConfigOp],
    validate_only: bool,
) -> Result<(), Refusal> {
    let cluster = &broker.cluster;
    let current = cluster
        .metadata()
        .topics
        .get(name)
        .map(|t| t.configs.clone())
        .ok_or_else(|| {
            Refusal::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic `{name}` does not exist"),
            )
        })?;
    let configs = apply_config_ops(&current, ops, &broker.config)
        .map_err(|e| topic_refusal(&TopicError::InvalidConfig(e)))?;
    if validate_only || configs == current {
        return Ok(());
    }
    cluster
        .write(&Command::AlterConfigs {
            name: name.to_string(),
            configs: configs.clone(),
        })
        .await?;
    cluster
        .wait_for_metadata(SEE_ALTERED_WITHIN, |m| {
            m.topics.get(name).is_some_and(|t| t.configs == configs)
        })
        .await;
    Ok(())
}

pub async fn incremental_alter_configs(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
) -> Result<Outcome, HandlerError> {
    let request: IncrementalAlterConfigsRequest = frame.decode()?;
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in &request.resources {
        let name = resource.resource_name.as_str();
        let mut response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let outcome = if resource.resource_type == RESOURCE_TOPIC {
            let ops: Result<Vec<ConfigOp>, Refusal> = resource
                .configs
                .iter()
                .map(|c| {
                    let key = c.name.as_str().to_string();
                    let value = c.value.as_ref().map(|v| v.as_str().to_string());
                    match (c.config_operation, value) {
                        (OP_SET, Some(v)) => Ok(ConfigOp::Set(key, v)),
                        (OP_DELETE, _) => Ok(ConfigOp::Delete(key)),
                        (OP_APPEND, Some(v)) => Ok(ConfigOp::Append(key, v)),
                        (OP_SUBTRACT, Some(v)) => Ok(ConfigOp::Subtract(key, v)),
                        (op, _) => Err(Refusal::new(
                            ResponseError::InvalidConfig,
                            format!("operation {op} on `{key}` is invalid or lacks a value"),
                        )),
                    }
                })
                .collect();
            match ops {
                Ok(ops) => alter_topic(broker, name, &ops, request.validate_only).await,
                Err(refused) => Err(refused),
            }
        } else if resource.resource_type == RESOURCE_BROKER {
            Err(Refusal::new(
                ResponseError::InvalidConfig,
                "broker configs are static: set them in the config file",
            ))
        } else {
            Err(Refusal::new(
                ResponseError::InvalidRequest,
                format!("resource type {} is not supported", resource.resource_type),
            ))
        };
        if let Err(refused) = outcome {
            response.error_code = refused.code.code();
            response.error_message = Some(str_bytes(&refused.message));
        }
        responses.push(response);
    }
    let response = IncrementalAlterConfigsResponse::default().with_responses(responses);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}
