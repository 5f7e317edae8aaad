//! The cluster metadata replicated by the controller quorum, and the commands that change it.
//!
//! [`ClusterMetadata::apply`] is a pure, deterministic function of the state and a command:
//! every controller and every broker applies the same committed commands in the same order
//! and reaches the same state. Decisions that need a choice (replica placement, leader
//! election) are pure functions here too, so they are unit-tested without a network.
//!
//! Invariants kept by `apply`:
//! - a partition's leader is `NO_LEADER` or a member of its ISR, and its ISR is a subset of
//!   its replicas;
//! - the leader epoch increases whenever the leader changes; the partition epoch increases on
//!   every change of leader, ISR or replicas;
//! - a fenced broker leads nothing, and is in no ISR unless it was the last member (so that an
//!   unclean election is never made by default).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::placement::{drain_moves, preferred_leader_moves, spread_moves};

/// Leader id of a partition without a leader.
pub const NO_LEADER: i32 = -1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Fenced brokers missed their heartbeats (or have not caught up yet): they lead nothing.
    pub fenced: bool,
    /// Set by a controlled shutdown: leadership moves away, the broker stays registered.
    pub shutting_down: bool,
    /// Changes on every registration, to tell a restarted broker from its old session.
    pub incarnation: u64,
    /// Being drained: its replicas move to other brokers and new ones are not placed on it.
    #[serde(default)]
    pub decommissioning: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// Replicas being added by a reassignment (already in `replicas`).
    pub adding: Vec<i32>,
    /// Replicas to drop once the reassignment completes (still in `replicas`).
    pub removing: Vec<i32>,
    /// The replicas, in order, before the reassignment in progress (empty when none): a
    /// cancelled reassignment restores them, preferred leader included.
    #[serde(default)]
    pub original: Vec<i32>,
}

impl PartitionRecord {
    fn new(replicas: Vec<i32>, live: &BTreeSet<i32>) -> Self {
        let isr: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|r| live.contains(r))
            .collect();
        let leader = isr.first().copied().unwrap_or(NO_LEADER);
        Self {
            replicas,
            isr: if leader == NO_LEADER { Vec::new() } else { isr },
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
            original: Vec::new(),
        }
    }

    /// The preferred leader: the first replica.
    pub fn preferred_leader(&self) -> i32 {
        self.replicas.first().copied().unwrap_or(NO_LEADER)
    }

    fn set_leader(&mut self, leader: i32) {
        if leader != self.leader {
            self.leader = leader;
            self.leader_epoch += 1;
        }
        self.partition_epoch += 1;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub id: Uuid,
    pub partitions: Vec<PartitionRecord>,
    pub configs: BTreeMap<String, String>,
}

/// Everything the controllers agree on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    pub brokers: BTreeMap<i32, BrokerRecord>,
    pub topics: BTreeMap<String, TopicRecord>,
    /// Allow electing a leader outside the ISR when no ISR member is alive.
    pub unclean_leader_election: bool,
    /// The cluster's id, chosen once by the first active controller.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// The first producer id no broker has been given yet.
    #[serde(default)]
    pub next_producer_id: i64,
    /// Each broker's latest producer id block: the request's nonce and the block's first id.
    #[serde(default)]
    pub producer_id_blocks: BTreeMap<i32, (u64, i64)>,
}

