//! tokafka-broker: a replicated, Kafka-protocol-compatible event broker.
//!
//! The crate is a library (so tests, benchmarks and tools can drive each layer directly) and
//! the `tokafka-broker` binary. Layers, bottom up: [`log`] (the segment-log engine),
//! [`producer`] and [`topics`] (hosted partitions), [`protocol`] (Kafka wire format and API
//! handlers), [`server`] (listener and connections), [`http`] (metrics and health), and
//! [`run`] (process lifecycle).

pub mod broker;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod dev_cluster;
pub mod group;
pub mod http;
pub mod log;
pub mod metrics;
pub mod producer;
pub mod protocol;
pub mod replication;
pub mod run;
pub mod server;
pub mod topics;
