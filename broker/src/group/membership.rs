//! The classic consumer-group protocol as a pure state machine: members join, the group
//! rebalances (PreparingRebalance → CompletingRebalance → Stable), the leader's assignment is
//! handed out by SyncGroup, heartbeats keep members alive, and members that leave or miss
//! their session timeout trigger a new rebalance.
//!
//! Nothing here does I/O or waits: every operation takes the current time and returns the
//! answers that are ready now as [`Effect`]s. The coordinator keeps the waiting requests and
//! delivers those effects to them, and calls [`Group::tick`] periodically for the timers.

use std::collections::BTreeSet;

use bytes::Bytes;
use kafka_protocol::ResponseError;

/// Limits that apply to every group.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// Wait after the first member joins an empty group, for others to join the same round.
    pub initial_rebalance_delay_ms: i64,
    pub max_members: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_members: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in ListGroups/DescribeGroups.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
            Self::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// (protocol name, metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// Deadline of the member's session.
    pub expires_at_ms: i64,
    /// The member has (re)joined in the current rebalance round.
    pub joined: bool,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A JoinGroup request as the state machine needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member without an id first gets one with MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
    /// JoinGroup v9+ (KIP-814): the member understands `skip_assignment`.
    pub supports_skip_assignment: bool,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    /// `None` when the join succeeded.
    pub error: Option<ResponseError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only for the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// The leader must not compute an assignment: the group keeps its current one (a static
    /// leader that restarted into a stable group, KIP-814).
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(error: ResponseError, member_id: &str) -> Self {
        Self {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    /// `None` when the sync succeeded.
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ResponseError) -> Self {
        Self {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// An answer ready for a waiting request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Join {
        member_id: String,
        result: JoinResult,
    },
    Sync {
        member_id: String,
        result: SyncResult,
    },
}

/// What happened to a JoinGroup: answered now, or parked until the rebalance completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Answer now (an error, MEMBER_ID_REQUIRED, or the current generation).
    Immediate(JoinResult),
    /// Wait for an [`Effect::Join`] for this member id.
    Pending { member_id: String },
}

/// What happened to a SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    Immediate(SyncResult),
    Pending,
}

/// What survives a coordinator restart of a stable group (Kafka's `GroupMetadataValue`): its
/// generation, protocol, leader and members with their assignments, so members carry on at
/// their generation instead of rebalancing (and briefly sharing partitions) after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<MemberSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// What of a group should be durable now: a stable generation, that it is empty, or nothing
/// (mid-rebalance states are not persisted; a restart falls back to the last stable one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durable {
    Stable {
        generation: i32,
        leader: Option<String>,
        member_ids: Vec<String>,
    },
    Empty,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// Members in join order (the first is the default leader).
    pub members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED and their expiry.
    pending_members: Vec<(String, i64)>,
    /// Members whose SyncGroup waits for the leader's assignment.
    awaiting_sync: BTreeSet<String>,
    /// When the current join phase ends, whoever has rejoined by then.
    rebalance_deadline_ms: Option<i64>,
    /// End of the initial delay of a rebalance that started from Empty.
    initial_delay_until_ms: Option<i64>,
    limits: GroupLimits,
}

