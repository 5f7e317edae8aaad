//! tokafka-broker: a replicated, Kafka-protocol-compatible event broker.
//!
//! The crate is a library (so tests, benchmarks and tools can drive each layer directly) and
//! the `tokafka-broker` binary. Layers, bottom up: [`log`], the segment-log engine.

pub mod log;
