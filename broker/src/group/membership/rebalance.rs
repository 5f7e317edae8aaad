//! The group's state transitions: a rebalance starts (PreparingRebalance), its join phase
//! completes with a new generation, protocol and leader (CompletingRebalance), or the group
//! empties; and the timers that drive them (sessions, the rebalance deadline, the initial
//! delay). Every operation that changes membership ends here.

use kafka_protocol::ResponseError;

use super::{Effect, Group, GroupState, JoinResult, Member, SyncResult};

impl Group {
    /// Starts a rebalance: members must rejoin; waiting syncs learn of it.
    pub(super) fn prepare_rebalance(&mut self, now_ms: i64) -> Vec<Effect> {
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
    pub(super) fn try_complete_join(&mut self, now_ms: i64) -> Vec<Effect> {
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
    pub(super) fn complete_join(&mut self) -> Vec<Effect> {
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
    pub(super) fn select_protocol(&self) -> Option<String> {
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

    pub(super) fn after_removal(&mut self, now_ms: i64) -> Vec<Effect> {
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
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use bytes::Bytes;
    use kafka_protocol::ResponseError;

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
