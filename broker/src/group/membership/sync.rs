//! SyncGroup: members wait for the leader's assignment of the new generation; the leader's
//! sync hands every member its part and makes the group Stable.

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::{Effect, Group, GroupState, SyncOutcome, SyncResult};

impl Group {
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

    pub(super) fn sync_result_for(&self, member_id: &str) -> SyncResult {
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
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use kafka_protocol::ResponseError;

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
}
