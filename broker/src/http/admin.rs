//! The cluster admin API on the HTTP side port, for operators and tools that drive a
//! cluster without a Kafka client. Its paths, answers and error body are the contract's
//! ([`tokafka_contract::admin`], re-exported here), which the operator reads too:
//!
//! - `GET /v1/cluster`: every registered broker with its state and load, and the cluster's
//!   under-replicated, offline and reassigning partitions and leader imbalance, and the
//!   controller quorum's state as its leader sees it (`quorum`, null when it cannot be learned
//!   within [`QUORUM_DEADLINE`]);
//! - `POST /v1/brokers/{id}/decommission`: drain broker `id` (its replicas move to the other
//!   brokers); `DELETE` on the same path cancels the drain;
//! - `DELETE /v1/brokers/{id}`: forget a broker that replicates nothing;
//! - `POST /v1/cluster/preferred-leader-election`: move leadership to preferred replicas
//!   wherever it can;
//! - `POST /v1/cluster/spread-replicas`: spread replicas over every live broker.
//!
//! The summary is the pure [`cluster_summary`] (and [`quorum_summary`] for the quorum); the
//! handlers only read the quorum's state and write commands through the quorum. The
//! summaries answered after a write carry no quorum state. Errors answer with a status and
//! `{"error": "..."}`. A single node is a cluster of one and answers like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use kafka_protocol::ResponseError;
use tokafka_contract::admin::paths;
pub use tokafka_contract::admin::{
    BrokerSummary, ClusterSummary, ErrorBody, QuorumSummary, VoterSummary,
};

use crate::broker::Broker;
use crate::cluster::Cluster;
use crate::controller::metadata::{ClusterMetadata, Command, NO_LEADER};
use crate::controller::placement::{leader_imbalance, preferred_election, Election};
use crate::controller::store::NodeId;
use crate::controller::transport::QuorumView;

/// How long `GET /v1/cluster` spends learning the quorum's state (the operator gives the whole
/// answer 2 s).
pub const QUORUM_DEADLINE: Duration = Duration::from_millis(800);

/// A voter at most this many entries behind the leader's last log entry is caught up: it
/// would take part in a commit right away. Small against a burst of metadata writes (a
/// topic's creation, ISR changes after a broker stops), so a voter cut off for a moment still
/// counts, and one that stopped replicating does not for long.
pub const CAUGHT_UP_LAG_ENTRIES: u64 = 64;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route(paths::CLUSTER, get(describe))
        .route(paths::PREFERRED_LEADER_ELECTION, post(elect_preferred))
        .route(
            paths::DECOMMISSION_ROUTE,
            post(decommission).delete(recommission),
        )
        .route(paths::BROKER_ROUTE, delete(unregister))
        .route(paths::SPREAD_REPLICAS, post(spread_replicas))
}

/// The quorum summary of the leader's view `leader`, where the voters in `following` answered
/// naming it: a voter is caught up when it follows and lags at most [`CAUGHT_UP_LAG_ENTRIES`].
/// `None` when `leader` is not the view of a leader, or its id is no broker id.
pub fn quorum_summary(leader: &QuorumView, following: &BTreeSet<NodeId>) -> Option<QuorumSummary> {
    let matched = leader.matched.as_ref().filter(|_| leader.leads())?;
    let last = leader.last_log_index;
    let voters = leader
        .voters
        .iter()
        .filter_map(|id| {
            let lag_entries = if *id == leader.id {
                0
            } else {
                match (matched.get(id).copied().flatten(), last) {
                    (Some(held), Some(last)) => last.saturating_sub(held),
                    (Some(_), None) => 0,
                    // Nothing matched yet: the whole log (indexes start at 0).
                    (None, last) => last.map_or(0, |l| l.saturating_add(1)),
                }
            };
            let following = *id == leader.id || following.contains(id);
            Some(VoterSummary {
                id: i32::try_from(*id).ok()?,
                lag_entries,
                following,
                caught_up: following && lag_entries <= CAUGHT_UP_LAG_ENTRIES,
            })
        })
        .collect();
    Some(QuorumSummary {
        leader: i32::try_from(leader.id).ok()?,
        term: leader.term,
        voters,
    })
}

