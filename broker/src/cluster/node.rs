//! This broker as a node of its cluster ([`Cluster`]): its quorum client, the metadata it
//! follows and has applied, its roles, and the writes it makes to the quorum for the protocol
//! and HTTP handlers (topics, producer ids, controlled shutdown). Started by
//! [`super::Cluster::start`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use parking_lot::RwLock;
use tokio::sync::watch;
use tracing::{info, warn};
use uuid::Uuid;

use super::roles::PartitionKey;
use crate::config::{ClusterConfig, Voters};
use crate::controller::metadata::{
    assign_replicas, ClusterMetadata, Command, CommandError, PRODUCER_ID_BLOCK,
};
use crate::controller::quorum::{MetadataWatch, QuorumClient, Voter};
use crate::replica::{ReplicaRole, TopicRef};

/// How long an admin request waits for the quorum.
pub const ADMIN_DEADLINE: Duration = Duration::from_secs(10);

/// A refused metadata write or admin request: the Kafka error and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: ResponseError,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The cluster side of a running broker.
pub struct Cluster {
    pub me: i32,
    /// This process's registration; metadata that does not show it is older than this start.
    pub(super) incarnation: u64,
    pub config: ClusterConfig,
    pub quorum: QuorumClient,
    /// The metadata as followed from the quorum (what the applier reads).
    pub(super) followed: MetadataWatch,
    /// The metadata as last applied to this broker's replicas: what every handler reads, so
    /// that what it sees (a topic, a leader) is already true of the local replicas.
    pub(super) applied: watch::Sender<(u64, Arc<ClusterMetadata>)>,
    /// This broker's role per partition it replicates, from the last applied metadata.
    pub(super) roles: RwLock<BTreeMap<PartitionKey, ReplicaRole>>,
    /// Published whenever the fetch plan (who follows what, in which epoch) changes.
    pub(super) roles_changed: watch::Sender<u64>,
    /// Whether the last applied metadata shows this broker registered (this incarnation) and
    /// unfenced: it may serve clients.
    pub(super) serving: watch::Sender<bool>,
    pub(super) voter: tokio::sync::Mutex<Option<Voter>>,
    /// The producer id block this broker hands out from: (next id, end of the block).
    pub(super) producer_ids: tokio::sync::Mutex<(i64, i64)>,
}

impl Cluster {
    /// A node that has not applied any metadata yet.
    pub(super) fn new(
        me: i32,
        incarnation: u64,
        config: ClusterConfig,
        quorum: QuorumClient,
        followed: MetadataWatch,
        voter: Option<Voter>,
    ) -> Self {
        Self {
            me,
            incarnation,
            config,
            quorum,
            followed,
            applied: watch::channel((0, Arc::new(ClusterMetadata::default()))).0,
            roles: RwLock::new(BTreeMap::new()),
            roles_changed: watch::channel(0).0,
            serving: watch::channel(false).0,
            voter: tokio::sync::Mutex::new(voter),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
        }
    }

    /// Stops the controller voter, if any (after the broker has stopped serving).
    pub async fn stop_voter(&self) {
        if let Some(voter) = self.voter.lock().await.take() {
            voter.shutdown().await;
        }
    }

    /// Waits until this broker may serve clients: the metadata it applied shows it
    /// registered and unfenced. False when `deadline` passed first.
    pub async fn wait_until_serving(&self, deadline: Duration) -> bool {
        let mut serving = self.serving.subscribe();
        let reached = {
            let wait = serving.wait_for(|s| *s);
            matches!(tokio::time::timeout(deadline, wait).await, Ok(Ok(_)))
        };
        reached
    }

