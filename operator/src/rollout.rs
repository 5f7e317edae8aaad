//! The rolling restart: which broker pods to restart next, if any, as a pure function of what
//! the reconciler observed.
//!
//! Invariants:
//! - nothing is restarted while any pod is missing, terminating or not Ready (a restarted
//!   broker still recovering its log, or catching up, holds the rollout), except outdated pods
//!   that are not Ready: they serve nothing, so they are replaced first (up to `max_parallel`
//!   together, highest ordinal first), without the cluster gates;
//! - a Ready broker is restarted only when the cluster reports every broker registered and
//!   unfenced, every already restarted broker back in the ISR of every partition it hosts,
//!   under-replicated partitions at or below the threshold, and the controller quorum's state
//!   known;
//! - and only when, without it, the caught-up controller voters are still a majority of all
//!   voters (a quorum of one or two voters, which cannot keep a majority without one of them,
//!   needs every other voter caught up), and no partition's in-sync replicas would fall below
//!   `min.insync.replicas`;
//! - Ready brokers go in this order: brokers that are not controller voters from the highest
//!   ordinal down, then the voters that are not the active controller (highest first), then
//!   the active controller;
//! - with `max_parallel` above one, the first broker in that order goes together with the next
//!   ones in order that pass their own gates, share no partition with any broker of the batch
//!   (no partition loses two replicas at once), and are not a second controller voter, up to
//!   `max_parallel` brokers.

use std::cmp::Reverse;

use tokafka_contract::admin::{BrokerSummary, ClusterSummary, QuorumSummary};

/// One broker pod as the rollout sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerPod {
    pub ordinal: i32,
    /// The pod exists and is not being deleted.
    pub present: bool,
    pub ready: bool,
    /// The pod runs the desired template (its recorded hash is the desired one).
    pub up_to_date: bool,
}

/// Why the rollout waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// A pod is missing, terminating or not Ready (a restart in progress, or a broker still
    /// starting).
    PodNotReady { ordinal: i32 },
    /// No broker's admin API answered.
    ClusterUnreachable,
    /// A broker is not registered, or is fenced.
    BrokerNotServing { broker: i32 },
    /// An already restarted broker is not yet back in the ISR of some partitions it hosts.
    OutOfSync { broker: i32, partitions: usize },
    /// More partitions are under-replicated than the rollout tolerates.
    UnderReplicated { partitions: usize, threshold: usize },
    /// The cluster summary carries no controller quorum state (no quorum leader answered).
    QuorumUnknown,
    /// Without this broker, fewer controller voters would be caught up than needed.
    QuorumAtRisk {
        broker: i32,
        /// Voters other than `broker` that are caught up.
        caught_up: usize,
        needed: usize,
        voters: usize,
    },
    /// Restarting this broker would take partitions below `min.insync.replicas`.
    InSyncReplicas { broker: i32, partitions: usize },
}

impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gate::PodNotReady { ordinal } => write!(f, "broker pod {ordinal} is not Ready"),
            Gate::ClusterUnreachable => write!(f, "no broker's admin API answers"),
            Gate::BrokerNotServing { broker } => {
                write!(f, "broker {broker} is not registered and unfenced")
            }
            Gate::OutOfSync { broker, partitions } => write!(
                f,
                "broker {broker} is not back in the ISR of {partitions} partitions it hosts"
            ),
            Gate::UnderReplicated {
                partitions,
                threshold,
            } => write!(
                f,
                "{partitions} partitions are under-replicated (at most {threshold} tolerated)"
            ),
            Gate::QuorumUnknown => write!(
                f,
                "the controller quorum's state is unknown (no quorum leader answered)"
            ),
            Gate::QuorumAtRisk {
                broker,
                caught_up,
                needed,
                voters,
            } => write!(
                f,
                "restarting broker {broker} would leave {caught_up} of {voters} controller voters caught up ({needed} needed)"
            ),
            Gate::InSyncReplicas { broker, partitions } => write!(
                f,
                "restarting broker {broker} would take {partitions} partitions below min.insync.replicas"
            ),
        }
    }
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Every broker runs the desired template.
    Complete,
    /// Outdated brokers remain, but the rollout is paused.
    Paused { outdated: usize },
    /// Restart these brokers now, together (each moves its leadership away, then its pod is
    /// deleted). Never empty; at most `max_parallel` long; in restart order.
    Restart { ordinals: Vec<i32> },
    /// Outdated brokers remain; the gate holds.
    Wait { gate: Gate },
}

