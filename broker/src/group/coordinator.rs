//! The group coordinator: drives the [`Group`] state machines, parks JoinGroup and SyncGroup
//! requests until their answers are ready, runs the group timers, and records committed
//! offsets and stable group metadata through the [`OffsetStore`].
//!
//! Group metadata: whenever a group reaches a new stable generation (or changes members while
//! stable) its snapshot is written to `__consumer_offsets`; when it empties, a tombstone. A
//! restarted coordinator restores those groups, so members keep their generation and
//! partitions instead of rebalancing, as with Kafka.
//!
//! Locking: one mutex over the group table, held only for a state-machine step (never across
//! an await or a write). Snapshots are numbered under it and written after it is released;
//! the store drops one that arrives after a later one. Waiting requests hold a oneshot
//! receiver.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::membership::{
    Durable, Effect, Group, GroupLimits, GroupSnapshot, GroupState, JoinOutcome, JoinRequest,
    JoinResult, SyncOutcome, SyncResult,
};
use super::offsets::{CommitPoint, CommittedOffset, OffsetStore, OffsetStoreError};

/// How often the group timers run.
pub const TICK: Duration = Duration::from_millis(100);
/// Extra time a parked request waits beyond its own timeout before giving up.
const WAIT_SLACK: Duration = Duration::from_secs(5);

use crate::clock::now_ms;

#[derive(Default)]
struct Slot {
    group: Option<Group>,
    joins: HashMap<String, oneshot::Sender<JoinResult>>,
    syncs: HashMap<String, oneshot::Sender<SyncResult>>,
    /// What of the group was last made durable (or restored), to write only changes.
    durable: Option<Durable>,
}

/// A group snapshot to write (`None`: a tombstone), numbered in the order it was taken.
type Persist = (String, u64, Option<GroupSnapshot>);

impl Slot {
    /// The snapshot to write if the durable part of the group changed since the last one.
    fn persist(&mut self, group_id: &str, seq: &AtomicU64) -> Option<Persist> {
        let group = self.group.as_ref()?;
        let now = group.durable()?;
        if self.durable.as_ref() == Some(&now) {
            return None;
        }
        let before = self.durable.replace(now.clone());
        if now == Durable::Empty && before.is_none() {
            return None; // never written: nothing to delete
        }
        let seq = seq.fetch_add(1, Ordering::Relaxed) + 1;
        Some((group_id.to_string(), seq, group.snapshot()))
    }

    fn deliver(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Join { member_id, result } => {
                    if let Some(tx) = self.joins.remove(&member_id) {
                        let _ = tx.send(result);
                    }
                }
                Effect::Sync { member_id, result } => {
                    if let Some(tx) = self.syncs.remove(&member_id) {
                        let _ = tx.send(result);
                    }
                }
            }
        }
    }
}

/// Group slots for restored stable groups; their members have a full session timeout from
/// now to show up.
fn restored(
    snapshots: HashMap<String, GroupSnapshot>,
    limits: GroupLimits,
) -> HashMap<String, Slot> {
    let now = now_ms();
    snapshots
        .into_iter()
        .map(|(id, snapshot)| {
            let group = Group::restore(&id, snapshot, limits, now);
            let slot = Slot {
                durable: group.durable(),
                group: Some(group),
                ..Slot::default()
            };
            (id, slot)
        })
        .collect()
}

/// A summary of a group for ListGroups/DescribeGroups.
#[derive(Debug, Clone)]
pub struct GroupSummary {
    pub id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

/// Why a commit is refused for the whole request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitCheck {
    Ok,
    Error(i16),
}

pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Slot>>,
    limits: GroupLimits,
    pub offsets: OffsetStore,
    /// Numbers group snapshots in the order they are taken.
    snapshot_seq: AtomicU64,
}

impl GroupCoordinator {
    /// A coordinator of no group yet: groups come with the offsets partitions this broker
    /// comes to lead ([`load_partition`](Self::load_partition)).
    pub fn new(offsets: OffsetStore, limits: GroupLimits) -> Self {
        Self {
            groups: Mutex::new(HashMap::new()),
            limits,
            offsets,
            snapshot_seq: AtomicU64::new(0),
        }
    }