/// Producer ids per block a broker takes from the quorum.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// A change to the metadata, as written to the quorum's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    RegisterBroker {
        id: i32,
        host: String,
        port: i32,
        rack: Option<String>,
        incarnation: u64,
    },
    FenceBroker {
        id: i32,
    },
    UnfenceBroker {
        id: i32,
    },
    ControlledShutdown {
        id: i32,
    },
    CreateTopic {
        name: String,
        id: Uuid,
        assignment: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        assignment: Vec<Vec<i32>>,
    },
    AlterConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// A leader changes its partition's ISR; refused if the epochs are stale.
    AlterIsr {
        topic: String,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// Moves leadership to the preferred replica where it is in the ISR and alive.
    ElectPreferredLeaders {
        partitions: Vec<(String, i32)>,
    },
    /// Starts moving a partition to `target` replicas.
    Reassign {
        topic: String,
        partition: i32,
        target: Vec<i32>,
    },
    /// Stops a partition's reassignment: the replicas it was adding are dropped.
    CancelReassignment {
        topic: String,
        partition: i32,
    },
    /// Elects a leader outside the ISR for these partitions where no ISR member is alive.
    ElectUncleanLeaders {
        partitions: Vec<(String, i32)>,
    },
    /// Drains a broker: every partition it replicates is reassigned to other brokers (see
    /// [`crate::controller::placement::drain_target`]) and it gets no new replicas.
    DecommissionBroker {
        id: i32,
    },
    /// Stops draining a broker; the reassignments still moving its replicas away are
    /// cancelled.
    RecommissionBroker {
        id: i32,
    },
    /// Spreads replicas, then preferred leadership, evenly over the placement brokers (see
    /// [`crate::controller::placement::spread_moves`] and
    /// [`crate::controller::placement::preferred_leader_moves`]): reassignments, applied like
    /// any other.
    SpreadReplicas,
    /// Forgets a broker that replicates nothing (it was drained and removed).
    UnregisterBroker {
        id: i32,
    },
    /// The active controller's `unclean.leader.election.enable` (topics may override it).
    SetUncleanLeaderElection {
        enabled: bool,
    },
    /// Names the cluster; only the first one counts.
    SetClusterId {
        id: String,
    },
    /// Gives `broker` the next [`PRODUCER_ID_BLOCK`] producer ids, so that no two brokers
    /// ever hand out the same one. `nonce` tells the broker which allocation it sees.
    AllocateProducerIds {
        broker: i32,
        nonce: u64,
    },
    /// Takes in the topics of a data directory written by the former standalone mode (applied
    /// by `controller/import.rs`); idempotent.
    ImportStandalone(StandaloneImport),
}

/// What a standalone data directory holds, for the quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandaloneImport {
    /// The node that holds every imported replica.
    pub broker: i32,
    /// The cluster id the standalone broker answered with.
    pub cluster_id: String,
    pub topics: Vec<ImportedTopic>,
    /// Producer ids below this one may have been handed out.
    pub producer_ids_from: i64,
}

/// One topic of a standalone data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedTopic {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: std::collections::BTreeMap<String, String>,
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    #[error("partition {0}-{1} does not exist")]
    UnknownPartition(String, i32),
    #[error("broker {0} is not registered")]
    UnknownBroker(i32),
    #[error("stale request: partition epoch {got}, current {current}")]
    StaleEpoch { got: i32, current: i32 },
    #[error("broker {0} is not the leader")]
    NotLeader(i32),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("partition {0}-{1} has no reassignment in progress")]
    NoReassignment(String, i32),
}

/// What a committed command did.
pub type CommandResult = Result<(), CommandError>;

impl ClusterMetadata {
    /// Brokers that may lead partitions: registered, unfenced, not shutting down.
    pub fn live_brokers(&self) -> BTreeSet<i32> {
        self.brokers
            .values()
            .filter(|b| !b.fenced && !b.shutting_down)
            .map(|b| b.id)
            .collect()
    }

    /// Brokers new replicas may be placed on: live and not being drained.
    pub fn placement_brokers(&self) -> BTreeSet<i32> {
        self.brokers
            .values()
            .filter(|b| !b.fenced && !b.shutting_down && !b.decommissioning)
            .map(|b| b.id)
            .collect()
    }

