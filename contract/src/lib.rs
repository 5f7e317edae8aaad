//! tokafka-contract: what the brokers and the operator must agree on, in one place both
//! depend on.
//!
//! - [`admin`]: the brokers' HTTP admin API: its paths, its answers and its error body;
//! - [`config`]: every broker configuration key with its default, its doc and its value kind,
//!   the layering of settings, and the validation the broker runs at start-up (the operator
//!   runs the same one on a `BrokerCluster`'s configuration, so the two cannot disagree about
//!   what is valid).
//!
//! It depends on serde only: the operator builds against this crate, never against the broker.

pub mod admin;
pub mod config;
