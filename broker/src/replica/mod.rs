//! The replica layer (Kafka's `ReplicaManager`): the one door through which records enter and
//! leave this broker's partitions.
//!
//! - [`ReplicaManager::append_records`]: a producer's appends as leader, answered per the acks
//!   (acks=all waits for the in-sync replicas); coordinators append to their internal
//!   partitions through the same [`Partition::append_as_leader`];
//! - [`ReplicaManager::fetch`]: reads for consumers (up to the high watermark) and followers
//!   (the whole log, recording their progress), long-polling with per-partition wake-ups;
//! - role changes from the cluster metadata ([`Partition::apply_role`]), and the follower
//!   side of replication ([`Partition::append_as_follower`]).
//!
//! This layer alone knows leader epochs, the ISR and the high watermark; protocol handlers
//! decode, call it and encode. It knows nothing of the controller quorum: ISR changes it
//! wants are sent as [`IsrProposal`]s on a channel the cluster layer carries to the quorum.
//!
//! Module map: [`catalog`] (the hosted replicas on disk), [`log_dirs`] (the directories they
//! live in, and which still work), [`partition`] (one replica: log,
//! producer state, role), [`leader`] (a leader's follower tracking, pure), [`producers`]
//! (producer state loading), [`wakeup`] (per-partition wake-ups), [`fetch`] (the read path).

pub mod catalog;
mod fetch;
pub mod leader;
pub mod log_dirs;
pub mod partition;
mod producers;
pub mod wakeup;

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::sync::mpsc;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::log::LogError;
use crate::producer::SequenceError;
pub use catalog::{Catalog, CatalogError, Topic};
pub use fetch::{FetchError, FetchParams, FetchedPartition, PartitionFetch};
pub use partition::{AppendOrigin, LeaderAppendGuard, Partition};

/// A topic as a request names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRef<'a> {
    Name(&'a str),
    Id(Uuid),
}

/// What an accepted append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The leader epoch the batches were stamped with.
    pub leader_epoch: i32,
    /// The batch was a retry of one already in the log: nothing was written.
    pub duplicate: bool,
}

/// Why an append was refused or not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the partition is not hosted on this broker")]
    NotHosted,
    #[error("the partition's log directory is offline")]
    Offline,
    #[error("this broker does not lead the partition")]
    NotLeader,
    #[error("{isr} in-sync replicas, min.insync.replicas is {min_insync_replicas}")]
    NotEnoughReplicas {
        isr: usize,
        min_insync_replicas: usize,
    },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("an idempotent produce must carry exactly one batch per partition, got {0}")]
    MultipleIdempotentBatches(usize),
    #[error("transactional batches are not supported")]
    Transactional,
    #[error(transparent)]
    NotCommitted(#[from] NotCommitted),
}

impl AppendError {
    /// The Kafka error a client is answered with.
    pub fn code(&self) -> ResponseError {
        match self {
            Self::NotHosted | Self::NotLeader => ResponseError::NotLeaderOrFollower,
            Self::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
            Self::Offline => ResponseError::KafkaStorageError,
            Self::Log(LogError::InvalidBatch { .. }) => ResponseError::CorruptMessage,
            Self::Log(LogError::BatchTooLarge { .. }) => ResponseError::MessageTooLarge,
            Self::Log(LogError::EmptyBatch { .. } | LogError::NoBatches) => {
                ResponseError::InvalidRecord
            }
            Self::Log(LogError::Closed) => ResponseError::NotLeaderOrFollower,
            Self::Log(_) => ResponseError::KafkaStorageError,
            Self::Sequence(SequenceError::OutOfOrder { .. }) => {
                ResponseError::OutOfOrderSequenceNumber
            }
            Self::Sequence(SequenceError::InvalidEpoch { .. }) => {
                ResponseError::InvalidProducerEpoch
            }
            Self::MultipleIdempotentBatches(_) => ResponseError::InvalidRecord,
            Self::Transactional => ResponseError::TransactionalIdAuthorizationFailed,
            Self::NotCommitted(NotCommitted::TimedOut) => ResponseError::RequestTimedOut,
            Self::NotCommitted(NotCommitted::LeadershipLost) => ResponseError::NotLeaderOrFollower,
        }
    }
}

