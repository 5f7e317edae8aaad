//! Test builders of the brokers' cluster summary, shared by the decision modules' tests.

use std::collections::BTreeMap;

use tokafka_contract::admin::{BrokerSummary, ClusterSummary, QuorumSummary, VoterSummary};

use crate::names::ClusterNames;

/// The names of the cluster the builders describe: `demo` in namespace `kafka`.
pub fn names() -> ClusterNames {
    ClusterNames::new("demo", "kafka")
}

/// A serving broker registered from pod `demo-<id>`, holding `replicas` replicas and leading
/// `leaders` partitions.
pub fn broker(id: i32, replicas: usize, leaders: usize) -> BrokerSummary {
    BrokerSummary {
        id,
        host: names().pod_host(id),
        port: 9092,
        rack: None,
        fenced: false,
        shutting_down: false,
        decommissioning: false,
        drained: false,
        replicas,
        leaders,
        restart_blockers: 0,
        out_of_sync: 0,
        partition_peers: Vec::new(),
    }
}

/// A controller quorum of `voters` led by `leader`, every voter caught up.
pub fn quorum(leader: i32, voters: &[i32]) -> QuorumSummary {
    QuorumSummary {
        leader,
        term: 1,
        voters: voters
            .iter()
            .map(|id| VoterSummary {
                id: *id,
                lag_entries: 0,
                following: true,
                caught_up: true,
            })
            .collect(),
    }
}

/// A healthy cluster of `brokers` whose largest replication factor is `max_rf` (its quorum
/// state unknown: see [`quorum`]).
pub fn summary(brokers: Vec<BrokerSummary>, max_rf: usize) -> ClusterSummary {
    ClusterSummary {
        brokers,
        partitions: 6,
        under_replicated_partitions: 0,
        offline_partitions: 0,
        reassigning_partitions: 0,
        leader_imbalance_percent: BTreeMap::new(),
        max_replication_factor: max_rf,
        quorum: None,
    }
}
