//! Every advertised version of every API is answered: a meaningful request at each version
//! goes through the dispatcher and comes back as a response that decodes at that version
//! (a field set that the version cannot carry would close the connection instead).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{encode_request_header_into_buffer, Decodable, Encodable, StrBytes};
use tokafka_broker::broker::Broker;
use tokafka_broker::log::test_batches::{batch, BatchSpec};
use tokafka_broker::protocol::dispatch::{handle, Outcome};
use tokafka_broker::protocol::versions::SUPPORTED;
use tokafka_broker::protocol::Part;
use tokafka_broker::testing;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn frame(api: ApiKey, version: i16, body: &impl Encodable) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("versions-test")));
    encode_request_header_into_buffer(&mut buf, &header).ok()?;
    body.encode(&mut buf, version).ok()?;
    Some(buf.freeze())
}

/// Sends a request and returns the response body bytes (after size and header).
async fn call(
    broker: &Arc<Broker>,
    api: ApiKey,
    version: i16,
    body: &impl Encodable,
) -> Option<Bytes> {
    let bytes = frame(api, version, body)?;
    match handle(broker, bytes, "/127.0.0.1").await {
        Outcome::Respond(response) | Outcome::RespondThenClose { response, .. } => {
            let mut flat = Vec::new();
            for part in response.parts {
                match part {
                    Part::Bytes(b) => flat.extend_from_slice(&b),
                    Part::File(r) => flat.extend_from_slice(&r.to_vec().expect("region")),
                }
            }
            let mut body = Bytes::from(flat).split_off(4);
            let header_version = api.response_header_version(version);
            ResponseHeader::decode(&mut body, header_version).expect("response header");
            Some(body)
        }
        Outcome::Silent => None,
        Outcome::Close(reason) => panic!("{api:?} v{version} closed the connection: {reason}"),
    }
}