impl Group {
    pub fn new(id: &str, limits: GroupLimits) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending_members: Vec::new(),
            awaiting_sync: BTreeSet::new(),
            rebalance_deadline_ms: None,
            initial_delay_until_ms: None,
            limits,
        }
    }

    /// Rebuilds a stable group from its snapshot after a restart. Every member gets a fresh
    /// session: it has until its session timeout to heartbeat the restarted coordinator.
    pub fn restore(id: &str, snapshot: GroupSnapshot, limits: GroupLimits, now_ms: i64) -> Self {
        let mut group = Self::new(id, limits);
        group.generation = snapshot.generation;
        group.protocol_type = Some(snapshot.protocol_type);
        group.leader = snapshot.leader;
        let protocol = snapshot.protocol.clone().unwrap_or_default();
        group.members = snapshot
            .members
            .into_iter()
            .map(|m| Member {
                id: m.id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocols: vec![(protocol.clone(), m.subscription)],
                assignment: m.assignment,
                expires_at_ms: now_ms + i64::from(m.session_timeout_ms),
                joined: false,
            })
            .collect();
        group.protocol = snapshot.protocol;
        if !group.members.is_empty() {
            group.state = GroupState::Stable;
        }
        group
    }

    /// The part of the group that must be durable now, if any. Cheap enough to ask after
    /// every operation; [`snapshot`](Self::snapshot) then gives the record to write.
    pub fn durable(&self) -> Option<Durable> {
        match self.state {
            GroupState::Stable => Some(Durable::Stable {
                generation: self.generation,
                leader: self.leader.clone(),
                member_ids: self.members.iter().map(|m| m.id.clone()).collect(),
            }),
            GroupState::Empty => Some(Durable::Empty),
            _ => None,
        }
    }

    /// The stable group as it is to be stored; `None` when it has no members (a tombstone).
    pub fn snapshot(&self) -> Option<GroupSnapshot> {
        if self.state != GroupState::Stable || self.members.is_empty() {
            return None;
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        Some(GroupSnapshot {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .iter()
                .map(|m| MemberSnapshot {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn new_member_id(&self, client_id: &str, instance_id: Option<&str>) -> String {
        let prefix = instance_id.unwrap_or(client_id);
        format!("{prefix}-{}", uuid::Uuid::new_v4())
    }

    /// Protocols every member (and the candidate) supports, in the candidate's preference.
    fn common_protocol_ok(&self, request: &JoinRequest) -> bool {
        if request.protocols.is_empty() {
            return false;
        }
        if let Some(kind) = &self.protocol_type {
            if !self.members.is_empty() && kind != &request.protocol_type {
                return false;
            }
        }
        request.protocols.iter().any(|(name, _)| {
            self.members
                .iter()
                .filter(|m| m.id != request.member_id)
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Handles a JoinGroup.
    pub fn join(&mut self, request: JoinRequest, now_ms: i64) -> (JoinOutcome, Vec<Effect>) {
        let limits = self.limits;
        if request.session_timeout_ms < limits.min_session_timeout_ms
            || request.session_timeout_ms > limits.max_session_timeout_ms
        {
            return (
                JoinOutcome::Immediate(JoinResult::error(
                    ResponseError::InvalidSessionTimeout,
                    &request.member_id,
                )),
                vec![],
            );
        }
        if !self.common_protocol_ok(&request) {
            return (
                JoinOutcome::Immediate(JoinResult::error(
                    ResponseError::InconsistentGroupProtocol,
                    &request.member_id,
                )),
                vec![],
            );
        }
        let mut request = request;
        let new_member = request.member_id.is_empty();
        if new_member {
            // A static member rejoining under a new member id replaces its old self.
            if let Some(instance) = request.instance_id.clone() {
                if let Some(old) = self
                    .members
                    .iter()
                    .find(|m| m.instance_id.as_deref() == Some(&instance))
                    .map(|m| m.id.clone())
                {
                    let new_id = self.new_member_id(&request.client_id, Some(&instance));
                    return self.replace_static_member(&old, new_id, request, now_ms);
                }
                request.member_id = self.new_member_id(&request.client_id, Some(&instance));
            } else if request.require_known_member_id {
                let id = self.new_member_id(&request.client_id, None);
                self.pending_members
                    .push((id.clone(), now_ms + i64::from(request.session_timeout_ms)));
                return (
                    JoinOutcome::Immediate(JoinResult::error(ResponseError::MemberIdRequired, &id)),
                    vec![],
                );
            } else {
                request.member_id = self.new_member_id(&request.client_id, None);
            }
        } else if let Some(instance) = &request.instance_id {
            let owner = self
                .members
                .iter()
                .find(|m| m.instance_id.as_deref() == Some(instance.as_str()));
            if owner.is_some_and(|m| m.id != request.member_id) {
                return (
                    JoinOutcome::Immediate(JoinResult::error(
                        ResponseError::FencedInstanceId,
                        &request.member_id,
                    )),
                    vec![],
                );
            }
        }
        let known = self.member(&request.member_id).is_some();
        let was_pending = self
            .pending_members
            .iter()
            .any(|(id, _)| *id == request.member_id);
        // A member id the group did not hand out (or has since removed) is refused at every
        // version, static members included: the client resets its id and joins as new.
        if !new_member && !known && !was_pending {
            return (
                JoinOutcome::Immediate(JoinResult::error(
                    ResponseError::UnknownMemberId,
                    &request.member_id,
                )),
                vec![],
            );
        }
        self.pending_members
            .retain(|(id, _)| *id != request.member_id);
        if !known && self.members.len() >= limits.max_members {
            return (
                JoinOutcome::Immediate(JoinResult::error(
                    ResponseError::GroupMaxSizeReached,
                    &request.member_id,
                )),
                vec![],
            );
        }

        let member_id = request.member_id.clone();
        let effects = Vec::new();
        if known {
            let unchanged = self
                .member(&member_id)
                .is_some_and(|m| m.protocols == request.protocols);
            let is_leader = self.leader.as_deref() == Some(member_id.as_str());
            // A follower rejoining with the same metadata while the group is settled just gets
            // the current generation back.
            if unchanged
                && !is_leader
                && matches!(
                    self.state,
                    GroupState::Stable | GroupState::CompletingRebalance
                )
            {
                let result = self.join_result_for(&member_id);
                if let Some(m) = self.member_mut(&member_id) {
                    m.expires_at_ms = now_ms + i64::from(m.session_timeout_ms);
                }
                return (JoinOutcome::Immediate(result), effects);
            }
            if let Some(m) = self.member_mut(&member_id) {
                m.protocols = request.protocols.clone();
                m.session_timeout_ms = request.session_timeout_ms;
                m.rebalance_timeout_ms = request.rebalance_timeout_ms;
                m.joined = true;
                m.expires_at_ms = now_ms + i64::from(request.session_timeout_ms);
            }
        } else {
            self.members.push(Member {
                id: member_id.clone(),
                instance_id: request.instance_id.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocols: request.protocols.clone(),
                assignment: Bytes::new(),
                expires_at_ms: now_ms + i64::from(request.session_timeout_ms),
                joined: true,
            });
        }
        self.protocol_type = Some(request.protocol_type.clone());
        self.rejoin_round(member_id, effects, now_ms)
    }

    fn replace_static_member(
        &mut self,
        old: &str,
        new_id: String,
        request: JoinRequest,
        now_ms: i64,
    ) -> (JoinOutcome, Vec<Effect>) {
        let mut effects = Vec::new();
        // The old incarnation's waiting requests are fenced.
        effects.push(Effect::Join {
            member_id: old.to_string(),
            result: JoinResult::error(ResponseError::FencedInstanceId, old),
        });
        if self.awaiting_sync.remove(old) {
            effects.push(Effect::Sync {
                member_id: old.to_string(),
                result: SyncResult::error(ResponseError::FencedInstanceId),
            });
        }
        let was_leader = self.leader.as_deref() == Some(old);
        if let Some(m) = self.member_mut(old) {
            m.id = new_id.clone();
            m.client_id = request.client_id.clone();
            m.session_timeout_ms = request.session_timeout_ms;
            m.rebalance_timeout_ms = request.rebalance_timeout_ms;
            m.protocols = request.protocols.clone();
            m.expires_at_ms = now_ms + i64::from(request.session_timeout_ms);
        }
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        // As in Kafka, a stable group only rebalances for the new incarnation if the protocol
        // the group would select changes; otherwise it keeps its assignment (KIP-345).
        if self.state == GroupState::Stable && self.select_protocol() == self.protocol {
            let mut result = self.join_result_for(&new_id);
            if was_leader {
                if request.supports_skip_assignment {
                    // v9+: it learns that it leads, with the members, but must not assign.
                    result.members = self.member_list();
                    result.skip_assignment = true;
                } else {
                    // Before v9 it is told that its old incarnation leads, so that it does not
                    // compute an assignment the stable group would ignore.
                    result.leader = old.to_string();
                }
            }
            return (JoinOutcome::Immediate(result), effects);
        }
        // Otherwise the new incarnation takes part in a rebalance; only now has it (re)joined.
        if let Some(m) = self.member_mut(&new_id) {
            m.joined = true;
        }
        self.rejoin_round(new_id, effects, now_ms)
    }

    /// Takes `member_id` into the current rebalance round (starting one if needed) and returns
    /// its answer if the round completed at once, else parks it.
    fn rejoin_round(
        &mut self,
        member_id: String,
        mut effects: Vec<Effect>,
        now_ms: i64,
    ) -> (JoinOutcome, Vec<Effect>) {
        if self.state != GroupState::PreparingRebalance {
            effects.extend(self.prepare_rebalance(now_ms));
        }
        effects.extend(self.try_complete_join(now_ms));
        let mine = effects
            .iter()
            .position(|e| matches!(e, Effect::Join { member_id: m, .. } if *m == member_id));
        match mine.map(|i| effects.remove(i)) {
            Some(Effect::Join { result, .. }) => (JoinOutcome::Immediate(result), effects),
            _ => (JoinOutcome::Pending { member_id }, effects),
        }
    }

    fn join_result_for(&self, member_id: &str) -> JoinResult {
        JoinResult {
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }

    fn member_list(&self) -> Vec<(String, Option<String>, Bytes)> {
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members
            .iter()
            .map(|m| {
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect()
    }

    /// Starts a rebalance: members must rejoin; waiting syncs learn of it.
    fn prepare_rebalance(&mut self, now_ms: i64) -> Vec<Effect> {
        let effects: Vec<Effect> = std::mem::take(&mut self.awaiting_sync)
            .into_iter()
            .map(|member_id| Effect::Sync {
                member_id,
                result: SyncResult::error(ResponseError::RebalanceInProgress),
            })
            .collect();
        let from_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        let timeout = self
            .members
            .iter()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        self.rebalance_deadline_ms = Some(now_ms + timeout);
        self.initial_delay_until_ms =
            from_empty.then(|| now_ms + self.limits.initial_rebalance_delay_ms.min(timeout));
        effects
    }

    /// Completes the join phase if every member has rejoined (and any initial delay is over).
    fn try_complete_join(&mut self, now_ms: i64) -> Vec<Effect> {
        if self.state != GroupState::PreparingRebalance {
            return Vec::new();
        }
        if self
            .initial_delay_until_ms
            .is_some_and(|until| now_ms < until)
        {
            return Vec::new();
        }
        if self.members.iter().all(|m| m.joined) {
            self.complete_join()
        } else {
            Vec::new()
        }
    }

    /// Ends the join phase with whoever has joined: new generation, protocol and leader.
    fn complete_join(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        let (joined, dropped): (Vec<Member>, Vec<Member>) = std::mem::take(&mut self.members)
            .into_iter()
            .partition(|m| m.joined);
        self.members = joined;
        for m in dropped {
            effects.push(Effect::Join {
                member_id: m.id.clone(),
                result: JoinResult::error(ResponseError::UnknownMemberId, &m.id),
            });
        }
        self.rebalance_deadline_ms = None;
        self.initial_delay_until_ms = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return effects;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| self.member(l).is_none())
        {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        let leader = self.leader.clone().unwrap_or_default();
        let list = self.member_list();
        for m in &mut self.members {
            m.joined = false;
        }
        for m in &self.members {
            let mut result = self.join_result_for(&m.id);
            if m.id == leader {
                result.members = list.clone();
            }
            effects.push(Effect::Join {
                member_id: m.id.clone(),
                result,
            });
        }
        effects
    }

    /// The protocol all members support, chosen by the members' preferences (each member votes
    /// for its most preferred candidate; ties go to the first member's preference).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .collect();
        let mut best: Option<(&String, usize)> = None;
        for candidate in &candidates {
            let votes = self
                .members
                .iter()
                .filter(|m| {
                    m.protocols
                        .iter()
                        .map(|(n, _)| n)
                        .find(|n| candidates.contains(n))
                        == Some(*candidate)
                })
                .count();
            if best.is_none_or(|(_, v)| votes > v) {
                best = Some((candidate, votes));
            }
        }
        best.map(|(name, _)| name.clone())
    }

    /// Handles a SyncGroup.
    pub fn sync(
        &mut self,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now_ms: i64,
    ) -> (SyncOutcome, Vec<Effect>) {
        let Some(member) = self.member_mut(member_id) else {
            return (
                SyncOutcome::Immediate(SyncResult::error(ResponseError::UnknownMemberId)),
                vec![],
            );
        };
        member.expires_at_ms = now_ms + i64::from(member.session_timeout_ms);
        if generation != self.generation {
            return (
                SyncOutcome::Immediate(SyncResult::error(ResponseError::IllegalGeneration)),
                vec![],
            );
        }
        match self.state {
            GroupState::PreparingRebalance => (
                SyncOutcome::Immediate(SyncResult::error(ResponseError::RebalanceInProgress)),
                vec![],
            ),
            GroupState::Stable => (
                SyncOutcome::Immediate(self.sync_result_for(member_id)),
                vec![],
            ),
            GroupState::Empty | GroupState::Dead => (
                SyncOutcome::Immediate(SyncResult::error(ResponseError::UnknownMemberId)),
                vec![],
            ),
            GroupState::CompletingRebalance => {
                self.awaiting_sync.insert(member_id.to_string());
                if self.leader.as_deref() != Some(member_id) {
                    return (SyncOutcome::Pending, vec![]);
                }
                for m in &mut self.members {
                    m.assignment = assignments
                        .iter()
                        .find(|(id, _)| *id == m.id)
                        .map(|(_, a)| a.clone())
                        .unwrap_or_default();
                }
                self.state = GroupState::Stable;
                let waiting = std::mem::take(&mut self.awaiting_sync);
                let mut effects: Vec<Effect> = waiting
                    .into_iter()
                    .map(|id| Effect::Sync {
                        result: self.sync_result_for(&id),
                        member_id: id,
                    })
                    .collect();
                let mine = effects
                    .iter()
                    .position(|e| matches!(e, Effect::Sync { member_id: m, .. } if m == member_id));
                match mine.map(|i| effects.remove(i)) {
                    Some(Effect::Sync { result, .. }) => (SyncOutcome::Immediate(result), effects),
                    _ => (
                        SyncOutcome::Immediate(self.sync_result_for(member_id)),
                        effects,
                    ),
                }
            }
        }
    }

    fn sync_result_for(&self, member_id: &str) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment: self
                .member(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// Whether `instance_id` belongs to a static member other than `member_id` (an older
    /// incarnation talking after its replacement joined): such a request is fenced.
    fn is_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id.is_some_and(|instance| {
            self.members
                .iter()
                .any(|m| m.instance_id.as_deref() == Some(instance) && m.id != member_id)
        })
    }

    /// Handles a Heartbeat; returns its error, if any. As in Kafka, membership and generation
    /// are checked before the state, so a stale member learns that it is stale even while the
    /// group rebalances.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        if self.is_fenced(member_id, instance_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        let state = self.state;
        let current = self.generation;
        let Some(member) = self.member_mut(member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if generation != current {
            return Err(ResponseError::IllegalGeneration);
        }
        member.expires_at_ms = now_ms + i64::from(member.session_timeout_ms);
        match state {
            GroupState::Empty | GroupState::Dead => Err(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// Whether an OffsetCommit from this member and generation may be written (Kafka's
    /// `validateOffsetCommit`); keeps the member's session alive when it may.
    ///
    /// Commits are allowed while the group prepares a rebalance: members learn of the
    /// rebalance from their next heartbeat and commit what they processed before rejoining
    /// (eager assignors commit in their revocation callback). Only between JoinGroup and
    /// SyncGroup (CompletingRebalance) is a commit refused with REBALANCE_IN_PROGRESS. A
    /// commit without member and generation (a "simple" consumer) is allowed only while the
    /// group has no members.
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if generation < 0 && member_id.is_empty() && instance_id.is_none() {
            return if self.state == GroupState::Empty {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId)
            };
        }
        if self.is_fenced(member_id, instance_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        let current = self.generation;
        let state = self.state;
        let Some(member) = self.member_mut(member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if generation != current {
            return Err(ResponseError::IllegalGeneration);
        }
        match state {
            GroupState::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => {
                member.expires_at_ms = now_ms + i64::from(member.session_timeout_ms);
                Ok(())
            }
        }
    }

    /// Removes members (LeaveGroup); returns each one's outcome and the effects.
    pub fn leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        now_ms: i64,
    ) -> (Vec<Result<(), ResponseError>>, Vec<Effect>) {
        let mut results = Vec::with_capacity(leaving.len());
        let mut effects = Vec::new();
        let mut removed_any = false;
        for (member_id, instance_id) in leaving {
            let found = self.members.iter().position(|m| {
                if member_id.is_empty() {
                    instance_id.is_some() && m.instance_id == *instance_id
                } else {
                    m.id == *member_id
                }
            });
            match found {
                Some(i)
                    if instance_id.is_some()
                        && !member_id.is_empty()
                        && self.members[i].instance_id != *instance_id =>
                {
                    results.push(Err(ResponseError::FencedInstanceId));
                }
                Some(i) => {
                    let m = self.members.remove(i);
                    effects.extend(self.forget(&m.id));
                    results.push(Ok(()));
                    removed_any = true;
                }
                None => results.push(Err(ResponseError::UnknownMemberId)),
            }
        }
        if removed_any {
            effects.extend(self.after_removal(now_ms));
        }
        (results, effects)
    }

    /// Answers the waiting requests of a removed member.
    fn forget(&mut self, member_id: &str) -> Vec<Effect> {
        let mut effects = vec![Effect::Join {
            member_id: member_id.to_string(),
            result: JoinResult::error(ResponseError::UnknownMemberId, member_id),
        }];
        if self.awaiting_sync.remove(member_id) {
            effects.push(Effect::Sync {
                member_id: member_id.to_string(),
                result: SyncResult::error(ResponseError::UnknownMemberId),
            });
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        effects
    }

    fn after_removal(&mut self, now_ms: i64) -> Vec<Effect> {
        if self.members.is_empty() && self.state != GroupState::PreparingRebalance {
            self.state = GroupState::Empty;
            self.generation += 1;
            self.protocol = None;
            self.leader = None;
            return self.prepare_then_empty();
        }
        let mut effects = Vec::new();
        if self.state != GroupState::PreparingRebalance {
            effects.extend(self.prepare_rebalance(now_ms));
            self.initial_delay_until_ms = None;
        }
        effects.extend(self.try_complete_join(now_ms));
        effects
    }

    fn prepare_then_empty(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.awaiting_sync)
            .into_iter()
            .map(|member_id| Effect::Sync {
                member_id,
                result: SyncResult::error(ResponseError::UnknownMemberId),
            })
            .collect()
    }

    /// Advances the timers: expires members whose session ran out (except those parked in a
    /// join), ends the join phase at its deadline, and drops stale pending member ids.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        self.pending_members
            .retain(|(_, expires)| *expires > now_ms);
        let mut effects = Vec::new();
        let joining = self.state == GroupState::PreparingRebalance;
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.expires_at_ms <= now_ms && !(joining && m.joined))
            .map(|m| m.id.clone())
            .collect();
        if !expired.is_empty() {
            self.members.retain(|m| !expired.contains(&m.id));
            for id in &expired {
                effects.extend(self.forget(id));
            }
            effects.extend(self.after_removal(now_ms));
        }
        if self.state == GroupState::PreparingRebalance {
            if self.rebalance_deadline_ms.is_some_and(|d| now_ms >= d) {
                effects.extend(self.complete_join());
            } else {
                effects.extend(self.try_complete_join(now_ms));
            }
        }
        effects
    }

    /// Whether the group holds nothing worth keeping: no members, none about to join, no
    /// rebalance under way. The coordinator forgets such a group (its committed offsets, if
    /// any, stay in the offset store).
    pub fn is_idle(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
    }

    /// Whether the group has no members (it may be deleted).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.state != GroupState::PreparingRebalance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: i32 = 10_000;

    fn limits() -> GroupLimits {
        GroupLimits {
            initial_rebalance_delay_ms: 0,
            ..GroupLimits::default()
        }
    }

    fn join_req(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            require_known_member_id: true,
            supports_skip_assignment: false,
        }
    }

    /// Joins a new member through MEMBER_ID_REQUIRED; returns its id and the outcome.
    fn join_new(group: &mut Group, now: i64) -> (String, JoinOutcome, Vec<Effect>) {
        let (outcome, _) = group.join(join_req("", &["range"]), now);
        let JoinOutcome::Immediate(first) = outcome else {
            panic!("expected MEMBER_ID_REQUIRED")
        };
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let (outcome, effects) = group.join(join_req(&first.member_id, &["range"]), now);
        (first.member_id, outcome, effects)
    }

    #[test]
    fn a_lone_member_becomes_leader_and_gets_its_assignment() {
        let mut group = Group::new("g", limits());
        let (id, outcome, _) = join_new(&mut group, 0);
        let JoinOutcome::Immediate(result) = outcome else {
            panic!("single member completes at once")
        };
        assert_eq!(
            (result.generation_id, result.leader.as_str()),
            (1, id.as_str())
        );
        assert_eq!(result.members.len(), 1);
        let (sync, _) = group.sync(&id, 1, vec![(id.clone(), Bytes::from_static(b"a"))], 0);
        assert_eq!(
            sync,
            SyncOutcome::Immediate(SyncResult {
                error: None,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                assignment: Bytes::from_static(b"a")
            })
        );
        assert_eq!(group.state, GroupState::Stable);
        assert_eq!(group.heartbeat(&id, None, 1, 1), Ok(()));
    }

    #[test]
    fn a_second_member_triggers_a_rebalance_that_waits_for_the_first() {
        let mut group = Group::new("g", limits());
        let (a, _, _) = join_new(&mut group, 0);
        group.sync(&a, 1, vec![(a.clone(), Bytes::from_static(b"all"))], 0);
        let (b, outcome, _) = join_new(&mut group, 10);
        assert!(
            matches!(outcome, JoinOutcome::Pending { .. }),
            "b waits for a to rejoin"
        );
        assert_eq!(
            group.heartbeat(&a, None, 1, 20),
            Err(ResponseError::RebalanceInProgress)
        );
        let (outcome, effects) = group.join(join_req(&a, &["range"]), 30);
        let JoinOutcome::Immediate(leader) = outcome else {
            panic!("a completes the round")
        };
        assert_eq!((leader.generation_id, leader.members.len()), (2, 2));
        assert!(effects.iter().any(|e| matches!(e, Effect::Join { member_id, result } if *member_id == b && result.generation_id == 2 && result.members.is_empty())));
        let (pending, _) = group.sync(&b, 2, vec![], 40);
        assert_eq!(pending, SyncOutcome::Pending);
        let (_, effects) = group.sync(
            &a,
            2,
            vec![
                (a.clone(), Bytes::from_static(b"p0")),
                (b.clone(), Bytes::from_static(b"p1")),
            ],
            50,
        );
        assert!(effects.iter().any(|e| matches!(e, Effect::Sync { member_id, result } if *member_id == b && result.assignment == Bytes::from_static(b"p1"))));
    }

    #[test]
    fn a_member_that_misses_its_session_is_removed_and_others_rebalance() {
        let mut group = Group::new("g", limits());
        let (a, _, _) = join_new(&mut group, 0);
        let (b, _, _) = join_new(&mut group, 0);
        // a rejoins, completing the round that b's arrival started
        group.join(join_req(&a, &["range"]), 0);
        assert_eq!(group.generation, 2);
        group.sync(&a, 2, vec![], 0);
        // only a heartbeats
        assert_eq!(group.heartbeat(&a, None, 2, 9_000), Ok(()));
        let effects = group.tick(SESSION as i64 + 1);
        assert!(group.member(&b).is_none());
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert!(effects
            .iter()
            .all(|e| !matches!(e, Effect::Join { member_id, .. } if *member_id == a)));
        let (outcome, _) = group.join(join_req(&a, &["range"]), SESSION as i64 + 2);
        assert!(
            matches!(outcome, JoinOutcome::Immediate(r) if r.generation_id == 3 && r.members.len() == 1)
        );
    }

    #[test]
    fn stale_generations_and_unknown_members_are_refused() {
        let mut group = Group::new("g", limits());
        let (a, _, _) = join_new(&mut group, 0);
        assert_eq!(
            group.sync(&a, 7, vec![], 0).0,
            SyncOutcome::Immediate(SyncResult::error(ResponseError::IllegalGeneration))
        );
        assert_eq!(
            group.heartbeat("nobody", None, 1, 0),
            Err(ResponseError::UnknownMemberId)
        );
        let (outcome, _) = group.join(join_req("made-up", &["range"]), 0);
        assert!(
            matches!(outcome, JoinOutcome::Immediate(r) if r.error == Some(ResponseError::UnknownMemberId))
        );
        let (outcome, _) = group.join(join_req("", &["roundrobin"]), 0);
        assert!(
            matches!(outcome, JoinOutcome::Immediate(r) if r.error == Some(ResponseError::InconsistentGroupProtocol))
        );
    }

    #[test]
    fn leaving_answers_waiting_members_and_empties_the_group() {
        let mut group = Group::new("g", limits());
        let (a, _, _) = join_new(&mut group, 0);
        let (results, _) = group.leave(&[(a.clone(), None)], 5);
        assert_eq!(results, vec![Ok(())]);
        assert_eq!(group.state, GroupState::Empty);
        assert_eq!(
            group.leave(&[(a, None)], 6).0,
            vec![Err(ResponseError::UnknownMemberId)]
        );
    }

    #[test]
    fn a_static_member_rejoining_keeps_its_assignment_without_rebalance() {
        let mut group = Group::new("g", limits());
        let mut req = join_req("", &["range"]);
        req.instance_id = Some("host-1".into());
        let (JoinOutcome::Immediate(first), _) = group.join(req.clone(), 0) else {
            panic!("immediate")
        };
        let follower_req = JoinRequest {
            instance_id: Some("host-2".into()),
            ..req.clone()
        };
        let (_, _) = group.join(follower_req.clone(), 0);
        // leader rejoins to complete the round
        group.join(
            JoinRequest {
                member_id: first.member_id.clone(),
                ..req.clone()
            },
            0,
        );
        let generation = group.generation;
        let follower = group
            .members
            .iter()
            .find(|m| m.instance_id.as_deref() == Some("host-2"))
            .map(|m| m.id.clone())
            .expect("member");
        group.sync(
            &first.member_id,
            generation,
            vec![(follower.clone(), Bytes::from_static(b"mine"))],
            0,
        );
        // the follower restarts: same instance id, no member id
        let (outcome, _) = group.join(follower_req, 100);
        let JoinOutcome::Immediate(result) = outcome else {
            panic!("no rebalance")
        };
        assert_eq!(result.generation_id, generation);
        assert_ne!(result.member_id, follower);
        assert_eq!(group.state, GroupState::Stable);
        let (sync, _) = group.sync(&result.member_id, generation, vec![], 100);
        assert!(
            matches!(sync, SyncOutcome::Immediate(r) if r.assignment == Bytes::from_static(b"mine"))
        );
    }

    /// Two members a and b at generation 2, Stable, each with an assignment.
    fn stable_pair(group: &mut Group) -> (String, String) {
        let (a, _, _) = join_new(group, 0);
        let (b, _, _) = join_new(group, 0);
        group.join(join_req(&a, &["range"]), 0);
        assert_eq!(group.generation, 2);
        group.sync(&b, 2, vec![], 0);
        group.sync(
            &a,
            2,
            vec![
                (a.clone(), Bytes::from_static(b"pa")),
                (b.clone(), Bytes::from_static(b"pb")),
            ],
            0,
        );
        assert_eq!(group.state, GroupState::Stable);
        (a, b)
    }

    #[test]
    fn commits_are_allowed_while_a_rebalance_is_prepared_and_refused_until_sync() {
        let mut group = Group::new("g", limits());
        let (a, b) = stable_pair(&mut group);
        assert_eq!(group.validate_commit(&a, None, 2, 1), Ok(()));
        // a third member arrives: a and b commit what they processed before they rejoin
        join_new(&mut group, 2);
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert_eq!(group.validate_commit(&a, None, 2, 3), Ok(()));
        assert_eq!(group.validate_commit(&b, None, 2, 3), Ok(()));
        group.join(join_req(&a, &["range"]), 4);
        group.join(join_req(&b, &["range"]), 4);
        assert_eq!(group.state, GroupState::CompletingRebalance);
        // between JoinGroup and SyncGroup there is nothing valid to commit
        assert_eq!(
            group.validate_commit(&a, None, 3, 5),
            Err(ResponseError::RebalanceInProgress)
        );
        assert_eq!(
            group.validate_commit(&a, None, 2, 5),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            group.validate_commit("nobody", None, 3, 5),
            Err(ResponseError::UnknownMemberId)
        );
    }

    #[test]
    fn a_simple_commit_is_allowed_only_into_a_group_without_members() {
        let mut group = Group::new("g", limits());
        assert_eq!(group.validate_commit("", None, -1, 0), Ok(()));
        let (a, _, _) = join_new(&mut group, 0);
        assert_eq!(
            group.validate_commit("", None, -1, 1),
            Err(ResponseError::UnknownMemberId)
        );
        group.leave(&[(a, None)], 2);
        assert_eq!(group.state, GroupState::Empty);
        assert_eq!(group.validate_commit("", None, -1, 3), Ok(()));
        assert!(group.is_idle());
    }

    #[test]
    fn a_member_that_heartbeats_but_never_rejoins_is_dropped_at_the_rebalance_timeout() {
        let mut group = Group::new("g", limits());
        let (a, b) = stable_pair(&mut group);
        let (c, _, _) = join_new(&mut group, 100);
        let deadline = 100 + 30_000; // the members' rebalance timeout
        group.join(join_req(&a, &["range"]), 200);
        // b stays alive by heartbeating, but does not rejoin
        let mut now = 200;
        while now < deadline - 1 {
            now += 5_000.min(deadline - 1 - now);
            assert_eq!(
                group.heartbeat(&b, None, 2, now),
                Err(ResponseError::RebalanceInProgress)
            );
            assert!(group.tick(now).is_empty());
        }
        let effects = group.tick(deadline);
        assert!(group.member(&b).is_none());
        assert_eq!(
            (group.state, group.generation),
            (GroupState::CompletingRebalance, 3)
        );
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::Join { member_id, result }
            if *member_id == b && result.error == Some(ResponseError::UnknownMemberId))));
        for m in [&a, &c] {
            assert!(effects
                .iter()
                .any(|e| matches!(e, Effect::Join { member_id, result }
                if member_id == m && result.generation_id == 3)));
        }
    }

    #[test]
    fn a_heartbeat_with_a_stale_generation_is_illegal_even_while_rebalancing() {
        let mut group = Group::new("g", limits());
        let (a, _) = stable_pair(&mut group);
        join_new(&mut group, 1);
        assert_eq!(
            group.heartbeat(&a, None, 2, 2),
            Err(ResponseError::RebalanceInProgress)
        );
        assert_eq!(
            group.heartbeat(&a, None, 1, 2),
            Err(ResponseError::IllegalGeneration)
        );
    }

    #[test]
    fn a_member_id_the_group_never_gave_is_unknown_at_every_join_version() {
        let mut group = Group::new("g", limits());
        stable_pair(&mut group);
        for require_known_member_id in [false, true] {
            let request = JoinRequest {
                require_known_member_id,
                ..join_req("made-up", &["range"])
            };
            let (outcome, _) = group.join(request, 1);
            assert!(
                matches!(outcome, JoinOutcome::Immediate(r) if r.error == Some(ResponseError::UnknownMemberId))
            );
            let request = JoinRequest {
                instance_id: Some("host-9".into()),
                require_known_member_id,
                ..join_req("made-up", &["range"])
            };
            let (outcome, _) = group.join(request, 1);
            assert!(
                matches!(outcome, JoinOutcome::Immediate(r) if r.error == Some(ResponseError::UnknownMemberId))
            );
        }
        assert_eq!(group.members.len(), 2);
        assert_eq!(group.state, GroupState::Stable);
    }

    fn static_req(member_id: &str, instance: &str) -> JoinRequest {
        JoinRequest {
            instance_id: Some(instance.into()),
            ..join_req(member_id, &["range"])
        }
    }

    fn immediate(outcome: JoinOutcome) -> JoinResult {
        match outcome {
            JoinOutcome::Immediate(r) => r,
            JoinOutcome::Pending { member_id } => panic!("{member_id} is waiting"),
        }
    }

    /// Static members host-1 and host-2, Stable at generation 2.
    fn stable_static_pair(group: &mut Group) -> (String, String) {
        let one = immediate(group.join(static_req("", "host-1"), 0).0).member_id;
        let (two, _) = group.join(static_req("", "host-2"), 0);
        let JoinOutcome::Pending { member_id: two } = two else {
            panic!("host-2 waits for host-1 to rejoin")
        };
        immediate(group.join(static_req(&one, "host-1"), 0).0);
        group.sync(&two, 2, vec![], 0);
        group.sync(&one, 2, vec![], 0);
        assert_eq!((group.state, group.generation), (GroupState::Stable, 2));
        (one, two)
    }

    #[test]
    fn a_restarted_static_member_must_still_rejoin_the_next_rebalance() {
        let mut group = Group::new("g", limits());
        let (one, two) = stable_static_pair(&mut group);
        // host-1 restarts: a new member id, no rebalance
        let restarted = immediate(group.join(static_req("", "host-1"), 100).0);
        assert_eq!((restarted.error, restarted.generation_id), (None, 2));
        assert_ne!(restarted.member_id, one);
        assert_eq!(group.state, GroupState::Stable);
        // host-2 then leaves: the rebalance waits for the restarted host-1 to rejoin, it does
        // not complete on its own as if host-1 had already joined it
        group.leave(&[(two, None)], 200);
        assert_eq!(
            (group.state, group.generation),
            (GroupState::PreparingRebalance, 2)
        );
        assert_eq!(
            group.validate_commit(&restarted.member_id, Some("host-1"), 2, 201),
            Ok(())
        );
        let rejoined = immediate(
            group
                .join(static_req(&restarted.member_id, "host-1"), 300)
                .0,
        );
        assert_eq!((rejoined.error, rejoined.generation_id), (None, 3));
    }

    #[test]
    fn a_restarted_static_leader_is_not_asked_to_assign_again() {
        let mut group = Group::new("g", limits());
        let (one, _) = stable_static_pair(&mut group);
        assert_eq!(group.leader.as_deref(), Some(one.as_str()));
        // before JoinGroup v9: the answer names the old incarnation as leader, without members
        let restarted = immediate(group.join(static_req("", "host-1"), 100).0);
        assert_eq!(restarted.leader, one);
        assert!(restarted.members.is_empty() && !restarted.skip_assignment);
        assert_eq!(group.leader.as_deref(), Some(restarted.member_id.as_str()));
        // v9+: it is the leader, sees the members, and is told to skip the assignment
        let request = JoinRequest {
            supports_skip_assignment: true,
            ..static_req("", "host-1")
        };
        let again = immediate(group.join(request, 200).0);
        assert_eq!(again.leader, again.member_id);
        assert_eq!(again.members.len(), 2);
        assert!(again.skip_assignment);
        assert_eq!((group.state, group.generation), (GroupState::Stable, 2));
    }

    #[test]
    fn a_restarted_static_member_with_new_metadata_but_the_same_protocol_keeps_the_group_stable() {
        let mut group = Group::new("g", limits());
        stable_static_pair(&mut group);
        let mut request = static_req("", "host-2");
        request.protocols = vec![("range".into(), Bytes::from_static(b"other metadata"))];
        let restarted = immediate(group.join(request.clone(), 100).0);
        assert_eq!(
            (restarted.generation_id, group.state),
            (2, GroupState::Stable)
        );
        // a preference the other member cannot follow changes nothing either
        request.protocols = vec![
            ("roundrobin".into(), Bytes::new()),
            ("range".into(), Bytes::new()),
        ];
        let again = immediate(group.join(request.clone(), 200).0);
        assert_eq!((again.generation_id, group.state), (2, GroupState::Stable));
        // a protocol the others do not speak is refused
        request.protocols = vec![("roundrobin".into(), Bytes::new())];
        let refused = immediate(group.join(request, 300).0);
        assert_eq!(
            refused.error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
        assert_eq!(group.state, GroupState::Stable);
    }

    #[test]
    fn a_restored_group_resumes_its_generation_and_assignments() {
        let mut group = Group::new("g", limits());
        let (a, b) = stable_pair(&mut group);
        let snapshot = group.snapshot().expect("stable");
        let mut restored = Group::restore("g", snapshot, limits(), 1_000);
        assert_eq!(restored.durable(), group.durable());
        assert_eq!(restored.snapshot(), group.snapshot());
        // members carry on at their generation, with their assignments
        assert_eq!(restored.heartbeat(&b, None, 2, 1_001), Ok(()));
        assert_eq!(restored.validate_commit(&a, None, 2, 1_001), Ok(()));
        let (sync, _) = restored.sync(&b, 2, vec![], 1_002);
        assert!(
            matches!(sync, SyncOutcome::Immediate(r) if r.assignment == Bytes::from_static(b"pb"))
        );
        // and each has a fresh session from the restart on
        restored.tick(1_000 + i64::from(SESSION) - 1);
        assert_eq!(restored.members.len(), 2);
        let heard = restored.heartbeat(&a, None, 2, 1_000 + i64::from(SESSION) - 1);
        assert_eq!(heard, Ok(()));
        // b was last heard of at 1_002
        restored.tick(1_002 + i64::from(SESSION) + 1);
        assert!(restored.member(&b).is_none());
        assert_eq!(restored.state, GroupState::PreparingRebalance);
        assert_eq!(restored.durable(), None);
    }

    #[test]
    fn only_stable_and_empty_groups_are_durable() {
        let mut group = Group::new("g", limits());
        assert_eq!(group.durable(), Some(Durable::Empty));
        assert_eq!(group.snapshot(), None);
        let (a, _) = stable_pair(&mut group);
        assert!(matches!(
            group.durable(),
            Some(Durable::Stable { generation: 2, .. })
        ));
        join_new(&mut group, 1);
        assert_eq!(group.durable(), None);
        assert_eq!(group.snapshot(), None);
        let _ = a;
    }

    #[test]
    fn the_old_incarnation_of_a_static_member_is_fenced() {
        let mut group = Group::new("g", limits());
        let (one, _) = stable_static_pair(&mut group);
        let restarted = immediate(group.join(static_req("", "host-1"), 100).0);
        assert_eq!(
            group.heartbeat(&one, Some("host-1"), 2, 101),
            Err(ResponseError::FencedInstanceId)
        );
        assert_eq!(
            group.validate_commit(&one, Some("host-1"), 2, 101),
            Err(ResponseError::FencedInstanceId)
        );
        let (outcome, _) = group.join(static_req(&one, "host-1"), 101);
        assert_eq!(
            immediate(outcome).error,
            Some(ResponseError::FencedInstanceId)
        );
        assert_eq!(
            group.heartbeat(&restarted.member_id, Some("host-1"), 2, 102),
            Ok(())
        );
    }

    #[test]
    fn the_protocol_most_members_prefer_wins() {
        let mut group = Group::new("g", limits());
        let (a, _, _) = {
            let (o, _) = group.join(join_req("", &["cooperative-sticky", "range"]), 0);
            let JoinOutcome::Immediate(r) = o else {
                panic!()
            };
            let (o, e) = group.join(join_req(&r.member_id, &["cooperative-sticky", "range"]), 0);
            (r.member_id, o, e)
        };
        assert_eq!(group.protocol.as_deref(), Some("cooperative-sticky"));
        let _ = a;
    }
}