    /// The latest metadata this broker follows (Kafka's metadata cache: it may run ahead of
    /// the local replicas for as long as one apply pass takes; a client that acts on it then
    /// meets a retriable NOT_LEADER_OR_FOLLOWER at worst).
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        Arc::clone(&self.followed.borrow().1)
    }

    /// The cluster id every broker answers with (`None` until the quorum has chosen it).
    pub fn cluster_id(&self) -> Option<String> {
        self.metadata().cluster_id.clone()
    }

    /// Changes of the roles (for fetchers).
    pub fn subscribe_roles(&self) -> watch::Receiver<u64> {
        self.roles_changed.subscribe()
    }

    /// This broker's current roles.
    pub fn roles(&self) -> BTreeMap<PartitionKey, ReplicaRole> {
        self.roles.read().clone()
    }

    /// The error for a request about a partition this broker does not host: the cluster has
    /// it elsewhere (NOT_LEADER_OR_FOLLOWER, retriable: the client refreshes its metadata and
    /// goes to the leader, as with Kafka), or has no such partition (UNKNOWN_TOPIC_OR_PARTITION,
    /// or UNKNOWN_TOPIC_ID for a request naming topics by id).
    pub fn not_hosted_error(&self, topic: TopicRef<'_>, index: i32) -> ResponseError {
        let metadata = self.metadata();
        let known = match topic {
            TopicRef::Name(name) => metadata.partition(name, index).is_some(),
            TopicRef::Id(id) => metadata.topics.values().any(|t| {
                t.id == id && usize::try_from(index).is_ok_and(|i| i < t.partitions.len())
            }),
        };
        match (known, topic) {
            (true, _) => ResponseError::NotLeaderOrFollower,
            (false, TopicRef::Name(_)) => ResponseError::UnknownTopicOrPartition,
            (false, TopicRef::Id(_)) => ResponseError::UnknownTopicId,
        }
    }

    /// Creates a topic through the controller with `assignment` (see [`spread_replicas`]);
    /// returns its new id.
    ///
    /// # Errors
    /// The Kafka error and message to answer with.
    pub async fn create_topic(
        &self,
        name: &str,
        assignment: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
    ) -> Result<Uuid, Refusal> {
        let id = Uuid::new_v4();
        let command = Command::CreateTopic {
            name: name.to_string(),
            id,
            assignment,
            configs,
        };
        self.write(&command).await.map(|()| id)
    }

    /// A producer id no broker of the cluster has handed out, from a block the quorum gave
    /// this broker (a new block is asked for when one runs out; a restart forgets the rest of
    /// its block).
    ///
    /// # Errors
    /// The quorum did not answer in time.
    pub async fn allocate_producer_id(&self) -> Result<i64, Refusal> {
        let mut block = self.producer_ids.lock().await;
        if block.0 >= block.1 {
            let nonce = crate::controller::quorum::new_incarnation();
            let me = self.me;
            self.write(&Command::AllocateProducerIds { broker: me, nonce })
                .await?;
            let seen = self
                .wait_for_metadata(ADMIN_DEADLINE, |m| {
                    m.producer_id_blocks
                        .get(&me)
                        .is_some_and(|(n, _)| *n == nonce)
                })
                .await;
            let first = seen
                .then(|| self.metadata().producer_id_blocks.get(&me).map(|(_, f)| *f))
                .flatten()
                .ok_or_else(|| {
                    Refusal::new(
                        ResponseError::CoordinatorNotAvailable,
                        "the producer id block was committed but not seen in time",
                    )
                })?;
            *block = (first, first + PRODUCER_ID_BLOCK);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }

    /// Commits a command, mapping failures to Kafka errors.
    ///
    /// # Errors
    /// The Kafka error and message to answer with.
    pub async fn write(&self, command: &Command) -> Result<(), Refusal> {
        match self.quorum.write(command, ADMIN_DEADLINE).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Refusal::new(command_error_code(&e), e.to_string())),
            Err(e) => Err(Refusal::new(ResponseError::RequestTimedOut, e.to_string())),
        }
    }

    /// Waits until the metadata this broker has *applied* to its replicas reflects `done` (a
    /// topic created here is then hosted and led here, where the metadata says so), or
    /// `deadline` passes.
    pub async fn wait_for_metadata(
        &self,
        deadline: Duration,
        done: impl Fn(&ClusterMetadata) -> bool,
    ) -> bool {
        let mut rx = self.applied.subscribe();
        let reached = {
            let wait = rx.wait_for(|(_, m)| done(m));
            matches!(tokio::time::timeout(deadline, wait).await, Ok(Ok(_)))
        };
        reached
    }

    /// Controlled shutdown: asks the controller to move leadership away from this broker and
    /// waits until this broker leads nothing (or the configured wait passes). A node alone
    /// has nowhere to move it and stops at once.
    pub async fn controlled_shutdown(&self) {
        if self.config.voters == Voters::Alone {
            return;
        }
        let me = self.me;
        let deadline = Duration::from_millis(self.config.controlled_shutdown_max_wait_ms);
        match self
            .quorum
            .write(&Command::ControlledShutdown { id: me }, deadline)
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "controlled shutdown refused"),
            Err(e) => {
                warn!(error = %e, "controlled shutdown not committed; stopping anyway");
                return;
            }
        }
        let moved = self
            .wait_for_metadata(deadline, |m| {
                m.topics
                    .values()
                    .all(|t| t.partitions.iter().all(|p| p.leader != me))
            })
            .await;
        if moved {
            info!("controlled shutdown: leadership moved away");
        } else {
            warn!("controlled shutdown: some leadership did not move in time");
        }
    }
}

/// Replicas for a new topic of `partitions`, spread over the live brokers.
///
/// # Errors
/// INVALID_REPLICATION_FACTOR when there are fewer live brokers than `replication_factor`.
pub fn spread_replicas(
    metadata: &ClusterMetadata,
    partitions: i32,
    replication_factor: i16,
) -> Result<Vec<Vec<i32>>, Refusal> {
    let live: Vec<i32> = metadata.placement_brokers().into_iter().collect();
    assign_replicas(&live, partitions, replication_factor, 0)
        .map_err(|e| Refusal::new(ResponseError::InvalidReplicationFactor, e.to_string()))
}

/// The Kafka error for a refused metadata command.
pub fn command_error_code(error: &CommandError) -> ResponseError {
    match error {
        CommandError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        CommandError::UnknownTopic(_) | CommandError::UnknownPartition(..) => {
            ResponseError::UnknownTopicOrPartition
        }
        CommandError::UnknownBroker(_) => ResponseError::BrokerNotAvailable,
        CommandError::StaleEpoch { .. } => ResponseError::FencedLeaderEpoch,
        CommandError::NotLeader(_) => ResponseError::NotLeaderOrFollower,
        CommandError::Invalid(_) => ResponseError::InvalidRequest,
        CommandError::NoReassignment(..) => ResponseError::NoReassignmentInProgress,
        CommandError::NoCredential(_) => ResponseError::ResourceNotFound,
    }
}
