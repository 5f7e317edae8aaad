//! Builders for tests and tools: a serving single node (a one-voter quorum on loopback, the
//! same code path as any cluster), and topics it leads. Every wait polls a condition until a
//! deadline.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::replica::{Partition, TopicRef};
use crate::run::RunningBroker;

/// How long a builder waits for the broker to get where it asked.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A single node serving from `data_dir` on ephemeral loopback ports.
///
/// # Panics
/// When it does not start (a test failure).
pub async fn single_node(data_dir: &Path) -> RunningBroker {
    single_node_with(BrokerConfig::for_tests(data_dir)).await
}

/// [`single_node`] with a configuration of the caller's.
///
/// # Panics
/// When it does not start (a test failure).
pub async fn single_node_with(config: BrokerConfig) -> RunningBroker {
    tokio::time::timeout(DEADLINE, crate::run::start(config))
        .await
        .expect("the single node serves within the deadline")
        .expect("the single node starts")
}

/// Creates topic `name` of `partitions` through the controller and waits until this broker
/// leads every partition; returns them.
///
/// # Panics
/// When the topic is not created or led in time (a test failure).
pub async fn create_topic(broker: &Broker, name: &str, partitions: i32) -> Vec<Arc<Partition>> {
    let metadata = broker.cluster.metadata();
    let assignment = crate::cluster::spread_replicas(&metadata, partitions, 1)
        .expect("a replica for each partition");
    broker
        .cluster
        .create_topic(name, assignment, Default::default())
        .await
        .expect("topic created");
    led_partitions(broker, name, partitions).await
}

/// Waits until this broker leads partitions `0..partitions` of `name`.
///
/// # Panics
/// When they are not led in time (a test failure).
pub async fn led_partitions(broker: &Broker, name: &str, partitions: i32) -> Vec<Arc<Partition>> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let led: Vec<Arc<Partition>> = (0..partitions)
            .filter_map(|i| broker.replicas.partition(TopicRef::Name(name), i))
            .filter(|p| p.is_leader())
            .collect();
        if led.len() == usize::try_from(partitions).unwrap_or(0) {
            return led;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: {} of {partitions} partitions led after {DEADLINE:?}",
            led.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A replica of `topic`-`index` in `dir` with `config`, led by node 1 alone in the epoch after
/// the latest in its log: what a single node's coordinator writes through. Its epoch is
/// `partition.leader_epoch(-1)`.
///
/// # Panics
/// When the log cannot be opened or the epoch recorded (a test failure).
pub fn led_alone(
    topic: &str,
    index: i32,
    dir: &Path,
    config: crate::log::LogConfig,
) -> Arc<Partition> {
    let partition =
        Partition::open(topic, uuid::Uuid::nil(), index, dir, config).expect("open the replica");
    let leader_epoch = partition.log.latest_epoch().map_or(0, |e| e + 1);
    let role = crate::replica::ReplicaRole {
        topic_id: uuid::Uuid::nil(),
        leader: 1,
        leader_epoch,
        partition_epoch: leader_epoch,
        replicas: vec![1],
        isr: vec![1],
    };
    partition
        .apply_role(1, &role, 1, crate::clock::now_ms())
        .expect("lead");
    Arc::new(partition)
}