    /// Every partition, with its topic name and index.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, i32, &PartitionRecord)> {
        self.topics.iter().flat_map(|(name, topic)| {
            topic
                .partitions
                .iter()
                .enumerate()
                .map(move |(index, p)| (name.as_str(), i32::try_from(index).unwrap_or(i32::MAX), p))
        })
    }

    /// How many partitions list `id` as a replica.
    pub fn replica_count(&self, id: i32) -> usize {
        self.partitions()
            .filter(|(_, _, p)| p.replicas.contains(&id))
            .count()
    }

    /// Whether unclean leader election is allowed for `topic`: its own
    /// `unclean.leader.election.enable`, else the cluster's.
    pub fn unclean_allowed(&self, topic: &TopicRecord) -> bool {
        unclean_for(topic, self.unclean_leader_election)
    }

    /// Checks that every named partition exists, so that a command over several partitions
    /// changes all of them or none.
    fn check_partitions(&self, partitions: &[(String, i32)]) -> CommandResult {
        for (topic, partition) in partitions {
            if self.partition(topic, *partition).is_none() {
                return Err(if self.topics.contains_key(topic) {
                    CommandError::UnknownPartition(topic.clone(), *partition)
                } else {
                    CommandError::UnknownTopic(topic.clone())
                });
            }
        }
        Ok(())
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionRecord> {
        self.topics.get(topic).and_then(|t| {
            usize::try_from(partition)
                .ok()
                .and_then(|p| t.partitions.get(p))
        })
    }

    fn partition_mut(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<&mut PartitionRecord, CommandError> {
        self.topics
            .get_mut(topic)
            .ok_or_else(|| CommandError::UnknownTopic(topic.to_string()))?
            .partitions
            .get_mut(
                usize::try_from(partition)
                    .map_err(|_| CommandError::UnknownPartition(topic.to_string(), partition))?,
            )
            .ok_or_else(|| CommandError::UnknownPartition(topic.to_string(), partition))
    }

    /// Applies a committed command.
    ///
    /// # Errors
    /// The command is invalid against the current state; the state is then unchanged.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::RegisterBroker {
                id,
                host,
                port,
                rack,
                incarnation,
            } => {
                let decommissioning = self.brokers.get(id).is_some_and(|b| b.decommissioning);
                let record = BrokerRecord {
                    id: *id,
                    host: host.clone(),
                    port: *port,
                    rack: rack.clone(),
                    // A (re)registered broker starts fenced; it is unfenced once it is caught up.
                    fenced: true,
                    shutting_down: false,
                    incarnation: *incarnation,
                    // A drain survives restarts of the drained broker.
                    decommissioning,
                };
                self.brokers.insert(*id, record);
                self.remove_from_leadership(*id);
                Ok(())
            }
            Command::FenceBroker { id } => {
                let broker = self
                    .brokers
                    .get_mut(id)
                    .ok_or(CommandError::UnknownBroker(*id))?;
                broker.fenced = true;
                self.remove_from_leadership(*id);
                Ok(())
            }
            Command::ControlledShutdown { id } => {
                let broker = self
                    .brokers
                    .get_mut(id)
                    .ok_or(CommandError::UnknownBroker(*id))?;
                broker.shutting_down = true;
                self.remove_from_leadership(*id);
                Ok(())
            }
            Command::UnfenceBroker { id } => {
                let broker = self
                    .brokers
                    .get_mut(id)
                    .ok_or(CommandError::UnknownBroker(*id))?;
                broker.fenced = false;
                broker.shutting_down = false;
                self.elect_leaderless();
                Ok(())
            }
            Command::CreateTopic {
                name,
                id,
                assignment,
                configs,
            } => {
                if self.topics.contains_key(name) {
                    return Err(CommandError::TopicExists(name.clone()));
                }
                validate_assignment(assignment, &self.brokers)?;
                let live = self.live_brokers();
                let partitions = assignment
                    .iter()
                    .map(|r| PartitionRecord::new(r.clone(), &live))
                    .collect();
                self.topics.insert(
                    name.clone(),
                    TopicRecord {
                        id: *id,
                        partitions,
                        configs: configs.clone(),
                    },
                );
                Ok(())
            }
            Command::DeleteTopic { name } => self
                .topics
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| CommandError::UnknownTopic(name.clone())),
            Command::CreatePartitions { name, assignment } => {
                validate_assignment(assignment, &self.brokers)?;
                let live = self.live_brokers();
                let topic = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| CommandError::UnknownTopic(name.clone()))?;
                topic.partitions.extend(
                    assignment
                        .iter()
                        .map(|r| PartitionRecord::new(r.clone(), &live)),
                );
                Ok(())
            }
            Command::AlterConfigs { name, configs } => {
                let topic = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| CommandError::UnknownTopic(name.clone()))?;
                topic.configs = configs.clone();
                Ok(())
            }
            Command::AlterIsr {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let record = self.partition_mut(topic, *partition)?;
                if record.leader != *leader || record.leader_epoch != *leader_epoch {
                    return Err(CommandError::NotLeader(*leader));
                }
                if record.partition_epoch != *partition_epoch {
                    return Err(CommandError::StaleEpoch {
                        got: *partition_epoch,
                        current: record.partition_epoch,
                    });
                }
                if !isr.contains(leader) || isr.iter().any(|r| !record.replicas.contains(r)) {
                    return Err(CommandError::Invalid(format!(
                        "ISR {isr:?} must hold the leader and only replicas"
                    )));
                }
                record.isr = isr.clone();
                record.partition_epoch += 1;
                Self::maybe_complete_reassignment(record);
                Ok(())
            }
            Command::ElectPreferredLeaders { partitions } => {
                self.check_partitions(partitions)?;
                let live = self.live_brokers();
                for (topic, partition) in partitions {
                    let record = self.partition_mut(topic, *partition)?;
                    let preferred = record.preferred_leader();
                    if record.leader != preferred
                        && record.isr.contains(&preferred)
                        && live.contains(&preferred)
                    {
                        record.set_leader(preferred);
                    }
                }
                Ok(())
            }
            Command::Reassign {
                topic,
                partition,
                target,
            } => {
                if target.is_empty() || target.iter().collect::<BTreeSet<_>>().len() != target.len()
                {
                    return Err(CommandError::Invalid(format!(
                        "target replicas {target:?} must be distinct and non-empty"
                    )));
                }
                if let Some(missing) = target.iter().find(|b| !self.brokers.contains_key(b)) {
                    return Err(CommandError::UnknownBroker(*missing));
                }
                let record = self.partition_mut(topic, *partition)?;
                // A new target for a reassignment in flight is measured against the replicas
                // before it: a replica still being added is added again, not assumed in sync.
                let before = if record.original.is_empty() {
                    &record.replicas
                } else {
                    &record.original
                };
                let adding: Vec<i32> = target
                    .iter()
                    .copied()
                    .filter(|b| !before.contains(b))
                    .collect();
                let removing: Vec<i32> = record
                    .replicas
                    .iter()
                    .copied()
                    .filter(|b| !target.contains(b))
                    .collect();
                // Target order first (so the preferred leader is the target's first), then the
                // replicas that will leave.
                let mut replicas = target.clone();
                replicas.extend(removing.iter().copied());
                if record.original.is_empty() {
                    record.original = record.replicas.clone();
                }
                let moving = !adding.is_empty() || !removing.is_empty();
                record.replicas = replicas;
                record.adding = adding;
                record.removing = removing;
                record.partition_epoch += 1;
                if moving {
                    // A new leader epoch fences fetches made under the old assignment: one
                    // from a replica this change (or a cancel before it) removed must never
                    // vouch for the replica assigned now, which may start empty.
                    record.leader_epoch += 1;
                }
                Self::maybe_complete_reassignment(record);
                Ok(())
            }
            Command::CancelReassignment { topic, partition } => {
                let record = self.partition_mut(topic, *partition)?;
                if record.adding.is_empty() && record.removing.is_empty() {
                    return Err(CommandError::NoReassignment(topic.clone(), *partition));
                }
                Self::cancel_reassignment(record);
                Ok(())
            }
            Command::ElectUncleanLeaders { partitions } => {
                self.check_partitions(partitions)?;
                let live = self.live_brokers();
                for (topic, partition) in partitions {
                    let record = self.partition_mut(topic, *partition)?;
                    if record.leader != NO_LEADER {
                        continue;
                    }
                    if let Some(next) = choose_leader(&record.replicas, &record.isr, &live, true) {
                        if !record.isr.contains(&next) {
                            record.isr = vec![next];
                        }
                        record.set_leader(next);
                    }
                }
                Ok(())
            }
            Command::DecommissionBroker { id } => {
                if !self.brokers.contains_key(id) {
                    return Err(CommandError::UnknownBroker(*id));
                }
                let mut drained = self.clone();
                if let Some(broker) = drained.brokers.get_mut(id) {
                    broker.decommissioning = true;
                }
                let moves = drain_moves(&drained, *id)?;
                for (topic, partition, target) in moves {
                    drained.apply(&Command::Reassign {
                        topic,
                        partition,
                        target,
                    })?;
                }
                *self = drained;
                Ok(())
            }
            Command::SpreadReplicas => {
                let mut spread = self.clone();
                for (topic, partition, target) in spread_moves(self) {
                    spread.apply(&Command::Reassign {
                        topic,
                        partition,
                        target,
                    })?;
                }
                // Then preferred leadership, over the replicas as they will be (a reorder moves
                // no data).
                for (topic, partition, target) in preferred_leader_moves(&spread) {
                    spread.apply(&Command::Reassign {
                        topic,
                        partition,
                        target,
                    })?;
                }
                *self = spread;
                Ok(())
            }
            Command::RecommissionBroker { id } => {
                let broker = self
                    .brokers
                    .get_mut(id)
                    .ok_or(CommandError::UnknownBroker(*id))?;
                broker.decommissioning = false;
                for topic in self.topics.values_mut() {
                    for record in &mut topic.partitions {
                        if record.removing.contains(id) {
                            Self::cancel_reassignment(record);
                        }
                    }
                }
                Ok(())
            }
            Command::UnregisterBroker { id } => {
                if !self.brokers.contains_key(id) {
                    return Err(CommandError::UnknownBroker(*id));
                }
                let held = self.replica_count(*id);
                if held > 0 {
                    return Err(CommandError::Invalid(format!(
                        "broker {id} still replicates {held} partitions; decommission it first"
                    )));
                }
                self.brokers.remove(id);
                Ok(())
            }
            Command::AllocateProducerIds { broker, nonce } => {
                let first = self.next_producer_id;
                self.next_producer_id = first
                    .checked_add(PRODUCER_ID_BLOCK)
                    .ok_or_else(|| CommandError::Invalid("producer ids exhausted".into()))?;
                self.producer_id_blocks.insert(*broker, (*nonce, first));
                Ok(())
            }
            Command::SetClusterId { id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(id.clone());
                }
                Ok(())
            }
            Command::ImportStandalone(import) => {
                self.import_standalone(import);
                Ok(())
            }
            Command::SetUncleanLeaderElection { enabled } => {
                self.unclean_leader_election = *enabled;
                if *enabled {
                    self.elect_leaderless();
                }
                Ok(())
            }
        }
    }

    /// Reverts a partition's reassignment: the replicas being added leave again, the ones
    /// being removed stay. Leadership moves if an added replica led.
    fn cancel_reassignment(record: &mut PartitionRecord) {
        let adding = std::mem::take(&mut record.adding);
        record.removing.clear();
        let original = std::mem::take(&mut record.original);
        if original.is_empty() {
            record.replicas.retain(|r| !adding.contains(r));
        } else {
            record.replicas = original;
        }
        Self::without(record, &adding);
    }

    /// Drops `id` from every ISR (unless it is the last member) and elects new leaders where
    /// it led.
    fn remove_from_leadership(&mut self, id: i32) {
        let live = self.live_brokers();
        let cluster_unclean = self.unclean_leader_election;
        for topic in self.topics.values_mut() {
            let unclean = unclean_for(topic, cluster_unclean);
            for record in &mut topic.partitions {
                let touched = record.leader == id || record.isr.contains(&id);
                if !touched {
                    continue;
                }
                if record.isr.len() > 1 {
                    record.isr.retain(|r| *r != id);
                }
                if record.leader == id || !live.contains(&record.leader) {
                    let next = choose_leader(&record.replicas, &record.isr, &live, unclean);
                    if let Some(next) = next {
                        if !record.isr.contains(&next) {
                            record.isr = vec![next];
                        }
                    }
                    record.set_leader(next.unwrap_or(NO_LEADER));
                } else {
                    record.partition_epoch += 1;
                }
            }
        }
    }

    /// Gives a leader to partitions that have none, when an ISR member is alive again.
    fn elect_leaderless(&mut self) {
        let live = self.live_brokers();
        let cluster_unclean = self.unclean_leader_election;
        for topic in self.topics.values_mut() {
            let unclean = unclean_for(topic, cluster_unclean);
            for record in &mut topic.partitions {
                if record.leader == NO_LEADER {
                    if let Some(next) = choose_leader(&record.replicas, &record.isr, &live, unclean)
                    {
                        if !record.isr.contains(&next) {
                            record.isr = vec![next];
                        }
                        record.set_leader(next);
                    }
                }
            }
        }
    }

    /// Finishes a reassignment once every added replica is in the ISR: the leaving replicas
    /// are dropped, and leadership moves to the target's first replica if it must.
    fn maybe_complete_reassignment(record: &mut PartitionRecord) {
        if record.adding.is_empty() && record.removing.is_empty() {
            return;
        }
        if !record.adding.iter().all(|r| record.isr.contains(r)) {
            return;
        }
        let removing = std::mem::take(&mut record.removing);
        record.adding.clear();
        record.original.clear();
        record.replicas.retain(|r| !removing.contains(r));
        Self::without(record, &removing);
    }

    /// Takes `leaving` replicas (already gone from `replicas`) out of the ISR, unless that
    /// would empty it, and moves leadership to the first in-sync replica if the leader left;
    /// either way the leader epoch moves on.
    fn without(record: &mut PartitionRecord, leaving: &[i32]) {
        if record.isr.iter().any(|r| !leaving.contains(r)) {
            record.isr.retain(|r| !leaving.contains(r));
        }
        if leaving.contains(&record.leader) || !record.isr.contains(&record.leader) {
            let next = record
                .replicas
                .iter()
                .copied()
                .find(|r| record.isr.contains(r))
                .unwrap_or(NO_LEADER);
            record.set_leader(next);
        } else {
            // Replicas left: a new leader epoch, as when the assignment grows.
            record.leader_epoch += 1;
            record.partition_epoch += 1;
        }
    }
}

