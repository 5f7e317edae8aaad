//! What the active controller does beyond liveness: it publishes its unclean-election
//! setting into the metadata and, when enabled, moves leadership back to preferred replicas
//! once some broker's leader imbalance passes the threshold (Kafka's
//! `auto.leader.rebalance.enable`, `leader.imbalance.per.broker.percentage`,
//! `leader.imbalance.check.interval.seconds`).
//!
//! [`policy_commands`] is pure; the leader's loop in [`super::liveness`] calls it.

use std::time::Duration;

use super::metadata::{ClusterMetadata, Command};
use super::placement::rebalance_elections;

/// The automatic preferred-leader rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderRebalance {
    /// A broker's imbalance (percent) above which its preferred leaderships are restored.
    pub threshold_percent: u32,
    pub check_interval: Duration,
}

/// The active controller's own settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ControllerPolicy {
    pub unclean_leader_election: bool,
    /// `None`: no automatic rebalance.
    pub leader_rebalance: Option<LeaderRebalance>,
}

/// The commands that bring the metadata in line with `policy`; `rebalance_due` says whether
/// the rebalance check interval has passed. A cluster without an id gets `fresh_cluster_id`.
pub fn policy_commands(
    metadata: &ClusterMetadata,
    policy: &ControllerPolicy,
    rebalance_due: bool,
    fresh_cluster_id: impl FnOnce() -> String,
) -> Vec<Command> {
    let mut commands = Vec::new();
    if metadata.cluster_id.is_none() {
        commands.push(Command::SetClusterId {
            id: fresh_cluster_id(),
        });
    }
    if metadata.unclean_leader_election != policy.unclean_leader_election {
        commands.push(Command::SetUncleanLeaderElection {
            enabled: policy.unclean_leader_election,
        });
    }
    if let (Some(rebalance), true) = (policy.leader_rebalance, rebalance_due) {
        let partitions = rebalance_elections(metadata, rebalance.threshold_percent);
        if !partitions.is_empty() {
            commands.push(Command::ElectPreferredLeaders { partitions });
        }
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{cluster, create};

    fn fresh() -> String {
        "fresh".into()
    }

    #[test]
    fn the_first_controller_names_the_cluster_and_the_name_sticks() {
        let mut m = ClusterMetadata::default();
        let policy = ControllerPolicy::default();
        let commands = policy_commands(&m, &policy, false, fresh);
        assert_eq!(commands, vec![Command::SetClusterId { id: "fresh".into() }]);
        m.apply(&commands[0]).expect("apply");
        m.apply(&Command::SetClusterId { id: "other".into() })
            .expect("apply");
        assert_eq!(m.cluster_id.as_deref(), Some("fresh"));
        assert!(policy_commands(&m, &policy, false, fresh).is_empty());
    }

    fn imbalanced() -> ClusterMetadata {
        let mut m = cluster(&[1, 2]);
        m.cluster_id = Some("named".into());
        create(&mut m, "t", vec![vec![1, 2], vec![2, 1]]);
        m.apply(&Command::ControlledShutdown { id: 1 })
            .expect("move");
        m.apply(&Command::UnfenceBroker { id: 1 }).expect("back");
        let p = m.partition("t", 0).cloned().expect("p");
        m.apply(&Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: vec![2, 1],
        })
        .expect("in sync");
        m
    }

    #[test]
    fn the_controller_publishes_its_unclean_setting_once() {
        let mut m = ClusterMetadata {
            cluster_id: Some("named".into()),
            ..ClusterMetadata::default()
        };
        let policy = ControllerPolicy {
            unclean_leader_election: true,
            leader_rebalance: None,
        };
        let commands = policy_commands(&m, &policy, true, fresh);
        assert_eq!(
            commands,
            vec![Command::SetUncleanLeaderElection { enabled: true }]
        );
        m.apply(&commands[0]).expect("apply");
        assert!(policy_commands(&m, &policy, true, fresh).is_empty());
    }

    #[test]
    fn rebalance_runs_only_when_enabled_and_due() {
        let m = imbalanced();
        let enabled = ControllerPolicy {
            unclean_leader_election: false,
            leader_rebalance: Some(LeaderRebalance {
                threshold_percent: 10,
                check_interval: Duration::from_secs(1),
            }),
        };
        assert!(policy_commands(&m, &ControllerPolicy::default(), true, fresh).is_empty());
        assert!(policy_commands(&m, &enabled, false, fresh).is_empty());
        assert_eq!(
            policy_commands(&m, &enabled, true, fresh),
            vec![Command::ElectPreferredLeaders {
                partitions: vec![("t".into(), 0)]
            }]
        );
    }
}
