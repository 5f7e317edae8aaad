//! Produce: validate and append each partition's record batches, with idempotent-producer
//! deduplication, and answer with the base offsets (or nothing for acks=0).

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
use tracing::debug;

use super::str_bytes;
use crate::broker::Broker;
use crate::log::LogError;
use crate::producer::SequenceError;
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;
use crate::topics::AppendError;

/// The Kafka error code of a refused append.
pub fn append_error_code(error: &AppendError) -> ResponseError {
    match error {
        AppendError::Log(LogError::InvalidBatch { .. }) => ResponseError::CorruptMessage,
        AppendError::Log(LogError::BatchTooLarge { .. }) => ResponseError::MessageTooLarge,
        AppendError::Log(LogError::EmptyBatch { .. } | LogError::NoBatches) => {
            ResponseError::InvalidRecord
        }
        AppendError::Log(LogError::Closed) => ResponseError::NotLeaderOrFollower,
        AppendError::Log(_) => ResponseError::KafkaStorageError,
        AppendError::Sequence(SequenceError::OutOfOrder { .. }) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        AppendError::Sequence(SequenceError::InvalidEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
        AppendError::MultipleIdempotentBatches(_) => ResponseError::InvalidRecord,
        AppendError::Transactional => ResponseError::TransactionalIdAuthorizationFailed,
    }
}

pub fn handle(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: ProduceRequest = frame.decode()?;
    let acks = request.acks;
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut appended_any = false;
    for topic_data in &request.topic_data {
        let name = topic_data.name.0.as_str();
        let topic = broker.topics.get(name);
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for data in &topic_data.partition_data {
            let mut response = PartitionProduceResponse::default()
                .with_index(data.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let partition = topic.as_ref().and_then(|t| t.partition(data.index));
            let error = if !(-1..=1).contains(&acks) {
                Some((
                    ResponseError::InvalidRequiredAcks,
                    format!("acks={acks} is not 0, 1 or -1"),
                ))
            } else if name == crate::group::offsets::OFFSETS_TOPIC {
                // Internal topics are written by the broker only (as in Kafka).
                Some((
                    ResponseError::InvalidTopicException,
                    format!("cannot produce to internal topic {name}"),
                ))
            } else if request.transactional_id.is_some() {
                Some((
                    ResponseError::TransactionalIdAuthorizationFailed,
                    "transactions are not supported".to_string(),
                ))
            } else {
                match (partition, &data.records) {
                    (None, _) => Some((
                        ResponseError::UnknownTopicOrPartition,
                        format!("{name}-{} is not hosted here", data.index),
                    )),
                    (Some(_), None) => {
                        Some((ResponseError::CorruptMessage, "no records".to_string()))
                    }
                    (Some(partition), Some(records)) => {
                        let mut owned = records.to_vec();
                        match partition.append(&mut owned, 0) {
                            Ok(appended) => {
                                appended_any |= !appended.duplicate;
                                response.base_offset = appended.base_offset;
                                if frame.version >= 5 {
                                    response.log_start_offset = partition.log.log_start_offset();
                                }
                                None
                            }
                            Err(e) => {
                                debug!(topic = name, partition = data.index, error = %e, "append refused");
                                Some((append_error_code(&e), e.to_string()))
                            }
                        }
                    }
                }
            };
            if let Some((code, message)) = error {
                response.error_code = code.code();
                if frame.version >= 8 {
                    response.error_message = Some(str_bytes(&message));
                }
            }
            partitions.push(response);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name.clone())
                .with_partition_responses(partitions),
        );
    }
    if appended_any {
        broker.appended.notify_waiters();
    }
    if acks == 0 {
        return Ok(Outcome::Silent);
    }
    let response = ProduceResponse::default().with_responses(responses);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}