/// A topic's `unclean.leader.election.enable`, else `cluster_default`.
fn unclean_for(topic: &TopicRecord, cluster_default: bool) -> bool {
    topic
        .configs
        .get("unclean.leader.election.enable")
        .map_or(cluster_default, |v| v == "true")
}

/// The new leader: the first replica (in preference order) that is in the ISR and alive; with
/// `unclean`, else the first live replica.
pub fn choose_leader(
    replicas: &[i32],
    isr: &[i32],
    live: &BTreeSet<i32>,
    unclean: bool,
) -> Option<i32> {
    replicas
        .iter()
        .copied()
        .find(|r| isr.contains(r) && live.contains(r))
        .or_else(|| {
            unclean
                .then(|| replicas.iter().copied().find(|r| live.contains(r)))
                .flatten()
        })
}

fn validate_assignment(
    assignment: &[Vec<i32>],
    brokers: &BTreeMap<i32, BrokerRecord>,
) -> CommandResult {
    for replicas in assignment {
        if replicas.is_empty() || replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
            return Err(CommandError::Invalid(format!(
                "replicas {replicas:?} must be distinct and non-empty"
            )));
        }
        if let Some(missing) = replicas.iter().find(|b| !brokers.contains_key(b)) {
            return Err(CommandError::UnknownBroker(*missing));
        }
    }
    Ok(())
}

