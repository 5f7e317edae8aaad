//! The classic consumer-group protocol as a pure state machine: members join, the group
//! rebalances (PreparingRebalance → CompletingRebalance → Stable), the leader's assignment is
//! handed out by SyncGroup, heartbeats keep members alive, and members that leave or miss
//! their session timeout trigger a new rebalance.
//!
//! Nothing here does I/O or waits: every operation takes the current time and returns the
//! answers that are ready now as [`Effect`]s. The coordinator keeps the waiting requests and
//! delivers those effects to them, and calls [`Group::tick`] periodically for the timers.
//! Refusals are `kafka_protocol::ResponseError`s; the protocol handlers turn them into codes.
//!
//! Files: this one holds the group's state and its invariants; `answers.rs` the requests and
//! answers exchanged with the coordinator; the operations, each an `impl Group` block, are
//! `join.rs` (JoinGroup, static members included), `sync.rs` (SyncGroup), `session.rs`
//! (heartbeats, commit checks, LeaveGroup, fencing), `rebalance.rs` (the state transitions
//! and the timers they all end in) and `snapshot.rs` (what survives a coordinator restart).
//!
//! Invariants, between operations:
//! - members are kept in join order; the leader, when set, is a member;
//! - `awaiting_sync` holds only members, and only while CompletingRebalance;
//! - the generation only grows; it grows by one each time a join phase completes or the
//!   last member leaves;
//! - in PreparingRebalance the join phase ends when every member has rejoined (after any
//!   initial delay) or at the rebalance deadline, whichever comes first.

use std::collections::BTreeSet;

use bytes::Bytes;

mod answers;
mod join;
mod rebalance;
mod session;
mod snapshot;
mod sync;

pub use answers::{Effect, JoinOutcome, JoinRequest, JoinResult, SyncOutcome, SyncResult};
pub use snapshot::{Durable, GroupSnapshot, MemberSnapshot};

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

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
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

/// Requests and groups shared by the unit tests of the membership files.
#[cfg(test)]
mod fixtures {
    use kafka_protocol::ResponseError;

    use super::*;

    /// The session timeout of every test member.
    pub(super) const SESSION: i32 = 10_000;

    pub(super) fn limits() -> GroupLimits {
        GroupLimits {
            initial_rebalance_delay_ms: 0,
            ..GroupLimits::default()
        }
    }

    pub(super) fn join_req(member_id: &str, protocols: &[&str]) -> JoinRequest {
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
    pub(super) fn join_new(group: &mut Group, now: i64) -> (String, JoinOutcome, Vec<Effect>) {
        let (outcome, _) = group.join(join_req("", &["range"]), now);
        let JoinOutcome::Immediate(first) = outcome else {
            panic!("expected MEMBER_ID_REQUIRED")
        };
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let (outcome, effects) = group.join(join_req(&first.member_id, &["range"]), now);
        (first.member_id, outcome, effects)
    }

    /// Two members a and b at generation 2, Stable, each with an assignment.
    pub(super) fn stable_pair(group: &mut Group) -> (String, String) {
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

    pub(super) fn static_req(member_id: &str, instance: &str) -> JoinRequest {
        JoinRequest {
            instance_id: Some(instance.into()),
            ..join_req(member_id, &["range"])
        }
    }

    pub(super) fn immediate(outcome: JoinOutcome) -> JoinResult {
        match outcome {
            JoinOutcome::Immediate(r) => r,
            JoinOutcome::Pending { member_id } => panic!("{member_id} is waiting"),
        }
    }

    /// Static members host-1 and host-2, Stable at generation 2.
    pub(super) fn stable_static_pair(group: &mut Group) -> (String, String) {
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
}
