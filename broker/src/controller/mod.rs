//! The controller: the cluster metadata ([`metadata`]) replicated by a Raft quorum of
//! controller voters (openraft), with durable storage ([`store`]), an HTTP transport
//! ([`transport`]) and the pieces a broker runs ([`quorum`]).

use std::io::Cursor;

pub mod import;
pub mod liveness;
pub mod metadata;
pub mod placement;
pub mod policy;
pub mod quorum;
pub mod store;
pub mod transport;

openraft::declare_raft_types!(
    /// Raft types of the metadata quorum.
    pub TypeConfig:
        D = metadata::Command,
        R = metadata::CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
);
