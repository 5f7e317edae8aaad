//! What of a group survives a coordinator restart: the snapshot of a stable group (Kafka's
//! `GroupMetadataValue`), when one is due, and the group restored from it.

use bytes::Bytes;

use super::{Group, GroupLimits, GroupState, Member};

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

impl Group {
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
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use bytes::Bytes;

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
}
