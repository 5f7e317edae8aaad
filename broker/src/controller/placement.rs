//! Pure placement decisions over the cluster metadata: where a drained broker's replicas go,
//! how replicas and preferred leadership spread over the brokers, which leader elections are
//! possible, and when leadership is out of balance.
//!
//! Each function reads a [`ClusterMetadata`] and returns a decision; applying it is the
//! caller's business (a command through the quorum), so these are tested without a network.

use std::collections::BTreeMap;

use super::state::{ClusterMetadata, PartitionRecord, NO_LEADER};

/// A partition move: topic, partition and its target replicas.
pub type Move = (String, i32, Vec<i32>);

/// A broker that cannot be drained: a partition it replicates has no other placement broker
/// left to take its replica.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot drain broker {broker}: partition {topic}-{partition} has {replicas} replicas and no \
     other live broker can take one"
)]
pub struct Undrainable {
    pub broker: i32,
    pub topic: String,
    pub partition: i32,
    /// The partition's replicas, not counting those already leaving.
    pub replicas: usize,
}

/// The reassignments that take every replica off broker `id`.
///
/// Each partition keeps its replica order, with `id` replaced by the placement broker
/// (live, not draining) that does not replicate it yet and holds the fewest replicas,
/// counting the moves planned before it (lowest id on a tie). Partitions already moving away
/// from `id` are left as they are.
///
/// # Errors
/// Some partition has no broker left to take its replica (fewer placement brokers than its
/// replication factor): the broker cannot be drained, and nothing should change.
pub fn drain_moves(metadata: &ClusterMetadata, id: i32) -> Result<Vec<Move>, Undrainable> {
    let candidates = metadata.placement_brokers();
    let mut load: BTreeMap<i32, usize> = candidates
        .iter()
        .map(|&b| (b, metadata.replica_count(b)))
        .collect();
    let mut moves = Vec::new();
    for (topic, partition, record) in metadata.partitions() {
        if !record.replicas.contains(&id) || record.removing.contains(&id) {
            continue;
        }
        let current: Vec<i32> = record
            .replicas
            .iter()
            .copied()
            .filter(|r| !record.removing.contains(r))
            .collect();
        let Some(&replacement) = load
            .iter()
            .filter(|(b, _)| !current.contains(b))
            .min_by_key(|(b, count)| (**count, **b))
            .map(|(b, _)| b)
        else {
            return Err(Undrainable {
                broker: id,
                topic: topic.to_string(),
                partition,
                replicas: current.len(),
            });
        };
        *load.entry(replacement).or_default() += 1;
        let target = current
            .iter()
            .map(|&r| if r == id { replacement } else { r })
            .collect();
        moves.push((topic.to_string(), partition, target));
    }
    Ok(moves)
}

/// Reassignments that spread replicas evenly over the placement brokers (live, not
/// draining), e.g. onto brokers just added: while the most loaded broker holds at least two
/// more replicas than the least loaded one, one of its replicas moves, in place (so the
/// preferred leader moves with it when it was first), to the least loaded broker that does
/// not replicate that partition yet. Partitions being reassigned are left alone, each
/// partition moves at most once per plan, and ties go to the lowest broker id.
pub fn spread_moves(metadata: &ClusterMetadata) -> Vec<Move> {
    let load = metadata
        .placement_brokers()
        .iter()
        .map(|&b| (b, metadata.replica_count(b)))
        .collect();
    even_out(load, |heaviest, light, planned| {
        metadata
            .partitions()
            .find(|(topic, partition, r)| {
                r.adding.is_empty()
                    && r.removing.is_empty()
                    && r.replicas.contains(&heaviest)
                    && !r.replicas.contains(&light)
                    && !is_planned(planned, topic, *partition)
            })
            .map(|(topic, partition, r)| {
                let target = r
                    .replicas
                    .iter()
                    .map(|&b| if b == heaviest { light } else { b })
                    .collect();
                (topic.to_string(), partition, target)
            })
    })
}

/// Whether `moves` already move `topic`-`partition`.
fn is_planned(moves: &[Move], topic: &str, partition: i32) -> bool {
    moves.iter().any(|(t, p, _)| t == topic && *p == partition)
}

