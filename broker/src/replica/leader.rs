//! A partition leader's view of its followers: how far each has fetched, the high watermark
//! that follows, and when the in-sync replica set should grow or shrink (Kafka's design).
//!
//! Pure state; the caller feeds it follower fetches and the clock and carries out the ISR
//! changes it proposes through the controller.
//!
//! Invariants:
//! - the high watermark is the smallest log end offset among the leader and the *maximal*
//!   ISR (the committed ISR plus a pending expansion), so it never passes a record some
//!   member of the committed ISR lacks;
//! - a follower joins the ISR only once its log end reaches the high watermark and the start
//!   of the leader's epoch (so it holds everything acknowledged, and no divergent tail);
//! - a follower leaves it after `replica.lag.time.max.ms` without being caught up; the leader
//!   never removes itself.

use std::collections::BTreeMap;

/// How far one follower is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// The follower's log end offset: the offset of its last fetch (`-1` before any).
    log_end_offset: i64,
    /// Last time the follower was known to hold everything the leader had.
    last_caught_up_ms: i64,
    /// Leader log end and time at the follower's previous fetch.
    previous_fetch: Option<(i64, i64)>,
}

/// The leader's tracking of one partition.
#[derive(Debug, Clone)]
pub struct LeaderState {
    me: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// Committed ISR (from the metadata).
    pub isr: Vec<i32>,
    replicas: Vec<i32>,
    /// The leader's log end offset when it took this epoch.
    epoch_start_offset: i64,
    followers: BTreeMap<i32, Progress>,
    /// An ISR change sent to the controller and not yet seen in the metadata.
    pub pending_isr: Option<Vec<i32>>,
}

/// What a follower fetch changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchEffect {
    /// The new high watermark, when it moved up.
    pub high_watermark: Option<i64>,
    /// An ISR to propose (the follower caught up).
    pub propose_isr: Option<Vec<i32>>,
}

impl LeaderState {
    /// Tracking for a leader taking `leader_epoch` with its log ending at `log_end_offset`.
    /// Every follower starts as caught up now (a grace period of one lag time).
    pub fn new(
        me: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        replicas: &[i32],
        isr: &[i32],
        log_end_offset: i64,
        now_ms: i64,
    ) -> Self {
        let followers = replicas
            .iter()
            .filter(|r| **r != me)
            .map(|r| {
                (
                    *r,
                    Progress {
                        log_end_offset: -1,
                        last_caught_up_ms: now_ms,
                        previous_fetch: None,
                    },
                )
            })
            .collect();
        Self {
            me,
            leader_epoch,
            partition_epoch,
            isr: isr.to_vec(),
            replicas: replicas.to_vec(),
            epoch_start_offset: log_end_offset,
            followers,
            pending_isr: None,
        }
    }

    /// Takes a newer committed ISR (and partition epoch) from the metadata.
    ///
    /// Any newer committed state ends a pending change: either it is that change, or the
    /// change lost to another one (an AlterIsr built on the older epoch is refused) and may
    /// be proposed again.
    pub fn update_membership(&mut self, partition_epoch: i32, replicas: &[i32], isr: &[i32]) {
        if partition_epoch != self.partition_epoch || self.pending_isr.as_deref() == Some(isr) {
            self.pending_isr = None;
        }
        self.partition_epoch = partition_epoch;
        self.isr = isr.to_vec();
        self.replicas = replicas.to_vec();
        for r in replicas {
            if *r != self.me {
                self.followers.entry(*r).or_insert(Progress {
                    log_end_offset: -1,
                    last_caught_up_ms: i64::MIN / 2,
                    previous_fetch: None,
                });
            }
        }
        self.followers.retain(|r, _| replicas.contains(r));
    }

    /// The ISR the high watermark waits for: committed plus pending additions.
    fn maximal_isr(&self) -> Vec<i32> {
        let mut isr = self.isr.clone();
        if let Some(pending) = &self.pending_isr {
            for r in pending {
                if !isr.contains(r) {
                    isr.push(*r);
                }
            }
        }
        isr
    }

    /// The high watermark for a leader log ending at `leader_log_end`.
    pub fn high_watermark(&self, leader_log_end: i64) -> i64 {
        self.maximal_isr()
            .iter()
            .filter(|r| **r != self.me)
            .map(|r| self.followers.get(r).map_or(-1, |p| p.log_end_offset))
            .fold(leader_log_end, i64::min)
            .max(0)
    }

    /// Records a fetch by `follower` at `fetch_offset` (its log end), with the leader's log
    /// ending at `leader_log_end`. `current_high_watermark` is the leader log's.
    pub fn on_follower_fetch(
        &mut self,
        follower: i32,
        fetch_offset: i64,
        leader_log_end: i64,
        current_high_watermark: i64,
        now_ms: i64,
    ) -> FetchEffect {
        let Some(progress) = self.followers.get_mut(&follower) else {
            return FetchEffect::default();
        };
        progress.log_end_offset = fetch_offset;
        if fetch_offset >= leader_log_end {
            progress.last_caught_up_ms = now_ms;
        } else if let Some((previous_end, previous_ms)) = progress.previous_fetch {
            if fetch_offset >= previous_end {
                progress.last_caught_up_ms = progress.last_caught_up_ms.max(previous_ms);
            }
        }
        progress.previous_fetch = Some((leader_log_end, now_ms));
        let mut effect = FetchEffect::default();
        let in_isr = self.maximal_isr().contains(&follower);
        if !in_isr
            && self.pending_isr.is_none()
            && fetch_offset >= current_high_watermark
            && fetch_offset >= self.epoch_start_offset
        {
            let mut isr = self.isr.clone();
            isr.push(follower);
            self.pending_isr = Some(isr.clone());
            effect.propose_isr = Some(isr);
        }
        let hw = self.high_watermark(leader_log_end);
        if hw > current_high_watermark {
            effect.high_watermark = Some(hw);
        }
        effect
    }

