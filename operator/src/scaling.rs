//! Scaling decisions: how many brokers the StatefulSet runs, and how a broker leaves.
//!
//! Invariants:
//! - brokers leave one at a time, highest ordinal first, and only once the cluster reports
//!   them drained (holding no replica): the StatefulSet shrinks by one only then;
//! - the broker to drain is found by its registration (the pod's stable host name), not
//!   assumed from the ordinal;
//! - a scale-down that would leave fewer brokers than some partition's replication factor,
//!   or remove a controller voter, is held: nothing is drained or removed;
//! - raising the replica count cancels the drains of brokers that stay.

use tokafka_contract::admin::{BrokerSummary, ClusterSummary};

use crate::names::ClusterNames;

/// What to do about the StatefulSet's size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleStep {
    /// Run this many pods (a scale-up, or nothing to do).
    Run { replicas: i32 },
    /// Start draining this broker; the StatefulSet keeps `replicas`.
    Decommission { broker: i32, replicas: i32 },
    /// The broker is draining; wait.
    Draining { broker: i32, replicas: i32 },
    /// Held: the StatefulSet keeps `replicas`, and `reason` says why (ScaleDownBlocked).
    Blocked { reason: String, replicas: i32 },
}

impl ScaleStep {
    /// The StatefulSet's replica count for this step.
    pub fn replicas(&self) -> i32 {
        match self {
            ScaleStep::Run { replicas }
            | ScaleStep::Decommission { replicas, .. }
            | ScaleStep::Draining { replicas, .. }
            | ScaleStep::Blocked { replicas, .. } => *replicas,
        }
    }
}

/// The broker registered from the pod of `ordinal` (by its advertised host), else the broker
/// whose id is the ordinal.
pub fn broker_of<'a>(
    summary: &'a ClusterSummary,
    names: &ClusterNames,
    ordinal: i32,
) -> Option<&'a BrokerSummary> {
    let host = names.pod_host(ordinal);
    summary
        .brokers
        .iter()
        .find(|b| b.host == host || b.host == format!("{host}.cluster.local"))
        .or_else(|| summary.brokers.iter().find(|b| b.id == ordinal))
}

/// The next scaling step from `running` pods (the StatefulSet's current size; `None` before it
/// exists) to `desired` brokers.
pub fn scale_step(
    running: Option<i32>,
    desired: i32,
    voters: &[i32],
    summary: Option<&ClusterSummary>,
    names: &ClusterNames,
) -> ScaleStep {
    let Some(running) = running else {
        return ScaleStep::Run { replicas: desired };
    };
    if desired >= running {
        return ScaleStep::Run { replicas: desired };
    }
    let needed_by_quorum = voters.iter().max().map_or(1, |highest| highest + 1);
    if desired < needed_by_quorum {
        return ScaleStep::Blocked {
            reason: format!(
                "cannot scale to {desired} brokers: brokers 0..{} are the controller quorum's voters and must stay",
                needed_by_quorum - 1
            ),
            replicas: running,
        };
    }
    let Some(summary) = summary else {
        return ScaleStep::Blocked {
            reason: "cannot scale down while no broker's admin API answers".into(),
            replicas: running,
        };
    };
    let needed_by_topics = i32::try_from(summary.max_replication_factor).unwrap_or(i32::MAX);
    if desired < needed_by_topics {
        return ScaleStep::Blocked {
            reason: format!(
                "cannot scale to {desired} brokers: a partition has {needed_by_topics} replicas"
            ),
            replicas: running,
        };
    }
    let leaving = running - 1;
    match broker_of(summary, names, leaving) {
        // Never registered (its pod never started): nothing to drain.
        None => ScaleStep::Run { replicas: leaving },
        Some(b) if b.replicas == 0 => ScaleStep::Run { replicas: leaving },
        Some(b) if b.decommissioning => ScaleStep::Draining {
            broker: b.id,
            replicas: running,
        },
        Some(b) => ScaleStep::Decommission {
            broker: b.id,
            replicas: running,
        },
    }
}

/// Brokers whose drain must be cancelled: draining, but hosted by a pod that stays, one of
/// `0..desired` (`spec.replicas`, not the StatefulSet's size: while it steps down one broker at
/// a time, the brokers above `desired` are all on their way out).
pub fn drains_to_cancel(summary: &ClusterSummary, names: &ClusterNames, desired: i32) -> Vec<i32> {
    (0..desired)
        .filter_map(|ordinal| broker_of(summary, names, ordinal))
        .filter(|b| b.decommissioning)
        .map(|b| b.id)
        .collect()
}

