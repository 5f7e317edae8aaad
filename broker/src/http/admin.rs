//! The cluster admin API on the HTTP side port, for operators and tools that drive a
//! cluster without a Kafka client:
//!
//! - `GET /v1/cluster`: every registered broker with its state and load, and the cluster's
//!   under-replicated, offline and reassigning partitions and leader imbalance;
//! - `POST /v1/brokers/{id}/decommission`: drain broker `id` (its replicas move to the other
//!   brokers); `DELETE` on the same path cancels the drain;
//! - `DELETE /v1/brokers/{id}`: forget a broker that replicates nothing;
//! - `POST /v1/cluster/preferred-leader-election`: move leadership to preferred replicas
//!   wherever it can.
//!
//! The summary is the pure [`ClusterSummary::of`]; the handlers only write commands through
//! the quorum. Errors answer with a status and `{"error": "..."}`; a standalone broker answers
//! 409 to all of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};

use crate::broker::Broker;
use crate::cluster::Cluster;
use crate::controller::metadata::{ClusterMetadata, Command, NO_LEADER};
use crate::controller::placement::{leader_imbalance, preferred_election, Election};

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/cluster", get(describe))
        .route(
            "/v1/cluster/preferred-leader-election",
            post(elect_preferred),
        )
        .route(
            "/v1/brokers/{id}/decommission",
            post(decommission).delete(recommission),
        )
        .route("/v1/brokers/{id}", delete(unregister))
        .route("/v1/cluster/spread-replicas", post(spread_replicas))
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
}

/// The cluster's state for operators.
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
}

impl ClusterSummary {
    /// The summary of `metadata`, where topics without their own `min.insync.replicas` take
    /// `default_min_insync_replicas`.
    pub fn of(metadata: &ClusterMetadata, default_min_insync_replicas: usize) -> Self {
        let mut replicas: BTreeMap<i32, usize> = BTreeMap::new();
        let mut blockers: BTreeMap<i32, usize> = BTreeMap::new();
        for topic in metadata.topics.values() {
            let min_isr = topic
                .configs
                .get("min.insync.replicas")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(default_min_insync_replicas);
            for p in &topic.partitions {
                if p.replicas.len() <= min_isr || p.isr.len() > min_isr {
                    continue;
                }
                for member in &p.isr {
                    *blockers.entry(*member).or_default() += 1;
                }
            }
        }
        let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
        let (mut partitions, mut under, mut offline, mut reassigning) = (0, 0, 0, 0);
        let mut max_replication_factor = 0;
        for (_, _, p) in metadata.partitions() {
            partitions += 1;
            max_replication_factor = max_replication_factor.max(p.replicas.len());
            for r in &p.replicas {
                *replicas.entry(*r).or_default() += 1;
            }
            if p.leader == NO_LEADER {
                offline += 1;
            } else {
                *leaders.entry(p.leader).or_default() += 1;
            }
            if p.isr.len() < p.replicas.len() {
                under += 1;
            }
            if !p.adding.is_empty() || !p.removing.is_empty() {
                reassigning += 1;
            }
        }
        let brokers = metadata
            .brokers
            .values()
            .map(|b| {
                let held = replicas.get(&b.id).copied().unwrap_or(0);
                BrokerSummary {
                    id: b.id,
                    host: b.host.clone(),
                    port: b.port,
                    rack: b.rack.clone(),
                    fenced: b.fenced,
                    shutting_down: b.shutting_down,
                    decommissioning: b.decommissioning,
                    drained: b.decommissioning && held == 0,
                    replicas: held,
                    leaders: leaders.get(&b.id).copied().unwrap_or(0),
                    restart_blockers: blockers.get(&b.id).copied().unwrap_or(0),
                }
            })
            .collect();
        Self {
            brokers,
            partitions,
            under_replicated_partitions: under,
            offline_partitions: offline,
            reassigning_partitions: reassigning,
            leader_imbalance_percent: leader_imbalance(metadata),
            max_replication_factor,
        }
    }
}

/// An error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    (status, Json(body)).into_response()
}

/// The answer of a standalone broker to the cluster admin API.
fn standalone() -> Response {
    error(
        StatusCode::CONFLICT,
        "this broker runs standalone (no controller.quorum.voters)",
    )
}

fn summary(cluster: &Cluster) -> ClusterSummary {
    ClusterSummary::of(
        &cluster.metadata(),
        cluster.config.default_min_insync_replicas,
    )
}