    /// The ISR without followers that have not been caught up for `lag_max_ms`, when that
    /// differs from the committed ISR and no other change is pending.
    pub fn shrink_candidate(&self, now_ms: i64, lag_max_ms: i64) -> Option<Vec<i32>> {
        if self.pending_isr.is_some() {
            return None;
        }
        let isr: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == self.me
                    || self
                        .followers
                        .get(r)
                        .is_some_and(|p| now_ms - p.last_caught_up_ms <= lag_max_ms)
            })
            .collect();
        (isr != self.isr).then_some(isr)
    }

    /// Marks an ISR change as sent.
    pub fn set_pending(&mut self, isr: Vec<i32>) {
        self.pending_isr = Some(isr);
    }

    /// Forgets a pending change the controller refused or never committed.
    pub fn clear_pending(&mut self) {
        self.pending_isr = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader() -> LeaderState {
        LeaderState::new(1, 3, 10, &[1, 2, 3], &[1, 2, 3], 100, 0)
    }

    #[test]
    fn the_high_watermark_waits_for_every_isr_member() {
        let mut state = leader();
        assert_eq!(state.high_watermark(120), 0, "followers have not fetched");
        let effect = state.on_follower_fetch(2, 120, 120, 100, 10);
        assert_eq!(effect.high_watermark, None, "follower 3 is still at -1");
        let effect = state.on_follower_fetch(3, 110, 120, 100, 10);
        assert_eq!(effect.high_watermark, Some(110));
        let effect = state.on_follower_fetch(3, 120, 120, 110, 20);
        assert_eq!(effect.high_watermark, Some(120));
        assert_eq!(effect.propose_isr, None, "already in sync");
    }

    #[test]
    fn a_lagging_follower_leaves_the_isr_after_the_lag_time() {
        let mut state = leader();
        state.on_follower_fetch(2, 100, 100, 100, 1_000);
        state.on_follower_fetch(3, 50, 100, 100, 1_000);
        assert_eq!(state.shrink_candidate(20_000, 30_000), None);
        state.on_follower_fetch(2, 100, 100, 100, 40_000);
        assert_eq!(
            state.shrink_candidate(40_000, 30_000),
            Some(vec![1, 2]),
            "follower 3 was last caught up at 0 (the grace start)"
        );
        // While a change is pending nothing else is proposed.
        state.set_pending(vec![1, 2]);
        assert_eq!(state.shrink_candidate(90_000, 30_000), None);
        state.update_membership(11, &[1, 2, 3], &[1, 2]);
        assert_eq!(state.pending_isr, None);
        assert_eq!(state.high_watermark(100), 100, "3 no longer holds it back");
    }

    #[test]
    fn a_follower_that_keeps_up_with_the_previous_fetch_stays_caught_up() {
        let mut state = leader();
        // The leader keeps appending; the follower always reaches the previous end.
        for step in 1..10 {
            let now = step * 20_000;
            state.on_follower_fetch(2, 100 + (step - 1) * 10, 100 + step * 10, 0, now);
            state.on_follower_fetch(3, 100 + step * 10, 100 + step * 10, 0, now);
        }
        assert_eq!(state.shrink_candidate(180_000, 30_000), None);
    }

    #[test]
    fn a_follower_rejoins_once_it_reaches_the_high_watermark_and_epoch_start() {
        let mut state = LeaderState::new(1, 3, 10, &[1, 2, 3], &[1, 2], 100, 0);
        state.on_follower_fetch(2, 150, 150, 100, 5);
        let effect = state.on_follower_fetch(3, 90, 150, 150, 5);
        assert_eq!(effect.propose_isr, None, "behind the high watermark");
        let effect = state.on_follower_fetch(3, 150, 150, 150, 6);
        assert_eq!(effect.propose_isr, Some(vec![1, 2, 3]));
        // While the expansion is pending, the HW already waits for follower 3.
        assert_eq!(state.high_watermark(160), 150);
        let again = state.on_follower_fetch(3, 150, 160, 150, 7);
        assert_eq!(again.propose_isr, None, "proposed once");
    }

    #[test]
    fn a_pending_expansion_overtaken_by_another_change_is_proposed_again() {
        let mut state = LeaderState::new(1, 3, 10, &[1, 2, 3], &[1, 2], 100, 0);
        let effect = state.on_follower_fetch(3, 100, 100, 100, 1);
        assert_eq!(effect.propose_isr, Some(vec![1, 2, 3]));
        // The expansion and a later removal of 3 (it re-registered) arrive together.
        state.update_membership(12, &[1, 2, 3], &[1, 2]);
        assert_eq!(state.pending_isr, None);
        let effect = state.on_follower_fetch(3, 100, 100, 100, 2);
        assert_eq!(effect.propose_isr, Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_follower_below_the_epoch_start_does_not_join() {
        let mut state = LeaderState::new(1, 3, 10, &[1, 2], &[1], 100, 0);
        let effect = state.on_follower_fetch(2, 99, 100, 0, 1);
        assert_eq!(effect.propose_isr, None);
        let effect = state.on_follower_fetch(2, 100, 100, 0, 2);
        assert_eq!(effect.propose_isr, Some(vec![1, 2]));
    }

    #[test]
    fn unknown_followers_are_ignored() {
        let mut state = leader();
        assert_eq!(
            state.on_follower_fetch(9, 500, 100, 100, 1),
            FetchEffect::default()
        );
    }
}
