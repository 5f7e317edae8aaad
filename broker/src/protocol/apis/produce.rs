//! Produce: validate and append each partition's record batches, with idempotent-producer
//! deduplication, and answer with the base offsets (or nothing for acks=0).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
use tracing::debug;

use super::str_bytes;
use crate::broker::Broker;
use crate::cluster::TopicRef;
use crate::log::LogError;
use crate::producer::SequenceError;
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;
use crate::topics::{AppendError, Partition};

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

/// A partition whose acks=-1 answer waits for the high watermark to pass its last offset.
struct Pending {
    topic: usize,
    partition: usize,
    log: Arc<Partition>,
    /// High watermark that commits the append.
    commits_at: i64,
}

pub async fn handle(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: ProduceRequest = frame.decode()?;
    let acks = request.acks;
    let cluster = broker.cluster();
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut pending: Vec<Pending> = Vec::new();
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
                        cluster.map_or(ResponseError::UnknownTopicOrPartition, |c| {
                            c.not_hosted_error(TopicRef::Name(name), data.index)
                        }),
                        format!("{name}-{} is not hosted here", data.index),
                    )),
                    (Some(_), None) => {
                        Some((ResponseError::CorruptMessage, "no records".to_string()))
                    }
                    (Some(partition), Some(records)) => {
                        let epoch = cluster.map_or(Ok(0), |c| c.epoch_for_append(&partition, acks));
                        match epoch {
                            Err(refused) => Some(refused),
                            Ok(epoch) => {
                                let mut owned = records.to_vec();
                                match partition.append(&mut owned, epoch) {
                                    Ok(appended) => {
                                        appended_any |= !appended.duplicate;
                                        if let Some(cluster) = cluster {
                                            cluster.after_leader_append(&partition);
                                        }
                                        response.base_offset = appended.base_offset;
                                        if frame.version >= 5 {
                                            response.log_start_offset =
                                                partition.log.log_start_offset();
                                        }
                                        if acks == -1 && cluster.is_some() {
                                            pending.push(Pending {
                                                topic: responses.len(),
                                                partition: partitions.len(),
                                                log: Arc::clone(&partition),
                                                commits_at: appended.last_offset + 1,
                                            });
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
    if !pending.is_empty() {
        let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
        wait_for_commit(broker, &mut pending, timeout).await;
        for p in pending {
            // Not committed in time, or leadership moved away meanwhile.
            let response = &mut responses[p.topic].partition_responses[p.partition];
            let still_leading = cluster.is_some_and(|c| c.is_leading(&p.log));
            let (code, message) = if still_leading {
                (
                    ResponseError::RequestTimedOut,
                    "not replicated to the in-sync replicas in time",
                )
            } else {
                (
                    ResponseError::NotLeaderOrFollower,
                    "leadership moved before the records were committed",
                )
            };
            response.error_code = code.code();
            response.base_offset = -1;
            if frame.version >= 8 {
                response.error_message = Some(str_bytes(message));
            }
        }
    }
    if acks == 0 {
        return Ok(Outcome::Silent);
    }
    let response = ProduceResponse::default().with_responses(responses);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}

/// Waits until the high watermark of every pending partition reaches its append, the
/// partition's leadership moves, or `timeout` passes; committed ones are removed.
async fn wait_for_commit(broker: &Broker, pending: &mut Vec<Pending>, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = broker.appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        pending.retain(|p| p.log.log.high_watermark() < p.commits_at);
        if pending.is_empty() {
            return;
        }
        let leadership_lost = broker
            .cluster()
            .is_some_and(|c| pending.iter().any(|p| !c.is_leading(&p.log)));
        if leadership_lost {
            return;
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}
