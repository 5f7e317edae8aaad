//! Per-partition wake-ups: requests that wait on a partition (long-polling fetches, acks=all
//! produces, offset commits) register a waiter and are woken when the partition changes —
//! after an append, a move of the high watermark, or a change of its role — instead of on
//! every append anywhere in the broker.
//!
//! A waiter is an `Arc<Notify>` owned by the waiting request; one request waiting on several
//! partitions registers the same waiter with each. Registering before checking the condition
//! makes the wait race-free: `Notify::notify_one` keeps a permit for a waiter that is not
//! awaiting yet, so a change between the check and the await is not missed.
//!
//! Invariants:
//! - a partition holds only weak references: a request that stopped waiting costs a dead
//!   slot until the next wake-up or prune, never a leak of its waiter;
//! - the list of one partition stays bounded by about twice the requests waiting on it now
//!   (dead slots are pruned once they are as many as the live ones).

use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Slots kept before the first prune of dead ones.
const PRUNE_FLOOR: usize = 64;

/// The requests waiting on one partition.
#[derive(Default)]
pub struct Wakeups {
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    slots: Vec<Weak<Notify>>,
    /// Prune dead slots once the list reaches this length.
    prune_at: usize,
}

impl Wakeups {
    /// Registers `waiter` to be notified at the next change of the partition (once: a waiter
    /// that wants later changes registers again).
    pub fn register(&self, waiter: &Arc<Notify>) {
        let mut waiting = self.waiting.lock();
        if waiting.slots.len() >= waiting.prune_at.max(PRUNE_FLOOR) {
            waiting.slots.retain(|w| w.strong_count() > 0);
            waiting.prune_at = waiting.slots.len() * 2;
        }
        waiting.slots.push(Arc::downgrade(waiter));
    }

    /// Wakes every registered waiter that still waits, and forgets them all.
    pub fn wake_all(&self) {
        let slots = {
            let mut waiting = self.waiting.lock();
            waiting.prune_at = 0;
            std::mem::take(&mut waiting.slots)
        };
        for waiter in slots.iter().filter_map(Weak::upgrade) {
            waiter.notify_one();
        }
    }

    /// Slots held now, live or dead (for tests of the bound).
    pub fn slots(&self) -> usize {
        self.waiting.lock().slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_change_before_the_await_is_not_missed() {
        let wakeups = Wakeups::default();
        let waiter = Arc::new(Notify::new());
        wakeups.register(&waiter);
        wakeups.wake_all();
        tokio::time::timeout(Duration::from_secs(5), waiter.notified())
            .await
            .expect("the permit was kept");
    }

    #[tokio::test]
    async fn one_waiter_wakes_from_any_of_its_partitions() {
        let (a, b) = (Wakeups::default(), Wakeups::default());
        let waiter = Arc::new(Notify::new());
        a.register(&waiter);
        b.register(&waiter);
        b.wake_all();
        tokio::time::timeout(Duration::from_secs(5), waiter.notified())
            .await
            .expect("woken by b");
        assert_eq!(b.slots(), 0, "a wake-up forgets its waiters");
        assert_eq!(a.slots(), 1);
    }

    #[test]
    fn waiters_that_gave_up_do_not_pile_up() {
        let wakeups = Wakeups::default();
        let live = Arc::new(Notify::new());
        wakeups.register(&live);
        for _ in 0..10_000 {
            let gave_up = Arc::new(Notify::new());
            wakeups.register(&gave_up);
        }
        assert!(
            wakeups.slots() <= 2 * PRUNE_FLOOR,
            "{} slots for one live waiter",
            wakeups.slots()
        );
    }
}
