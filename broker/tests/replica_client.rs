//! The follower's leader connection against a real broker started in-process, and against a
//! scripted fake leader that speaks other Fetch versions or sends bad bytes.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, RequestHeader,
    ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use kafka_protocol::ResponseError;
use rand::{Rng, SeedableRng};
use tokafka_broker::log::test_batches::{batch, BatchSpec};
use tokafka_broker::protocol::versions;
use tokafka_broker::replica::AppendOrigin;
use tokafka_broker::replication::client::{
    pick_version, ClientError, ConnectionConfig, EpochEnd, EpochQuery, FetchParams,
    LeaderConnection, PartitionFetch, FETCH_VERSIONS, OFFSET_FOR_LEADER_EPOCH_VERSIONS,
};
use tokafka_broker::run::RunningBroker;
use tokafka_broker::testing;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use uuid::Uuid;

const TOPIC: &str = "replicated";

fn config() -> ConnectionConfig {
    ConnectionConfig::new("replica-client-test")
        .with_connect_timeout(Duration::from_secs(5))
        .with_request_timeout(Duration::from_secs(5))
}

/// A broker with one single-partition topic holding `batches` as stored (offsets assigned).
struct Leader {
    running: RunningBroker,
    topic_id: Uuid,
    stored: Vec<Vec<u8>>,
    _dir: tempfile::TempDir,
}

async fn leader_with_batches(record_counts: &[usize]) -> Leader {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = testing::single_node(dir.path()).await;
    let partition = testing::create_topic(&running.broker, TOPIC, 1)
        .await
        .remove(0);
    let mut stored = Vec::new();
    for (seed, &count) in record_counts.iter().enumerate() {
        let mut bytes = batch(&BatchSpec::records(count).seed(seed as u64));
        partition
            .append_as_leader(&mut bytes, AppendOrigin::Client { acks: 1 })
            .expect("append");
        stored.push(bytes); // now carrying the offsets and epoch the leader assigned
    }
    Leader {
        topic_id: partition.topic_id,
        running,
        stored,
        _dir: dir,
    }
}

impl Leader {
    async fn connect(&self) -> LeaderConnection {
        LeaderConnection::connect(&self.running.kafka_address.to_string(), config())
            .await
            .expect("connects")
    }

    fn fetch_at(&self, offset: i64) -> PartitionFetch {
        PartitionFetch {
            topic: TOPIC.to_string(),
            topic_id: self.topic_id,
            partition: 0,
            fetch_offset: offset,
            current_leader_epoch: -1,
            last_fetched_epoch: None,
            log_start_offset: 0,
            partition_max_bytes: 1 << 20,
        }
    }
}

/// A consumer-like replica id for now: the broker does not yet treat followers specially.
fn params() -> FetchParams {
    FetchParams {
        replica_id: -1,
        replica_epoch: -1,
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 1 << 20,
    }
}

#[tokio::test]
async fn a_fetch_returns_the_stored_batches_byte_for_byte() {
    let leader = leader_with_batches(&[2, 3, 1]).await;
    let mut connection = leader.connect().await;
    let outcome = connection
        .fetch(&params(), &[leader.fetch_at(0)])
        .await
        .expect("fetch");
    assert_eq!(outcome.error_code, 0);
    let [partition] = outcome.partitions.as_slice() else {
        panic!("one partition expected: {outcome:?}");
    };
    assert_eq!(partition.error_code, 0);
    assert_eq!((partition.topic.as_str(), partition.partition), (TOPIC, 0));
    assert_eq!(partition.high_watermark, 6);
    assert_eq!(partition.last_stable_offset, 6);
    assert_eq!(partition.log_start_offset, 0);
    assert_eq!(partition.records, Bytes::from(leader.stored.concat()));
}