/// Places `partitions` new partitions with `replication_factor` replicas on `brokers`,
/// spreading replicas and preferred leaders evenly (Kafka's round-robin placement with a
/// shifting follower offset). `first_partition` continues an existing topic's placement.
///
/// # Errors
/// Fewer brokers than the replication factor.
pub fn assign_replicas(
    brokers: &[i32],
    partitions: i32,
    replication_factor: i16,
    first_partition: i32,
) -> Result<Vec<Vec<i32>>, CommandError> {
    let n = brokers.len();
    let rf = usize::try_from(replication_factor).unwrap_or(0);
    if rf == 0 || rf > n {
        return Err(CommandError::Invalid(format!(
            "replication factor {replication_factor} needs at least that many brokers, {n} available"
        )));
    }
    let mut sorted = brokers.to_vec();
    sorted.sort_unstable();
    Ok((first_partition..first_partition + partitions)
        .map(|p| {
            let p = usize::try_from(p).unwrap_or(0);
            let first = p % n;
            if n == 1 {
                return vec![sorted[0]];
            }
            // Followers sit at distinct offsets 1..n-1 from the leader, shifted per round so
            // that the follower pairs vary too.
            let shift = (p / n) % (n - 1);
            let mut replicas = vec![sorted[first]];
            replicas.extend((0..rf - 1).map(|k| sorted[(first + 1 + (shift + k) % (n - 1)) % n]));
            replicas
        })
        .collect())
}