/// The rollout's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub paused: bool,
    pub max_under_replicated: usize,
    /// Node ids of the controller quorum's voters (restarted last, one at a time).
    pub voters: Vec<i32>,
    /// Brokers restarted together at most (taken as 1 when 0).
    pub max_parallel: usize,
}

/// The next step for `pods` (one per desired broker) given the cluster's own view.
pub fn next_step(pods: &[BrokerPod], summary: Option<&ClusterSummary>, policy: &Policy) -> Step {
    let max_parallel = policy.max_parallel.max(1);
    let outdated: Vec<&BrokerPod> = pods.iter().filter(|p| !p.up_to_date).collect();
    if outdated.is_empty() {
        return Step::Complete;
    }
    if policy.paused {
        return Step::Paused {
            outdated: outdated.len(),
        };
    }
    if let Some(absent) = pods.iter().rev().find(|p| !p.present) {
        return Step::Wait {
            gate: Gate::PodNotReady {
                ordinal: absent.ordinal,
            },
        };
    }
    // Unready outdated pods serve nothing: replace them first, highest ordinal first.
    let unready: Vec<i32> = outdated
        .iter()
        .rev()
        .filter(|p| !p.ready)
        .take(max_parallel)
        .map(|p| p.ordinal)
        .collect();
    if !unready.is_empty() {
        return Step::Restart { ordinals: unready };
    }
    if let Some(unready) = pods.iter().rev().find(|p| !p.ready) {
        return Step::Wait {
            gate: Gate::PodNotReady {
                ordinal: unready.ordinal,
            },
        };
    }
    let Some(summary) = summary else {
        return Step::Wait {
            gate: Gate::ClusterUnreachable,
        };
    };
    let quorum = match cluster_gates(pods, summary, policy) {
        Ok(quorum) => quorum,
        Err(gate) => return Step::Wait { gate },
    };
    let is_voter =
        |id: i32| policy.voters.contains(&id) || quorum.voters.iter().any(|v| v.id == id);
    let order = restart_order(&outdated, quorum.leader, is_voter);
    let Some((&first, rest)) = order.split_first() else {
        return Step::Complete;
    };
    if let Err(gate) = broker_gates(first, summary, quorum) {
        return Step::Wait { gate };
    }
    let mut batch = vec![first];
    for &candidate in rest {
        if batch.len() >= max_parallel {
            break;
        }
        let voters_in_batch = batch.iter().filter(|b| is_voter(**b)).count();
        if is_voter(candidate) && voters_in_batch > 0 {
            continue;
        }
        if shares_partition(candidate, &batch, summary) {
            continue;
        }
        if broker_gates(candidate, summary, quorum).is_ok() {
            batch.push(candidate);
        }
    }
    Step::Restart { ordinals: batch }
}

/// The gates on the whole cluster, once every pod is Ready; the quorum's state when they pass.
fn cluster_gates<'a>(
    pods: &[BrokerPod],
    summary: &'a ClusterSummary,
    policy: &Policy,
) -> Result<&'a QuorumSummary, Gate> {
    for pod in pods {
        let serving = broker(summary, pod.ordinal).is_some_and(|b| !b.fenced && !b.shutting_down);
        if !serving {
            return Err(Gate::BrokerNotServing {
                broker: pod.ordinal,
            });
        }
    }
    for pod in pods.iter().filter(|p| p.up_to_date) {
        let partitions = broker(summary, pod.ordinal).map_or(0, |b| b.out_of_sync);
        if partitions > 0 {
            return Err(Gate::OutOfSync {
                broker: pod.ordinal,
                partitions,
            });
        }
    }
    if summary.under_replicated_partitions > policy.max_under_replicated {
        return Err(Gate::UnderReplicated {
            partitions: summary.under_replicated_partitions,
            threshold: policy.max_under_replicated,
        });
    }
    summary.quorum.as_ref().ok_or(Gate::QuorumUnknown)
}

