//! Carries the ISR changes leaders propose to the controller quorum (Kafka's AlterPartition
//! manager): each proposal becomes an `AlterIsr` command in the epochs it was made in; a
//! refused or lost one is reported back to its partition so that it can be proposed again.
//! Also runs the periodic check for followers that stopped keeping up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::node::{Cluster, ADMIN_DEADLINE};
use crate::controller::metadata::Command;
use crate::replica::{IsrProposal, ReplicaManager, TopicRef};

/// Sends proposals until `shutdown`, and proposes ISR shrinks every half
/// `replica.lag.time.max.ms` (between 100 ms and 5 s).
pub async fn run(
    cluster: Arc<Cluster>,
    replicas: Arc<ReplicaManager>,
    mut proposals: mpsc::UnboundedReceiver<IsrProposal>,
    shutdown: CancellationToken,
) {
    let period =
        Duration::from_millis((cluster.config.replica_lag_time_max_ms / 2).clamp(100, 5_000));
    let mut shrink = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = shrink.tick() => replicas.shrink_lagging_isrs(),
            proposal = proposals.recv() => match proposal {
                Some(proposal) => send(&cluster, &replicas, proposal),
                None => return,
            },
        }
    }
}

/// The AlterIsr command of `proposal`, made by leader `me`.
fn command(me: i32, proposal: &IsrProposal) -> Command {
    Command::AlterIsr {
        topic: proposal.topic.clone(),
        partition: proposal.partition,
        leader: me,
        leader_epoch: proposal.leader_epoch,
        partition_epoch: proposal.partition_epoch,
        isr: proposal.isr.clone(),
    }
}

/// Commits one proposal in the background (proposals of different partitions do not wait
/// for each other).
fn send(cluster: &Arc<Cluster>, replicas: &Arc<ReplicaManager>, proposal: IsrProposal) {
    let (cluster, replicas) = (Arc::clone(cluster), Arc::clone(replicas));
    tokio::spawn(async move {
        let command = command(cluster.me, &proposal);
        let failure = match cluster.quorum.write(&command, ADMIN_DEADLINE).await {
            Ok(Ok(())) => {
                info!(topic = %proposal.topic, partition = proposal.partition, isr = ?proposal.isr, "ISR changed");
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        debug!(topic = %proposal.topic, partition = proposal.partition, error = %failure, "ISR change not made");
        if let Some(partition) =
            replicas.partition(TopicRef::Name(&proposal.topic), proposal.partition)
        {
            partition.isr_change_failed(&proposal);
        }
    });
}
