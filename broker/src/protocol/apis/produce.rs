//! Produce: decode, refuse what no partition may take (bad acks, internal topics,
//! transactions, missing records), hand the rest to the replica layer
//! ([`ReplicaManager::append_records`](crate::replica::ReplicaManager::append_records)), and
//! encode its answers (nothing for acks=0).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;
use crate::cluster::Refusal;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;
use crate::replica::{AppendError, ProduceEntry, TopicRef};

/// Why a partition's records are refused before they reach the replica layer.
fn refusal(request: &ProduceRequest, topic: &str, has_records: bool) -> Option<Refusal> {
    let acks = request.acks;
    if !(-1..=1).contains(&acks) {
        Some(Refusal::new(
            ResponseError::InvalidRequiredAcks,
            format!("acks={acks} is not 0, 1 or -1"),
        ))
    } else if topic == OFFSETS_TOPIC {
        // Internal topics are written by the broker only (as in Kafka).
        Some(Refusal::new(
            ResponseError::InvalidTopicException,
            format!("cannot produce to internal topic {topic}"),
        ))
    } else if request.transactional_id.is_some() {
        Some(Refusal::new(
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactions are not supported".to_string(),
        ))
    } else if !has_records {
        Some(Refusal::new(ResponseError::CorruptMessage, "no records"))
    } else {
        None
    }
}

/// Where a partition's answer comes from: the index of its entry for the replica layer, or
/// the refusal made here.
type Slot = Result<usize, Refusal>;

pub async fn handle(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: ProduceRequest = frame.decode()?;
    // Each partition's answer: refused here, or the index of its entry for the replica layer.
    let mut slots: Vec<Vec<(i32, Slot)>> = Vec::with_capacity(request.topic_data.len());
    let mut entries = Vec::new();
    for topic_data in &request.topic_data {
        let name = topic_data.name.0.as_str();
        let mut topic_slots = Vec::with_capacity(topic_data.partition_data.len());
        for data in &topic_data.partition_data {
            let slot = match refusal(&request, name, data.records.is_some()) {
                Some(refused) => Err(refused),
                None => {
                    entries.push(ProduceEntry {
                        topic: name.to_string(),
                        partition: data.index,
                        records: data
                            .records
                            .as_ref()
                            .map(|r| r.to_vec())
                            .unwrap_or_default(),
                    });
                    Ok(entries.len() - 1)
                }
            };
            topic_slots.push((data.index, slot));
        }
        slots.push(topic_slots);
    }
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let results = broker
        .replicas
        .append_records(entries, request.acks, timeout)
        .await;
    if request.acks == 0 {
        return Ok(Outcome::Silent);
    }
    let responses = request
        .topic_data
        .iter()
        .zip(slots)
        .map(|(topic_data, topic_slots)| {
            let name = topic_data.name.0.as_str();
            let partitions = topic_slots
                .into_iter()
                .map(|(index, slot)| {
                    let mut response = PartitionProduceResponse::default()
                        .with_index(index)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1);
                    let outcome = slot.and_then(|i| {
                        let result = &results[i];
                        match &result.result {
                            Ok(appended) => Ok((appended.base_offset, result.log_start_offset)),
                            Err(AppendError::NotHosted) => Err(Refusal::new(
                                broker.cluster.not_hosted_error(TopicRef::Name(name), index),
                                format!("{name}-{index} is not hosted on this broker"),
                            )),
                            Err(e) => Err(Refusal::new(e.code(), e.to_string())),
                        }
                    });
                    match outcome {
                        Ok((base_offset, log_start_offset)) => {
                            response.base_offset = base_offset;
                            if frame.version >= 5 {
                                response.log_start_offset = log_start_offset;
                            }
                        }
                        Err(refused) => {
                            response.error_code = refused.code.code();
                            if frame.version >= 8 {
                                response.error_message = Some(str_bytes(&refused.message));
                            }
                        }
                    }
                    response
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic_data.name.clone())
                .with_partition_responses(partitions)
        })
        .collect();
    let response = ProduceResponse::default().with_responses(responses);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}