/// Evens out per-broker `counts` one unit at a time: while the broker with the most (the
/// lowest id on a tie) has at least two more than another, `next_move(heaviest, light,
/// planned)` proposes a move of one unit from it to a lighter broker (the lightest first);
/// the plan ends when no lighter broker can take one.
fn even_out(
    mut counts: BTreeMap<i32, usize>,
    mut next_move: impl FnMut(i32, i32, &[Move]) -> Option<Move>,
) -> Vec<Move> {
    let mut moves: Vec<Move> = Vec::new();
    while let Some((heaviest, most)) = counts
        .iter()
        .max_by_key(|(b, n)| (**n, -**b))
        .map(|(b, n)| (*b, *n))
    {
        let mut lighter: Vec<(i32, usize)> = counts
            .iter()
            .filter(|(_, n)| **n + 1 < most)
            .map(|(b, n)| (*b, *n))
            .collect();
        lighter.sort_by_key(|(b, n)| (*n, *b));
        let Some((light, step)) = lighter
            .iter()
            .find_map(|(light, _)| next_move(heaviest, *light, &moves).map(|m| (*light, m)))
        else {
            break;
        };
        *counts.entry(heaviest).or_default() -= 1;
        *counts.entry(light).or_default() += 1;
        moves.push(step);
    }
    moves
}

/// Reorderings that spread preferred leadership evenly over the placement brokers, once
/// replicas are spread: while the broker that is first replica of the most partitions prefers
/// at least two more than the one that prefers the fewest, one of its partitions that the
/// lighter broker also replicates swaps the two, so the lighter one comes first. The replica
/// set never changes (no data moves); a preferred-leader election then moves leadership.
/// A partition being reassigned is reordered within its target (a replica on its way out never
/// becomes preferred), so this also plans over the state right after [`spread_moves`]. Each
/// partition is reordered at most once per plan, and ties go to the lowest broker id.
pub fn preferred_leader_moves(metadata: &ClusterMetadata) -> Vec<Move> {
    let mut preferred: BTreeMap<i32, usize> = metadata
        .placement_brokers()
        .iter()
        .map(|&b| (b, 0))
        .collect();
    for (_, _, record) in metadata.partitions() {
        if let Some(count) = preferred.get_mut(&record.preferred_leader()) {
            *count += 1;
        }
    }
    even_out(preferred, |heaviest, light, planned| {
        metadata
            .partitions()
            .find(|(topic, partition, r)| {
                r.preferred_leader() == heaviest
                    && r.replicas.contains(&light)
                    && !r.removing.contains(&light)
                    && !is_planned(planned, topic, *partition)
            })
            .map(|(topic, partition, r)| {
                let target = r
                    .replicas
                    .iter()
                    .filter(|b| !r.removing.contains(b))
                    .map(|&b| match b {
                        b if b == heaviest => light,
                        b if b == light => heaviest,
                        b => b,
                    })
                    .collect();
                (topic.to_string(), partition, target)
            })
    })
}

/// Whether a leader election on one partition would change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// The election would move leadership.
    Possible,
    /// The partition already has the leader the election would give it.
    NotNeeded,
    /// No replica is eligible (the preferred one is not alive and in sync; or, unclean, no
    /// replica is alive).
    NotAvailable,
}

/// Whether a preferred-leader election can move `record`'s leadership to its first replica.
pub fn preferred_election(metadata: &ClusterMetadata, record: &PartitionRecord) -> Election {
    let preferred = record.preferred_leader();
    if record.leader == preferred {
        Election::NotNeeded
    } else if record.isr.contains(&preferred) && metadata.live_brokers().contains(&preferred) {
        Election::Possible
    } else {
        Election::NotAvailable
    }
}

/// Whether an unclean election can give leaderless `record` a leader.
pub fn unclean_election(metadata: &ClusterMetadata, record: &PartitionRecord) -> Election {
    if record.leader != NO_LEADER {
        Election::NotNeeded
    } else if record
        .replicas
        .iter()
        .any(|r| metadata.live_brokers().contains(r))
    {
        Election::Possible
    } else {
        Election::NotAvailable
    }
}

/// Kafka's leader imbalance of each broker, in percent: of the partitions it is the
/// preferred leader of, the share it does not lead.
pub fn leader_imbalance(metadata: &ClusterMetadata) -> BTreeMap<i32, u32> {
    let mut preferred: BTreeMap<i32, (usize, usize)> = BTreeMap::new();
    for (_, _, record) in metadata.partitions() {
        let entry = preferred.entry(record.preferred_leader()).or_default();
        entry.0 += 1;
        if record.leader != record.preferred_leader() {
            entry.1 += 1;
        }
    }
    preferred
        .into_iter()
        .filter(|(broker, _)| *broker != NO_LEADER)
        .map(|(broker, (total, off))| {
            let percent = off * 100 / total.max(1);
            (broker, u32::try_from(percent).unwrap_or(100))
        })
        .collect()
}