/// Why appended records were not acknowledged as committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotCommitted {
    #[error("not replicated to the in-sync replicas in time")]
    TimedOut,
    #[error("leadership moved before the records were committed")]
    LeadershipLost,
}

/// An ISR change a leader wants the controller to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub topic: String,
    pub partition: i32,
    /// The epochs the proposal was made in: the controller refuses it in any other.
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// This broker's part in one partition, as the cluster metadata assigns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRole {
    pub topic_id: Uuid,
    /// The leader (this broker's id when leading); `-1` when none.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl ReplicaRole {
    pub fn is_leader(&self, me: i32) -> bool {
        self.leader == me
    }

    /// Whether a change from `self` to `next` starts the replica over in its new role
    /// (becoming leader, following another leader, or the same one in a new epoch).
    pub fn epoch_changed(&self, next: &ReplicaRole) -> bool {
        self.leader != next.leader || self.leader_epoch != next.leader_epoch
    }
}

/// One partition's part of a produce request.
#[derive(Debug)]
pub struct ProduceEntry {
    pub topic: String,
    pub partition: i32,
    /// The batches, as a mutable copy of the request's bytes (offsets are stamped in place).
    pub records: Vec<u8>,
}

/// The outcome of one [`ProduceEntry`].
#[derive(Debug)]
pub struct ProduceResult {
    pub result: Result<Appended, AppendError>,
    /// The partition's log start offset after the append (`-1` when not hosted).
    pub log_start_offset: i64,
}

/// The settings of the replica layer.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    pub me: i32,
    /// Upper bound of a fetch response (`fetch.max.bytes`).
    pub fetch_max_bytes: u64,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: u64,
    /// The broker's `min.insync.replicas` (topics may override it).
    pub default_min_insync_replicas: usize,
}

impl ReplicaSettings {
    pub fn of(config: &BrokerConfig) -> Self {
        Self {
            me: config.node_id,
            fetch_max_bytes: u64::try_from(config.fetch_max_bytes).unwrap_or(u64::MAX),
            replica_lag_time_max_ms: config.cluster.replica_lag_time_max_ms,
            default_min_insync_replicas: usize::try_from(config.min_insync_replicas).unwrap_or(1),
        }
    }
}

/// The hosted replicas and the operations on them.
pub struct ReplicaManager {
    pub settings: ReplicaSettings,
    pub catalog: Catalog,
    /// ISR changes for the cluster layer to commit. At most one is pending per partition
    /// (a leader proposes again only once the last one is resolved), so the channel is
    /// bounded by the partitions led.
    isr_proposals: mpsc::UnboundedSender<IsrProposal>,
}

impl ReplicaManager {
    /// Opens the hosted replicas of the data directory; ISR proposals go to the returned
    /// receiver.
    ///
    /// # Errors
    /// As [`Catalog::open`].
    pub fn open(
        config: Arc<BrokerConfig>,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<IsrProposal>), CatalogError> {
        let settings = ReplicaSettings::of(&config);
        let catalog = Catalog::open(config)?;
        let (isr_proposals, proposals) = mpsc::unbounded_channel();
        Ok((
            Arc::new(Self {
                settings,
                catalog,
                isr_proposals,
            }),
            proposals,
        ))
    }

    /// The replica of `topic`-`index`, when hosted here.
    pub fn partition(&self, topic: TopicRef<'_>, index: i32) -> Option<Arc<Partition>> {
        match topic {
            TopicRef::Name(name) => self.catalog.partition(name, index),
            TopicRef::Id(id) => self.catalog.get_by_id(id).and_then(|t| t.partition(index)),
        }
    }