fn request_for(api: ApiKey, version: i16) -> Option<Bytes> {
    let topic = "versions";
    let body: Option<Bytes> = match api {
        ApiKey::ApiVersions => frame(api, version, &ApiVersionsRequest::default()),
        ApiKey::Metadata => frame(
            api,
            version,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(topic)))
            ])),
        ),
        ApiKey::Produce => {
            let records = Bytes::from(batch(&BatchSpec::records(3)));
            frame(
                api,
                version,
                &ProduceRequest::default()
                    .with_acks(1)
                    .with_timeout_ms(1000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(name(topic))
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(records))])]),
            )
        }
        ApiKey::Fetch => frame(
            api,
            version,
            &FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_bytes(1 << 20)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(name(topic))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20)])]),
        ),
        ApiKey::ListOffsets => frame(
            api,
            version,
            &ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(name(topic))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-2)])]),
        ),
        ApiKey::CreateTopics => frame(
            api,
            version,
            &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(name(&format!("created-v{version}")))
                .with_num_partitions(2)
                .with_replication_factor(1)]),
        ),
        ApiKey::DescribeCluster => frame(
            api,
            version,
            &DescribeClusterRequest::default().with_endpoint_type(1),
        ),
        ApiKey::InitProducerId => frame(
            api,
            version,
            &InitProducerIdRequest::default()
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        ApiKey::FindCoordinator => frame(
            api,
            version,
            &FindCoordinatorRequest::default()
                .with_key(StrBytes::from_static_str("g"))
                .with_coordinator_keys(vec![StrBytes::from_static_str("g")]),
        ),
        ApiKey::OffsetFetch => frame(
            api,
            version,
            &OffsetFetchRequest::default().with_group_id(GroupId(StrBytes::from_static_str("g"))),
        ),
        ApiKey::ListGroups => frame(api, version, &ListGroupsRequest::default()),
        ApiKey::DescribeGroups => frame(
            api,
            version,
            &DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(StrBytes::from_static_str("g"))]),
        ),
        ApiKey::JoinGroup => frame(
            api,
            version,
            &JoinGroupRequest::default().with_session_timeout_ms(10_000),
        ),
        _ => None,
    };
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_version_is_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = testing::single_node(dir.path()).await;
    let broker = Arc::clone(&running.broker);
    testing::create_topic(&broker, "versions", 1).await;
    let mut checked = 0;
    for &(api, min, max) in SUPPORTED {
        for version in min..=max {
            let Some(bytes) = request_for(api, version) else {
                continue;
            };
            let Outcome::Respond(response) = handle(&broker, bytes, "/127.0.0.1").await else {
                panic!("{api:?} v{version} got no response");
            };
            assert!(response.wire_len() > 8, "{api:?} v{version}");
            checked += 1;
        }
    }
    assert!(checked > 80, "only {checked} API versions exercised");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_batches_fetch_back_at_every_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = testing::single_node(dir.path()).await;
    let broker = Arc::clone(&running.broker);
    let partition = testing::create_topic(&broker, "versions", 1)
        .await
        .remove(0);
    let produce_range = SUPPORTED
        .iter()
        .find(|s| s.0 == ApiKey::Produce)
        .expect("produce");
    for version in produce_range.1..=produce_range.2 {
        let body = call(&broker, ApiKey::Produce, version, &{
            let records = Bytes::from(batch(&BatchSpec::records(2)));
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name("versions"))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records))])])
        })
        .await
        .expect("response");
        let response = ProduceResponse::decode(&mut body.clone(), version).expect("decode");
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, 0, "produce v{version}");
    }
    let produced = i64::from(produce_range.2 - produce_range.1 + 1) * 2;
    assert_eq!(partition.log.log_end_offset(), produced);
    let fetch_range = SUPPORTED
        .iter()
        .find(|s| s.0 == ApiKey::Fetch)
        .expect("fetch");
    for version in fetch_range.1..=fetch_range.2 {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name("versions"))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(2)
                    .with_partition_max_bytes(1 << 20)])]);
        let body = call(&broker, ApiKey::Fetch, version, &request)
            .await
            .expect("response");
        let response = FetchResponse::decode(&mut body.clone(), version).expect("decode");
        let data = &response.responses[0].partitions[0];
        assert_eq!(data.error_code, 0, "fetch v{version}");
        assert_eq!(data.high_watermark, produced, "fetch v{version}");
        let records = data.records.clone().expect("records are never null");
        let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records.clone())
            .expect("batches decode");
        let first = sets
            .first()
            .and_then(|s| s.records.first())
            .map(|r| r.offset);
        assert_eq!(
            first,
            Some(2),
            "fetch v{version} starts at the requested batch"
        );
        let count: usize = sets.iter().map(|s| s.records.len()).sum();
        assert_eq!(count as i64, produced - 2, "fetch v{version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_batch_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = testing::single_node(dir.path()).await;
    let broker = Arc::clone(&running.broker);
    let partition = testing::create_topic(&broker, "versions", 1)
        .await
        .remove(0);
    let mut records = batch(&BatchSpec::records(2));
    let last = records.len() - 1;
    records[last] ^= 0xff;
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("versions"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(records)))])]);
    let body = call(&broker, ApiKey::Produce, 9, &request)
        .await
        .expect("response");
    let response = ProduceResponse::decode(&mut body.clone(), 9).expect("decode");
    assert_eq!(
        response.responses[0].partition_responses[0].error_code, 2,
        "CORRUPT_MESSAGE"
    );
    assert_eq!(partition.log.log_end_offset(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_write_to_the_offsets_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = testing::single_node(dir.path()).await;
    let broker = Arc::clone(&running.broker);
    let offsets = testing::create_topic(&broker, "__consumer_offsets", 1)
        .await
        .remove(0);
    let records = Bytes::from(batch(&BatchSpec::records(1)));
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("__consumer_offsets"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let body = call(&broker, ApiKey::Produce, 9, &request)
        .await
        .expect("response");
    let response = ProduceResponse::decode(&mut body.clone(), 9).expect("decode");
    assert_eq!(
        response.responses[0].partition_responses[0].error_code, 17,
        "INVALID_TOPIC_EXCEPTION"
    );
    assert_eq!(offsets.log.log_end_offset(), 0);
}
