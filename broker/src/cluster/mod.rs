//! A broker as a member of its cluster: it runs a controller voter when it is one, follows the
//! metadata the controller quorum agrees on ([`crate::controller`]), registers and
//! heartbeats, and brings its replicas in line with each new metadata state.
//!
//! A single node is the smallest cluster: a one-voter quorum on loopback (KRaft's combined
//! mode), through the same code as any other.
//!
//! - [`roles`]: what this broker should be for each partition (pure);
//! - [`applier`]: applies each metadata state to the hosted replicas and to the group
//!   coordinator;
//! - [`fetcher`]: followers copy their leaders' logs;
//! - [`isr`]: carries the leaders' ISR changes to the quorum;
//! - [`import`]: moves a data directory of the former standalone mode into the quorum;
//! - this module: [`Cluster`], the handle the protocol and HTTP handlers use for metadata
//!   and for writes to the quorum.
//!
//! It never appends records or moves a high watermark: that is the replica layer's.

pub mod applier;
pub mod fetcher;
pub mod import;
pub mod isr;
pub mod roles;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::{BrokerConfig, ClusterConfig, Voters};
use crate::controller::metadata::{
    assign_replicas, ClusterMetadata, Command, CommandError, PRODUCER_ID_BLOCK,
};
use crate::controller::quorum::{LivenessTiming, MetadataWatch, QuorumClient, QuorumError, Voter};
use crate::group::GroupCoordinator;
use crate::replica::{IsrProposal, ReplicaManager, ReplicaRole, TopicRef};
use roles::PartitionKey;

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
    incarnation: u64,
    pub config: ClusterConfig,
    pub quorum: QuorumClient,
    metadata: MetadataWatch,
    /// This broker's role per partition it replicates, from the last applied metadata.
    roles: RwLock<BTreeMap<PartitionKey, ReplicaRole>>,
    /// Published whenever the fetch plan (who follows what, in which epoch) changes.
    roles_changed: watch::Sender<u64>,
    /// Whether the last applied metadata shows this broker registered (this incarnation) and
    /// unfenced: it may serve clients.
    serving: watch::Sender<bool>,
    voter: tokio::sync::Mutex<Option<Voter>>,
    /// The producer id block this broker hands out from: (next id, end of the block).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
}

impl Cluster {
    /// Joins the cluster: starts this node's controller voter when it is one (a node alone
    /// bootstraps a one-voter quorum), imports a former standalone data directory, follows
    /// the metadata, registers and heartbeats, and starts applying each metadata state to
    /// `replicas` and `groups`.
    ///
    /// # Errors
    /// The voter could not start (storage, listener), or the import failed.
    pub async fn start(
        broker: &BrokerConfig,
        replicas: Arc<ReplicaManager>,
        groups: Arc<GroupCoordinator>,
        isr_proposals: tokio::sync::mpsc::UnboundedReceiver<IsrProposal>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, QuorumError> {
        let config = broker.cluster.clone();
        let me = broker.node_id;
        let timing = LivenessTiming {
            session_timeout: Duration::from_millis(config.session_timeout_ms),
            heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms),
        };
        let (voter, voters) = start_voter(broker, &config, timing, &shutdown).await?;
        let quorum = QuorumClient::new(voters)?;
        import::import_standalone(broker, &quorum).await?;
        let metadata = quorum.follow(shutdown.clone());
        let incarnation = crate::controller::quorum::new_incarnation();
        let _fenced = quorum.run_broker_session_as(
            me,
            incarnation,
            broker.advertised_host.clone(),
            broker.advertised_port,
            config.rack.clone(),
            timing,
            shutdown.clone(),
        );
        let cluster = Arc::new(Self {
            me,
            incarnation,
            config,
            quorum,
            metadata,
            roles: RwLock::new(BTreeMap::new()),
            roles_changed: watch::channel(0).0,
            serving: watch::channel(false).0,
            voter: tokio::sync::Mutex::new(voter),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
        });
        tokio::spawn(applier::run(
            Arc::clone(&cluster),
            Arc::clone(&replicas),
            groups,
            shutdown.clone(),
        ));
        tokio::spawn(isr::run(
            Arc::clone(&cluster),
            Arc::clone(&replicas),
            isr_proposals,
            shutdown.clone(),
        ));
        fetcher::spawn_fetchers(replicas, Arc::clone(&cluster), shutdown);
        Ok(cluster)
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

    /// The latest metadata this broker has applied.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        Arc::clone(&self.metadata.borrow().1)
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

    /// Waits until this broker's metadata reflects `done` or `deadline` passes.
    pub async fn wait_for_metadata(
        &self,
        deadline: Duration,
        done: impl Fn(&ClusterMetadata) -> bool,
    ) -> bool {
        let mut rx = self.metadata.clone();
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

/// Starts this node's controller voter when it is one; returns it with the voters' addresses
/// (a node alone learns its own once its listener is bound).
async fn start_voter(
    broker: &BrokerConfig,
    config: &ClusterConfig,
    timing: LivenessTiming,
    shutdown: &CancellationToken,
) -> Result<(Option<Voter>, BTreeMap<u64, String>), QuorumError> {
    let me = broker.node_id;
    let listed = match &config.voters {
        Voters::Listed(voters) => Some(voters.clone()),
        Voters::Alone => None,
    };
    let listen = match (&config.controller_listen, u64::try_from(me)) {
        (Some(listen), Ok(_)) if config.is_voter(me) => listen.clone(),
        _ => return Ok((None, listed.unwrap_or_default())),
    };
    let id = u64::try_from(me).map_err(|_| QuorumError::Raft(format!("node id {me}")))?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|source| QuorumError::Storage {
            dir: listen.clone().into(),
            source,
        })?;
    let voters = match listed {
        Some(voters) => voters,
        None => {
            let bound = listener
                .local_addr()
                .map_err(|source| QuorumError::Storage {
                    dir: listen.clone().into(),
                    source,
                })?;
            BTreeMap::from([(id, bound.to_string())])
        }
    };
    let dir = broker.data_dir.join("__tokafka").join("controller");
    std::fs::create_dir_all(&dir).map_err(|source| QuorumError::Storage {
        dir: dir.clone(),
        source,
    })?;
    info!(node = me, address = %voters.get(&id).map_or(listen.as_str(), String::as_str), voters = voters.len(), "starting controller voter");
    let voter = Voter::start(
        id,
        dir,
        listener,
        &voters,
        timing,
        config.controller_policy(),
        shutdown.clone(),
    )
    .await?;
    Ok((Some(voter), voters))
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
    }
}
