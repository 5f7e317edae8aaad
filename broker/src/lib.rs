//! tokafka-broker: a replicated, Kafka-protocol-compatible event broker.
//!
//! The crate is a library (so tests, benchmarks and tools can drive each layer directly) and
//! the `tokafka-broker` binary. Layers, bottom up (each uses only those below it):
//! [`log`] (the segment-log engine), [`replica`] (the replica layer: hosted partitions, append
//! and fetch, leader epochs, ISR and high watermark), [`group`] (consumer-group coordination
//! over `__consumer_offsets`), [`controller`] (the Raft metadata quorum), [`cluster`] (this
//! broker's part in the cluster: metadata, roles, followers), [`broker`] (one process's
//! wiring), [`protocol`] (Kafka wire format and API handlers), [`server`] (listener and
//! connections), [`http`] (metrics, health, admin API) and [`run`] (process lifecycle).
//! `ARCHITECTURE.md` at the repository root maps them.

pub mod broker;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod data_dir;
pub mod dev_cluster;
pub mod group;
pub mod http;
pub mod log;
pub mod metrics;
pub mod producer;
pub mod protocol;
pub mod replica;
pub mod replication;
pub mod run;
pub mod security;
pub mod server;
#[doc(hidden)]
pub mod testing;
pub mod topics;
