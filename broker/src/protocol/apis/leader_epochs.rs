//! OffsetForLeaderEpoch: where a leader epoch ends in this broker's log. A follower asks it
//! of its leader before fetching in a new epoch and truncates what lies past the answer.

use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::broker::Broker;
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::RequestFrame;
use crate::replica::TopicRef;

/// Kafka's "undefined" epoch and offset.
const UNDEFINED: i64 = -1;

pub fn handle(broker: &Arc<Broker>, frame: &RequestFrame) -> Result<Outcome, HandlerError> {
    let request: OffsetForLeaderEpochRequest = frame.decode()?;
    let topics = request
        .topics
        .iter()
        .map(|wanted| {
            let name = wanted.topic.0.as_str();
            let partitions = wanted
                .partitions
                .iter()
                .map(|p| {
                    let mut answer = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(UNDEFINED);
                    let Some(partition) =
                        broker.replicas.partition(TopicRef::Name(name), p.partition)
                    else {
                        answer.error_code = broker
                            .cluster
                            .not_hosted_error(TopicRef::Name(name), p.partition)
                            .code();
                        return answer;
                    };
                    if let Err(refused) = partition.leader_epoch(p.current_leader_epoch) {
                        answer.error_code = refused.code();
                        return answer;
                    }
                    if let Some((epoch, end)) = partition.log.end_offset_for_epoch(p.leader_epoch) {
                        answer.leader_epoch = epoch;
                        answer.end_offset = end;
                    }
                    answer
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(wanted.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    let response = OffsetForLeaderEpochResponse::default().with_topics(topics);
    Ok(Outcome::Respond(respond(frame, Answer::new(response))?))
}
