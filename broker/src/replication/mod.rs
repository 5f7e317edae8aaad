//! Replication: how a follower broker copies its partitions from their leaders.
//!
//! [`client`] is the Kafka-protocol connection a follower keeps to a leader: it negotiates
//! API versions and sends follower Fetch and OffsetForLeaderEpoch requests, so the same
//! follower code replicates from a tokafka broker or from Apache Kafka.

pub mod client;
