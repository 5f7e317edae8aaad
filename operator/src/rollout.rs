//! The rolling restart: which broker pod to restart next, if any, as a pure function of what
//! the reconciler observed.
//!
//! Invariants:
//! - at most one broker is down for a restart at a time: nothing is restarted while any pod
//!   is missing, terminating or not Ready (a restarted broker still recovering its log, or
//!   catching up, holds the rollout);
//! - a pod that is not Ready serves nothing, so an outdated one is restarted first, without
//!   the cluster gates;
//! - a Ready broker is restarted only when the cluster reports every broker registered and
//!   unfenced, under-replicated partitions at or below the threshold, and no partition whose
//!   in-sync replicas would fall below `min.insync.replicas` without it;
//! - Ready brokers go from the highest ordinal down, controller voters last.

use tokafka_broker::http::admin::ClusterSummary;

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
    /// More partitions are under-replicated than the rollout tolerates.
    UnderReplicated { partitions: usize, threshold: usize },
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
            Gate::UnderReplicated {
                partitions,
                threshold,
            } => write!(
                f,
                "{partitions} partitions are under-replicated (at most {threshold} tolerated)"
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
    /// Restart this broker now (move leadership away, then delete its pod).
    Restart { ordinal: i32 },
    /// Outdated brokers remain; the gate holds.
    Wait { gate: Gate },
}

/// The rollout's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub paused: bool,
    pub max_under_replicated: usize,
    /// Node ids of the controller quorum's voters (restarted last).
    pub voters: Vec<i32>,
}