    /// Starts coordinating the groups of offsets partition `partition` (this broker became
    /// its leader in `leader_epoch`): loads their offsets and resumes their stable
    /// generations, as a restarted coordinator does.
    ///
    /// # Errors
    /// Reading the partition failed; its groups stay uncoordinated here.
    pub fn load_partition(
        &self,
        partition: Arc<crate::replica::Partition>,
        leader_epoch: i32,
    ) -> Result<(), OffsetStoreError> {
        let snapshots = self.offsets.load(partition, leader_epoch)?;
        let restored = restored(snapshots, self.limits);
        let mut groups = self.groups.lock();
        for (id, slot) in restored {
            groups.entry(id).or_insert(slot);
        }
        Ok(())
    }

    /// Stops coordinating the groups of offsets partition `index` (leadership moved): their
    /// state leaves memory, and members waiting in a JoinGroup or SyncGroup are answered
    /// NOT_COORDINATOR, as Kafka does, so that their clients find the new coordinator (a
    /// retriable error, where REBALANCE_IN_PROGRESS would reach the application).
    pub fn unload_partition(&self, index: i32) {
        let count = self.offsets.partition_count();
        let unloaded: Vec<Slot> = {
            let mut groups = self.groups.lock();
            let ids: Vec<String> = groups
                .keys()
                .filter(|id| super::offsets::partition_for(id, count) == index)
                .cloned()
                .collect();
            ids.iter().filter_map(|id| groups.remove(id)).collect()
        };
        for slot in unloaded {
            for (member_id, waiting) in slot.joins {
                let _ = waiting.send(JoinResult::error(ResponseError::NotCoordinator, &member_id));
            }
            for (_, waiting) in slot.syncs {
                let _ = waiting.send(SyncResult::error(ResponseError::NotCoordinator));
            }
        }
        self.offsets.unload(index);
    }

    /// Writes group snapshots taken under the lock (after it is released). A failed write
    /// only costs a rebalance after a restart, so it is logged, not returned.
    fn persist(&self, snapshots: impl IntoIterator<Item = Persist>) {
        for (group, seq, snapshot) in snapshots {
            if let Err(e) = self
                .offsets
                .write_group(&group, seq, snapshot.as_ref(), now_ms())
            {
                warn!(group, error = %e, "cannot write group metadata");
            }
        }
    }