#[tokio::test]
async fn a_fetch_from_a_later_offset_starts_at_the_batch_holding_it() {
    let leader = leader_with_batches(&[2, 3, 1]).await;
    let mut connection = leader.connect().await;
    let outcome = connection
        .fetch(&params(), &[leader.fetch_at(3)])
        .await
        .expect("fetch");
    let records = &outcome.partitions[0].records;
    assert_eq!(records, &Bytes::from(leader.stored[1..].concat()));
}

#[tokio::test]
async fn a_fetch_beyond_the_log_end_is_offset_out_of_range() {
    let leader = leader_with_batches(&[2]).await;
    let mut connection = leader.connect().await;
    let outcome = connection
        .fetch(&params(), &[leader.fetch_at(1_000)])
        .await
        .expect("fetch");
    let partition = &outcome.partitions[0];
    assert_eq!(partition.error_code, ResponseError::OffsetOutOfRange.code());
    assert_eq!(partition.error_code, 1);
    assert_eq!(partition.high_watermark, 2);
    assert!(partition.records.is_empty());
}

#[tokio::test]
async fn the_connection_serves_request_after_request() {
    let leader = leader_with_batches(&[2, 3]).await;
    let mut connection = leader.connect().await;
    for _ in 0..3 {
        let outcome = connection
            .fetch(&params(), &[leader.fetch_at(2)])
            .await
            .expect("fetch");
        assert_eq!(
            outcome.partitions[0].records,
            Bytes::from(leader.stored[1].clone())
        );
    }
}

#[tokio::test]
async fn negotiation_picks_the_highest_version_both_sides_speak() {
    let leader = leader_with_batches(&[]).await;
    let connection = leader.connect().await;
    let negotiated = connection.versions();
    let ours = versions::supported(ApiKey::Fetch);
    assert_eq!(negotiated.fetch.leader, ours);
    assert_eq!(negotiated.fetch.chosen, pick_version(FETCH_VERSIONS, ours));
    assert!(
        negotiated.fetch.chosen.is_some(),
        "the broker serves a follower Fetch"
    );
    let epochs = versions::supported(ApiKey::OffsetForLeaderEpoch);
    assert_eq!(
        negotiated.offset_for_leader_epoch.chosen,
        pick_version(OFFSET_FOR_LEADER_EPOCH_VERSIONS, epochs)
    );
}

#[tokio::test]
async fn the_broker_answers_offset_for_leader_epoch_at_v4_with_the_epoch_end() {
    // (A leader without the API is refused locally: see the fake-leader test below.)
    let leader = leader_with_batches(&[2, 3]).await;
    let mut connection = leader.connect().await;
    assert_eq!(
        connection.versions().offset_for_leader_epoch.chosen,
        Some(4),
        "the broker's highest OffsetForLeaderEpoch version"
    );
    let query = EpochQuery {
        topic: TOPIC.to_string(),
        partition: 0,
        current_leader_epoch: -1,
        leader_epoch: 0,
    };
    let ends = connection
        .offset_for_leader_epoch(1, &[query])
        .await
        .expect("answered");
    assert_eq!(ends.len(), 1);
    let end = &ends[0];
    assert_eq!(
        (
            end.partition,
            end.error_code,
            end.leader_epoch,
            end.end_offset
        ),
        (0, 0, 0, 5),
        "epoch 0 holds both batches, so it ends at the log end"
    );
}

// ---- A scripted fake leader ----

/// What the fake leader does with a request other than ApiVersions.
enum Reply {
    /// Write these bytes as they are (size prefix included, or not, as the test wants).
    Raw(Vec<u8>),
    /// Write these bytes, then close the connection.
    RawThenClose(Vec<u8>),
    /// Read on, answer nothing.
    Silence,
}

type Handler = Arc<dyn Fn(&RequestHeader, Bytes) -> Reply + Send + Sync>;

/// A listener answering ApiVersions with `apis`, and everything else with `handler`.
async fn fake_leader(apis: Vec<(ApiKey, i16, i16)>, handler: Handler) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, apis.clone(), Arc::clone(&handler)));
        }
    });
    address
}

