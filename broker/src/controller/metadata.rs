//! The commands that change the cluster metadata, and how each is applied.
//!
//! [`ClusterMetadata::apply`] is a pure, deterministic function of the state and a command:
//! every controller and every broker applies the same committed commands in the same order
//! and reaches the same state. `apply` only dispatches: each command has one method below
//! that says what it changes and what it refuses. The state itself (records and read-only
//! queries) is [`super::state`]; decisions that need a choice (where replicas go, which
//! moves even out load) are [`super::placement`], pure functions both, unit-tested without a
//! network.
//!
//! Invariants kept by `apply`:
//! - a partition's leader is `NO_LEADER` or a member of its ISR, and its ISR is a subset of
//!   its replicas;
//! - the leader epoch increases whenever the leader changes; the partition epoch increases on
//!   every change of leader, ISR or replicas;
//! - a fenced broker leads nothing, and is in no ISR unless it was the last member (so that an
//!   unclean election is never made by default);
//! - a refused command changes nothing.
//!
//! [`Command`] and [`CommandError`] are stored in the quorum's log (serde): variants and
//! fields may be added, never renamed or removed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::placement::{drain_moves, preferred_leader_moves, spread_moves, Undrainable};
use super::state::unclean_for;
// The state's types are used by callers through this module, where they always lived.
pub use super::state::{
    choose_leader, BrokerRecord, ClusterMetadata, ListenerAddress, PartitionRecord, TopicRecord,
    NO_LEADER,
};
use crate::security::scram::{Mechanism, ScramCredential};
// Test fixtures, at the path their users know.
#[cfg(test)]
pub(crate) use super::testing;

/// Producer ids per block a broker takes from the quorum.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// A change to the metadata, as written to the quorum's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `host` and `port` are the broker's inter-broker listener; `listeners` every client
    /// listener's advertised address by listener name.
    RegisterBroker {
        id: i32,
        host: String,
        port: i32,
        rack: Option<String>,
        incarnation: u64,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        listeners: BTreeMap<String, ListenerAddress>,
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
    /// [`crate::controller::placement::drain_moves`]) and it gets no new replicas.
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
    /// `broker` (in the session of `incarnation`) lost the log directory holding its replicas
    /// of these partitions: they leave the ISR (unless the last member) and leadership.
    MarkReplicasOffline {
        broker: i32,
        incarnation: u64,
        replicas: Vec<(String, i32)>,
    },
    /// Sets `user`'s SCRAM credential for `mechanism` (AlterUserScramCredentials).
    UpsertScramCredential {
        user: String,
        mechanism: Mechanism,
        credential: ScramCredential,
    },
    /// Removes `user`'s SCRAM credential for `mechanism`; refused when there is none.
    DeleteScramCredential {
        user: String,
        mechanism: Mechanism,
    },
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
    #[error("user `{0}` has no such SCRAM credential")]
    NoCredential(String),
}

/// What a committed command did.
pub type CommandResult = Result<(), CommandError>;

impl From<Undrainable> for CommandError {
    fn from(error: Undrainable) -> Self {
        CommandError::Invalid(error.to_string())
    }
}