/// The summary of `metadata`, where topics without their own `min.insync.replicas` take
/// `default_min_insync_replicas` (without the quorum's state).
pub fn cluster_summary(
    metadata: &ClusterMetadata,
    default_min_insync_replicas: usize,
) -> ClusterSummary {
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
    let mut out_of_sync: BTreeMap<i32, usize> = BTreeMap::new();
    let mut peers: BTreeMap<i32, BTreeSet<i32>> = BTreeMap::new();
    let (mut partitions, mut under, mut offline, mut reassigning) = (0, 0, 0, 0);
    let mut max_replication_factor = 0;
    for (_, _, p) in metadata.partitions() {
        partitions += 1;
        max_replication_factor = max_replication_factor.max(p.replicas.len());
        for r in &p.replicas {
            *replicas.entry(*r).or_default() += 1;
            if !p.isr.contains(r) {
                *out_of_sync.entry(*r).or_default() += 1;
            }
            let others = p.replicas.iter().copied().filter(|o| o != r);
            peers.entry(*r).or_default().extend(others);
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
                out_of_sync: out_of_sync.get(&b.id).copied().unwrap_or(0),
                partition_peers: peers
                    .get(&b.id)
                    .map(|p| p.iter().copied().collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    ClusterSummary {
        brokers,
        partitions,
        under_replicated_partitions: under,
        offline_partitions: offline,
        reassigning_partitions: reassigning,
        leader_imbalance_percent: leader_imbalance(metadata),
        max_replication_factor,
        quorum: None,
    }
}

/// An error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: message.into(),
    };
    (status, Json(body)).into_response()
}

fn summary(cluster: &Cluster) -> ClusterSummary {
    cluster_summary(
        &cluster.metadata(),
        cluster.config.default_min_insync_replicas,
    )
}

/// Commits `command`, answering with the cluster summary after it.
async fn write(cluster: &Cluster, command: Command) -> Response {
    match cluster.write(&command).await {
        Ok(()) => Json(summary(cluster)).into_response(),
        Err(refused) => {
            let status = match refused.code {
                ResponseError::BrokerNotAvailable => StatusCode::NOT_FOUND,
                ResponseError::RequestTimedOut => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            error(status, refused.message)
        }
    }
}

/// The summary with the quorum's state; a quorum that cannot be learned in time leaves
/// `quorum` empty rather than failing the answer.
async fn describe(State(broker): State<Arc<Broker>>) -> Response {
    let cluster = &broker.cluster;
    let quorum = match cluster.quorum.quorum_state(QUORUM_DEADLINE).await {
        Ok(state) => quorum_summary(&state.leader, &state.following),
        Err(error) => {
            tracing::debug!(%error, "controller quorum state unknown");
            None
        }
    };
    Json(ClusterSummary {
        quorum,
        ..summary(cluster)
    })
    .into_response()
}

async fn decommission(State(broker): State<Arc<Broker>>, Path(id): Path<i32>) -> Response {
    let cluster = &broker.cluster;
    write(cluster, Command::DecommissionBroker { id }).await
}

async fn recommission(State(broker): State<Arc<Broker>>, Path(id): Path<i32>) -> Response {
    let cluster = &broker.cluster;
    write(cluster, Command::RecommissionBroker { id }).await
}

async fn unregister(State(broker): State<Arc<Broker>>, Path(id): Path<i32>) -> Response {
    let cluster = &broker.cluster;
    write(cluster, Command::UnregisterBroker { id }).await
}

async fn elect_preferred(State(broker): State<Arc<Broker>>) -> Response {
    let cluster = &broker.cluster;
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
    let cluster = &broker.cluster;
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
        let summary = cluster_summary(&m, 2);
        assert!(summary.brokers.iter().all(|b| b.restart_blockers == 0));
        // Broker 3 fenced: "three" is down to ISR {1, 2}, so neither 1 nor 2 may go now.
        m.apply(&Command::FenceBroker { id: 3 }).expect("fence");
        let summary = cluster_summary(&m, 2);
        let blockers: Vec<usize> = summary.brokers.iter().map(|b| b.restart_blockers).collect();
        assert_eq!(blockers, [1, 1, 0]);
        // A topic's own min.insync.replicas wins over the default.
        let summary = cluster_summary(&m, 1);
        assert!(summary.brokers.iter().all(|b| b.restart_blockers == 0));
    }

    #[test]
    fn the_summary_counts_load_and_trouble() {
        let mut m = cluster(&[1, 2, 3]);
        create(&mut m, "t", vec![vec![1, 2], vec![2, 3], vec![3, 1]]);
        m.apply(&Command::FenceBroker { id: 3 }).expect("fence");
        let summary = cluster_summary(&m, 1);
        assert_eq!(summary.partitions, 3);
        assert_eq!(summary.max_replication_factor, 2);
        assert_eq!(summary.under_replicated_partitions, 2);
        assert_eq!(summary.offline_partitions, 0);
        let b3 = &summary.brokers[2];
        assert!(b3.fenced && !b3.drained);
        assert_eq!((b3.replicas, b3.leaders), (2, 0));
        assert_eq!(summary.leader_imbalance_percent.get(&3), Some(&100));
    }

    #[test]
    fn out_of_sync_counts_replicas_outside_the_isr_and_peers_share_a_partition() {
        let mut m = cluster(&[1, 2, 3, 4]);
        create(&mut m, "t", vec![vec![1, 2], vec![2, 3], vec![3, 1]]);
        let summary = cluster_summary(&m, 1);
        assert!(summary.brokers.iter().all(|b| b.out_of_sync == 0));
        let peers: Vec<Vec<i32>> = summary
            .brokers
            .iter()
            .map(|b| b.partition_peers.clone())
            .collect();
        assert_eq!(peers, [vec![2, 3], vec![1, 3], vec![1, 2], vec![]]);
        // Broker 3 fenced: out of the ISR of both partitions it replicates.
        m.apply(&Command::FenceBroker { id: 3 }).expect("fence");
        let summary = cluster_summary(&m, 1);
        let out: Vec<usize> = summary.brokers.iter().map(|b| b.out_of_sync).collect();
        assert_eq!(out, [0, 0, 2, 0]);
    }

    fn leader_view(matched: &[(NodeId, Option<u64>)]) -> QuorumView {
        QuorumView {
            id: 1,
            term: 7,
            leader: Some((1, "c1:9093".into())),
            last_log_index: Some(500),
            voters: vec![1, 2, 3],
            matched: Some(matched.iter().copied().collect()),
        }
    }

    #[test]
    fn voters_within_the_lag_that_follow_the_leader_are_caught_up() {
        let view = leader_view(&[
            (1, Some(500)),
            (2, Some(500 - CAUGHT_UP_LAG_ENTRIES)),
            (3, Some(499 - CAUGHT_UP_LAG_ENTRIES)),
        ]);
        let quorum = quorum_summary(&view, &BTreeSet::from([1, 2, 3])).expect("leader");
        assert_eq!((quorum.leader, quorum.term), (1, 7));
        let voters: Vec<(i32, u64, bool)> = quorum
            .voters
            .iter()
            .map(|v| (v.id, v.lag_entries, v.caught_up))
            .collect();
        assert_eq!(
            voters,
            [
                (1, 0, true),
                (2, CAUGHT_UP_LAG_ENTRIES, true),
                (3, CAUGHT_UP_LAG_ENTRIES + 1, false)
            ]
        );
    }

    #[test]
    fn a_voter_that_does_not_answer_or_matched_nothing_is_not_caught_up() {
        // Voter 3 matched everything but did not answer (an idle leader's matched index stays
        // put while a voter is down); voter 2 matched nothing yet.
        let view = leader_view(&[(1, Some(500)), (2, None), (3, Some(500))]);
        let quorum = quorum_summary(&view, &BTreeSet::from([2])).expect("leader");
        let v2 = &quorum.voters[1];
        assert_eq!(
            (v2.lag_entries, v2.following, v2.caught_up),
            (501, true, false)
        );
        let v3 = &quorum.voters[2];
        assert_eq!(
            (v3.lag_entries, v3.following, v3.caught_up),
            (0, false, false)
        );
        // The leader always follows itself.
        assert!(quorum.voters[0].caught_up);
    }

    #[test]
    fn only_a_leaders_view_makes_a_quorum_summary() {
        let mut follower = leader_view(&[]);
        follower.id = 2;
        assert_eq!(quorum_summary(&follower, &BTreeSet::new()), None);
        let mut no_progress = leader_view(&[]);
        no_progress.matched = None;
        assert_eq!(quorum_summary(&no_progress, &BTreeSet::new()), None);
    }
}