/// Metadata builders shared by the unit tests of the controller and its users.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

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
}

#[cfg(test)]
mod tests {
    use super::testing::{all_caught_up, cluster, create, join};
    use super::*;

    #[test]
    fn placement_spreads_replicas_and_leaders_evenly() {
        let assignment = assign_replicas(&[1, 2, 3], 6, 3, 0).expect("assign");
        for replicas in &assignment {
            assert_eq!(
                replicas.iter().collect::<BTreeSet<_>>().len(),
                3,
                "{replicas:?}"
            );
        }
        for broker in [1, 2, 3] {
            assert_eq!(
                assignment.iter().filter(|r| r[0] == broker).count(),
                2,
                "leaders of {broker}"
            );
        }
        assert!(assign_replicas(&[1, 2], 1, 3, 0).is_err());
        let single = assign_replicas(&[7], 3, 1, 0).expect("single broker");
        assert!(single.iter().all(|r| r == &vec![7]));
    }

    #[test]
    fn spreading_after_a_scale_up_evens_replicas_and_preferred_leaders() {
        let mut metadata = cluster(&[0, 1, 2]);
        let assignment = assign_replicas(&[0, 1, 2], 12, 3, 0).expect("assign");
        create(&mut metadata, "t", assignment);
        join(&mut metadata, 3);
        join(&mut metadata, 4);
        // Each plan moves a partition at most once; the operator asks again once the moves
        // are done, as here once every new replica is in sync.
        for _ in 0..4 {
            metadata.apply(&Command::SpreadReplicas).expect("spread");
            all_caught_up(&mut metadata);
        }
        assert!(metadata.partitions().all(|(_, _, r)| r.adding.is_empty()));
        let spread = |count: &dyn Fn(i32) -> usize| {
            let counts: Vec<usize> = (0..5).map(count).collect();
            let (min, max) = (counts.iter().min(), counts.iter().max());
            (max.zip(min).is_some_and(|(a, b)| a - b <= 1), counts)
        };
        let (even, replicas) = spread(&|b| metadata.replica_count(b));
        assert!(even, "replicas {replicas:?}");
        let (even, preferred) = spread(&|b| {
            metadata
                .partitions()
                .filter(|(_, _, r)| r.preferred_leader() == b)
                .count()
        });
        assert!(even, "preferred leaders {preferred:?}");
    }

