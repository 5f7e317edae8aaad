//! The cluster metadata as data: the records of brokers, topics and partitions the controller
//! quorum agrees on, and the read-only questions asked of them.
//!
//! This module changes nothing by itself: the state moves only through the commands of
//! [`super::metadata`], which every controller and broker applies in the same order. It sits
//! below both [`super::metadata`] (which changes it) and [`super::placement`] (which reads it
//! to propose changes), so that neither depends on the other's internals.
//!
//! The serde format of every type here is stored in the quorum's log and snapshots: a field
//! may be added only with `#[serde(default)]`, never renamed or removed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::security::scram::{Mechanism, ScramCredential};

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
    /// Each client listener's advertised address, by listener name (empty for brokers that
    /// registered before listeners were named: `host` and `port` serve every client).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub listeners: BTreeMap<String, ListenerAddress>,
}

/// Where clients of one listener reach a broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerAddress {
    pub host: String,
    pub port: i32,
}

impl BrokerRecord {
    /// The address clients that came in on `listener` use for this broker: that listener's
    /// advertised address, else the broker's registered one.
    pub fn address_for(&self, listener: &str) -> (&str, i32) {
        match self.listeners.get(listener) {
            Some(a) => (a.host.as_str(), a.port),
            None => (self.host.as_str(), self.port),
        }
    }
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
    /// Replicas whose log directory went offline (reported by their broker): they lead
    /// nothing and join no ISR until their broker registers again (a restart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offline: Vec<i32>,
}

impl PartitionRecord {
    /// A new partition on `replicas`: its ISR is the live replicas, led by the first of them
    /// (none live: no leader and an empty ISR); epochs start at 0.
    pub(super) fn new(replicas: Vec<i32>, live: &BTreeSet<i32>) -> Self {
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
            offline: Vec::new(),
        }
    }

    /// The brokers that may lead this partition: the `live` ones whose replica is not offline.
    pub fn leader_candidates(&self, live: &BTreeSet<i32>) -> BTreeSet<i32> {
        live.iter()
            .copied()
            .filter(|b| !self.offline.contains(b))
            .collect()
    }

    /// The preferred leader: the first replica.
    pub fn preferred_leader(&self) -> i32 {
        self.replicas.first().copied().unwrap_or(NO_LEADER)
    }

    /// Sets the leader: a new leader starts a leader epoch; any call starts a partition epoch.
    pub(super) fn set_leader(&mut self, leader: i32) {
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
    /// SCRAM credentials by user and mechanism (never passwords).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scram_credentials: BTreeMap<String, BTreeMap<Mechanism, ScramCredential>>,
}

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

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionRecord> {
        self.topics.get(topic).and_then(|t| {
            usize::try_from(partition)
                .ok()
                .and_then(|p| t.partitions.get(p))
        })
    }
}

/// A topic's `unclean.leader.election.enable`, else `cluster_default`.
pub(super) fn unclean_for(topic: &TopicRecord, cluster_default: bool) -> bool {
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
