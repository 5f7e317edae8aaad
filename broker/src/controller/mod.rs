//! The controller: the cluster metadata ([`metadata`]) replicated by a Raft quorum of
//! controller voters.

pub mod metadata;
