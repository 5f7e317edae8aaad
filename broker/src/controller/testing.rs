//! Metadata builders shared by the unit tests of the controller and its users: a cluster of
//! registered, unfenced brokers, topics on it, and followers that have caught up.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::metadata::{ClusterMetadata, Command};

/// Brokers `brokers` registered and unfenced (see [`join`]).
pub fn cluster(brokers: &[i32]) -> ClusterMetadata {
    let mut metadata = ClusterMetadata::default();
    for &id in brokers {
        join(&mut metadata, id);
    }
    metadata
}

/// Registers broker `id` (on 127.0.0.1, port 9000 + id) and unfences it, as a broker
/// added to a running cluster.
pub fn join(metadata: &mut ClusterMetadata, id: i32) {
    metadata
        .apply(&Command::RegisterBroker {
            id,
            host: "127.0.0.1".into(),
            port: 9000 + id,
            rack: None,
            incarnation: 1,
            listeners: Default::default(),
        })
        .expect("register");
    metadata
        .apply(&Command::UnfenceBroker { id })
        .expect("unfence");
}

/// Marks every replica in sync, as leaders would once their followers caught up (which
/// completes the reassignments in flight).
pub fn all_caught_up(metadata: &mut ClusterMetadata) {
    let changes: Vec<Command> = metadata
        .partitions()
        .map(|(topic, partition, p)| Command::AlterIsr {
            topic: topic.to_string(),
            partition,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: p.replicas.clone(),
        })
        .collect();
    for change in changes {
        metadata.apply(&change).expect("isr");
    }
}

/// Creates topic `name` with `assignment`.
pub fn create(metadata: &mut ClusterMetadata, name: &str, assignment: Vec<Vec<i32>>) {
    metadata
        .apply(&Command::CreateTopic {
            name: name.into(),
            id: Uuid::new_v4(),
            assignment,
            configs: BTreeMap::new(),
        })
        .expect("create");
}