/// The gates on restarting `id` alone: the controller quorum keeps a majority of caught-up
/// voters without it, and no partition falls below `min.insync.replicas`.
fn broker_gates(id: i32, summary: &ClusterSummary, quorum: &QuorumSummary) -> Result<(), Gate> {
    let voters = quorum.voters.len();
    let others = quorum.voters.iter().filter(|v| v.id != id).count();
    // A quorum of one or two voters cannot keep a majority without one of them: the most it
    // can have is every other voter caught up.
    let needed = (voters / 2 + 1).min(others);
    let caught_up = quorum
        .voters
        .iter()
        .filter(|v| v.id != id && v.caught_up)
        .count();
    if caught_up < needed {
        return Err(Gate::QuorumAtRisk {
            broker: id,
            caught_up,
            needed,
            voters,
        });
    }
    let blockers = broker(summary, id).map_or(0, |b| b.restart_blockers);
    if blockers > 0 {
        return Err(Gate::InSyncReplicas {
            broker: id,
            partitions: blockers,
        });
    }
    Ok(())
}

/// The outdated brokers in restart order: brokers that are not voters from the highest
/// ordinal down, then the voters other than the active controller `leader` (highest first),
/// then the active controller.
fn restart_order(outdated: &[&BrokerPod], leader: i32, is_voter: impl Fn(i32) -> bool) -> Vec<i32> {
    let mut order: Vec<i32> = outdated.iter().map(|p| p.ordinal).collect();
    order.sort_by_key(|&id| {
        let rank = if id == leader {
            2
        } else if is_voter(id) {
            1
        } else {
            0
        };
        (rank, Reverse(id))
    });
    order
}

/// Whether `candidate` replicates a partition with any broker of `batch` (a broker missing from
/// the summary is taken as sharing one).
fn shares_partition(candidate: i32, batch: &[i32], summary: &ClusterSummary) -> bool {
    let Some(c) = broker(summary, candidate) else {
        return true;
    };
    batch.iter().any(|b| {
        c.partition_peers.contains(b)
            || broker(summary, *b).is_none_or(|b| b.partition_peers.contains(&candidate))
    })
}

fn broker(summary: &ClusterSummary, id: i32) -> Option<&BrokerSummary> {
    summary.brokers.iter().find(|b| b.id == id)
}