async fn serve(mut stream: TcpStream, apis: Vec<(ApiKey, i16, i16)>, handler: Handler) {
    loop {
        let Ok(size) = stream.read_i32().await else {
            return;
        };
        let mut frame = vec![0u8; size as usize];
        if stream.read_exact(&mut frame).await.is_err() {
            return;
        }
        let mut frame = Bytes::from(frame);
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let api = ApiKey::try_from(key).expect("known key");
        let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
            .expect("request header");
        let reply = if api == ApiKey::ApiVersions {
            Reply::Raw(api_versions_answer(&apis, header.correlation_id, version))
        } else {
            handler(&header, frame)
        };
        match reply {
            Reply::Raw(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::RawThenClose(bytes) => {
                let _ = stream.write_all(&bytes).await;
                return;
            }
            Reply::Silence => {}
        }
    }
}

/// As Kafka answers: the ranges at the version asked for, or v0 with UNSUPPORTED_VERSION
/// when that version is above its own.
fn api_versions_answer(apis: &[(ApiKey, i16, i16)], correlation_id: i32, version: i16) -> Vec<u8> {
    let api_keys = apis
        .iter()
        .map(|&(api, min, max)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    let own_max = apis
        .iter()
        .find(|(api, _, _)| *api == ApiKey::ApiVersions)
        .map_or(0, |&(_, _, max)| max);
    let mut body = ApiVersionsResponse::default().with_api_keys(api_keys);
    let version = if version > own_max {
        body.error_code = ResponseError::UnsupportedVersion.code();
        0
    } else {
        version
    };
    response_frame(correlation_id, &body, version)
}

fn response_frame<T: Encodable + HeaderVersion>(
    correlation_id: i32,
    body: &T,
    version: i16,
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, T::header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf.to_vec()
}

/// What a Kafka 4.0 broker advertises, for the APIs a follower uses.
fn kafka_apis() -> Vec<(ApiKey, i16, i16)> {
    vec![
        (ApiKey::ApiVersions, 0, 4),
        (ApiKey::Fetch, 4, 17),
        (ApiKey::OffsetForLeaderEpoch, 2, 4),
    ]
}

fn partition(topic_id: Uuid) -> PartitionFetch {
    PartitionFetch {
        topic: "t".to_string(),
        topic_id,
        partition: 0,
        fetch_offset: 42,
        current_leader_epoch: 5,
        last_fetched_epoch: Some(4),
        log_start_offset: 3,
        partition_max_bytes: 4096,
    }
}

/// Connects to a fake leader whose answer to every request after ApiVersions is `reply`.
async fn connect_to_fake(
    reply: impl Fn(&RequestHeader) -> Reply + Send + Sync + 'static,
) -> LeaderConnection {
    let address = fake_leader(kafka_apis(), Arc::new(move |header, _| reply(header))).await;
    LeaderConnection::connect(
        &address,
        config().with_request_timeout(Duration::from_millis(300)),
    )
    .await
    .expect("connects")
}

async fn fetch_once(connection: &mut LeaderConnection) -> Result<(), ClientError> {
    connection
        .fetch(&params(), &[partition(Uuid::from_u128(1))])
        .await
        .map(|_| ())
}

#[tokio::test]
async fn against_a_kafka_4_leader_the_fetch_names_topics_by_id_and_the_replica_in_its_state() {
    let topic_id = Uuid::from_u128(0xfeed);
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let handler: Handler = Arc::new(move |header, mut body| {
        let version = header.request_api_version;
        let request = FetchRequest::decode(&mut body, version).expect("fetch decodes");
        let _ = seen_tx.send((version, request.clone()));
        let data = PartitionData::default()
            .with_partition_index(0)
            .with_high_watermark(50)
            .with_last_stable_offset(49)
            .with_log_start_offset(3)
            .with_diverging_epoch(EpochEndOffset::default().with_epoch(4).with_end_offset(40))
            .with_records(Some(Bytes::from_static(b"opaque batches")));
        let response =
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic_id(topic_id)
                .with_partitions(vec![data])]);
        Reply::Raw(response_frame(header.correlation_id, &response, version))
    });
    let address = fake_leader(kafka_apis(), handler).await;
    let mut connection = LeaderConnection::connect(&address, config())
        .await
        .expect("connects");
    assert_eq!(connection.versions().fetch.chosen, Some(17));
    assert_eq!(
        connection.versions().offset_for_leader_epoch.chosen,
        Some(4)
    );
    let follower = FetchParams {
        replica_id: 2,
        replica_epoch: 9,
        max_wait_ms: 100,
        min_bytes: 1,
        max_bytes: 1 << 20,
    };
    let outcome = connection
        .fetch(&follower, &[partition(topic_id)])
        .await
        .expect("fetch");

    let (version, request) = seen.recv().await.expect("request seen");
    assert_eq!(version, 17);
    assert_eq!(request.replica_id, BrokerId(-1));
    assert_eq!(request.replica_state.replica_id, BrokerId(2));
    assert_eq!(request.replica_state.replica_epoch, 9);
    assert_eq!(request.isolation_level, 0);
    let topic = &request.topics[0];
    assert_eq!(topic.topic_id, topic_id);
    let sent = &topic.partitions[0];
    assert_eq!(
        (
            sent.fetch_offset,
            sent.current_leader_epoch,
            sent.last_fetched_epoch
        ),
        (42, 5, 4)
    );
    assert_eq!((sent.log_start_offset, sent.partition_max_bytes), (3, 4096));

    let fetched = &outcome.partitions[0];
    assert_eq!(fetched.topic, "t");
    assert_eq!(fetched.topic_id, topic_id);
    assert_eq!(
        (
            fetched.high_watermark,
            fetched.last_stable_offset,
            fetched.log_start_offset
        ),
        (50, 49, 3)
    );
    assert_eq!(
        fetched.diverging_epoch,
        Some(EpochEnd {
            epoch: 4,
            end_offset: 40
        })
    );
    assert_eq!(&fetched.records[..], b"opaque batches");
}

