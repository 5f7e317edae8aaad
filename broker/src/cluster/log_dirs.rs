//! Tells the controller which of this broker's replicas went offline with their log
//! directory (Kafka's `AssignReplicasToDirs`/offline-directory heartbeat): the replicas are
//! taken out of service at once, and a `MarkReplicasOffline` command moves their leadership
//! and ISR membership to other brokers. The report is made again until the metadata shows it
//! (a lost write, a controller change), and after every new failure.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::node::{Cluster, ADMIN_DEADLINE};
use super::roles::PartitionKey;
use crate::controller::metadata::{ClusterMetadata, Command};
use crate::replica::ReplicaManager;

/// How long a failed report waits before it is made again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Reports offline replicas until `shutdown`.
pub async fn run(
    cluster: Arc<Cluster>,
    replicas: Arc<ReplicaManager>,
    shutdown: CancellationToken,
) {
    let mut failures = replicas.catalog.log_dirs.failures();
    let mut followed = cluster.followed.clone();
    loop {
        let offline: BTreeSet<PartitionKey> = replicas
            .take_offline_replicas()
            .iter()
            .map(|p| (p.topic.clone(), p.index))
            .collect();
        let missing = unreported(&cluster.metadata(), cluster.me, &offline);
        let retry = !missing.is_empty() && !report(&cluster, missing).await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = failures.changed() => if changed.is_err() { return },
            changed = followed.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RETRY_AFTER), if retry => {}
        }
    }
}

/// Writes the report; true once the quorum took it.
async fn report(cluster: &Cluster, replicas: Vec<PartitionKey>) -> bool {
    let command = Command::MarkReplicasOffline {
        broker: cluster.me,
        incarnation: cluster.incarnation,
        replicas: replicas.clone(),
    };
    match cluster.quorum.write(&command, ADMIN_DEADLINE).await {
        Ok(Ok(())) => {
            info!(replicas = ?replicas, "reported the replicas of an offline log directory");
            true
        }
        Ok(Err(e)) => {
            warn!(error = %e, "the controller refused the offline replicas' report");
            false
        }
        Err(e) => {
            warn!(error = %e, "cannot report the offline replicas yet");
            false
        }
    }
}

/// The `offline` replicas of broker `me` that `metadata` does not mark offline yet, among the
/// partitions it still lists `me` as a replica of (a deleted or moved one needs no report).
pub fn unreported(
    metadata: &ClusterMetadata,
    me: i32,
    offline: &BTreeSet<PartitionKey>,
) -> Vec<PartitionKey> {
    offline
        .iter()
        .filter(|(topic, index)| {
            metadata
                .partition(topic, *index)
                .is_some_and(|p| p.replicas.contains(&me) && !p.offline.contains(&me))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{cluster, create};

    #[test]
    fn only_replicas_the_metadata_does_not_mark_offline_yet_are_reported() {
        let mut m = cluster(&[1, 2]);
        create(&mut m, "t", vec![vec![1, 2], vec![2], vec![1]]);
        let offline: BTreeSet<PartitionKey> = [("t", 0), ("t", 1), ("t", 2), ("gone", 0)]
            .into_iter()
            .map(|(t, i)| (t.to_string(), i))
            .collect();
        let key = |i| ("t".to_string(), i);
        assert_eq!(unreported(&m, 1, &offline), vec![key(0), key(2)]);
        m.apply(&Command::MarkReplicasOffline {
            broker: 1,
            incarnation: 1,
            replicas: vec![key(0)],
        })
        .expect("report");
        assert_eq!(unreported(&m, 1, &offline), vec![key(2)]);
    }
}