    /// Handles a JoinGroup, waiting until the rebalance round completes if needed.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the wait; the member stays in the group until its session
    /// or the rebalance timeout expires, as with a client that disconnects.
    pub async fn join(&self, group_id: &str, request: JoinRequest) -> JoinResult {
        let wait = Duration::from_millis(request.rebalance_timeout_ms.max(0) as u64) + WAIT_SLACK;
        let rx = {
            let mut groups = self.groups.lock();
            // Only a member without an id creates a group; an id for a group that does not
            // exist is unknown (as in Kafka).
            if !request.member_id.is_empty() && !groups.contains_key(group_id) {
                return JoinResult::error(ResponseError::UnknownMemberId, &request.member_id);
            }
            let slot = groups.entry(group_id.to_string()).or_default();
            let group = slot
                .group
                .get_or_insert_with(|| Group::new(group_id, self.limits));
            let (outcome, effects) = group.join(request, now_ms());
            slot.deliver(effects);
            let persist = slot.persist(group_id, &self.snapshot_seq);
            match outcome {
                JoinOutcome::Immediate(result) => {
                    drop(groups);
                    self.persist(persist);
                    return result;
                }
                JoinOutcome::Pending { member_id } => {
                    let (tx, rx) = oneshot::channel();
                    if let Some(old) = slot.joins.insert(member_id.clone(), tx) {
                        let _ = old.send(JoinResult::error(
                            ResponseError::RebalanceInProgress,
                            &member_id,
                        ));
                    }
                    (member_id, rx, persist)
                }
            }
        };
        let (member_id, rx, persist) = rx;
        self.persist(persist);
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(result)) => result,
            // The group left this coordinator without an answer for the member.
            Ok(Err(_)) => JoinResult::error(ResponseError::NotCoordinator, &member_id),
            Err(_) => JoinResult::error(ResponseError::RebalanceInProgress, &member_id),
        }
    }

    /// Handles a SyncGroup, waiting for the leader's assignment if needed.
    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncResult {
        let (rx, wait, persist) = {
            let mut groups = self.groups.lock();
            let Some(slot) = groups.get_mut(group_id) else {
                return SyncResult::error(ResponseError::UnknownMemberId);
            };
            let Some(group) = slot.group.as_mut() else {
                return SyncResult::error(ResponseError::UnknownMemberId);
            };
            let wait = group
                .member(member_id)
                .map_or(0, |m| m.rebalance_timeout_ms.max(0) as u64);
            let (outcome, effects) = group.sync(member_id, generation, assignments, now_ms());
            slot.deliver(effects);
            let persist = slot.persist(group_id, &self.snapshot_seq);
            match outcome {
                SyncOutcome::Immediate(result) => {
                    drop(groups);
                    // the leader's answer waits for the new generation to be durable
                    self.persist(persist);
                    return result;
                }
                SyncOutcome::Pending => {
                    let (tx, rx) = oneshot::channel();
                    slot.syncs.insert(member_id.to_string(), tx);
                    (rx, Duration::from_millis(wait) + WAIT_SLACK, persist)
                }
            }
        };
        self.persist(persist);
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => SyncResult::error(ResponseError::NotCoordinator),
            Err(_) => SyncResult::error(ResponseError::RebalanceInProgress),
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        let mut groups = self.groups.lock();
        match groups.get_mut(group_id).and_then(|s| s.group.as_mut()) {
            Some(group) => group
                .heartbeat(member_id, instance_id, generation, now_ms())
                .map_or_else(|e| e.code(), |()| 0),
            None => ResponseError::UnknownMemberId.code(),
        }
    }

    /// Removes members; returns one error code per member.
    pub fn leave(&self, group_id: &str, members: &[(String, Option<String>)]) -> Vec<i16> {
        let mut groups = self.groups.lock();
        let Some(slot) = groups.get_mut(group_id) else {
            return vec![ResponseError::UnknownMemberId.code(); members.len()];
        };
        let Some(group) = slot.group.as_mut() else {
            return vec![ResponseError::UnknownMemberId.code(); members.len()];
        };
        let (result, effects) = group.leave(members, now_ms());
        slot.deliver(effects);
        let persist = slot.persist(group_id, &self.snapshot_seq);
        drop(groups);
        self.persist(persist);
        result
            .into_iter()
            .map(|r| r.map_or_else(|e| e.code(), |()| 0))
            .collect()
    }

    /// Runs the timers of every group once, and forgets idle groups.
    pub fn tick(&self) {
        let now = now_ms();
        let mut groups = self.groups.lock();
        let mut persist = Vec::new();
        for (id, slot) in groups.iter_mut() {
            if let Some(group) = slot.group.as_mut() {
                let effects = group.tick(now);
                slot.deliver(effects);
                persist.extend(slot.persist(id, &self.snapshot_seq));
            }
        }
        groups.retain(|_, slot| {
            let idle = slot.group.as_ref().is_none_or(Group::is_idle);
            !(idle && slot.joins.is_empty() && slot.syncs.is_empty())
        });
        drop(groups);
        self.persist(persist);
    }

    /// Runs [`tick`](Self::tick) every [`TICK`] until `shutdown`.
    pub async fn run_timers(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => self.tick(),
            }
        }
    }

    /// Whether a commit from this member/generation is allowed (see
    /// [`Group::validate_commit`]). A group without members that only has committed offsets
    /// takes only "simple" commits (no member, generation -1); a generation for a group that
    /// does not exist at all is stale.
    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> CommitCheck {
        let mut groups = self.groups.lock();
        let code = match groups.get_mut(group_id).and_then(|s| s.group.as_mut()) {
            Some(group) => group.validate_commit(member_id, instance_id, generation, now_ms()),
            None if generation < 0 && member_id.is_empty() && instance_id.is_none() => Ok(()),
            None if self.offsets.has_group(group_id) => Err(ResponseError::UnknownMemberId),
            None => Err(ResponseError::IllegalGeneration),
        };
        if let Err(error) = code {
            CommitCheck::Error(error.code())
        } else {
            CommitCheck::Ok
        }
    }

    /// Writes committed offsets (after [`check_commit`](Self::check_commit)).
    ///
    /// # Errors
    /// The offsets could not be made durable.
    pub fn commit(
        &self,
        group_id: &str,
        entries: Vec<((String, i32), CommittedOffset)>,
    ) -> Result<Option<CommitPoint>, OffsetStoreError> {
        let entries: Vec<_> = entries.into_iter().map(|(k, v)| (k, Some(v))).collect();
        self.offsets.write(group_id, &entries, now_ms())
    }

    /// Deletes committed offsets of partitions.
    ///
    /// # Errors
    /// The deletion could not be made durable.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Option<CommitPoint>, OffsetStoreError> {
        let entries: Vec<_> = partitions.iter().map(|k| (k.clone(), None)).collect();
        self.offsets.write(group_id, &entries, now_ms())
    }

    /// Summary of a group, or `None` when it is unknown (no members and no offsets).
    pub fn describe(&self, group_id: &str) -> Option<GroupSummary> {
        let groups = self.groups.lock();
        match groups.get(group_id).and_then(|s| s.group.as_ref()) {
            Some(group) => {
                let protocol = group.protocol.clone().unwrap_or_default();
                Some(GroupSummary {
                    id: group.id.clone(),
                    state: group.state.name(),
                    protocol_type: group.protocol_type.clone().unwrap_or_default(),
                    protocol: protocol.clone(),
                    members: group
                        .members
                        .iter()
                        .map(|m| {
                            let metadata = m
                                .protocols
                                .iter()
                                .find(|(n, _)| *n == protocol)
                                .map(|(_, b)| b.clone())
                                .unwrap_or_default();
                            (
                                m.id.clone(),
                                m.instance_id.clone(),
                                m.client_id.clone(),
                                m.client_host.clone(),
                                metadata,
                                m.assignment.clone(),
                            )
                        })
                        .collect(),
                })
            }
            None if self.offsets.has_group(group_id) => Some(GroupSummary {
                id: group_id.to_string(),
                state: GroupState::Empty.name(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            }),
            None => None,
        }
    }

    /// Every known group (with members or committed offsets).
    pub fn list(&self) -> Vec<GroupSummary> {
        let mut ids: Vec<String> = self.groups.lock().keys().cloned().collect();
        ids.extend(self.offsets.groups());
        ids.sort();
        ids.dedup();
        ids.iter().filter_map(|id| self.describe(id)).collect()
    }

    /// Deletes a group with no members, and its offsets. Returns the error code.
    pub fn delete_group(&self, group_id: &str) -> i16 {
        {
            let mut groups = self.groups.lock();
            if let Some(slot) = groups.get(group_id) {
                if slot.group.as_ref().is_some_and(|g| !g.is_empty()) {
                    return ResponseError::NonEmptyGroup.code();
                }
                groups.remove(group_id);
            } else if !self.offsets.has_group(group_id) {
                return ResponseError::GroupIdNotFound.code();
            }
        }
        let partitions: Vec<(String, i32)> =
            self.offsets.group_offsets(group_id).into_keys().collect();
        match self.delete_offsets(group_id, &partitions) {
            Ok(_) => 0,
            Err(_) => 15, // COORDINATOR_NOT_AVAILABLE: retriable
        }
    }

    /// Topics the group's members currently subscribe to (consumer protocol only).
    pub fn subscribed_topics(&self, group_id: &str) -> Vec<String> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        let Some(summary) = self.describe(group_id) else {
            return Vec::new();
        };
        if summary.protocol_type != "consumer" {
            return Vec::new();
        }
        let mut topics = Vec::new();
        for (_, _, _, _, metadata, _) in summary.members {
            let mut buf = metadata.clone();
            if buf.len() < 2 {
                continue;
            }
            let version = i16::from_be_bytes([buf[0], buf[1]]);
            let _ = bytes::Buf::get_i16(&mut buf);
            if let Ok(subscription) =
                ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3))
            {
                topics.extend(subscription.topics.iter().map(|t| t.as_str().to_string()));
            }
        }
        topics.sort();
        topics.dedup();
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join_request() -> JoinRequest {
        JoinRequest {
            member_id: String::new(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 60_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::new())],
            require_known_member_id: false,
            supports_skip_assignment: false,
        }
    }

    #[tokio::test]
    async fn a_join_waiting_when_the_group_moves_away_is_told_not_coordinator() {
        let offsets = OffsetStore::new(4);
        let limits = GroupLimits {
            initial_rebalance_delay_ms: 60_000,
            ..GroupLimits::default()
        };
        let coordinator = Arc::new(GroupCoordinator::new(offsets, limits));
        let joining = {
            let coordinator = Arc::clone(&coordinator);
            tokio::spawn(async move { coordinator.join("g", join_request()).await })
        };
        // The first member of an empty group waits out the initial rebalance delay.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while coordinator
            .groups
            .lock()
            .get("g")
            .is_none_or(|s| s.joins.is_empty())
        {
            assert!(tokio::time::Instant::now() < deadline, "join never waited");
            tokio::task::yield_now().await;
        }
        coordinator.unload_partition(super::super::offsets::partition_for("g", 4));
        let answer = tokio::time::timeout(Duration::from_secs(10), joining)
            .await
            .expect("answered at once")
            .expect("join task");
        assert_eq!(answer.error, Some(ResponseError::NotCoordinator));
        assert!(coordinator.describe("g").is_none(), "the group left memory");
    }
}
