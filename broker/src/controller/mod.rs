//! The controller: the cluster metadata ([`state`], changed only by the commands of
//! [`metadata`]) replicated by a Raft quorum of controller voters (openraft), with durable
//! storage ([`store`]), an HTTP transport ([`transport`]) and the pieces a broker runs
//! ([`quorum`]).
//!
//! Layers, bottom up, each using only those below it: [`state`]; [`placement`] (pure
//! decisions over the state); [`metadata`] (commands and `apply`); [`policy`] and
//! [`liveness`] (what the active controller proposes); [`store`], [`transport`], [`quorum`]
//! (openraft). The controller knows nothing of the broker around it (no `broker`, `cluster`,
//! `config`, `group`, `topics` or `protocol`): the broker depends on it, never the reverse.

use std::io::Cursor;

pub mod import;
pub mod liveness;
pub mod metadata;
pub mod placement;
pub mod policy;
pub mod quorum;
pub mod state;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;
pub mod transport;

openraft::declare_raft_types!(
    /// Raft types of the metadata quorum.
    pub TypeConfig:
        D = metadata::Command,
        R = metadata::CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
);
