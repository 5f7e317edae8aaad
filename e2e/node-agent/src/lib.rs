//! tokafka's node agent: a kubelet stand-in for end-to-end tests without Docker.
//!
//! It registers a Node, binds pending pods to it, provisions volumes for claims, and runs each
//! pod's containers as local processes (images map to locally built binaries), with pod
//! addresses on loopback and stable names in /etc/hosts. Decisions live in pure modules
//! (`podspec`, `volumes`, `status`, `probe`, `hosts`, `provision`, `scheduling`, `node`);
//! `worker`, `process` and `agent` do the I/O.

pub mod addresses;
pub mod agent;
pub mod hosts;
pub mod images;
pub mod kubelet_api;
pub mod node;
pub mod podspec;
pub mod probe;
pub mod process;
pub mod provision;
pub mod scheduling;
pub mod status;
pub mod volumes;
pub mod worker;
