//! The brokers' cluster admin API on their HTTP side port, as it crosses the wire: the paths
//! ([`paths`]), the answers (JSON of the types below) and the error body ([`ErrorBody`]).
//!
//! - `GET /v1/cluster` answers a [`ClusterSummary`]: every registered broker with its state
//!   and load, the cluster's under-replicated, offline and reassigning partitions, its leader
//!   imbalance, and the controller quorum's state as its leader sees it (`quorum`, null when
//!   it could not be learned in time);
//! - `POST /v1/brokers/{id}/decommission` drains broker `id` (its replicas move to the other
//!   brokers); `DELETE` on the same path cancels the drain;
//! - `DELETE /v1/brokers/{id}` forgets a broker that replicates nothing;
//! - `POST /v1/cluster/preferred-leader-election` moves leadership to preferred replicas
//!   wherever it can;
//! - `POST /v1/cluster/spread-replicas` reassigns replicas so every live broker holds about as
//!   many (after brokers were added).
//!
//! The writes answer the [`ClusterSummary`] after the write, without the quorum's state. A
//! refusal answers a 4xx or 5xx status with an [`ErrorBody`]. A single node is a cluster of
//! one and answers like any other.
//!
//! Compatibility: fields added later carry `#[serde(default)]`, so an operator reads the
//! answer of an older broker.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The admin API's paths. The `*_ROUTE` constants are route patterns (`{id}` stands for a
/// broker id) for the server; the functions give the path of one broker for clients.
pub mod paths {
    /// `GET`: the [`ClusterSummary`](super::ClusterSummary).
    pub const CLUSTER: &str = "/v1/cluster";
    /// `POST`: move leadership to preferred replicas.
    pub const PREFERRED_LEADER_ELECTION: &str = "/v1/cluster/preferred-leader-election";
    /// `POST`: spread replicas over every live broker.
    pub const SPREAD_REPLICAS: &str = "/v1/cluster/spread-replicas";
    /// `DELETE`: forget a broker that replicates nothing.
    pub const BROKER_ROUTE: &str = "/v1/brokers/{id}";
    /// `POST`: drain a broker; `DELETE`: cancel its drain.
    pub const DECOMMISSION_ROUTE: &str = "/v1/brokers/{id}/decommission";

    /// [`BROKER_ROUTE`] for broker `id`.
    pub fn broker(id: i32) -> String {
        BROKER_ROUTE.replace("{id}", &id.to_string())
    }

    /// [`DECOMMISSION_ROUTE`] for broker `id`.
    pub fn decommission(id: i32) -> String {
        DECOMMISSION_ROUTE.replace("{id}", &id.to_string())
    }
}

/// The body of every refusal: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was refused and why, for people.
    pub error: String,
}

/// One broker as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerSummary {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub fenced: bool,
    pub shutting_down: bool,
    pub decommissioning: bool,
    /// Decommissioning and holding no replica: safe to remove.
    pub drained: bool,
    pub replicas: usize,
    pub leaders: usize,
    /// Partitions whose in-sync replicas would fall below `min.insync.replicas` without this
    /// broker (partitions whose replication factor is at most their `min.insync.replicas` are
    /// not counted: any broker down already stops their acks=all writes). Zero means the broker
    /// can restart without refusing an acks=all write.
    #[serde(default)]
    pub restart_blockers: usize,
    /// Partitions this broker replicates where it is not in the ISR (catching up, or down).
    #[serde(default)]
    pub out_of_sync: usize,
    /// The other brokers that replicate a partition with this one (sorted, without itself):
    /// restarting this broker together with any of them would take two replicas of one
    /// partition down at once.
    #[serde(default)]
    pub partition_peers: Vec<i32>,
}

/// One controller voter as the quorum's leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterSummary {
    pub id: i32,
    /// Entries of the leader's log this voter is not known to hold (0 for the leader).
    pub lag_entries: u64,
    /// The voter answered within the summary's deadline naming the same leader in the same
    /// term (always true of the leader).
    pub following: bool,
    /// `following` and `lag_entries` within the broker's caught-up bound: it counts towards a
    /// majority right away.
    pub caught_up: bool,
}

/// The controller quorum's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumSummary {
    /// The active controller: the Raft leader's node id.
    pub leader: i32,
    pub term: u64,
    /// Every voter of the membership in effect, by id.
    pub voters: Vec<VoterSummary>,
}

/// The cluster's state for operators: the answer of `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSummary {
    pub brokers: Vec<BrokerSummary>,
    pub partitions: usize,
    /// Partitions whose ISR is smaller than their replica set.
    pub under_replicated_partitions: usize,
    /// Partitions without a leader.
    pub offline_partitions: usize,
    pub reassigning_partitions: usize,
    /// Per broker: of the partitions it prefers to lead, the percentage it does not lead.
    pub leader_imbalance_percent: BTreeMap<i32, u32>,
    /// The largest replication factor of any partition: fewer brokers cannot host it.
    #[serde(default)]
    pub max_replication_factor: usize,
    /// The controller quorum's state; `None` when it could not be learned (or in the answer to
    /// a write).
    #[serde(default)]
    pub quorum: Option<QuorumSummary>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_paths_fill_the_route_patterns() {
        assert_eq!(paths::broker(7), "/v1/brokers/7");
        assert_eq!(paths::decommission(4), "/v1/brokers/4/decommission");
        assert!(paths::decommission(4).starts_with(&paths::broker(4)));
    }

    #[test]
    fn a_summary_from_an_older_broker_reads_with_defaults() {
        // No max_replication_factor, quorum, restart_blockers, out_of_sync or partition_peers.
        let json = r#"{
            "brokers": [{"id": 1, "host": "h", "port": 9092, "rack": null, "fenced": false,
                         "shutting_down": false, "decommissioning": false, "drained": false,
                         "replicas": 2, "leaders": 1}],
            "partitions": 2, "under_replicated_partitions": 0, "offline_partitions": 0,
            "reassigning_partitions": 0, "leader_imbalance_percent": {"1": 0}
        }"#;
        let summary: ClusterSummary = serde_json::from_str(json).expect("read");
        assert_eq!(summary.quorum, None);
        assert_eq!(summary.max_replication_factor, 0);
        let broker = &summary.brokers[0];
        assert_eq!((broker.restart_blockers, broker.out_of_sync), (0, 0));
        assert!(broker.partition_peers.is_empty());
        assert_eq!(summary.leader_imbalance_percent.get(&1), Some(&0));
    }

    #[test]
    fn a_summary_round_trips_with_its_quorum() {
        let summary = ClusterSummary {
            brokers: Vec::new(),
            partitions: 0,
            under_replicated_partitions: 0,
            offline_partitions: 0,
            reassigning_partitions: 0,
            leader_imbalance_percent: BTreeMap::from([(0, 50)]),
            max_replication_factor: 3,
            quorum: Some(QuorumSummary {
                leader: 0,
                term: 4,
                voters: vec![VoterSummary {
                    id: 0,
                    lag_entries: 0,
                    following: true,
                    caught_up: true,
                }],
            }),
        };
        let json = serde_json::to_string(&summary).expect("json");
        assert_eq!(
            serde_json::from_str::<ClusterSummary>(&json).expect("read"),
            summary
        );
    }

    #[test]
    fn the_error_body_is_one_field() {
        let body = ErrorBody { error: "no".into() };
        assert_eq!(
            serde_json::to_string(&body).expect("json"),
            r#"{"error":"no"}"#
        );
    }
}
