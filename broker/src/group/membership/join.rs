//! JoinGroup: validation of the request, member ids (MEMBER_ID_REQUIRED for new members),
//! static members (`group.instance.id`) replacing their old incarnation, and the entry of a
//! member into the current rebalance round.

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::{Effect, Group, GroupState, JoinOutcome, JoinRequest, JoinResult, Member, SyncResult};

impl Group {
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

    pub(super) fn join_result_for(&self, member_id: &str) -> JoinResult {
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

    pub(super) fn member_list(&self) -> Vec<(String, Option<String>, Bytes)> {
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
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use bytes::Bytes;
    use kafka_protocol::ResponseError;

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
}
