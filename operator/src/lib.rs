//! tokafka-operator: the Kubernetes operator that runs tokafka `BrokerCluster`s.
//!
//! The API types, the resource builders and the reconciler arrive with the operator issue;
//! this crate exists now so that the workspace has its final shape from the start.
