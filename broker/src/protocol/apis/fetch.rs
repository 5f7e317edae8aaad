//! Fetch: decode, ask the replica layer ([`ReplicaManager::fetch`](crate::replica::ReplicaManager::fetch))
//! — which reads as leader, records followers' progress and long-polls — and encode its
//! answer with the records as file regions, sent from the segment files without copying. A
//! long poll ends early when the broker shuts down, so that a consumer's long `max_wait_ms`
//! cannot hold a clean stop back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::protocol::dispatch::{respond, Answer, HandlerError, Outcome};
use crate::protocol::encode::RecordsSource;
use crate::protocol::RequestFrame;
use crate::replica::{FetchError, FetchParams, PartitionFetch, TopicRef};

/// The broker id of a follower's fetch, `None` for a consumer's.
fn follower_id(request: &FetchRequest, version: i16) -> Option<i32> {
    let id = if version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    (id >= 0).then_some(id)
}

/// How a request names its topics: by id from v13 on, by name before.
fn topic_ref(
    topic: &kafka_protocol::messages::fetch_request::FetchTopic,
    version: i16,
) -> TopicRef<'_> {
    if version >= 13 {
        TopicRef::Id(topic.topic_id)
    } else {
        TopicRef::Name(topic.topic.0.as_str())
    }
}

/// Answers a fetch once it has `min_bytes`, an error, its `max_wait_ms` has passed, or
/// `shutdown` is cancelled (then with what there is, possibly nothing).
pub async fn handle(
    broker: &Arc<Broker>,
    frame: &RequestFrame,
    shutdown: &CancellationToken,
) -> Result<Outcome, HandlerError> {
    let request: FetchRequest = frame.decode()?;
    let version = frame.version;
    let params = FetchParams {
        follower: follower_id(&request, version),
        max_wait: Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)),
        min_bytes: u64::try_from(request.min_bytes).unwrap_or(0),
        max_bytes: if version >= 3 {
            u64::try_from(request.max_bytes).unwrap_or(0)
        } else {
            u64::MAX
        },
    };
    let partitions: Vec<PartitionFetch<'_>> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(move |p| PartitionFetch {
                topic: topic_ref(topic, version),
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                current_leader_epoch: p.current_leader_epoch,
                partition_max_bytes: p.partition_max_bytes,
            })
        })
        .collect();
    let mut fetched = broker
        .replicas
        .fetch(params, &partitions, shutdown)
        .await
        .into_iter();
    let mut records = RecordsSource::new();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let mut answers = Vec::with_capacity(topic.partitions.len());
        for (p, read) in topic.partitions.iter().zip(fetched.by_ref()) {
            let mut data = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(read.high_watermark)
                .with_last_stable_offset(read.high_watermark)
                .with_log_start_offset(if version >= 5 {
                    read.log_start_offset
                } else {
                    -1
                })
                .with_records(Some(Bytes::new()));
            match read.error {
                None => {}
                Some(FetchError::NotHosted) => {
                    data.error_code = broker
                        .cluster
                        .not_hosted_error(topic_ref(topic, version), p.partition)
                        .code();
                }
                Some(FetchError::Refused(code)) => data.error_code = code.code(),
            }
            if let Some(region) = read.records {
                match records.records_field(region) {
                    Ok(field) => data.records = Some(field),
                    Err(e) => return Ok(Outcome::Close(format!("fetch read failed: {e}"))),
                }
            }
            answers.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(answers),
        );
    }
    let answer = Answer {
        body: FetchResponse::default().with_responses(topics),
        records,
    };
    Ok(Outcome::Respond(respond(frame, answer)?))
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let running = crate::testing::single_node(dir.path()).await;
        let broker = Arc::clone(&running.broker);
        crate::testing::create_topic(&broker, "t", 1).await;
        let shutdown = CancellationToken::new();
        let waiting = tokio::spawn({
            let (broker, shutdown) = (Arc::clone(&broker), shutdown.clone());
            async move { handle(&broker, &long_poll(60_000), &shutdown).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
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
        running.shutdown().await.expect("clean stop");
    }
}
