//! What this broker should be for each partition, derived from the cluster metadata.
//!
//! [`desired_roles`] is a pure function of the metadata and the broker's id: every partition
//! that lists this broker as a replica gets a [`ReplicaRole`], leader or follower, with the
//! leader epoch it belongs to. The applier compares it with what runs and changes only the
//! difference.

use std::collections::BTreeMap;

use crate::controller::metadata::{ClusterMetadata, NO_LEADER};
use crate::replica::ReplicaRole as Role;

/// A partition by topic name and index.
pub type PartitionKey = (String, i32);

/// The role of this broker (`me`) in every partition it is a replica of.
pub fn desired_roles(metadata: &ClusterMetadata, me: i32) -> BTreeMap<PartitionKey, Role> {
    let mut roles = BTreeMap::new();
    for (name, topic) in &metadata.topics {
        for (index, record) in topic.partitions.iter().enumerate() {
            if !record.replicas.contains(&me) {
                continue;
            }
            let Ok(index) = i32::try_from(index) else {
                continue;
            };
            roles.insert(
                (name.clone(), index),
                Role {
                    topic_id: topic.id,
                    leader: record.leader,
                    leader_epoch: record.leader_epoch,
                    partition_epoch: record.partition_epoch,
                    replicas: record.replicas.clone(),
                    isr: record.isr.clone(),
                },
            );
        }
    }
    roles
}

/// Followed partitions grouped by the leader they fetch from (partitions without a leader,
/// or led by `me`, are not fetched).
pub fn fetch_plan(
    roles: &BTreeMap<PartitionKey, Role>,
    me: i32,
) -> BTreeMap<i32, Vec<PartitionKey>> {
    let mut plan: BTreeMap<i32, Vec<PartitionKey>> = BTreeMap::new();
    for (key, role) in roles {
        if role.leader != me && role.leader != NO_LEADER {
            plan.entry(role.leader).or_default().push(key.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::Command;
    use uuid::Uuid;

    fn cluster() -> ClusterMetadata {
        let mut metadata = ClusterMetadata::default();
        for id in 1..=3 {
            metadata
                .apply(&Command::RegisterBroker {
                    id,
                    host: "127.0.0.1".into(),
                    port: 9091 + id,
                    rack: None,
                    incarnation: 1,
                    listeners: Default::default(),
                })
                .expect("register");
            metadata
                .apply(&Command::UnfenceBroker { id })
                .expect("unfence");
        }
        metadata
            .apply(&Command::CreateTopic {
                name: "t".into(),
                id: Uuid::from_u128(7),
                assignment: vec![vec![1, 2], vec![2, 3], vec![3, 1]],
                configs: BTreeMap::new(),
            })
            .expect("create");
        metadata
    }

    #[test]
    fn roles_cover_exactly_the_partitions_a_broker_replicates() {
        let metadata = cluster();
        let roles = desired_roles(&metadata, 1);
        let keys: Vec<_> = roles.keys().cloned().collect();
        assert_eq!(keys, vec![("t".to_string(), 0), ("t".to_string(), 2)]);
        assert!(roles[&("t".to_string(), 0)].is_leader(1));
        assert_eq!(roles[&("t".to_string(), 2)].leader, 3);
        assert_eq!(roles[&("t".to_string(), 2)].topic_id, Uuid::from_u128(7));
    }

    #[test]
    fn followers_fetch_from_their_leaders_only() {
        let mut metadata = cluster();
        let plan = fetch_plan(&desired_roles(&metadata, 2), 2);
        assert_eq!(plan.get(&1), Some(&vec![("t".to_string(), 0)]));
        assert_eq!(plan.get(&2), None, "a leader does not fetch from itself");
        // Broker 3 dies: partition 1 moves to broker 2, partition 2 to broker 1.
        metadata
            .apply(&Command::FenceBroker { id: 3 })
            .expect("fence");
        let roles = desired_roles(&metadata, 2);
        assert!(roles[&("t".to_string(), 1)].is_leader(2));
        let plan = fetch_plan(&roles, 2);
        assert_eq!(
            plan.get(&3),
            None,
            "nothing is fetched from a fenced broker"
        );
    }

    #[test]
    fn a_new_epoch_restarts_the_role() {
        let metadata = cluster();
        let before = desired_roles(&metadata, 2)[&("t".to_string(), 0)].clone();
        let mut after = before.clone();
        after.isr = vec![1];
        after.partition_epoch += 1;
        assert!(
            !before.epoch_changed(&after),
            "an ISR change keeps the role"
        );
        after.leader_epoch += 1;
        assert!(before.epoch_changed(&after));
    }
}
