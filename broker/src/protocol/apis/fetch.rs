//! Fetch: whole stored batches from each requested partition, sent from the segment files
//! with zero copies, with long polling (`max_wait_ms`/`min_bytes`) and byte limits per
//! partition and per response. A long poll ends early when the broker shuts down, so that a
//! consumer's long `max_wait_ms` cannot hold a clean stop back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::broker::Broker;
use crate::cluster::TopicRef;
use crate::log::{LogError, ReadLimits};
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::encode::RecordsSource;
use crate::protocol::RequestFrame;

/// Longest long-poll the broker honours, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(60);

/// One pass over the requested partitions.
struct Pass {
    response: FetchResponse,
    records: RecordsSource,
    bytes: u64,
    has_error: bool,
}

/// The broker id of a follower's fetch, `None` for a consumer's.
fn follower_id(request: &FetchRequest, version: i16) -> Option<i32> {
    let id = if version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    (id >= 0).then_some(id)
}

fn read_pass(broker: &Broker, request: &FetchRequest, version: i16) -> std::io::Result<Pass> {
    let cluster = broker.cluster();
    let follower = follower_id(request, version);
    let mut high_watermark_moved = false;
    let mut budget = broker.config.fetch_max_bytes as u64;
    if version >= 3 && request.max_bytes >= 0 {
        budget = budget.min(request.max_bytes as u64);
    }
    let mut records = RecordsSource::new();
    let mut total = 0u64;
    let mut has_error = false;
    let mut topics = Vec::with_capacity(request.topics.len());
    for fetch_topic in &request.topics {
        let topic = if version >= 13 {
            broker.topics.get_by_id(fetch_topic.topic_id)
        } else {
            broker.topics.get(fetch_topic.topic.0.as_str())
        };
        let mut partitions = Vec::with_capacity(fetch_topic.partitions.len());
        for fetch in &fetch_topic.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(fetch.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_records(Some(Bytes::new()));
            let Some(partition) = topic.as_ref().and_then(|t| t.partition(fetch.partition)) else {
                let named = if version >= 13 {
                    TopicRef::Id(fetch_topic.topic_id)
                } else {
                    TopicRef::Name(fetch_topic.topic.0.as_str())
                };
                data.error_code = match cluster.map(|c| c.not_hosted_error(named, fetch.partition))
                {
                    Some(hosted_elsewhere @ ResponseError::NotLeaderOrFollower) => {
                        hosted_elsewhere.code()
                    }
                    _ if version >= 13 => ResponseError::UnknownTopicId.code(),
                    _ => ResponseError::UnknownTopicOrPartition.code(),
                };
                has_error = true;
                partitions.push(data);
                continue;
            };
            if let Some(cluster) = cluster {
                // Only the leader serves, consumers and followers alike, in the epoch they
                // name.
                if let Err(refused) = cluster.leader_epoch(&partition, fetch.current_leader_epoch) {
                    data.error_code = refused.0.code();
                    has_error = true;
                    partitions.push(data);
                    continue;
                }
                if let Some(follower) = follower {
                    high_watermark_moved |=
                        cluster.on_follower_fetch(&partition, follower, fetch.fetch_offset);
                }
            }
            let log = &partition.log;
            let limit = budget
                .saturating_sub(total)
                .min(fetch.partition_max_bytes.max(0) as u64);
            let limits = ReadLimits {
                max_bytes: limit,
                min_one_batch: total == 0,
                // Followers copy the whole log; consumers see committed records only.
                max_offset: if follower.is_some() && cluster.is_some() {
                    None
                } else {
                    Some(log.high_watermark())
                },
            };
            match log.read(fetch.fetch_offset, limits) {
                Ok(read) => {
                    data.high_watermark = read.high_watermark;
                    data.last_stable_offset = read.high_watermark;
                    if version >= 5 {
                        data.log_start_offset = read.log_start_offset;
                    }
                    if let Some(region) = read.region {
                        total += region.len;
                        data.records = Some(records.records_field(region)?);
                    }
                }
                Err(LogError::OffsetOutOfRange {
                    log_start_offset,
                    log_end_offset,
                    ..
                }) => {
                    data.error_code = ResponseError::OffsetOutOfRange.code();
                    data.high_watermark = log.high_watermark().min(log_end_offset);
                    data.last_stable_offset = data.high_watermark;
                    if version >= 5 {
                        data.log_start_offset = log_start_offset;
                    }
                    has_error = true;
                }
                Err(e) => {
                    warn!(topic = %partition.topic, partition = partition.index, offset = fetch.fetch_offset, error = %e, "fetch read failed");
                    data.error_code = ResponseError::KafkaStorageError.code();
                    has_error = true;
                }
            }
            partitions.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(fetch_topic.topic.clone())
                .with_topic_id(fetch_topic.topic_id)
                .with_partitions(partitions),
        );
    }
    if high_watermark_moved {
        broker.appended.notify_waiters();
    }
    Ok(Pass {
        response: FetchResponse::default().with_responses(topics),
        records,
        bytes: total,
        has_error,
    })
}

/// Answers a fetch once it has `min_bytes`, an error, its `max_wait_ms` has passed, or
/// `shutdown` is cancelled (then with what there is, possibly nothing).
pub async fn handle(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
    shutdown: &CancellationToken,
) -> Result<Outcome, HandlerError> {
    let request: FetchRequest = frame.decode()?;
    let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as u64;
    loop {
        // Register for the wake-up before reading, so an append in between is not missed.
        let notified = broker.appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let pass = match read_pass(broker, &request, frame.version) {
            Ok(pass) => pass,
            Err(e) => return Ok(Outcome::Close(format!("fetch read failed: {e}"))),
        };
        let expired = Instant::now() >= deadline || shutdown.is_cancelled();
        if pass.bytes >= min_bytes.max(1) || pass.has_error || expired || min_bytes == 0 {
            let answer = Answer {
                body: pass.response,
                records: pass.records,
            };
            return Ok(Outcome::Respond(respond(frame, answer)?));
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use crate::protocol::parse_frame;
    use bytes::BytesMut;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, RequestHeader, TopicName};
    use kafka_protocol::protocol::{encode_request_header_into_buffer, Encodable, StrBytes};

    fn long_poll(max_wait_ms: i32) -> RequestFrame {
        let version = 11;
        let request = FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let mut buf = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Fetch as i16)
            .with_request_api_version(version)
            .with_correlation_id(1);
        encode_request_header_into_buffer(&mut buf, &header).expect("header");
        request.encode(&mut buf, version).expect("body");
        parse_frame(buf.freeze()).expect("frame")
    }

    #[tokio::test]
    async fn shutdown_ends_a_long_poll_with_an_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(BrokerConfig::for_tests(dir.path())).expect("open");
        broker
            .topics
            .create("t", 1, -1, Default::default())
            .expect("create");
        let shutdown = CancellationToken::new();
        let waiting = tokio::spawn({
            let (broker, shutdown) = (Arc::clone(&broker), shutdown.clone());
            async move { handle(&broker, &long_poll(60_000), &shutdown).await }
        });
        // On this single-threaded runtime, one yield lets the fetch run up to its wait.
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "an empty partition makes the fetch wait"
        );
        shutdown.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("answered long before max_wait_ms")
            .expect("task")
            .expect("handled");
        assert!(matches!(outcome, Outcome::Respond(_)));
    }
}
