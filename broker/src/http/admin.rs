//! The cluster admin API on the HTTP side port, for operators and tools that drive a
//! cluster without a Kafka client:
//!
//! - `GET /v1/cluster`: every registered broker with its state and load, and the cluster's
//!   under-replicated, offline and reassigning partitions and leader imbalance, and the
//!   controller quorum's state as its leader sees it (`quorum`, null when it cannot be learned
//!   within [`QUORUM_DEADLINE`]);
//! - `POST /v1/brokers/{id}/decommission`: drain broker `id` (its replicas move to the other
//!   brokers); `DELETE` on the same path cancels the drain;
//! - `DELETE /v1/brokers/{id}`: forget a broker that replicates nothing;
//! - `POST /v1/cluster/preferred-leader-election`: move leadership to preferred replicas
//!   wherever it can.
//!
//! The summary is the pure [`ClusterSummary::of`] (and [`QuorumSummary::of`] for the quorum);
//! the handlers only read the quorum's state and write commands through the quorum. The
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
use serde::{Deserialize, Serialize};

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
    /// `following` and `lag_entries <= CAUGHT_UP_LAG_ENTRIES`: it counts towards a majority
    /// right away.
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

impl QuorumSummary {
    /// The summary of the leader's view `leader`, where the voters in `following` answered
    /// naming it. `None` when `leader` is not the view of a leader, or its id is no broker id.
    pub fn of(leader: &QuorumView, following: &BTreeSet<NodeId>) -> Option<Self> {
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
        Some(Self {
            leader: i32::try_from(leader.id).ok()?,
            term: leader.term,
            voters,
        })
    }
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
    /// The controller quorum's state; `None` when it could not be learned (or in the answer to
    /// a write).
    #[serde(default)]
    pub quorum: Option<QuorumSummary>,
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
        Self {
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
}

/// An error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    (status, Json(body)).into_response()
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
        Ok(state) => QuorumSummary::of(&state.leader, &state.following),
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

    #[test]
    fn out_of_sync_counts_replicas_outside_the_isr_and_peers_share_a_partition() {
        let mut m = cluster(&[1, 2, 3, 4]);
        create(&mut m, "t", vec![vec![1, 2], vec![2, 3], vec![3, 1]]);
        let summary = ClusterSummary::of(&m, 1);
        assert!(summary.brokers.iter().all(|b| b.out_of_sync == 0));
        let peers: Vec<Vec<i32>> = summary
            .brokers
            .iter()
            .map(|b| b.partition_peers.clone())
            .collect();
        assert_eq!(peers, [vec![2, 3], vec![1, 3], vec![1, 2], vec![]]);
        // Broker 3 fenced: out of the ISR of both partitions it replicates.
        m.apply(&Command::FenceBroker { id: 3 }).expect("fence");
        let summary = ClusterSummary::of(&m, 1);
        let out: Vec<usize> = summary.brokers.iter().map(|b| b.out_of_sync).collect();
        assert_eq!(out, [0, 0, 2, 0]);
    }

    #[test]
    fn a_summary_from_an_older_broker_reads_with_defaults() {
        let m = cluster(&[1]);
        let mut json = serde_json::to_value(ClusterSummary::of(&m, 1)).expect("json");
        json.as_object_mut().expect("object").remove("quorum");
        let broker = json["brokers"][0].as_object_mut().expect("broker");
        broker.remove("out_of_sync");
        broker.remove("partition_peers");
        let summary: ClusterSummary = serde_json::from_value(json).expect("read");
        assert_eq!(summary.quorum, None);
        assert_eq!(summary.brokers[0].out_of_sync, 0);
        assert!(summary.brokers[0].partition_peers.is_empty());
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
        let quorum = QuorumSummary::of(&view, &BTreeSet::from([1, 2, 3])).expect("leader");
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
        let quorum = QuorumSummary::of(&view, &BTreeSet::from([2])).expect("leader");
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
        assert_eq!(QuorumSummary::of(&follower, &BTreeSet::new()), None);
        let mut no_progress = leader_view(&[]);
        no_progress.matched = None;
        assert_eq!(QuorumSummary::of(&no_progress, &BTreeSet::new()), None);
    }
}
