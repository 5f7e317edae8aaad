//! A broker as a member of a cluster: it follows the metadata the controller quorum agrees on
//! ([`crate::controller`]), holds the partitions it replicates, leads some of them and
//! follows the others.
//!
//! - [`roles`]: what this broker should be for each partition (pure);
//! - [`isr`]: a leader's tracking of its followers, high watermark and ISR changes (pure);
//! - this module: the running state the request handlers consult ([`Cluster`]) and the
//!   applier that brings local partitions in line with each new metadata state.
//!
//! Invariants kept here:
//! - only the leader of a partition in its current epoch appends client records and answers
//!   consumers; a request naming an older epoch is refused with FENCED_LEADER_EPOCH;
//! - the high watermark on a leader moves only as [`isr::LeaderState`] allows, so consumers
//!   and acks=-1 producers never see a record some in-sync replica lacks.

pub mod fetcher;
pub mod isr;
pub mod roles;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::broker::Broker;
use crate::config::ClusterConfig;
use crate::controller::metadata::{
    assign_replicas, ClusterMetadata, Command, CommandError, PRODUCER_ID_BLOCK,
};
use crate::controller::quorum::{LivenessTiming, MetadataWatch, QuorumClient, QuorumError, Voter};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::topics::Partition;
use isr::LeaderState;
use roles::{desired_roles, PartitionKey, Role};

/// How long an admin request waits for the quorum.
pub const ADMIN_DEADLINE: Duration = Duration::from_secs(10);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
    roles: RwLock<BTreeMap<PartitionKey, Role>>,
    /// The partitions this broker leads, with their follower tracking.
    leaders: Mutex<HashMap<ReplicaId, Led>>,
    /// Published whenever the fetch plan (who follows what, in which epoch) changes.
    roles_changed: watch::Sender<u64>,
    voter: tokio::sync::Mutex<Option<Voter>>,
    /// The producer id block this broker hands out from: (next id, end of the block).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
}

/// A topic as a request names it.
#[derive(Debug, Clone, Copy)]
pub enum TopicRef<'a> {
    Name(&'a str),
    Id(Uuid),
}

/// A partition by topic id and index: a key that costs no allocation to build.
type ReplicaId = (Uuid, i32);

fn replica_id(partition: &Partition) -> ReplicaId {
    (partition.topic_id, partition.index)
}

/// A partition this broker leads.
struct Led {
    topic: String,
    state: LeaderState,
    /// The topic's `min.insync.replicas`, from the metadata.
    min_insync_replicas: usize,
}

impl Led {
    /// The AlterIsr command proposing `isr` in the current epochs.
    fn alter_isr(&self, me: i32, partition: i32, isr: Vec<i32>) -> Command {
        Command::AlterIsr {
            topic: self.topic.clone(),
            partition,
            leader: me,
            leader_epoch: self.state.leader_epoch,
            partition_epoch: self.state.partition_epoch,
            isr,
        }
    }
}

/// Why a partition cannot be served by this broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotServable(pub ResponseError);