impl ClusterMetadata {
    /// Applies a committed command: the one way the metadata changes.
    ///
    /// Deterministic: the same state and command give the same result on every node. Each
    /// command is handled by the method of the same name below, which says what it changes
    /// and what it refuses.
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
                listeners,
            } => {
                self.register_broker(*id, host, *port, rack.as_deref(), *incarnation, listeners);
                Ok(())
            }
            Command::FenceBroker { id } => self.fence_broker(*id),
            Command::UnfenceBroker { id } => self.unfence_broker(*id),
            Command::ControlledShutdown { id } => self.controlled_shutdown(*id),
            Command::CreateTopic {
                name,
                id,
                assignment,
                configs,
            } => self.create_topic(name, *id, assignment, configs),
            Command::DeleteTopic { name } => self.delete_topic(name),
            Command::CreatePartitions { name, assignment } => {
                self.create_partitions(name, assignment)
            }
            Command::AlterConfigs { name, configs } => self.alter_configs(name, configs),
            Command::AlterIsr {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => self.alter_isr(
                topic,
                *partition,
                *leader,
                *leader_epoch,
                *partition_epoch,
                isr,
            ),
            Command::ElectPreferredLeaders { partitions } => {
                self.elect_preferred_leaders(partitions)
            }
            Command::Reassign {
                topic,
                partition,
                target,
            } => self.reassign(topic, *partition, target),
            Command::CancelReassignment { topic, partition } => {
                self.cancel_reassignment(topic, *partition)
            }
            Command::ElectUncleanLeaders { partitions } => self.elect_unclean_leaders(partitions),
            Command::DecommissionBroker { id } => self.decommission_broker(*id),
            Command::RecommissionBroker { id } => self.recommission_broker(*id),
            Command::SpreadReplicas => self.spread_replicas(),
            Command::UnregisterBroker { id } => self.unregister_broker(*id),
            Command::SetUncleanLeaderElection { enabled } => {
                self.set_unclean_leader_election(*enabled);
                Ok(())
            }
            Command::SetClusterId { id } => {
                self.set_cluster_id(id);
                Ok(())
            }
            Command::AllocateProducerIds { broker, nonce } => {
                self.allocate_producer_ids(*broker, *nonce)
            }
            Command::ImportStandalone(import) => {
                self.import_standalone(import);
                Ok(())
            }
            Command::MarkReplicasOffline {
                broker,
                incarnation,
                replicas,
            } => self.mark_replicas_offline(*broker, *incarnation, replicas),
            Command::UpsertScramCredential {
                user,
                mechanism,
                credential,
            } => self.upsert_scram_credential(user, *mechanism, credential),
            Command::DeleteScramCredential { user, mechanism } => {
                self.delete_scram_credential(user, *mechanism)
            }
        }
    }

    /// Sets a user's credential for one mechanism, replacing any earlier one. Refuses an empty
    /// user name and iterations outside Kafka's bounds.
    fn upsert_scram_credential(
        &mut self,
        user: &str,
        mechanism: Mechanism,
        credential: &ScramCredential,
    ) -> CommandResult {
        use crate::security::scram::{MAX_ITERATIONS, MIN_ITERATIONS};
        if user.is_empty() {
            return Err(CommandError::Invalid("the user name is empty".into()));
        }
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&credential.iterations) {
            return Err(CommandError::Invalid(format!(
                "iterations must be from {MIN_ITERATIONS} to {MAX_ITERATIONS}"
            )));
        }
        self.scram_credentials
            .entry(user.to_string())
            .or_default()
            .insert(mechanism, credential.clone());
        Ok(())
    }

    /// Removes a user's credential for one mechanism (the user goes with its last one).
    fn delete_scram_credential(&mut self, user: &str, mechanism: Mechanism) -> CommandResult {
        let Some(credentials) = self.scram_credentials.get_mut(user) else {
            return Err(CommandError::NoCredential(user.to_string()));
        };
        if credentials.remove(&mechanism).is_none() {
            return Err(CommandError::NoCredential(user.to_string()));
        }
        if credentials.is_empty() {
            self.scram_credentials.remove(user);
        }
        Ok(())
    }

    /// Registers broker `id`, or replaces its record on a restart: the broker starts fenced
    /// (it is unfenced once caught up), not shutting down, with the new `incarnation`; a drain
    /// in progress survives. It leaves every ISR it was not the last member of, and leadership
    /// moves away from it. Refuses nothing.
    fn register_broker(
        &mut self,
        id: i32,
        host: &str,
        port: i32,
        rack: Option<&str>,
        incarnation: u64,
        listeners: &BTreeMap<String, ListenerAddress>,
    ) {
        let decommissioning = self.brokers.get(&id).is_some_and(|b| b.decommissioning);
        let record = BrokerRecord {
            id,
            host: host.to_string(),
            port,
            rack: rack.map(str::to_string),
            fenced: true,
            shutting_down: false,
            incarnation,
            decommissioning,
            listeners: listeners.clone(),
        };
        self.brokers.insert(id, record);
        // A restarted broker opens its log directories afresh; it reports those still failing.
        for topic in self.topics.values_mut() {
            for partition in &mut topic.partitions {
                partition.offline.retain(|b| *b != id);
            }
        }
        self.remove_from_leadership(id);
    }

    /// Marks `broker`'s replicas of `replicas` offline (their log directory failed): each
    /// leaves the ISR unless it is the last member (so that no unclean election follows by
    /// default), and where it led, the first in-sync replica still alive and online takes
    /// over (none: the partition is leaderless).
    ///
    /// Refuses a report from an earlier session of the broker (its restart cleared it).
    /// Partitions unknown, or not replicated by `broker`, are skipped: the topic may have been
    /// deleted or moved meanwhile.
    fn mark_replicas_offline(
        &mut self,
        broker: i32,
        incarnation: u64,
        replicas: &[(String, i32)],
    ) -> CommandResult {
        let current = self
            .brokers
            .get(&broker)
            .ok_or(CommandError::UnknownBroker(broker))?
            .incarnation;
        if current != incarnation {
            return Err(CommandError::Invalid(format!(
                "an offline report of broker {broker} from session {incarnation}; it now runs session {current}"
            )));
        }
        let live = self.live_brokers();
        let cluster_unclean = self.unclean_leader_election;
        for (name, index) in replicas {
            let Some(topic) = self.topics.get_mut(name) else {
                continue;
            };
            let unclean = unclean_for(topic, cluster_unclean);
            let Some(record) = usize::try_from(*index)
                .ok()
                .and_then(|i| topic.partitions.get_mut(i))
            else {
                continue;
            };
            if !record.replicas.contains(&broker) || record.offline.contains(&broker) {
                continue;
            }
            record.offline.push(broker);
            if record.isr.len() > 1 {
                record.isr.retain(|r| *r != broker);
            }
            if record.leader == broker {
                let candidates = record.leader_candidates(&live);
                let next = choose_leader(&record.replicas, &record.isr, &candidates, unclean);
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
        Ok(())
    }

    /// Fences broker `id` (it missed its heartbeats): it leaves every ISR it was not the last
    /// member of, and leadership moves away from it.
    ///
    /// Refuses an unregistered broker.
    fn fence_broker(&mut self, id: i32) -> CommandResult {
        let broker = self
            .brokers
            .get_mut(&id)
            .ok_or(CommandError::UnknownBroker(id))?;
        broker.fenced = true;
        self.remove_from_leadership(id);
        Ok(())
    }

    /// Unfences broker `id` and clears its controlled shutdown; leaderless partitions whose
    /// ISR it is in (or any, with unclean election) get a leader again.
    ///
    /// Refuses an unregistered broker.
    fn unfence_broker(&mut self, id: i32) -> CommandResult {
        let broker = self
            .brokers
            .get_mut(&id)
            .ok_or(CommandError::UnknownBroker(id))?;
        broker.fenced = false;
        broker.shutting_down = false;
        self.elect_leaderless();
        Ok(())
    }

    /// Starts broker `id`'s controlled shutdown: it stays registered, but leaves every ISR it
    /// was not the last member of, and leadership moves away from it.
    ///
    /// Refuses an unregistered broker.
    fn controlled_shutdown(&mut self, id: i32) -> CommandResult {
        let broker = self
            .brokers
            .get_mut(&id)
            .ok_or(CommandError::UnknownBroker(id))?;
        broker.shutting_down = true;
        self.remove_from_leadership(id);
        Ok(())
    }

    /// Creates topic `name` with one partition per entry of `assignment`, each led by its
    /// first live replica with the live replicas in sync.
    ///
    /// Refuses an existing name, and an assignment with an empty or repeated replica list or
    /// an unregistered broker.
    fn create_topic(
        &mut self,
        name: &str,
        id: Uuid,
        assignment: &[Vec<i32>],
        configs: &BTreeMap<String, String>,
    ) -> CommandResult {
        if self.topics.contains_key(name) {
            return Err(CommandError::TopicExists(name.to_string()));
        }
        validate_assignment(assignment, &self.brokers)?;
        let live = self.live_brokers();
        let partitions = assignment
            .iter()
            .map(|r| PartitionRecord::new(r.clone(), &live))
            .collect();
        self.topics.insert(
            name.to_string(),
            TopicRecord {
                id,
                partitions,
                configs: configs.clone(),
            },
        );
        Ok(())
    }

    /// Deletes topic `name` and its partitions.
    ///
    /// Refuses an unknown topic.
    fn delete_topic(&mut self, name: &str) -> CommandResult {
        self.topics
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| CommandError::UnknownTopic(name.to_string()))
    }

    /// Appends one partition per entry of `assignment` to topic `name`, as
    /// [`Self::create_topic`] places them.
    ///
    /// Refuses an invalid assignment (as `create_topic`) and an unknown topic.
    fn create_partitions(&mut self, name: &str, assignment: &[Vec<i32>]) -> CommandResult {
        validate_assignment(assignment, &self.brokers)?;
        let live = self.live_brokers();
        let topic = self
            .topics
            .get_mut(name)
            .ok_or_else(|| CommandError::UnknownTopic(name.to_string()))?;
        topic.partitions.extend(
            assignment
                .iter()
                .map(|r| PartitionRecord::new(r.clone(), &live)),
        );
        Ok(())
    }

    /// Replaces topic `name`'s configs with `configs` (no election follows, even if
    /// `unclean.leader.election.enable` changed).
    ///
    /// Refuses an unknown topic.
    fn alter_configs(&mut self, name: &str, configs: &BTreeMap<String, String>) -> CommandResult {
        let topic = self
            .topics
            .get_mut(name)
            .ok_or_else(|| CommandError::UnknownTopic(name.to_string()))?;
        topic.configs = configs.clone();
        Ok(())
    }

    /// The leader sets its partition's ISR (a new partition epoch); a reassignment whose added
    /// replicas are now all in sync completes.
    ///
    /// Refuses an unknown partition; a `leader` that is not the leader at `leader_epoch`
    /// ([`CommandError::NotLeader`]); a stale `partition_epoch`; an ISR without the leader or
    /// with a broker that is not a replica.
    fn alter_isr(
        &mut self,
        topic: &str,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[i32],
    ) -> CommandResult {
        let record = self.partition_mut(topic, partition)?;
        if record.leader != leader || record.leader_epoch != leader_epoch {
            return Err(CommandError::NotLeader(leader));
        }
        if record.partition_epoch != partition_epoch {
            return Err(CommandError::StaleEpoch {
                got: partition_epoch,
                current: record.partition_epoch,
            });
        }
        if !isr.contains(&leader) || isr.iter().any(|r| !record.replicas.contains(r)) {
            return Err(CommandError::Invalid(format!(
                "ISR {isr:?} must hold the leader and only replicas"
            )));
        }
        if let Some(offline) = isr
            .iter()
            .find(|r| record.offline.contains(r) && !record.isr.contains(r))
        {
            return Err(CommandError::Invalid(format!(
                "replica {offline} is offline and cannot join the ISR"
            )));
        }
        record.isr = isr.to_vec();
        record.partition_epoch += 1;
        Self::maybe_complete_reassignment(record);
        Ok(())
    }

    /// Moves each partition's leadership to its preferred replica where that one is in the
    /// ISR and alive; others are left as they are.
    ///
    /// Refuses the whole list if any partition is unknown.
    fn elect_preferred_leaders(&mut self, partitions: &[(String, i32)]) -> CommandResult {
        self.check_partitions(partitions)?;
        let live = self.live_brokers();
        for (topic, partition) in partitions {
            let record = self.partition_mut(topic, *partition)?;
            let preferred = record.preferred_leader();
            if record.leader != preferred
                && record.isr.contains(&preferred)
                && live.contains(&preferred)
                && !record.offline.contains(&preferred)
            {
                record.set_leader(preferred);
            }
        }
        Ok(())
    }

    /// Starts moving a partition to `target` (a new target replaces one in flight): the
    /// replicas become the target, in order, followed by those leaving; a new partition epoch,
    /// and a new leader epoch if any replica is added or removed. Leadership stays until the
    /// added replicas are in sync (see [`Self::maybe_complete_reassignment`]).
    ///
    /// Refuses an empty or repeated target, an unregistered broker, an unknown partition.
    fn reassign(&mut self, topic: &str, partition: i32, target: &[i32]) -> CommandResult {
        if target.is_empty() || target.iter().collect::<BTreeSet<_>>().len() != target.len() {
            return Err(CommandError::Invalid(format!(
                "target replicas {target:?} must be distinct and non-empty"
            )));
        }
        if let Some(missing) = target.iter().find(|b| !self.brokers.contains_key(b)) {
            return Err(CommandError::UnknownBroker(*missing));
        }
        let record = self.partition_mut(topic, partition)?;
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
        let mut replicas = target.to_vec();
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

    /// Stops a partition's reassignment: the replicas before it are restored (see
    /// [`Self::revert_reassignment`]).
    ///
    /// Refuses an unknown partition and one with no reassignment in progress.
    fn cancel_reassignment(&mut self, topic: &str, partition: i32) -> CommandResult {
        let record = self.partition_mut(topic, partition)?;
        if record.adding.is_empty() && record.removing.is_empty() {
            return Err(CommandError::NoReassignment(topic.to_string(), partition));
        }
        Self::revert_reassignment(record);
        Ok(())
    }

    /// Gives each leaderless partition its first live replica as leader, in sync or not (its
    /// ISR becomes that replica alone if it was not in it); partitions with a leader, or no
    /// live replica, are left as they are.
    ///
    /// Refuses the whole list if any partition is unknown.
    fn elect_unclean_leaders(&mut self, partitions: &[(String, i32)]) -> CommandResult {
        self.check_partitions(partitions)?;
        let live = self.live_brokers();
        for (topic, partition) in partitions {
            let record = self.partition_mut(topic, *partition)?;
            if record.leader != NO_LEADER {
                continue;
            }
            let candidates = record.leader_candidates(&live);
            if let Some(next) = choose_leader(&record.replicas, &record.isr, &candidates, true) {
                if !record.isr.contains(&next) {
                    record.isr = vec![next];
                }
                record.set_leader(next);
            }
        }
        Ok(())
    }

    /// Drains broker `id`: marks it decommissioning and reassigns each of its replicas to
    /// another placement broker ([`drain_moves`]), all at once.
    ///
    /// Refuses an unregistered broker, and a drain some partition has no broker left for
    /// (then nothing changes, the mark included).
    fn decommission_broker(&mut self, id: i32) -> CommandResult {
        if !self.brokers.contains_key(&id) {
            return Err(CommandError::UnknownBroker(id));
        }
        let mut drained = self.clone();
        if let Some(broker) = drained.brokers.get_mut(&id) {
            broker.decommissioning = true;
        }
        let moves = drain_moves(&drained, id)?;
        for (topic, partition, target) in moves {
            drained.reassign(&topic, partition, &target)?;
        }
        *self = drained;
        Ok(())
    }

    /// Stops draining broker `id`: it may get new replicas again, and the reassignments still
    /// moving its replicas away are cancelled.
    ///
    /// Refuses an unregistered broker.
    fn recommission_broker(&mut self, id: i32) -> CommandResult {
        let broker = self
            .brokers
            .get_mut(&id)
            .ok_or(CommandError::UnknownBroker(id))?;
        broker.decommissioning = false;
        for topic in self.topics.values_mut() {
            for record in &mut topic.partitions {
                if record.removing.contains(&id) {
                    Self::revert_reassignment(record);
                }
            }
        }
        Ok(())
    }

    /// Reassigns replicas to spread them evenly over the placement brokers ([`spread_moves`]),
    /// then reorders replicas to spread preferred leadership ([`preferred_leader_moves`]), all
    /// at once.
    ///
    /// Refuses nothing in practice (the moves are planned over valid state); should one
    /// reassignment fail, nothing changes.
    fn spread_replicas(&mut self) -> CommandResult {
        let mut spread = self.clone();
        for (topic, partition, target) in spread_moves(self) {
            spread.reassign(&topic, partition, &target)?;
        }
        // Then preferred leadership, over the replicas as they will be (a reorder moves
        // no data).
        for (topic, partition, target) in preferred_leader_moves(&spread) {
            spread.reassign(&topic, partition, &target)?;
        }
        *self = spread;
        Ok(())
    }

    /// Forgets broker `id`.
    ///
    /// Refuses an unregistered broker, and one still listed as a replica anywhere.
    fn unregister_broker(&mut self, id: i32) -> CommandResult {
        if !self.brokers.contains_key(&id) {
            return Err(CommandError::UnknownBroker(id));
        }
        let held = self.replica_count(id);
        if held > 0 {
            return Err(CommandError::Invalid(format!(
                "broker {id} still replicates {held} partitions; decommission it first"
            )));
        }
        self.brokers.remove(&id);
        Ok(())
    }

    /// Sets the cluster's unclean-election default; enabling it elects leaders for leaderless
    /// partitions whose topic does not disable it. Refuses nothing.
    fn set_unclean_leader_election(&mut self, enabled: bool) {
        self.unclean_leader_election = enabled;
        if enabled {
            self.elect_leaderless();
        }
    }

    /// Names the cluster, unless it has a name already (then nothing changes). Refuses
    /// nothing.
    fn set_cluster_id(&mut self, id: &str) {
        if self.cluster_id.is_none() {
            self.cluster_id = Some(id.to_string());
        }
    }

    /// Gives `broker` the next [`PRODUCER_ID_BLOCK`] ids, recorded with the request's `nonce`
    /// (the broker's previous block is forgotten).
    ///
    /// Refuses once producer ids would overflow `i64`.
    fn allocate_producer_ids(&mut self, broker: i32, nonce: u64) -> CommandResult {
        let first = self.next_producer_id;
        self.next_producer_id = first
            .checked_add(PRODUCER_ID_BLOCK)
            .ok_or_else(|| CommandError::Invalid("producer ids exhausted".into()))?;
        self.producer_id_blocks.insert(broker, (nonce, first));
        Ok(())
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

    /// Reverts a partition's reassignment: the replicas being added leave again, the ones
    /// being removed stay. Leadership moves if an added replica led.
    fn revert_reassignment(record: &mut PartitionRecord) {
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
                    let candidates = record.leader_candidates(&live);
                    let next = choose_leader(&record.replicas, &record.isr, &candidates, unclean);
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
                    let candidates = record.leader_candidates(&live);
                    if let Some(next) =
                        choose_leader(&record.replicas, &record.isr, &candidates, unclean)
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

/// A new Kafka-style cluster id: 16 random bytes in URL-safe base64 without padding (22
/// characters). The active controller proposes one ([`Command::SetClusterId`]) while the
/// metadata has none.
pub fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = u128::from_be_bytes(Uuid::new_v4().into_bytes());
    let mut out = String::with_capacity(22);
    for _ in 0..22 {
        out.push(char::from(ALPHABET[(bits & 63) as usize]));
        bits >>= 6;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::testing::{all_caught_up, cluster, create, join};
    use super::*;

    #[test]
    fn commands_and_metadata_keep_their_stored_json() {
        // The quorum's log and snapshots hold this JSON: it must read back the same forever.
        let register = Command::RegisterBroker {
            id: 1,
            host: "h".into(),
            port: 9092,
            rack: None,
            incarnation: 7,
            listeners: Default::default(),
        };
        let json =
            r#"{"RegisterBroker":{"id":1,"host":"h","port":9092,"rack":null,"incarnation":7}}"#;
        assert_eq!(serde_json::to_string(&register).expect("encode"), json);
        assert_eq!(
            serde_json::from_str::<Command>(r#""SpreadReplicas""#).expect("decode"),
            Command::SpreadReplicas
        );
        let mut metadata = cluster(&[1]);
        create(&mut metadata, "t", vec![vec![1]]);
        let stored = serde_json::to_string(&metadata).expect("encode");
        let back: ClusterMetadata = serde_json::from_str(&stored).expect("decode");
        assert_eq!(back, metadata);
        // Written before `decommissioning`, `original`, `cluster_id` and the producer ids.
        let old = r#"{"brokers":{"1":{"id":1,"host":"h","port":1,"rack":null,"fenced":false,
            "shutting_down":false,"incarnation":3}},"topics":{"t":{"id":
            "00000000-0000-0000-0000-000000000001","partitions":[{"replicas":[1],"isr":[1],
            "leader":1,"leader_epoch":0,"partition_epoch":0,"adding":[],"removing":[]}],
            "configs":{}}},"unclean_leader_election":false}"#;
        let old: ClusterMetadata = serde_json::from_str(old).expect("decode an old snapshot");
        assert!(!old.brokers[&1].decommissioning);
        assert_eq!(old.partition("t", 0).map(|p| p.leader), Some(1));
        assert_eq!(old.cluster_id, None);
        assert!(old.scram_credentials.is_empty() && old.brokers[&1].listeners.is_empty());
    }

    #[test]
    fn scram_credentials_are_set_replaced_and_deleted_within_kafkas_bounds() {
        use crate::security::scram::{Mechanism, ScramCredential};
        let mut m = cluster(&[1]);
        let credential = |iterations| {
            ScramCredential::from_password(Mechanism::Sha512, b"pw", b"salt".to_vec(), iterations)
        };
        let upsert = |user: &str, iterations| Command::UpsertScramCredential {
            user: user.into(),
            mechanism: Mechanism::Sha512,
            credential: credential(iterations),
        };
        m.apply(&upsert("alice", 4096)).expect("set");
        m.apply(&upsert("alice", 8192)).expect("replace");
        assert_eq!(
            m.scram_credentials["alice"][&Mechanism::Sha512].iterations,
            8192
        );
        for refused in [upsert("", 4096), upsert("bob", 4095), upsert("bob", 16385)] {
            let before = m.clone();
            assert!(m.apply(&refused).is_err(), "{refused:?}");
            assert_eq!(m, before, "a refused command changes nothing");
        }
        let delete = |mechanism| Command::DeleteScramCredential {
            user: "alice".into(),
            mechanism,
        };
        assert_eq!(
            m.apply(&delete(Mechanism::Sha256)),
            Err(CommandError::NoCredential("alice".into()))
        );
        m.apply(&delete(Mechanism::Sha512)).expect("delete");
        assert!(
            m.scram_credentials.is_empty(),
            "the user goes with its last credential"
        );
        let stored = serde_json::to_string(&upsert("carol", 4096)).expect("encode");
        assert!(!stored.contains("\"pw\""), "no password in the log");
        assert_eq!(
            serde_json::from_str::<Command>(&stored).expect("decode"),
            upsert("carol", 4096)
        );
    }

    #[test]
    fn offline_replicas_lose_leadership_and_the_isr_until_their_broker_restarts() {
        let mut m = cluster(&[1, 2, 3]);
        create(&mut m, "t", vec![vec![1, 2, 3], vec![2, 1, 3], vec![1]]);
        all_caught_up(&mut m);
        let report = |incarnation| Command::MarkReplicasOffline {
            broker: 1,
            incarnation,
            replicas: vec![
                ("t".into(), 0),
                ("t".into(), 1),
                ("t".into(), 2),
                ("gone".into(), 0),
            ],
        };
        let before = m.clone();
        assert!(m.apply(&report(9)).is_err(), "a report of another session");
        assert_eq!(m, before, "a refused report changes nothing");
        let led = m.partition("t", 0).cloned().expect("t-0");
        m.apply(&report(1)).expect("report");
        let t0 = m.partition("t", 0).cloned().expect("t-0");
        assert_eq!(
            (t0.leader, t0.isr.clone(), t0.offline.clone()),
            (2, vec![2, 3], vec![1])
        );
        assert_eq!(t0.leader_epoch, led.leader_epoch + 1);
        let t1 = m.partition("t", 1).cloned().expect("t-1");
        assert_eq!(
            (t1.leader, t1.isr.clone()),
            (2, vec![2, 3]),
            "a follower leaves the ISR"
        );
        let t2 = m.partition("t", 2).cloned().expect("t-2");
        assert_eq!(
            (t2.leader, t2.isr.clone()),
            (NO_LEADER, vec![1]),
            "the last in-sync replica stays in the ISR, leaderless: no unclean election"
        );
        // An offline replica cannot come back through the ISR or a preferred election.
        let isr_back = Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 2,
            leader_epoch: t0.leader_epoch,
            partition_epoch: t0.partition_epoch,
            isr: vec![2, 3, 1],
        };
        assert!(m.apply(&isr_back).is_err());
        m.apply(&Command::ElectPreferredLeaders {
            partitions: vec![("t".into(), 0)],
        })
        .expect("elect");
        assert_eq!(m.partition("t", 0).map(|p| p.leader), Some(2));
        // Its restart clears the mark: it is a candidate again once in sync.
        join(&mut m, 1);
        assert!(m.partitions().all(|(_, _, p)| p.offline.is_empty()));
        assert_eq!(m.partition("t", 2).map(|p| p.leader), Some(1));
    }

    #[test]
    fn cluster_ids_are_22_url_safe_characters_and_differ() {
        let (a, b) = (new_cluster_id(), new_cluster_id());
        assert_eq!(a.len(), 22);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, b);
    }

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
                listeners: Default::default(),
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
