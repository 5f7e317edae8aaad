//! Test builders of the brokers' cluster summary, shared by the decision modules' tests.

use std::collections::BTreeMap;

use tokafka_broker::http::admin::{BrokerSummary, ClusterSummary};

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
    }
}

/// A healthy cluster of `brokers` whose largest replication factor is `max_rf`.
pub fn summary(brokers: Vec<BrokerSummary>, max_rf: usize) -> ClusterSummary {
    ClusterSummary {
        brokers,
        partitions: 6,
        under_replicated_partitions: 0,
        offline_partitions: 0,
        reassigning_partitions: 0,
        leader_imbalance_percent: BTreeMap::new(),
        max_replication_factor: max_rf,
    }
}