/// Whether a gate that has held since `since_seconds` halts the rollout at `now_seconds`.
pub fn halted(since_seconds: i64, now_seconds: i64, timeout_seconds: i64) -> bool {
    now_seconds.saturating_sub(since_seconds) >= timeout_seconds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{broker, quorum, summary};

    fn pod(ordinal: i32, ready: bool, up_to_date: bool) -> BrokerPod {
        BrokerPod {
            ordinal,
            present: true,
            ready,
            up_to_date,
        }
    }

    /// Ready pods `0..n`, all outdated.
    fn outdated(n: i32) -> Vec<BrokerPod> {
        (0..n).map(|o| pod(o, true, false)).collect()
    }

    /// A healthy cluster of brokers `ids` whose quorum of voters 0, 1, 2 is led by 0, every
    /// broker sharing a partition with every other.
    fn healthy(ids: &[i32]) -> ClusterSummary {
        let brokers = ids
            .iter()
            .map(|id| BrokerSummary {
                partition_peers: ids.iter().copied().filter(|p| p != id).collect(),
                ..broker(*id, 3, 1)
            })
            .collect();
        ClusterSummary {
            quorum: Some(quorum(0, &[0, 1, 2])),
            ..summary(brokers, 3)
        }
    }

    /// `summary` where broker `id` shares partitions with `peers` only (and they with it).
    fn with_peers(mut summary: ClusterSummary, id: i32, peers: &[i32]) -> ClusterSummary {
        for b in &mut summary.brokers {
            if b.id == id {
                b.partition_peers = peers.to_vec();
            } else if peers.contains(&b.id) {
                if !b.partition_peers.contains(&id) {
                    b.partition_peers.push(id);
                }
            } else {
                b.partition_peers.retain(|p| *p != id);
            }
        }
        summary
    }

    /// `summary` where voter `id` is not caught up.
    fn lagging(mut summary: ClusterSummary, id: i32) -> ClusterSummary {
        let voter = summary
            .quorum
            .as_mut()
            .and_then(|q| q.voters.iter_mut().find(|v| v.id == id))
            .expect("voter");
        voter.lag_entries = 1000;
        voter.caught_up = false;
        summary
    }

    fn policy() -> Policy {
        Policy {
            paused: false,
            max_under_replicated: 0,
            voters: vec![0, 1, 2],
            max_parallel: 1,
        }
    }

    fn parallel(max_parallel: usize) -> Policy {
        Policy {
            max_parallel,
            ..policy()
        }
    }

    fn restart(ordinals: &[i32]) -> Step {
        Step::Restart {
            ordinals: ordinals.to_vec(),
        }
    }

    fn wait(gate: Gate) -> Step {
        Step::Wait { gate }
    }

    #[test]
    fn nothing_outdated_is_complete() {
        let pods = [pod(0, true, true), pod(1, true, true)];
        assert_eq!(next_step(&pods, None, &policy()), Step::Complete);
    }

    #[test]
    fn non_voters_go_highest_ordinal_first_then_voters_then_the_active_controller() {
        let mut pods = outdated(5);
        let led_by_1 = ClusterSummary {
            quorum: Some(quorum(1, &[0, 1, 2])),
            ..healthy(&[0, 1, 2, 3, 4])
        };
        let mut order = Vec::new();
        for _ in 0..5 {
            let Step::Restart { ordinals } = next_step(&pods, Some(&led_by_1), &policy()) else {
                panic!("expected a restart");
            };
            assert_eq!(ordinals.len(), 1);
            order.push(ordinals[0]);
            pods[usize::try_from(ordinals[0]).expect("ordinal")].up_to_date = true;
        }
        assert_eq!(order, [4, 3, 2, 0, 1]);
        assert_eq!(next_step(&pods, Some(&led_by_1), &policy()), Step::Complete);
    }

    #[test]
    fn voters_from_the_config_go_last_even_if_the_quorum_lists_them_differently() {
        let non_voter_first = Policy {
            voters: vec![1],
            ..policy()
        };
        let pods = [pod(0, true, false), pod(1, true, false), pod(2, true, true)];
        let cluster = ClusterSummary {
            quorum: Some(quorum(1, &[1])),
            ..healthy(&[0, 1, 2])
        };
        assert_eq!(
            next_step(&pods, Some(&cluster), &non_voter_first),
            restart(&[0])
        );
    }

    #[test]
    fn an_unready_outdated_pod_goes_first_without_gates() {
        let pods = [
            pod(0, true, false),
            pod(1, false, false),
            pod(2, true, false),
        ];
        assert_eq!(next_step(&pods, None, &policy()), restart(&[1]));
    }

    #[test]
    fn unready_outdated_pods_go_together_up_to_max_parallel() {
        let pods = [
            pod(0, false, false),
            pod(1, false, false),
            pod(2, true, false),
            pod(3, false, false),
        ];
        assert_eq!(next_step(&pods, None, &parallel(2)), restart(&[3, 1]));
        assert_eq!(next_step(&pods, None, &parallel(5)), restart(&[3, 1, 0]));
    }

    #[test]
    fn a_restart_in_progress_holds_everything() {
        let mut pods = [pod(0, true, false), pod(1, true, false), pod(2, true, true)];
        pods[2].present = false;
        assert_eq!(
            next_step(&pods, Some(&healthy(&[0, 1, 2])), &policy()),
            wait(Gate::PodNotReady { ordinal: 2 })
        );
        // Back but still starting (not Ready): an up-to-date pod recovering its log holds too.
        pods[2].present = true;
        pods[2].ready = false;
        assert_eq!(
            next_step(&pods, Some(&healthy(&[0, 1, 2])), &parallel(3)),
            wait(Gate::PodNotReady { ordinal: 2 })
        );
    }

    #[test]
    fn cluster_gates_hold_ready_brokers() {
        let pods = outdated(3);
        assert_eq!(
            next_step(&pods, None, &policy()),
            wait(Gate::ClusterUnreachable)
        );
        let mut fenced = healthy(&[0, 1, 2]);
        fenced.brokers[1].fenced = true;
        assert_eq!(
            next_step(&pods, Some(&fenced), &policy()),
            wait(Gate::BrokerNotServing { broker: 1 })
        );
        let missing = healthy(&[0, 1]);
        assert_eq!(
            next_step(&pods, Some(&missing), &policy()),
            wait(Gate::BrokerNotServing { broker: 2 })
        );
        let mut urp = healthy(&[0, 1, 2]);
        urp.under_replicated_partitions = 2;
        assert_eq!(
            next_step(&pods, Some(&urp), &policy()),
            wait(Gate::UnderReplicated {
                partitions: 2,
                threshold: 0
            })
        );
        let tolerant = Policy {
            max_under_replicated: 2,
            ..policy()
        };
        assert_eq!(next_step(&pods, Some(&urp), &tolerant), restart(&[2]));
    }

    #[test]
    fn a_broker_whose_restart_would_refuse_acks_all_writes_waits() {
        let pods = outdated(3);
        let mut isr = healthy(&[0, 1, 2]);
        isr.brokers[2].restart_blockers = 4;
        let step = next_step(&pods, Some(&isr), &policy());
        let gate = Gate::InSyncReplicas {
            broker: 2,
            partitions: 4,
        };
        assert_eq!(step, wait(gate.clone()));
        assert_eq!(
            gate.to_string(),
            "restarting broker 2 would take 4 partitions below min.insync.replicas"
        );
    }

    #[test]
    fn a_restarted_broker_out_of_the_isr_holds_the_rollout() {
        let mut pods = outdated(4);
        pods[3].up_to_date = true;
        let mut catching_up = healthy(&[0, 1, 2, 3]);
        catching_up.brokers[3].out_of_sync = 5;
        // Tolerated under-replication does not let a restarted broker's catch-up pass.
        let tolerant = Policy {
            max_under_replicated: 10,
            ..policy()
        };
        let gate = Gate::OutOfSync {
            broker: 3,
            partitions: 5,
        };
        assert_eq!(
            next_step(&pods, Some(&catching_up), &tolerant),
            wait(gate.clone())
        );
        assert_eq!(
            gate.to_string(),
            "broker 3 is not back in the ISR of 5 partitions it hosts"
        );
        // An outdated broker out of sync is the under-replication gate's business.
        catching_up.brokers[3].out_of_sync = 0;
        catching_up.brokers[1].out_of_sync = 2;
        assert_eq!(
            next_step(&pods, Some(&catching_up), &tolerant),
            restart(&[2])
        );
    }

    #[test]
    fn an_unknown_quorum_holds_ready_brokers() {
        let pods = outdated(3);
        let unknown = ClusterSummary {
            quorum: None,
            ..healthy(&[0, 1, 2])
        };
        assert_eq!(
            next_step(&pods, Some(&unknown), &policy()),
            wait(Gate::QuorumUnknown)
        );
        assert!(Gate::QuorumUnknown.to_string().contains("quorum"));
    }

    #[test]
    fn a_voter_restarts_only_if_a_majority_of_the_others_is_caught_up() {
        let pods = [pod(0, true, false), pod(1, true, false), pod(2, true, true)];
        // Voter 1 goes next; of the others, 0 is caught up and 2 is not: 1 of 2 needed.
        let cluster = lagging(healthy(&[0, 1, 2]), 2);
        let gate = Gate::QuorumAtRisk {
            broker: 1,
            caught_up: 1,
            needed: 2,
            voters: 3,
        };
        assert_eq!(
            next_step(&pods, Some(&cluster), &policy()),
            wait(gate.clone())
        );
        assert_eq!(
            gate.to_string(),
            "restarting broker 1 would leave 1 of 3 controller voters caught up (2 needed)"
        );
        assert_eq!(
            next_step(&pods, Some(&healthy(&[0, 1, 2])), &policy()),
            restart(&[1])
        );
    }

    #[test]
    fn a_lagging_voter_restarts_when_the_others_make_a_majority() {
        let pods = [pod(0, true, true), pod(1, true, false), pod(2, true, true)];
        // Voter 1 itself lags: 0 and 2 still make 2 of 3.
        let cluster = lagging(healthy(&[0, 1, 2]), 1);
        assert_eq!(next_step(&pods, Some(&cluster), &policy()), restart(&[1]));
    }

    #[test]
    fn a_non_voter_waits_while_the_quorum_lacks_a_majority() {
        let pods = outdated(4);
        let cluster = lagging(lagging(healthy(&[0, 1, 2, 3]), 1), 2);
        assert_eq!(
            next_step(&pods, Some(&cluster), &policy()),
            wait(Gate::QuorumAtRisk {
                broker: 3,
                caught_up: 1,
                needed: 2,
                voters: 3,
            })
        );
    }

    #[test]
    fn a_quorum_too_small_to_lose_a_voter_needs_every_other_voter() {
        let single = Policy {
            voters: vec![0],
            ..policy()
        };
        let pods = outdated(1);
        let one = ClusterSummary {
            quorum: Some(quorum(0, &[0])),
            ..healthy(&[0])
        };
        assert_eq!(next_step(&pods, Some(&one), &single), restart(&[0]));
        let pair = Policy {
            voters: vec![0, 1],
            ..policy()
        };
        // The active controller 0 goes last; its only other voter lags.
        let pods = [pod(0, true, false), pod(1, true, true)];
        let two = lagging(
            ClusterSummary {
                quorum: Some(quorum(0, &[0, 1])),
                ..healthy(&[0, 1])
            },
            1,
        );
        assert_eq!(
            next_step(&pods, Some(&two), &pair),
            wait(Gate::QuorumAtRisk {
                broker: 0,
                caught_up: 0,
                needed: 1,
                voters: 2,
            })
        );
    }

    #[test]
    fn max_parallel_restarts_brokers_that_share_no_partition_together() {
        // Brokers 3..=6 are not voters; 6 shares a partition with 5 only, 4 with 3 only.
        let pods = outdated(7);
        let mut cluster = healthy(&[0, 1, 2, 3, 4, 5, 6]);
        cluster = with_peers(cluster, 6, &[5]);
        cluster = with_peers(cluster, 4, &[3]);
        cluster = with_peers(cluster, 5, &[6, 0]);
        cluster = with_peers(cluster, 3, &[4, 0]);
        assert_eq!(
            next_step(&pods, Some(&cluster), &parallel(2)),
            restart(&[6, 4])
        );
        // 5 shares with 6, 3 with 4; the voters 2 and 1 share with nobody in the batch yet,
        // but only one voter goes at a time.
        cluster = with_peers(cluster, 2, &[0]);
        cluster = with_peers(cluster, 1, &[0]);
        assert_eq!(
            next_step(&pods, Some(&cluster), &parallel(10)),
            restart(&[6, 4, 2])
        );
        assert_eq!(next_step(&pods, Some(&cluster), &policy()), restart(&[6]));
    }

    #[test]
    fn a_batch_skips_candidates_that_fail_their_own_gates() {
        let pods = outdated(6);
        let mut cluster = healthy(&[0, 1, 2, 3, 4, 5]);
        for id in 3..=5 {
            cluster = with_peers(cluster, id, &[]);
        }
        cluster.brokers[4].restart_blockers = 1;
        assert_eq!(
            next_step(&pods, Some(&cluster), &parallel(2)),
            restart(&[5, 3])
        );
    }

    #[test]
    fn a_blocked_first_broker_holds_the_batch() {
        let pods = outdated(6);
        let mut cluster = healthy(&[0, 1, 2, 3, 4, 5]);
        for id in 3..=5 {
            cluster = with_peers(cluster, id, &[]);
        }
        cluster.brokers[5].restart_blockers = 2;
        assert_eq!(
            next_step(&pods, Some(&cluster), &parallel(3)),
            wait(Gate::InSyncReplicas {
                broker: 5,
                partitions: 2
            })
        );
    }

    #[test]
    fn a_paused_rollout_restarts_nothing() {
        let pods = [pod(0, false, false), pod(1, true, false)];
        let paused = Policy {
            paused: true,
            ..policy()
        };
        assert_eq!(
            next_step(&pods, None, &paused),
            Step::Paused { outdated: 2 }
        );
    }

    #[test]
    fn a_gate_halts_the_rollout_after_the_timeout() {
        assert!(!halted(100, 699, 600));
        assert!(halted(100, 700, 600));
    }
}
