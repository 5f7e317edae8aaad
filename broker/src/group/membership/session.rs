//! A member's session with the group: heartbeats (which keep it alive and tell it of a
//! rebalance), the check of its offset commits, LeaveGroup, and the fencing of a static
//! member's old incarnation.

use kafka_protocol::ResponseError;

use super::{Effect, Group, GroupState, JoinResult, SyncResult};

impl Group {
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
    pub(super) fn forget(&mut self, member_id: &str) -> Vec<Effect> {
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
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use kafka_protocol::ResponseError;

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
}