impl Cluster {
    /// Joins the cluster: starts the controller voter when this node is one, follows the
    /// metadata, registers and heartbeats.
    ///
    /// # Errors
    /// The voter could not start (storage, listener).
    pub async fn start(
        broker: &Arc<Broker>,
        config: ClusterConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, QuorumError> {
        let me = broker.config.node_id;
        let timing = LivenessTiming {
            session_timeout: Duration::from_millis(config.session_timeout_ms),
            heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms),
        };
        let voter = match (&config.controller_listen, u64::try_from(me)) {
            (Some(listen), Ok(id)) if config.is_voter(me) => {
                let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                    QuorumError::Storage {
                        dir: listen.into(),
                        source: e,
                    }
                })?;
                let dir = broker.config.data_dir.join("__tokafka").join("controller");
                std::fs::create_dir_all(&dir).map_err(|source| QuorumError::Storage {
                    dir: dir.clone(),
                    source,
                })?;
                info!(node = me, %listen, "starting controller voter");
                Some(
                    Voter::start(
                        id,
                        dir,
                        listener,
                        &config.voters,
                        timing,
                        config.controller_policy(),
                        shutdown.clone(),
                    )
                    .await?,
                )
            }
            _ => None,
        };
        let quorum = QuorumClient::new(config.voters.clone())?;
        let metadata = quorum.follow(shutdown.clone());
        let incarnation = crate::controller::quorum::new_incarnation();
        let _fenced = quorum.run_broker_session_as(
            me,
            incarnation,
            broker.config.advertised_host.clone(),
            broker.config.advertised_port,
            config.rack.clone(),
            timing,
            shutdown.clone(),
        );
        let (roles_changed, _) = watch::channel(0);
        let cluster = Arc::new(Self {
            me,
            incarnation,
            config,
            quorum,
            metadata,
            roles: RwLock::new(BTreeMap::new()),
            leaders: Mutex::new(HashMap::new()),
            roles_changed,
            voter: tokio::sync::Mutex::new(voter),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
        });
        let (weak_broker, weak_cluster) = (Arc::downgrade(broker), Arc::downgrade(&cluster));
        broker
            .groups
            .offsets
            .set_after_append(Box::new(move |partition| {
                if let Some(cluster) = weak_cluster.upgrade() {
                    cluster.after_leader_append(partition);
                }
                if let Some(broker) = weak_broker.upgrade() {
                    broker.appended.notify_waiters();
                }
            }));
        tokio::spawn(apply_metadata(
            Arc::clone(broker),
            Arc::clone(&cluster),
            shutdown.clone(),
        ));
        tokio::spawn(shrink_isr_loop(Arc::clone(&cluster), shutdown));
        Ok(cluster)
    }

    /// Stops the controller voter, if any (after the broker has stopped serving).
    pub async fn stop_voter(&self) {
        if let Some(voter) = self.voter.lock().await.take() {
            voter.shutdown().await;
        }
    }

    /// The latest metadata this broker has applied.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        Arc::clone(&self.metadata.borrow().1)
    }

    /// Changes of the roles (for fetchers).
    pub fn subscribe_roles(&self) -> watch::Receiver<u64> {
        self.roles_changed.subscribe()
    }

    /// This broker's current roles.
    pub fn roles(&self) -> BTreeMap<PartitionKey, Role> {
        self.roles.read().clone()
    }

    /// The leader epoch of a partition this broker leads, checked against the epoch a client
    /// believes current (`-1`: not given). One map lookup, no allocation: this is on every
    /// produce and fetch.
    ///
    /// # Errors
    /// NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH (the client's epoch is older) or
    /// UNKNOWN_LEADER_EPOCH (newer than this broker knows).
    pub fn leader_epoch(
        &self,
        partition: &Partition,
        client_epoch: i32,
    ) -> Result<i32, NotServable> {
        let leaders = self.leaders.lock();
        let led = leaders
            .get(&replica_id(partition))
            .ok_or(NotServable(ResponseError::NotLeaderOrFollower))?;
        check_epoch(led.state.leader_epoch, client_epoch)?;
        Ok(led.state.leader_epoch)
    }

    /// The error for a request about a partition this broker does not host: the cluster has
    /// it elsewhere (NOT_LEADER_OR_FOLLOWER, retriable: the client refreshes its metadata and
    /// goes to the leader, as with Kafka), or has no such partition (UNKNOWN_TOPIC_OR_PARTITION).
    /// `topic` is a name, or (Fetch v13+) a topic id.
    pub fn not_hosted_error(&self, topic: TopicRef<'_>, index: i32) -> ResponseError {
        let metadata = self.metadata();
        let known = match topic {
            TopicRef::Name(name) => metadata.partition(name, index).is_some(),
            TopicRef::Id(id) => metadata.topics.values().any(|t| {
                t.id == id && usize::try_from(index).is_ok_and(|i| i < t.partitions.len())
            }),
        };
        if known {
            ResponseError::NotLeaderOrFollower
        } else {
            ResponseError::UnknownTopicOrPartition
        }
    }

    /// Whether this broker leads `partition` now.
    pub fn is_leading(&self, partition: &Partition) -> bool {
        self.leaders.lock().contains_key(&replica_id(partition))
    }

    /// The leader epoch to stamp on a client append, or why this broker refuses it: it does
    /// not lead, or (acks=-1) the ISR is smaller than `min.insync.replicas`.
    ///
    /// # Errors
    /// The Kafka error and message to answer with.
    pub fn epoch_for_append(
        &self,
        partition: &Partition,
        acks: i16,
    ) -> Result<i32, (ResponseError, String)> {
        let leaders = self.leaders.lock();
        let Some(led) = leaders.get(&replica_id(partition)) else {
            return Err((
                ResponseError::NotLeaderOrFollower,
                format!("broker {} does not lead {partition:?}", self.me),
            ));
        };
        let isr = led.state.isr.len();
        if acks == -1 && isr < led.min_insync_replicas {
            return Err((
                ResponseError::NotEnoughReplicas,
                format!(
                    "{isr} in-sync replicas, min.insync.replicas is {}",
                    led.min_insync_replicas
                ),
            ));
        }
        Ok(led.state.leader_epoch)
    }

    /// Moves the high watermark of a partition this broker leads after its own append (a
    /// leader alone in its ISR commits at once).
    pub fn after_leader_append(&self, partition: &Partition) -> bool {
        self.leaders
            .lock()
            .get(&replica_id(partition))
            .is_some_and(|led| advance_high_watermark(&led.state, partition))
    }

    /// Records a follower's fetch on a partition this broker leads: its progress, the high
    /// watermark that follows, and an ISR expansion to propose. Returns whether the high
    /// watermark moved.
    pub fn on_follower_fetch(
        self: &Arc<Self>,
        partition: &Partition,
        follower: i32,
        fetch_offset: i64,
    ) -> bool {
        let id = replica_id(partition);
        let mut leaders = self.leaders.lock();
        let Some(led) = leaders.get_mut(&id) else {
            return false;
        };
        let log = &partition.log;
        let effect = led.state.on_follower_fetch(
            follower,
            fetch_offset,
            log.log_end_offset(),
            log.high_watermark(),
            now_ms(),
        );
        if let Some(hw) = effect.high_watermark {
            log.set_high_watermark(hw);
        }
        if let Some(isr) = effect.propose_isr {
            let command = led.alter_isr(self.me, id.1, isr);
            drop(leaders);
            self.send_isr_change(id, command);
        }
        effect.high_watermark.is_some()
    }

    /// Commits an ISR change proposed by this leader; a refused or lost one is forgotten so
    /// that it can be proposed again.
    fn send_isr_change(self: &Arc<Self>, id: ReplicaId, command: Command) {
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            let failure = match cluster.quorum.write(&command, ADMIN_DEADLINE).await {
                Ok(Ok(())) => {
                    info!(?command, "ISR changed");
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            debug!(?command, error = %failure, "ISR change not made");
            if let Some(led) = cluster.leaders.lock().get_mut(&id) {
                led.state.clear_pending();
            }
        });
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
    ) -> Result<Uuid, (ResponseError, String)> {
        let id = Uuid::new_v4();
        let command = Command::CreateTopic {
            name: name.to_string(),
            id,
            assignment,
            configs,
        };
        self.write(&command).await.map(|()| id)
    }

    /// Deletes a topic through the controller.
    ///
    /// # Errors
    /// The Kafka error and message to answer with.
    pub async fn delete_topic(&self, name: &str) -> Result<(), (ResponseError, String)> {
        self.write(&Command::DeleteTopic {
            name: name.to_string(),
        })
        .await
    }

    /// A producer id no broker of the cluster has handed out, from a block the quorum gave
    /// this broker (a new block is asked for when one runs out; a restart forgets the rest of
    /// its block).
    ///
    /// # Errors
    /// The quorum did not answer in time.
    pub async fn allocate_producer_id(&self) -> Result<i64, (ResponseError, String)> {
        let mut block = self.producer_ids.lock().await;
        if block.0 >= block.1 {
            let nonce = crate::controller::quorum::new_incarnation();
            let me = self.me;
            self.write(&Command::AllocateProducerIds { broker: me, nonce })
                .await?;
            let mut first = None;
            let seen = self
                .wait_for_metadata(ADMIN_DEADLINE, |m| {
                    m.producer_id_blocks
                        .get(&me)
                        .is_some_and(|(n, _)| *n == nonce)
                })
                .await;
            if seen {
                first = self.metadata().producer_id_blocks.get(&me).map(|(_, f)| *f);
            }
            let first = first.ok_or_else(|| {
                (
                    ResponseError::CoordinatorNotAvailable,
                    "the producer id block was committed but not seen in time".to_string(),
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
    pub async fn write(&self, command: &Command) -> Result<(), (ResponseError, String)> {
        match self.quorum.write(command, ADMIN_DEADLINE).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err((command_error_code(&e), e.to_string())),
            Err(e) => Err((ResponseError::RequestTimedOut, e.to_string())),
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
    /// waits until this broker leads nothing (or the configured wait passes).
    pub async fn controlled_shutdown(&self) {
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

fn check_epoch(leader_epoch: i32, client_epoch: i32) -> Result<(), NotServable> {
    if client_epoch < 0 || client_epoch == leader_epoch {
        Ok(())
    } else if client_epoch < leader_epoch {
        Err(NotServable(ResponseError::FencedLeaderEpoch))
    } else {
        Err(NotServable(ResponseError::UnknownLeaderEpoch))
    }
}

/// Sets the leader log's high watermark to what its tracking allows; true when it moved.
fn advance_high_watermark(state: &LeaderState, partition: &Partition) -> bool {
    let log = &partition.log;
    let hw = state.high_watermark(log.log_end_offset());
    if hw > log.high_watermark() {
        log.set_high_watermark(hw);
        true
    } else {
        false
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
) -> Result<Vec<Vec<i32>>, (ResponseError, String)> {
    let live: Vec<i32> = metadata.placement_brokers().into_iter().collect();
    assign_replicas(&live, partitions, replication_factor, 0)
        .map_err(|e| (ResponseError::InvalidReplicationFactor, e.to_string()))
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

/// Applies each new metadata state: holds the partitions this broker replicates, drops the
/// topics the metadata deleted, and sets leader tracking for the partitions it now leads.
async fn apply_metadata(broker: Arc<Broker>, cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let mut rx = cluster.metadata.clone();
    // Topics seen in some applied state: only those may be dropped when they disappear (a
    // lagging voter's first answer must not delete a topic it does not know yet).
    let mut seen: BTreeSet<String> = BTreeSet::new();
    loop {
        let metadata = Arc::clone(&rx.borrow_and_update().1);
        let b = Arc::clone(&broker);
        let c = Arc::clone(&cluster);
        let seen_before = seen.clone();
        let applied =
            tokio::task::spawn_blocking(move || apply_once(&b, &c, &metadata, &seen_before)).await;
        match applied {
            Ok(now_seen) => seen = now_seen,
            Err(e) => warn!(error = %e, "metadata apply task failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

/// One pass of [`apply_metadata`]; returns the topics seen.
fn apply_once(
    broker: &Arc<Broker>,
    cluster: &Cluster,
    metadata: &ClusterMetadata,
    seen: &BTreeSet<String>,
) -> BTreeSet<String> {
    let me = cluster.me;
    if metadata
        .brokers
        .get(&me)
        .is_none_or(|b| b.incarnation != cluster.incarnation)
    {
        // Metadata from before this process registered (a lagging voter, or this voter's own
        // log still catching up) may name this broker leader of a partition that has since
        // moved: take no role from it.
        debug!("metadata predates this broker's registration; waiting");
        return seen.clone();
    }
    let desired = desired_roles(metadata, me);
    for topic in broker.topics.list() {
        let listed = metadata.topics.get(&topic.name);
        let gone = match listed {
            Some(record) => record.id != topic.id,
            None => seen.contains(&topic.name),
        };
        if gone {
            if let Err(e) = broker.topics.remove_replicas(&topic.name) {
                warn!(topic = %topic.name, error = %e, "cannot drop local replicas");
            }
            continue;
        }
        if listed.is_none() {
            continue;
        }
        // Replicas the metadata moved to other brokers (a completed reassignment).
        for partition in topic.partitions() {
            if !desired.contains_key(&(topic.name.clone(), partition.index)) {
                if let Err(e) = broker.topics.remove_replica(&topic.name, partition.index) {
                    warn!(topic = %topic.name, partition = partition.index, error = %e, "cannot drop a local replica");
                }
            }
        }
    }
    let mut hosted = BTreeMap::new();
    for ((name, index), role) in &desired {
        let Some(topic) = metadata.topics.get(name) else {
            continue;
        };
        let replication_factor = i16::try_from(role.replicas.len()).unwrap_or(i16::MAX);
        match broker.topics.host_replica(
            name,
            role.topic_id,
            i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX),
            replication_factor,
            &topic.configs,
            *index,
        ) {
            Ok(partition) => {
                hosted.insert((name.clone(), *index), partition);
            }
            Err(e) => warn!(topic = %name, partition = index, error = %e, "cannot hold replica"),
        }
    }
    let now = now_ms();
    let mut plan_changed = false;
    {
        let mut roles = cluster.roles.write();
        let mut leaders = cluster.leaders.lock();
        let mut led_now = BTreeSet::new();
        for (key, role) in &desired {
            let previous = roles.get(key);
            plan_changed |= previous.is_none_or(|p| p.epoch_changed(role));
            let Some(partition) = hosted.get(key).filter(|_| role.is_leader(me)) else {
                continue;
            };
            let id = replica_id(partition);
            led_now.insert(id);
            let min_insync_replicas = metadata
                .topics
                .get(&key.0)
                .and_then(|t| t.configs.get("min.insync.replicas"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(cluster.config.default_min_insync_replicas);
            match leaders.get_mut(&id) {
                Some(led) if led.state.leader_epoch == role.leader_epoch => {
                    led.state
                        .update_membership(role.partition_epoch, &role.replicas, &role.isr);
                    led.min_insync_replicas = min_insync_replicas;
                    advance_high_watermark(&led.state, partition);
                }
                _ => {
                    info!(topic = %key.0, partition = key.1, epoch = role.leader_epoch, isr = ?role.isr, "leading partition");
                    // Record where this epoch starts, so that OffsetForLeaderEpoch answers
                    // for it before the first append in it.
                    if let Err(e) = partition.log.begin_leader_epoch(role.leader_epoch) {
                        warn!(topic = %key.0, partition = key.1, error = %e, "cannot record the leader epoch");
                    }
                    let state = LeaderState::new(
                        me,
                        role.leader_epoch,
                        role.partition_epoch,
                        &role.replicas,
                        &role.isr,
                        partition.log.log_end_offset(),
                        now,
                    );
                    advance_high_watermark(&state, partition);
                    leaders.insert(
                        id,
                        Led {
                            topic: key.0.clone(),
                            state,
                            min_insync_replicas,
                        },
                    );
                }
            }
        }
        leaders.retain(|id, _| led_now.contains(id));
        plan_changed |= roles.keys().any(|k| !desired.contains_key(k));
        *roles = desired;
    }
    if plan_changed {
        cluster.roles_changed.send_modify(|n| *n += 1);
    }
    coordinate_led_offsets_partitions(broker, cluster, &hosted);
    broker.appended.notify_waiters();
    metadata
        .topics
        .keys()
        .cloned()
        .chain(seen.iter().cloned())
        .collect()
}

/// Loads the offsets partitions this broker now leads (it coordinates their groups) and
/// unloads those it no longer leads.
fn coordinate_led_offsets_partitions(
    broker: &Broker,
    cluster: &Cluster,
    hosted: &BTreeMap<PartitionKey, Arc<Partition>>,
) {
    let groups = &broker.groups;
    let mut led = BTreeSet::new();
    for ((name, index), partition) in hosted {
        if name != OFFSETS_TOPIC {
            continue;
        }
        let Ok(epoch) = cluster.leader_epoch(partition, -1) else {
            continue;
        };
        led.insert(*index);
        match groups.offsets.loaded_epoch(*index) {
            Some(loaded) if loaded == epoch => continue,
            // Led in another epoch: leadership went elsewhere and came back between two
            // metadata states this broker applied, so its memory may miss what the other
            // leader committed. Start over from the log.
            Some(_) => groups.unload_partition(*index),
            None => {}
        }
        if let Err(e) = groups.load_partition(Arc::clone(partition), epoch) {
            warn!(partition = index, error = %e, "cannot load an offsets partition");
        }
    }
    for index in groups.offsets.loaded_partitions() {
        if !led.contains(&index) {
            groups.unload_partition(index);
        }
    }
}

/// Periodically proposes ISR shrinks for followers that stopped keeping up.
async fn shrink_isr_loop(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let lag_max = i64::try_from(cluster.config.replica_lag_time_max_ms).unwrap_or(i64::MAX);
    let period =
        Duration::from_millis((cluster.config.replica_lag_time_max_ms / 2).clamp(100, 5_000));
    let mut interval = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let now = now_ms();
        let mut proposals = Vec::new();
        {
            let mut leaders = cluster.leaders.lock();
            for (id, led) in leaders.iter_mut() {
                if let Some(isr) = led.state.shrink_candidate(now, lag_max) {
                    led.state.set_pending(isr.clone());
                    proposals.push((*id, led.alter_isr(cluster.me, id.1, isr)));
                }
            }
        }
        for (id, command) in proposals {
            info!(?command, "shrinking ISR");
            cluster.send_isr_change(id, command);
        }
    }
}