    /// Appends a producer's batches as leader of each partition and answers per `acks`:
    /// with 0 or 1 once written here, with -1 once the in-sync replicas have them (or
    /// `timeout` passed, or leadership moved). Results are in the order of `entries`.
    ///
    /// # Cancel safety
    /// Not cancel-safe once called: the appends happen at the first poll; cancelling only
    /// drops the wait for acks=all.
    pub async fn append_records(
        &self,
        entries: Vec<ProduceEntry>,
        acks: i16,
        timeout: Duration,
    ) -> Vec<ProduceResult> {
        let mut results = Vec::with_capacity(entries.len());
        let mut waiting = Vec::new();
        for mut entry in entries {
            let Some(partition) = self.catalog.partition(&entry.topic, entry.partition) else {
                results.push(ProduceResult {
                    result: Err(AppendError::NotHosted),
                    log_start_offset: -1,
                });
                continue;
            };
            let result =
                partition.append_as_leader(&mut entry.records, AppendOrigin::Client { acks });
            if let Err(e) = &result {
                debug!(topic = %entry.topic, partition = entry.partition, error = %e, "append refused");
            }
            if let (Ok(appended), -1) = (&result, acks) {
                waiting.push((results.len(), Arc::clone(&partition), *appended));
            }
            results.push(ProduceResult {
                result,
                log_start_offset: partition.log.log_start_offset(),
            });
        }
        let deadline = tokio::time::Instant::now() + timeout;
        for (i, partition, appended) in waiting {
            let committed = partition
                .wait_for_high_watermark(appended.last_offset + 1, appended.leader_epoch, deadline)
                .await;
            if let Err(not_committed) = committed {
                results[i].result = Err(not_committed.into());
            }
        }
        results
    }

    /// Sends an ISR change to the cluster layer.
    pub fn propose_isr(&self, proposal: IsrProposal) {
        if self.isr_proposals.send(proposal).is_err() {
            warn!("the ISR change channel is closed; the change is dropped");
        }
    }

    /// Marks the proposals of leaders whose followers fell behind for longer than
    /// `replica.lag.time.max.ms` (and sends them).
    pub fn shrink_lagging_isrs(&self) {
        let lag_max = i64::try_from(self.settings.replica_lag_time_max_ms).unwrap_or(i64::MAX);
        let now = now_ms();
        for partition in self.catalog.all_partitions() {
            if let Some(proposal) = partition.shrink_isr_candidate(now, lag_max) {
                self.propose_isr(proposal);
            }
        }
    }

    /// Flushes every replica whose `flush.ms` passed.
    pub fn flush_due(&self) {
        self.catalog.for_each("flush", Partition::flush_due);
    }

    /// Runs retention on every replica; returns the segments deleted.
    pub fn apply_retention(&self) -> usize {
        let mut deleted = 0;
        self.catalog
            .for_each("retention", |p| p.apply_retention().map(|n| deleted += n));
        deleted
    }

    /// The replicas whose log directory went offline, now taken out of service (they lead
    /// and follow nothing, and their waiting requests are woken).
    pub fn take_offline_replicas(&self) -> Vec<Arc<Partition>> {
        let offline: Vec<_> = self
            .catalog
            .all_partitions()
            .into_iter()
            .filter(|p| !p.is_online())
            .collect();
        for partition in &offline {
            partition.take_offline();
        }
        offline
    }

    /// Checkpoints the high watermarks that moved.
    pub fn checkpoint_high_watermarks(&self) {
        self.catalog.for_each(
            "high-watermark checkpoint",
            Partition::checkpoint_high_watermark,
        );
    }

    /// Snapshots the producer state of every replica.
    pub fn snapshot_producers(&self) {
        self.catalog
            .for_each("producer snapshot", Partition::snapshot_producers);
    }
}