/// Registered brokers hosted by no pod of `0..running`: removed brokers not forgotten yet.
pub fn removed_brokers(summary: &ClusterSummary, names: &ClusterNames, running: i32) -> Vec<i32> {
    let kept: Vec<i32> = (0..running)
        .filter_map(|ordinal| broker_of(summary, names, ordinal).map(|b| b.id))
        .collect();
    summary
        .brokers
        .iter()
        .filter(|b| !kept.contains(&b.id))
        .map(|b| b.id)
        .collect()
}

/// Brokers to forget: removed (see [`removed_brokers`]), stopped (fenced) and holding nothing.
pub fn brokers_to_forget(summary: &ClusterSummary, names: &ClusterNames, running: i32) -> Vec<i32> {
    removed_brokers(summary, names, running)
        .into_iter()
        .filter(|id| {
            summary
                .brokers
                .iter()
                .any(|b| b.id == *id && b.fenced && b.replicas == 0)
        })
        .collect()
}

/// Whether replicas should be spread over the brokers: all `brokers` desired are registered
/// and serving, nothing is being reassigned, and some serving broker holds at least two
/// replicas more than another (typically right after a scale-up).
pub fn needs_spread(summary: &ClusterSummary, names: &ClusterNames, brokers: i32) -> bool {
    let serving: Vec<&BrokerSummary> = (0..brokers)
        .filter_map(|ordinal| broker_of(summary, names, ordinal))
        .filter(|b| !b.fenced && !b.shutting_down && !b.decommissioning)
        .collect();
    if serving.len() != usize::try_from(brokers).unwrap_or(0) || summary.reassigning_partitions > 0
    {
        return false;
    }
    let loads = serving.iter().map(|b| b.replicas);
    matches!((loads.clone().max(), loads.min()), (Some(most), Some(least)) if most >= least + 2)
}

