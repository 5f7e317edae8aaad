//! Taking in a data directory of the former standalone mode: before a single node was a
//! one-voter quorum, it kept its topics in a local file and handed out producer ids from a
//! local counter. On its first start as a quorum it writes one [`StandaloneImport`] command,
//! so that the metadata holds what the directory holds: the same topics (ids, partition
//! counts, configs) on this node, the cluster id clients saw, and producer ids above every
//! one already handed out.
//!
//! Applying the command is idempotent (a topic that exists is left alone), so an import cut
//! short by a crash is simply written again at the next start.

use super::metadata::{ClusterMetadata, PartitionRecord, StandaloneImport, TopicRecord, NO_LEADER};

impl ClusterMetadata {
    /// Applies an import: each topic not known yet is added with its one replica on
    /// `import.broker`, in the ISR and leaderless (it is elected when the broker registers and
    /// is unfenced); the cluster id is taken while no broker has registered (no client saw
    /// another one); the next producer id moves up to `producer_ids_from`.
    pub(super) fn import_standalone(&mut self, import: &StandaloneImport) {
        if self.brokers.is_empty() {
            self.cluster_id = Some(import.cluster_id.clone());
        }
        self.next_producer_id = self.next_producer_id.max(import.producer_ids_from);
        for topic in &import.topics {
            if self.topics.contains_key(&topic.name) {
                continue;
            }
            let partitions = (0..topic.partitions.max(0))
                .map(|_| PartitionRecord {
                    replicas: vec![import.broker],
                    isr: vec![import.broker],
                    leader: NO_LEADER,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding: Vec::new(),
                    removing: Vec::new(),
                    original: Vec::new(),
                    offline: Vec::new(),
                })
                .collect();
            self.topics.insert(
                topic.name.clone(),
                TopicRecord {
                    id: topic.id,
                    partitions,
                    configs: topic.configs.clone(),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::{Command, ImportedTopic};
    use uuid::Uuid;

    fn import() -> StandaloneImport {
        StandaloneImport {
            broker: 1,
            cluster_id: "standalone-id".into(),
            topics: vec![ImportedTopic {
                name: "orders".into(),
                id: Uuid::from_u128(9),
                partitions: 3,
                configs: [("retention.ms".to_string(), "1000".to_string())].into(),
            }],
            producer_ids_from: 5000,
        }
    }

    #[test]
    fn imported_topics_are_led_by_the_node_once_it_registers() {
        let mut metadata = ClusterMetadata::default();
        metadata
            .apply(&Command::ImportStandalone(import()))
            .expect("import");
        assert_eq!(metadata.cluster_id.as_deref(), Some("standalone-id"));
        assert_eq!(metadata.next_producer_id, 5000);
        let topic = &metadata.topics["orders"];
        assert_eq!((topic.id, topic.partitions.len()), (Uuid::from_u128(9), 3));
        assert_eq!(topic.partitions[0].leader, NO_LEADER);
        crate::controller::metadata::testing::join(&mut metadata, 1);
        let p = &metadata.topics["orders"].partitions[2];
        assert_eq!((p.leader, p.isr.as_slice()), (1, &[1][..]));
        assert!(p.leader_epoch > 0, "a new epoch starts with the leader");
    }

    #[test]
    fn importing_again_changes_nothing_that_exists() {
        let mut metadata = ClusterMetadata::default();
        metadata
            .apply(&Command::ImportStandalone(import()))
            .expect("import");
        crate::controller::metadata::testing::join(&mut metadata, 1);
        let before = metadata.clone();
        let mut again = import();
        again.cluster_id = "another".into();
        again.producer_ids_from = 10;
        metadata
            .apply(&Command::ImportStandalone(again))
            .expect("import again");
        assert_eq!(metadata, before);
    }
}
