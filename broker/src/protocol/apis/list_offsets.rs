//! ListOffsets: the earliest offset, the latest (high watermark), or the first offset at or
//! after a timestamp, for each requested partition.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;
use crate::replica::TopicRef;

/// Special timestamps of ListOffsets.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub fn handle(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: ListOffsetsRequest = frame.decode()?;
    let mut topics = Vec::with_capacity(request.topics.len());
    for wanted in &request.topics {
        let name = wanted.name.0.as_str();
        let partitions = wanted
            .partitions
            .iter()
            .map(|p| {
                let response = ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_timestamp(-1)
                    .with_offset(-1)
                    .with_leader_epoch(if frame.version >= 4 { 0 } else { -1 });
                let Some(partition) = broker
                    .replicas
                    .partition(TopicRef::Name(name), p.partition_index)
                else {
                    let code = broker
                        .cluster
                        .not_hosted_error(TopicRef::Name(name), p.partition_index);
                    return response.with_error_code(code.code());
                };
                // Only the leader answers, in the epoch the client names (a follower's high
                // watermark may lag the leader's).
                if let Err(refused) = partition.leader_epoch(p.current_leader_epoch) {
                    return response.with_error_code(refused.code());
                }
                let log = &partition.log;
                match p.timestamp {
                    LATEST => response.with_offset(log.high_watermark()),
                    EARLIEST => response.with_offset(log.log_start_offset()),
                    ts if ts >= 0 => match log.offset_for_timestamp(ts) {
                        Ok(Some(hit)) => response
                            .with_offset(hit.offset)
                            .with_timestamp(hit.timestamp),
                        Ok(None) => response,
                        Err(_) => response.with_error_code(ResponseError::KafkaStorageError.code()),
                    },
                    _ => response.with_error_code(ResponseError::InvalidRequest.code()),
                }
            })
            .collect();
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(wanted.name.clone())
                .with_partitions(partitions),
        );
    }
    let response = ListOffsetsResponse::default().with_topics(topics);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}