/// Commits `command`, answering with the cluster summary after it.
async fn write(cluster: &Cluster, command: Command) -> Response {
    match cluster.write(&command).await {
        Ok(()) => Json(summary(cluster)).into_response(),
        Err((code, message)) => {
            let status = match code {
                ResponseError::BrokerNotAvailable => StatusCode::NOT_FOUND,
                ResponseError::RequestTimedOut => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            error(status, message)
        }
    }
}

async fn describe(State(broker): State<Arc<Broker>>) -> Response {
    let Some(cluster) = broker.cluster() else {
        return standalone();
    };
    Json(summary(cluster)).into_response()
}

async fn decommission(State(broker): State<Arc<Broker>>, Path(id): Path<i32>) -> Response {
    let Some(cluster) = broker.cluster() else {
        return standalone();
    };
    write(cluster, Command::DecommissionBroker { id }).await
}

async fn recommission(State(broker): State<Arc<Broker>>, Path(id): Path<i32>) -> Response {
    let Some(cluster) = broker.cluster() else {
        return standalone();
    };
    write(cluster, Command::RecommissionBroker { id }).await
}

async fn unregister(State(broker): State<Arc<Broker>>, Path(id): Path<i32>) -> Response {
    let Some(cluster) = broker.cluster() else {
        return standalone();
    };
    write(cluster, Command::UnregisterBroker { id }).await
}

async fn elect_preferred(State(broker): State<Arc<Broker>>) -> Response {
    let Some(cluster) = broker.cluster() else {
        return standalone();
    };
    let metadata = cluster.metadata();
    let partitions: Vec<(String, i32)> = metadata
        .partitions()
        .filter(|(_, _, p)| preferred_election(&metadata, p) == Election::Possible)
        .map(|(topic, partition, _)| (topic.to_string(), partition))
        .collect();
    write(cluster, Command::ElectPreferredLeaders { partitions }).await
}

/// Reassigns replicas so every live broker holds about as many (after adding brokers).
async fn spread_replicas(State(broker): State<Arc<Broker>>) -> Response {
    let Some(cluster) = broker.cluster() else {
        return standalone();
    };
    write(cluster, Command::SpreadReplicas).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::testing::{cluster, create};

    #[test]
    fn restart_blockers_count_partitions_that_would_refuse_acks_all() {
        let mut m = cluster(&[1, 2, 3]);
        // RF 3 with min ISR 2: one broker may go; RF 2 with min ISR 2: already unavailable
        // with any broker down, so not counted; RF 1: likewise.
        create(&mut m, "three", vec![vec![1, 2, 3]]);
        create(&mut m, "two", vec![vec![1, 2]]);
        create(&mut m, "one", vec![vec![3]]);
        let summary = ClusterSummary::of(&m, 2);
        assert!(summary.brokers.iter().all(|b| b.restart_blockers == 0));
        // Broker 3 fenced: "three" is down to ISR {1, 2}, so neither 1 nor 2 may go now.
        m.apply(&Command::FenceBroker { id: 3 }).expect("fence");
        let summary = ClusterSummary::of(&m, 2);
        let blockers: Vec<usize> = summary.brokers.iter().map(|b| b.restart_blockers).collect();
        assert_eq!(blockers, [1, 1, 0]);
        // A topic's own min.insync.replicas wins over the default.
        let summary = ClusterSummary::of(&m, 1);
        assert!(summary.brokers.iter().all(|b| b.restart_blockers == 0));
    }

    #[test]
    fn the_summary_counts_load_and_trouble() {
        let mut m = cluster(&[1, 2, 3]);
        create(&mut m, "t", vec![vec![1, 2], vec![2, 3], vec![3, 1]]);
        m.apply(&Command::FenceBroker { id: 3 }).expect("fence");
        let summary = ClusterSummary::of(&m, 1);
        assert_eq!(summary.partitions, 3);
        assert_eq!(summary.max_replication_factor, 2);
        assert_eq!(summary.under_replicated_partitions, 2);
        assert_eq!(summary.offline_partitions, 0);
        let b3 = &summary.brokers[2];
        assert!(b3.fenced && !b3.drained);
        assert_eq!((b3.replicas, b3.leaders), (2, 0));
        assert_eq!(summary.leader_imbalance_percent.get(&3), Some(&100));
    }
}
