//! Broker liveness: brokers heartbeat the controller leader, which fences a broker that
//! misses its session timeout (its partitions get new leaders) and unfences it when it
//! heartbeats again.
//!
//! Heartbeat times are kept in the leader's memory only: a newly elected leader gives every
//! broker one session timeout of grace before it fences anybody. The decisions are the pure
//! function [`liveness_commands`]; the loop around it only reads and writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{info, warn};

use super::metadata::{new_cluster_id, ClusterMetadata, Command};
use super::policy::{policy_commands, ControllerPolicy};

/// A broker's heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub broker_id: i32,
    pub incarnation: u64,
}

/// The leader's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeartbeatReply {
    /// Recorded. `registered` is false when the broker (this incarnation) is unknown and must
    /// register again; `fenced` tells whether it may lead partitions yet.
    Recorded { registered: bool, fenced: bool },
    /// This voter does not lead; ask `leader` (id and address) if known.
    NotLeader { leader: Option<(u64, String)> },
}

/// The commands that bring fencing in line with heartbeats.
///
/// A registered broker is alive when its current incarnation heartbeated within
/// `session_timeout`, or when nothing was heard from it yet and this leader has led for less
/// than `session_timeout`. Alive fenced brokers are unfenced (unless shutting down); dead
/// unfenced ones are fenced.
pub fn liveness_commands(
    metadata: &ClusterMetadata,
    last_heartbeat: &BTreeMap<i32, (u64, Duration)>,
    leading_for: Duration,
    session_timeout: Duration,
) -> Vec<Command> {
    let mut commands = Vec::new();
    for broker in metadata.brokers.values() {
        let heard = last_heartbeat
            .get(&broker.id)
            .filter(|(incarnation, _)| *incarnation == broker.incarnation);
        let alive = match heard {
            Some((_, since)) => *since <= session_timeout,
            None => leading_for < session_timeout && !broker.fenced,
        };
        if broker.fenced && alive && heard.is_some() && !broker.shutting_down {
            commands.push(Command::UnfenceBroker { id: broker.id });
        } else if !broker.fenced && !alive {
            commands.push(Command::FenceBroker { id: broker.id });
        }
    }
    commands
}

/// Heartbeats received while this voter leads.
#[derive(Default)]
pub struct Liveness {
    last: Mutex<BTreeMap<i32, (u64, Instant)>>,
    leading_since: Mutex<Option<Instant>>,
    /// Wakes the fencing loop before its next tick (a fenced broker heartbeats: it may be
    /// unfenced now rather than a tick later).
    wakeup: tokio::sync::Notify,
}

impl Liveness {
    /// Asks for a liveness pass now.
    pub fn wake(&self) {
        self.wakeup.notify_one();
    }

    pub fn record(&self, heartbeat: Heartbeat) {
        self.last
            .lock()
            .insert(heartbeat.broker_id, (heartbeat.incarnation, Instant::now()));
    }

    /// Marks whether this voter leads; leadership starting (again) resets the grace period.
    pub fn set_leading(&self, leading: bool) {
        let mut since = self.leading_since.lock();
        match (leading, since.is_some()) {
            (true, false) => *since = Some(Instant::now()),
            (false, true) => {
                *since = None;
                self.last.lock().clear();
            }
            _ => {}
        }
    }

    /// The commands due now, if this voter leads.
    pub fn due(&self, metadata: &ClusterMetadata, session_timeout: Duration) -> Vec<Command> {
        let Some(since) = *self.leading_since.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        let last: BTreeMap<i32, (u64, Duration)> = self
            .last
            .lock()
            .iter()
            .map(|(id, (inc, at))| (*id, (*inc, now.duration_since(*at))))
            .collect();
        liveness_commands(metadata, &last, now.duration_since(since), session_timeout)
    }
}

/// Runs the leader's duties: every `tick`, applies the due liveness commands, then those of
/// its [`ControllerPolicy`] (the rebalance check at most once per its interval).
#[allow(clippy::too_many_arguments)]
pub async fn run_fencing(
    raft: openraft::Raft<super::TypeConfig>,
    state_machine: super::store::StateMachine,
    liveness: Arc<Liveness>,
    self_id: u64,
    session_timeout: Duration,
    tick: Duration,
    policy: ControllerPolicy,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut interval = tokio::time::interval(tick);
    let mut last_rebalance_check = Instant::now();
    let mut metrics = raft.metrics();
    let mut was_leading = false;
    loop {
        // A pass every tick, when a fenced broker heartbeats, and as soon as this voter
        // becomes leader (so that a new quorum names the cluster and unfences without a
        // tick's delay: a single node starts in well under a second).
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
            () = liveness.wakeup.notified() => {}
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                let leading = metrics.borrow_and_update().current_leader == Some(self_id);
                if leading == was_leading {
                    continue;
                }
            }
        }
        let leading = raft.metrics().borrow().current_leader == Some(self_id);
        was_leading = leading;
        liveness.set_leading(leading);
        if !leading {
            continue;
        }
        let rebalance_due = policy
            .leader_rebalance
            .is_some_and(|r| last_rebalance_check.elapsed() >= r.check_interval);
        if rebalance_due {
            last_rebalance_check = Instant::now();
        }
        let metadata = state_machine.metadata();
        let commands = liveness
            .due(&metadata, session_timeout)
            .into_iter()
            .chain(policy_commands(
                &metadata,
                &policy,
                rebalance_due,
                new_cluster_id,
            ));
        for command in commands {
            match raft.client_write(command.clone()).await {
                Ok(_) => info!(?command, "controller applied"),
                Err(e) => {
                    warn!(?command, error = %e, "controller command not committed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(brokers: &[(i32, bool)]) -> ClusterMetadata {
        let mut m = ClusterMetadata::default();
        for &(id, fenced) in brokers {
            m.apply(&Command::RegisterBroker {
                id,
                host: "h".into(),
                port: 1,
                rack: None,
                incarnation: 7,
                listeners: Default::default(),
            })
            .expect("register");
            if !fenced {
                m.apply(&Command::UnfenceBroker { id }).expect("unfence");
            }
        }
        m
    }

    const SESSION: Duration = Duration::from_secs(6);

    #[test]
    fn a_silent_broker_is_fenced_after_the_session_timeout() {
        let m = metadata(&[(1, false), (2, false)]);
        let mut last = BTreeMap::new();
        last.insert(1, (7, Duration::from_secs(1)));
        last.insert(2, (7, Duration::from_secs(7)));
        assert_eq!(
            liveness_commands(&m, &last, Duration::from_secs(60), SESSION),
            vec![Command::FenceBroker { id: 2 }]
        );
    }

    #[test]
    fn a_new_leader_gives_unheard_brokers_grace() {
        let m = metadata(&[(1, false)]);
        assert!(
            liveness_commands(&m, &BTreeMap::new(), Duration::from_secs(1), SESSION).is_empty()
        );
        assert_eq!(
            liveness_commands(&m, &BTreeMap::new(), Duration::from_secs(7), SESSION),
            vec![Command::FenceBroker { id: 1 }]
        );
    }

    #[test]
    fn a_registered_broker_that_heartbeats_is_unfenced_but_an_old_incarnation_is_not() {
        let m = metadata(&[(1, true), (2, true)]);
        let mut last = BTreeMap::new();
        last.insert(1, (7, Duration::from_millis(10)));
        last.insert(2, (6, Duration::from_millis(10)));
        assert_eq!(
            liveness_commands(&m, &last, Duration::from_secs(1), SESSION),
            vec![Command::UnfenceBroker { id: 1 }]
        );
    }
}