#[tokio::test]
async fn a_leader_refusing_our_api_versions_version_is_asked_again_at_its_own() {
    let apis = vec![(ApiKey::ApiVersions, 0, 2), (ApiKey::Fetch, 4, 11)];
    let address = fake_leader(apis, Arc::new(|_, _| Reply::Silence)).await;
    let connection = LeaderConnection::connect(&address, config())
        .await
        .expect("connects");
    assert_eq!(connection.versions().fetch.chosen, Some(11));
    assert_eq!(connection.versions().offset_for_leader_epoch.chosen, None);
}

#[tokio::test]
async fn a_leader_without_offset_for_leader_epoch_gets_an_unsupported_version_error() {
    let apis = vec![(ApiKey::ApiVersions, 0, 4), (ApiKey::Fetch, 4, 12)];
    let address = fake_leader(apis, Arc::new(|_, _| Reply::Silence)).await;
    let mut connection = LeaderConnection::connect(&address, config())
        .await
        .expect("connects");
    let error = connection
        .offset_for_leader_epoch(1, &[])
        .await
        .expect_err("refused");
    assert!(
        matches!(
            error,
            ClientError::UnsupportedVersion {
                api: ApiKey::OffsetForLeaderEpoch,
                leader: None,
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_leader_with_only_old_fetch_versions_gets_an_unsupported_version_error() {
    let apis = vec![(ApiKey::ApiVersions, 0, 4), (ApiKey::Fetch, 4, 8)];
    let address = fake_leader(apis, Arc::new(|_, _| Reply::Silence)).await;
    let mut connection = LeaderConnection::connect(&address, config())
        .await
        .expect("connects");
    let error = fetch_once(&mut connection).await.expect_err("refused");
    assert!(
        matches!(
            error,
            ClientError::UnsupportedVersion {
                api: ApiKey::Fetch,
                leader: Some((4, 8)),
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn an_oversized_frame_length_is_refused_before_reading_it() {
    let mut connection = connect_to_fake(|_| Reply::Raw(i32::MAX.to_be_bytes().to_vec())).await;
    let error = fetch_once(&mut connection).await.expect_err("refused");
    assert!(
        matches!(error, ClientError::FrameTooLarge { size, .. } if size == i32::MAX as usize),
        "{error}"
    );
}

#[tokio::test]
async fn a_negative_frame_length_is_a_protocol_error() {
    let mut connection = connect_to_fake(|_| Reply::Raw((-5i32).to_be_bytes().to_vec())).await;
    let error = fetch_once(&mut connection).await.expect_err("refused");
    assert!(matches!(error, ClientError::Protocol { .. }), "{error}");
}

#[tokio::test]
async fn a_response_to_another_request_is_a_correlation_mismatch() {
    let mut connection = connect_to_fake(|header| {
        let body = FetchResponse::default();
        let version = header.request_api_version;
        Reply::Raw(response_frame(header.correlation_id + 100, &body, version))
    })
    .await;
    let error = fetch_once(&mut connection).await.expect_err("refused");
    assert!(
        matches!(error, ClientError::CorrelationMismatch { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn a_frame_cut_short_is_an_io_error() {
    let mut connection = connect_to_fake(|header| {
        let mut bytes = 100i32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&header.correlation_id.to_be_bytes());
        Reply::RawThenClose(bytes)
    })
    .await;
    let error = fetch_once(&mut connection).await.expect_err("refused");
    assert!(matches!(error, ClientError::Io { .. }), "{error}");
}

#[tokio::test]
async fn a_silent_leader_times_out_and_the_connection_is_then_refused() {
    let mut connection = connect_to_fake(|_| Reply::Silence).await;
    let error = fetch_once(&mut connection).await.expect_err("times out");
    assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
    let error = fetch_once(&mut connection).await.expect_err("broken");
    assert!(matches!(error, ClientError::Broken { .. }), "{error}");
}

#[tokio::test]
async fn garbage_bodies_are_errors_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let bodies: Vec<Vec<u8>> = (0..200)
        .map(|_| {
            let len = rng.gen_range(0..64);
            (0..len).map(|_| rng.gen()).collect()
        })
        .collect();
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler: Handler = {
        let (bodies, next) = (Arc::clone(&bodies), Arc::clone(&next));
        Arc::new(move |header, _| {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let garbage = &bodies[i % bodies.len()];
            let mut bytes = ((garbage.len() + 4) as i32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&header.correlation_id.to_be_bytes());
            bytes.extend_from_slice(garbage);
            Reply::Raw(bytes)
        })
    };
    let address = fake_leader(kafka_apis(), handler).await;
    for _ in 0..bodies.len() {
        let mut connection = LeaderConnection::connect(&address, config())
            .await
            .expect("connects");
        if let Err(error) = fetch_once(&mut connection).await {
            assert!(
                matches!(
                    error,
                    ClientError::Decode { .. } | ClientError::Protocol { .. }
                ),
                "{error}"
            );
        }
    }
}

#[tokio::test]
async fn garbage_in_answer_to_api_versions_fails_the_connect_cleanly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0u8; 64];
            let _ = stream.read(&mut request).await;
            let _ = stream.write_all(b"\x00\x00\x00\x08garbage!").await;
        }
    });
    let error = LeaderConnection::connect(&address, config())
        .await
        .expect_err("refused");
    assert!(
        matches!(
            error,
            ClientError::CorrelationMismatch { .. } | ClientError::Decode { .. }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_leader_that_is_not_listening_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    drop(listener);
    let error = LeaderConnection::connect(&address, config())
        .await
        .expect_err("refused");
    assert!(matches!(error, ClientError::Connect { .. }), "{error}");
}