    #[test]
    fn every_change_of_the_assignment_starts_a_leader_epoch() {
        let mut metadata = cluster(&[1, 2, 3]);
        create(&mut metadata, "t", vec![vec![1, 2]]);
        let epoch = |m: &ClusterMetadata| m.partition("t", 0).expect("partition").leader_epoch;
        let started = epoch(&metadata);
        let reassign = Command::Reassign {
            topic: "t".into(),
            partition: 0,
            target: vec![1, 3],
        };
        metadata.apply(&reassign).expect("reassign");
        let adding = epoch(&metadata);
        assert!(adding > started);
        metadata
            .apply(&Command::CancelReassignment {
                topic: "t".into(),
                partition: 0,
            })
            .expect("cancel");
        let cancelled = epoch(&metadata);
        assert!(cancelled > adding);
        // An ISR change built while broker 3 was being added is refused once it is not.
        let p = metadata.partition("t", 0).cloned().expect("partition");
        let stale = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: adding,
            partition_epoch: p.partition_epoch,
            isr: vec![1, 2],
        };
        assert!(metadata.apply(&stale).is_err());
        metadata.apply(&reassign).expect("reassign again");
        assert!(epoch(&metadata) > cancelled);
    }

    #[test]
    fn a_fenced_leader_is_replaced_from_the_isr() {
        let mut metadata = cluster(&[1, 2, 3]);
        create(&mut metadata, "t", vec![vec![1, 2, 3]]);
        let before = metadata.partition("t", 0).cloned().expect("partition");
        assert_eq!((before.leader, before.isr.clone()), (1, vec![1, 2, 3]));
        metadata
            .apply(&Command::FenceBroker { id: 1 })
            .expect("fence");
        let after = metadata.partition("t", 0).expect("partition");
        assert_eq!(after.leader, 2);
        assert_eq!(after.isr, vec![2, 3]);
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert!(after.partition_epoch > before.partition_epoch);
    }

    #[test]
    fn the_last_isr_member_keeps_its_place_and_no_unclean_leader_is_chosen() {
        let mut metadata = cluster(&[1, 2]);
        create(&mut metadata, "t", vec![vec![1, 2]]);
        let p = metadata.partition("t", 0).cloned().expect("p");
        metadata
            .apply(&Command::AlterIsr {
                topic: "t".into(),
                partition: 0,
                leader: 1,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr: vec![1],
            })
            .expect("shrink");
        metadata
            .apply(&Command::FenceBroker { id: 1 })
            .expect("fence");
        let p = metadata.partition("t", 0).expect("p");
        assert_eq!(
            (p.leader, p.isr.clone()),
            (NO_LEADER, vec![1]),
            "broker 2 is out of sync: no unclean election"
        );
        metadata
            .apply(&Command::UnfenceBroker { id: 1 })
            .expect("back");
        assert_eq!(metadata.partition("t", 0).map(|p| p.leader), Some(1));
    }

    #[test]
    fn stale_isr_changes_are_refused() {
        let mut metadata = cluster(&[1, 2]);
        create(&mut metadata, "t", vec![vec![1, 2]]);
        let p = metadata.partition("t", 0).cloned().expect("p");
        let stale = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch - 1,
            isr: vec![1],
        };
        assert!(matches!(
            metadata.apply(&stale),
            Err(CommandError::StaleEpoch { .. })
        ));
        let not_leader = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 2,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: vec![2],
        };
        assert!(matches!(
            metadata.apply(&not_leader),
            Err(CommandError::NotLeader(2))
        ));
        assert_eq!(
            metadata.partition("t", 0),
            Some(&p),
            "refused commands change nothing"
        );
    }

    #[test]
    fn controlled_shutdown_moves_leadership_and_preferred_election_restores_it() {
        let mut metadata = cluster(&[1, 2, 3]);
        create(&mut metadata, "t", vec![vec![1, 2, 3], vec![2, 3, 1]]);
        metadata
            .apply(&Command::ControlledShutdown { id: 1 })
            .expect("shutdown");
        assert_eq!(metadata.partition("t", 0).map(|p| p.leader), Some(2));
        metadata
            .apply(&Command::RegisterBroker {
                id: 1,
                host: "h".into(),
                port: 1,
                rack: None,
                incarnation: 2,
            })
            .expect("re-register");
        metadata
            .apply(&Command::UnfenceBroker { id: 1 })
            .expect("unfence");
        // 1 must rejoin the ISR before it can lead again
        let p = metadata.partition("t", 0).cloned().expect("p");
        metadata
            .apply(&Command::AlterIsr {
                topic: "t".into(),
                partition: 0,
                leader: 2,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr: vec![2, 3, 1],
            })
            .expect("expand");
        metadata
            .apply(&Command::ElectPreferredLeaders {
                partitions: vec![("t".into(), 0), ("t".into(), 1)],
            })
            .expect("elect");
        assert_eq!(metadata.partition("t", 0).map(|p| p.leader), Some(1));
        assert_eq!(metadata.partition("t", 1).map(|p| p.leader), Some(2));
    }

    #[test]
    fn reassignment_completes_when_new_replicas_are_in_sync() {
        let mut metadata = cluster(&[1, 2, 3, 4]);
        create(&mut metadata, "t", vec![vec![1, 2]]);
        metadata
            .apply(&Command::Reassign {
                topic: "t".into(),
                partition: 0,
                target: vec![3, 4],
            })
            .expect("reassign");
        let p = metadata.partition("t", 0).cloned().expect("p");
        assert_eq!(p.replicas, vec![3, 4, 1, 2]);
        assert_eq!(
            p.leader, 1,
            "leadership stays until the new replicas are in sync"
        );
        metadata
            .apply(&Command::AlterIsr {
                topic: "t".into(),
                partition: 0,
                leader: 1,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr: vec![1, 2, 3, 4],
            })
            .expect("caught up");
        let p = metadata.partition("t", 0).expect("p");
        assert_eq!(p.replicas, vec![3, 4]);
        assert_eq!(p.isr, vec![3, 4]);
        assert_eq!(p.leader, 3);
        assert!(p.adding.is_empty() && p.removing.is_empty());
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut metadata = cluster(&[1, 2]);
        let mut firsts = Vec::new();
        for (broker, nonce) in [(1, 10), (2, 20), (1, 11)] {
            metadata
                .apply(&Command::AllocateProducerIds { broker, nonce })
                .expect("allocate");
            let (seen, first) = metadata.producer_id_blocks[&broker];
            assert_eq!(seen, nonce);
            firsts.push(first);
        }
        assert_eq!(firsts, vec![0, PRODUCER_ID_BLOCK, 2 * PRODUCER_ID_BLOCK]);
    }

    #[test]
    fn a_new_target_in_flight_still_waits_for_every_replica_it_adds() {
        let mut metadata = cluster(&[1, 2, 3, 4, 5]);
        create(&mut metadata, "t", vec![vec![1, 2]]);
        for target in [vec![3, 4], vec![5, 4]] {
            metadata
                .apply(&Command::Reassign {
                    topic: "t".into(),
                    partition: 0,
                    target,
                })
                .expect("reassign");
        }
        let p = metadata.partition("t", 0).cloned().expect("p");
        assert_eq!(p.adding, vec![5, 4]);
        assert_eq!(p.removing, vec![3, 1, 2]);
        metadata
            .apply(&Command::AlterIsr {
                topic: "t".into(),
                partition: 0,
                leader: 1,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr: vec![1, 2, 5],
            })
            .expect("5 caught up");
        let p = metadata.partition("t", 0).expect("p");
        assert_eq!(p.adding, vec![5, 4], "4 is not in sync yet");
        assert_eq!(p.leader, 1);
    }
}