/// The preferred-leader elections an automatic rebalance makes: for every broker whose
/// imbalance is above `threshold_percent`, the partitions it prefers to lead where it is
/// alive and in sync but does not lead. Partitions being reassigned are left to their
/// reassignment.
pub fn rebalance_elections(
    metadata: &ClusterMetadata,
    threshold_percent: u32,
) -> Vec<(String, i32)> {
    let imbalance = leader_imbalance(metadata);
    metadata
        .partitions()
        .filter(|(_, _, record)| {
            record.adding.is_empty()
                && record.removing.is_empty()
                && imbalance
                    .get(&record.preferred_leader())
                    .is_some_and(|&p| p > threshold_percent)
                && preferred_election(metadata, record) == Election::Possible
        })
        .map(|(topic, partition, _)| (topic.to_string(), partition))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::{Command, CommandError};
    use crate::controller::testing::{all_caught_up, cluster, create, join};

    #[test]
    fn spreading_moves_replicas_onto_new_brokers_until_loads_differ_by_one() {
        let mut m = cluster(&[1, 2, 3]);
        create(
            &mut m,
            "t",
            (0..6).map(|i| vec![1 + i % 3, 1 + (i + 1) % 3]).collect(),
        );
        all_caught_up(&mut m);
        assert!(spread_moves(&m).is_empty(), "already even");
        join(&mut m, 4);
        join(&mut m, 5);
        let moves = spread_moves(&m);
        let mut load: BTreeMap<i32, usize> = (1..=5).map(|b| (b, m.replica_count(b))).collect();
        for (topic, partition, target) in &moves {
            let record = &m.topics[topic].partitions[usize::try_from(*partition).expect("index")];
            assert_eq!(
                target.len(),
                record.replicas.len(),
                "replication factor kept"
            );
            let mut distinct = target.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), target.len(), "no broker twice");
            for b in &record.replicas {
                *load.get_mut(b).expect("broker") -= 1;
            }
            for b in target {
                *load.get_mut(b).expect("broker") += 1;
            }
        }
        let (min, max) = (load.values().min().copied(), load.values().max().copied());
        assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{load:?}");
        assert!(load[&4] >= 2 && load[&5] >= 2, "{load:?}");
    }

    #[test]
    fn preferred_leadership_spreads_by_reordering_replicas_only() {
        let mut m = cluster(&[1, 2, 3, 4]);
        // Broker 1 is first everywhere; every broker replicates something.
        create(&mut m, "t", (0..8).map(|i| vec![1, 2 + i % 3]).collect());
        let moves = preferred_leader_moves(&m);
        let mut preferred: BTreeMap<i32, usize> = (1..=4).map(|b| (b, 0)).collect();
        for (_, _, record) in m.partitions() {
            *preferred
                .get_mut(&record.preferred_leader())
                .expect("broker") += 1;
        }
        for (topic, partition, target) in &moves {
            let record = m.partition(topic, *partition).expect("partition");
            let (mut before, mut after) = (record.replicas.clone(), target.clone());
            before.sort_unstable();
            after.sort_unstable();
            assert_eq!(before, after, "same replicas, reordered");
            *preferred
                .get_mut(&record.preferred_leader())
                .expect("broker") -= 1;
            *preferred.get_mut(&target[0]).expect("broker") += 1;
        }
        let (min, max) = (preferred.values().min(), preferred.values().max());
        assert!(
            max.zip(min).is_some_and(|(a, b)| a - b <= 1),
            "{preferred:?}"
        );
        assert_eq!(preferred[&1], 2, "{preferred:?}");
        // Applied, the plan leaves nothing to do.
        for (topic, partition, target) in moves {
            m.apply(&Command::Reassign {
                topic,
                partition,
                target,
            })
            .expect("reorder");
        }
        assert!(preferred_leader_moves(&m).is_empty());
        assert_eq!(
            m.partitions()
                .filter(|(_, _, r)| !r.adding.is_empty())
                .count(),
            0
        );
    }

    #[test]
    fn a_drain_replaces_the_broker_in_place_and_spreads_the_load() {
        let mut m = cluster(&[1, 2, 3, 4, 5]);
        create(
            &mut m,
            "t",
            vec![vec![1, 2], vec![2, 1], vec![1, 3], vec![3, 4]],
        );
        let moves = drain_moves(&m, 1).expect("drainable");
        assert_eq!(moves.len(), 3, "{moves:?}");
        for (_, partition, target) in &moves {
            assert!(!target.contains(&1), "{target:?}");
            let before = &m.partition("t", *partition).expect("p").replicas;
            let kept: Vec<i32> = before.iter().copied().filter(|r| *r != 1).collect();
            assert!(
                kept.iter().all(|r| target.contains(r)),
                "keeps {kept:?}: {target:?}"
            );
            let slot = before.iter().position(|r| *r == 1).expect("slot");
            assert_ne!(target[slot], 1, "same slot, new broker");
        }
        // Broker 5 held nothing and 4 held one: they take the first two moves.
        let newcomers: Vec<i32> = moves
            .iter()
            .map(|(_, p, target)| {
                let before = &m.partition("t", *p).expect("p").replicas;
                target[before.iter().position(|r| *r == 1).expect("slot")]
            })
            .collect();
        assert_eq!(newcomers, vec![5, 4, 5]);
    }

    #[test]
    fn decommission_moves_every_replica_away_and_refuses_what_it_cannot_drain() {
        let mut m = cluster(&[1, 2, 3]);
        create(&mut m, "t", vec![vec![1, 2], vec![2, 3], vec![3, 1]]);
        let before = m.clone();
        create(&mut m, "wide", vec![vec![1, 2, 3]]);
        let refused = m.apply(&Command::DecommissionBroker { id: 1 });
        assert!(
            matches!(refused, Err(CommandError::Invalid(_))),
            "{refused:?}"
        );
        let mut m = before;
        m.apply(&Command::DecommissionBroker { id: 1 })
            .expect("drain");
        assert!(m.brokers[&1].decommissioning);
        assert!(!m.placement_brokers().contains(&1));
        all_caught_up(&mut m);
        assert_eq!(m.replica_count(1), 0, "{:?}", m.topics);
        for (_, _, p) in m.partitions() {
            assert!(p.adding.is_empty() && p.removing.is_empty(), "{p:?}");
            assert_ne!(p.leader, 1);
        }
        m.apply(&Command::UnregisterBroker { id: 1 })
            .expect("a drained broker can go");
        assert!(!m.brokers.contains_key(&1));
    }

    #[test]
    fn recommission_cancels_the_moves_still_in_flight() {
        let mut m = cluster(&[1, 2, 3]);
        create(&mut m, "t", vec![vec![1, 2]]);
        let original = m.partition("t", 0).cloned().expect("p");
        m.apply(&Command::DecommissionBroker { id: 1 })
            .expect("drain");
        assert_eq!(m.partition("t", 0).map(|p| p.adding.clone()), Some(vec![3]));
        assert!(matches!(
            m.apply(&Command::UnregisterBroker { id: 1 }),
            Err(CommandError::Invalid(_))
        ));
        m.apply(&Command::RecommissionBroker { id: 1 })
            .expect("recommission");
        let p = m.partition("t", 0).expect("p");
        assert_eq!(p.replicas, original.replicas);
        assert_eq!(p.isr, original.isr);
        assert_eq!(p.leader, 1);
        assert!(p.adding.is_empty() && p.removing.is_empty());
        assert!(!m.brokers[&1].decommissioning);
    }

    #[test]
    fn a_drain_survives_the_broker_registering_again() {
        let mut m = cluster(&[1, 2, 3]);
        m.apply(&Command::DecommissionBroker { id: 3 })
            .expect("drain");
        m.apply(&Command::RegisterBroker {
            id: 3,
            host: "h".into(),
            port: 1,
            rack: None,
            incarnation: 2,
            listeners: Default::default(),
        })
        .expect("register");
        assert!(m.brokers[&3].decommissioning);
    }

    #[test]
    fn cancelling_a_reassignment_keeps_the_original_replicas() {
        let mut m = cluster(&[1, 2, 3, 4]);
        create(&mut m, "t", vec![vec![1, 2]]);
        assert!(matches!(
            m.apply(&Command::CancelReassignment {
                topic: "t".into(),
                partition: 0
            }),
            Err(CommandError::NoReassignment(..))
        ));
        m.apply(&Command::Reassign {
            topic: "t".into(),
            partition: 0,
            target: vec![3, 4],
        })
        .expect("reassign");
        m.apply(&Command::CancelReassignment {
            topic: "t".into(),
            partition: 0,
        })
        .expect("cancel");
        let p = m.partition("t", 0).expect("p");
        assert_eq!((p.replicas.clone(), p.leader), (vec![1, 2], 1));
    }

    #[test]
    fn elections_say_when_they_are_not_needed_or_not_possible() {
        let mut m = cluster(&[1, 2, 3]);
        create(&mut m, "t", vec![vec![1, 2, 3]]);
        let p = m.partition("t", 0).cloned().expect("p");
        assert_eq!(preferred_election(&m, &p), Election::NotNeeded);
        assert_eq!(unclean_election(&m, &p), Election::NotNeeded);
        m.apply(&Command::FenceBroker { id: 1 }).expect("fence");
        let p = m.partition("t", 0).cloned().expect("p");
        assert_eq!(preferred_election(&m, &p), Election::NotAvailable);
        m.apply(&Command::UnfenceBroker { id: 1 }).expect("back");
        let p = m.partition("t", 0).cloned().expect("p");
        assert_eq!(
            preferred_election(&m, &p),
            Election::NotAvailable,
            "out of the ISR until it catches up"
        );
        all_caught_up(&mut m);
        let p = m.partition("t", 0).cloned().expect("p");
        assert_eq!(preferred_election(&m, &p), Election::Possible);
    }

    #[test]
    fn an_unknown_partition_in_an_election_changes_nothing() {
        let mut m = cluster(&[1, 2]);
        create(&mut m, "t", vec![vec![1, 2]]);
        m.apply(&Command::ControlledShutdown { id: 1 })
            .expect("move");
        m.apply(&Command::UnfenceBroker { id: 1 }).expect("back");
        all_caught_up(&mut m);
        let before = m.clone();
        let refused = m.apply(&Command::ElectPreferredLeaders {
            partitions: vec![("t".into(), 0), ("t".into(), 7)],
        });
        assert!(matches!(refused, Err(CommandError::UnknownPartition(..))));
        assert_eq!(m, before);
    }

    #[test]
    fn unclean_election_follows_the_cluster_setting_and_the_topic_override() {
        let mut m = cluster(&[1, 2]);
        create(&mut m, "t", vec![vec![1, 2]]);
        let p = m.partition("t", 0).cloned().expect("p");
        m.apply(&Command::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: vec![1],
        })
        .expect("shrink");
        m.apply(&Command::FenceBroker { id: 1 }).expect("fence");
        assert_eq!(m.partition("t", 0).map(|p| p.leader), Some(NO_LEADER));
        let p = m.partition("t", 0).cloned().expect("p");
        assert_eq!(unclean_election(&m, &p), Election::Possible);
        let mut by_topic = m.clone();
        by_topic
            .apply(&Command::AlterConfigs {
                name: "t".into(),
                configs: [("unclean.leader.election.enable".into(), "true".into())].into(),
            })
            .expect("configs");
        by_topic
            .apply(&Command::FenceBroker { id: 1 })
            .expect("fence again");
        // Fencing a fenced broker elects nothing new; an explicit unclean election does.
        by_topic
            .apply(&Command::ElectUncleanLeaders {
                partitions: vec![("t".into(), 0)],
            })
            .expect("unclean");
        assert_eq!(by_topic.partition("t", 0).map(|p| p.leader), Some(2));
        m.apply(&Command::SetUncleanLeaderElection { enabled: true })
            .expect("cluster setting");
        let p = m.partition("t", 0).expect("p");
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
    }

    #[test]
    fn rebalance_elects_only_past_the_threshold() {
        let mut m = cluster(&[1, 2]);
        create(
            &mut m,
            "t",
            (0..10)
                .map(|i| if i % 2 == 0 { vec![1, 2] } else { vec![2, 1] })
                .collect(),
        );
        m.apply(&Command::ControlledShutdown { id: 1 })
            .expect("move");
        m.apply(&Command::UnfenceBroker { id: 1 }).expect("back");
        assert!(
            rebalance_elections(&m, 10).is_empty(),
            "broker 1 is not in sync yet"
        );
        all_caught_up(&mut m);
        assert_eq!(leader_imbalance(&m).get(&1), Some(&100));
        assert_eq!(leader_imbalance(&m).get(&2), Some(&0));
        let elections = rebalance_elections(&m, 10);
        assert_eq!(elections.len(), 5);
        assert!(rebalance_elections(&m, 100).is_empty());
        m.apply(&Command::ElectPreferredLeaders {
            partitions: elections,
        })
        .expect("elect");
        assert!(leader_imbalance(&m).values().all(|&p| p == 0));
        assert!(rebalance_elections(&m, 0).is_empty());
    }
}