/// The next step for `pods` (one per desired broker) given the cluster's own view.
pub fn next_step(pods: &[BrokerPod], summary: Option<&ClusterSummary>, policy: &Policy) -> Step {
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
    if let Some(unready) = outdated.iter().rev().find(|p| !p.ready) {
        return Step::Restart {
            ordinal: unready.ordinal,
        };
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
    for pod in pods {
        let serving = summary
            .brokers
            .iter()
            .any(|b| b.id == pod.ordinal && !b.fenced && !b.shutting_down);
        if !serving {
            return Step::Wait {
                gate: Gate::BrokerNotServing {
                    broker: pod.ordinal,
                },
            };
        }
    }
    if summary.under_replicated_partitions > policy.max_under_replicated {
        return Step::Wait {
            gate: Gate::UnderReplicated {
                partitions: summary.under_replicated_partitions,
                threshold: policy.max_under_replicated,
            },
        };
    }
    let is_voter = |p: &BrokerPod| policy.voters.contains(&p.ordinal);
    let candidate = outdated
        .iter()
        .rev()
        .find(|p| !is_voter(p))
        .or_else(|| outdated.iter().rev().find(|p| is_voter(p)))
        .map(|p| p.ordinal);
    let Some(ordinal) = candidate else {
        return Step::Complete;
    };
    let blockers = summary
        .brokers
        .iter()
        .find(|b| b.id == ordinal)
        .map_or(0, |b| b.restart_blockers);
    if blockers > 0 {
        return Step::Wait {
            gate: Gate::InSyncReplicas {
                broker: ordinal,
                partitions: blockers,
            },
        };
    }
    Step::Restart { ordinal }
}

/// Whether a gate that has held since `since_seconds` halts the rollout at `now_seconds`.
pub fn halted(since_seconds: i64, now_seconds: i64, timeout_seconds: i64) -> bool {
    now_seconds.saturating_sub(since_seconds) >= timeout_seconds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{broker, summary};

    fn pod(ordinal: i32, ready: bool, up_to_date: bool) -> BrokerPod {
        BrokerPod {
            ordinal,
            present: true,
            ready,
            up_to_date,
        }
    }

    fn healthy(ids: &[i32]) -> ClusterSummary {
        summary(ids.iter().map(|id| broker(*id, 3, 1)).collect(), 3)
    }

    fn policy() -> Policy {
        Policy {
            paused: false,
            max_under_replicated: 0,
            voters: vec![0, 1, 2],
        }
    }

    #[test]
    fn nothing_outdated_is_complete() {
        let pods = [pod(0, true, true), pod(1, true, true)];
        assert_eq!(next_step(&pods, None, &policy()), Step::Complete);
    }

    #[test]
    fn ready_brokers_go_highest_ordinal_first_voters_last() {
        let pods = [
            pod(0, true, false),
            pod(1, true, false),
            pod(2, true, false),
            pod(3, true, false),
            pod(4, true, false),
        ];
        let summary = healthy(&[0, 1, 2, 3, 4]);
        assert_eq!(
            next_step(&pods, Some(&summary), &policy()),
            Step::Restart { ordinal: 4 }
        );
        let mut pods = pods;
        pods[4].up_to_date = true;
        pods[3].up_to_date = true;
        assert_eq!(
            next_step(&pods, Some(&summary), &policy()),
            Step::Restart { ordinal: 2 }
        );
        let non_voter_first = Policy {
            voters: vec![1],
            ..policy()
        };
        let pods = [pod(0, true, false), pod(1, true, false), pod(2, true, true)];
        assert_eq!(
            next_step(&pods, Some(&healthy(&[0, 1, 2])), &non_voter_first),
            Step::Restart { ordinal: 0 }
        );
    }

    #[test]
    fn an_unready_outdated_pod_goes_first_without_gates() {
        let pods = [
            pod(0, true, false),
            pod(1, false, false),
            pod(2, true, false),
        ];
        assert_eq!(
            next_step(&pods, None, &policy()),
            Step::Restart { ordinal: 1 }
        );
    }

    #[test]
    fn a_restart_in_progress_holds_everything() {
        let mut pods = [pod(0, true, false), pod(1, true, false), pod(2, true, true)];
        pods[2].present = false;
        assert_eq!(
            next_step(&pods, Some(&healthy(&[0, 1, 2])), &policy()),
            Step::Wait {
                gate: Gate::PodNotReady { ordinal: 2 }
            }
        );
        // Back but still starting (not Ready): an up-to-date pod recovering its log holds too.
        pods[2].present = true;
        pods[2].ready = false;
        assert_eq!(
            next_step(&pods, Some(&healthy(&[0, 1, 2])), &policy()),
            Step::Wait {
                gate: Gate::PodNotReady { ordinal: 2 }
            }
        );
    }

    #[test]
    fn cluster_gates_hold_ready_brokers() {
        let pods = [
            pod(0, true, false),
            pod(1, true, false),
            pod(2, true, false),
        ];
        assert_eq!(
            next_step(&pods, None, &policy()),
            Step::Wait {
                gate: Gate::ClusterUnreachable
            }
        );
        let mut fenced = healthy(&[0, 1, 2]);
        fenced.brokers[1].fenced = true;
        assert_eq!(
            next_step(&pods, Some(&fenced), &policy()),
            Step::Wait {
                gate: Gate::BrokerNotServing { broker: 1 }
            }
        );
        let missing = healthy(&[0, 1]);
        assert_eq!(
            next_step(&pods, Some(&missing), &policy()),
            Step::Wait {
                gate: Gate::BrokerNotServing { broker: 2 }
            }
        );
        let mut urp = healthy(&[0, 1, 2]);
        urp.under_replicated_partitions = 2;
        assert_eq!(
            next_step(&pods, Some(&urp), &policy()),
            Step::Wait {
                gate: Gate::UnderReplicated {
                    partitions: 2,
                    threshold: 0
                }
            }
        );
        let tolerant = Policy {
            max_under_replicated: 2,
            ..policy()
        };
        assert_eq!(
            next_step(&pods, Some(&urp), &tolerant),
            Step::Restart { ordinal: 2 }
        );
        let mut isr = healthy(&[0, 1, 2]);
        isr.brokers[2].restart_blockers = 4;
        let step = next_step(&pods, Some(&isr), &policy());
        assert_eq!(
            step,
            Step::Wait {
                gate: Gate::InSyncReplicas {
                    broker: 2,
                    partitions: 4
                }
            }
        );
        if let Step::Wait { gate } = step {
            assert!(gate.to_string().contains("min.insync.replicas"));
        }
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