/// Whether leadership should move back to preferred replicas: some broker's leader imbalance
/// is above `threshold_percent` and nothing is being reassigned.
pub fn needs_leader_rebalance(summary: &ClusterSummary, threshold_percent: i32) -> bool {
    let threshold = u32::try_from(threshold_percent).unwrap_or(0);
    summary.reassigning_partitions == 0
        && summary
            .leader_imbalance_percent
            .values()
            .any(|p| *p > threshold)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testing::{names, summary};

    fn broker(id: i32, replicas: usize) -> BrokerSummary {
        crate::testing::broker(id, replicas, 0)
    }

    const VOTERS: [i32; 3] = [0, 1, 2];

    #[test]
    fn scaling_up_or_creating_runs_the_desired_count() {
        assert_eq!(
            scale_step(None, 3, &VOTERS, None, &names()),
            ScaleStep::Run { replicas: 3 }
        );
        assert_eq!(
            scale_step(Some(3), 5, &VOTERS, None, &names()),
            ScaleStep::Run { replicas: 5 }
        );
    }

    #[test]
    fn a_broker_leaves_by_drain_then_removal() {
        let mut brokers: Vec<_> = (0..5).map(|id| broker(id, 4)).collect();
        let s = summary(brokers.clone(), 3);
        assert_eq!(
            scale_step(Some(5), 3, &VOTERS, Some(&s), &names()),
            ScaleStep::Decommission {
                broker: 4,
                replicas: 5
            }
        );
        brokers[4].decommissioning = true;
        let s = summary(brokers.clone(), 3);
        assert_eq!(
            scale_step(Some(5), 3, &VOTERS, Some(&s), &names()),
            ScaleStep::Draining {
                broker: 4,
                replicas: 5
            }
        );
        brokers[4].replicas = 0;
        brokers[4].drained = true;
        let s = summary(brokers.clone(), 3);
        assert_eq!(
            scale_step(Some(5), 3, &VOTERS, Some(&s), &names()),
            ScaleStep::Run { replicas: 4 }
        );
    }

    #[test]
    fn the_leaving_broker_is_found_by_its_host_not_its_id() {
        // The pod demo-3 registered as broker 7.
        let mut b = broker(7, 2);
        b.host = names().pod_host(3);
        let s = summary(vec![broker(0, 2), broker(1, 2), broker(2, 2), b], 3);
        assert_eq!(
            scale_step(Some(4), 3, &VOTERS, Some(&s), &names()),
            ScaleStep::Decommission {
                broker: 7,
                replicas: 4
            }
        );
    }

    #[test]
    fn impossible_scale_downs_are_blocked_and_change_nothing() {
        let s = summary((0..4).map(|id| broker(id, 3)).collect(), 3);
        let quorum = scale_step(Some(4), 2, &VOTERS, Some(&s), &names());
        assert!(
            matches!(&quorum, ScaleStep::Blocked { reason, replicas: 4 } if reason.contains("controller quorum"))
        );
        let one_voter = [0];
        let topics = scale_step(Some(4), 2, &one_voter, Some(&s), &names());
        assert!(
            matches!(&topics, ScaleStep::Blocked { reason, replicas: 4 } if reason.contains("3 replicas"))
        );
        let blind = scale_step(Some(4), 3, &VOTERS, None, &names());
        assert_eq!(blind.replicas(), 4);
    }

    #[test]
    fn new_empty_brokers_call_for_a_spread_once_all_serve() {
        let mut brokers: Vec<_> = (0..3).map(|id| broker(id, 4)).collect();
        brokers.extend([broker(3, 0), broker(4, 0)]);
        let s = summary(brokers.clone(), 3);
        assert!(needs_spread(&s, &names(), 5));
        assert!(
            !needs_spread(&s, &names(), 6),
            "broker 5 not registered yet"
        );
        let mut moving = summary(brokers.clone(), 3);
        moving.reassigning_partitions = 2;
        assert!(!needs_spread(&moving, &names(), 5));
        let even = summary(
            (0..5)
                .map(|id| broker(id, 3 + usize::from(id == 0)))
                .collect(),
            3,
        );
        assert!(!needs_spread(&even, &names(), 5));
    }

    #[test]
    fn leadership_is_rebalanced_above_the_threshold_only() {
        let mut s = summary((0..3).map(|id| broker(id, 3)).collect(), 3);
        s.leader_imbalance_percent = BTreeMap::from([(0, 5), (1, 50)]);
        assert!(needs_leader_rebalance(&s, 10));
        assert!(!needs_leader_rebalance(&s, 50));
        s.reassigning_partitions = 1;
        assert!(!needs_leader_rebalance(&s, 10));
    }

    #[test]
    fn drains_of_staying_brokers_are_cancelled_and_removed_brokers_forgotten() {
        let mut brokers: Vec<_> = (0..5).map(|id| broker(id, 3)).collect();
        brokers[4].decommissioning = true;
        brokers[3].decommissioning = true;
        let s = summary(brokers.clone(), 3);
        assert_eq!(drains_to_cancel(&s, &names(), 5), vec![3, 4]);
        assert_eq!(drains_to_cancel(&s, &names(), 4), vec![3]);
        brokers[4].fenced = true;
        brokers[4].replicas = 0;
        let s = summary(brokers, 3);
        assert_eq!(brokers_to_forget(&s, &names(), 4), vec![4]);
        assert_eq!(removed_brokers(&s, &names(), 4), vec![4]);
        assert!(removed_brokers(&s, &names(), 5).is_empty());
        assert!(brokers_to_forget(&s, &names(), 5).is_empty());
    }

    #[test]
    fn a_drain_on_the_way_down_is_not_cancelled_while_the_statefulset_steps_down() {
        // 5 → 3: broker 4 is gone, the StatefulSet runs 4, broker 3 drains.
        let mut brokers: Vec<_> = (0..4).map(|id| broker(id, 3)).collect();
        brokers[3].decommissioning = true;
        let s = summary(brokers, 3);
        let step = scale_step(Some(4), 3, &VOTERS, Some(&s), &names());
        assert_eq!(
            step,
            ScaleStep::Draining {
                broker: 3,
                replicas: 4
            }
        );
        assert!(drains_to_cancel(&s, &names(), 3).is_empty());
        // Raising spec.replicas back to 4 keeps broker 3: now its drain is cancelled.
        assert_eq!(drains_to_cancel(&s, &names(), 4), vec![3]);
    }
}
