//! Applies each metadata state the broker follows: holds the replicas the metadata assigns to
//! this broker and drops the others, gives each replica its role (leader or follower, in its
//! epoch), loads the offsets partitions this broker now leads into the group coordinator and
//! unloads the others, and says when this broker may serve clients.
//!
//! Decisions come from [`super::roles::desired_roles`] (pure); this module only carries them
//! out. Invariant: no role is taken from metadata that predates this process's registration
//! (a lagging voter's state may name this broker leader of a partition that has moved since).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::node::Cluster;
use super::roles::{desired_roles, PartitionKey};
use crate::clock::now_ms;
use crate::controller::metadata::ClusterMetadata;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::group::GroupCoordinator;
use crate::replica::{Partition, ReplicaManager};

/// Applies every new metadata state until `shutdown`.
pub async fn run(
    cluster: Arc<Cluster>,
    replicas: Arc<ReplicaManager>,
    groups: Arc<GroupCoordinator>,
    shutdown: CancellationToken,
) {
    let mut rx = cluster.followed.clone();
    // Topics seen in some applied state: only those may be dropped when they disappear (a
    // lagging voter's first answer must not delete a topic it does not know yet).
    let mut seen: BTreeSet<String> = BTreeSet::new();
    loop {
        let (index, metadata) = rx.borrow_and_update().clone();
        let applying = Arc::clone(&metadata);
        let (c, r, g) = (
            Arc::clone(&cluster),
            Arc::clone(&replicas),
            Arc::clone(&groups),
        );
        let seen_before = seen.clone();
        let applied =
            tokio::task::spawn_blocking(move || apply_once(&c, &r, &g, &applying, &seen_before))
                .await;
        let serving = match applied {
            Ok((now_seen, serving)) => {
                seen = now_seen;
                serving
            }
            Err(e) => {
                warn!(error = %e, "metadata apply task failed");
                false
            }
        };
        // Published in this order, so that a broker that starts serving answers from
        // metadata its replicas already reflect.
        cluster.applied.send_replace((index, metadata));
        cluster
            .serving
            .send_if_modified(|s| std::mem::replace(s, serving) != serving);
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

/// One pass of [`run`]; returns the topics seen, and whether this broker may serve
/// (registered in this incarnation, unfenced, and the cluster has its id).
fn apply_once(
    cluster: &Cluster,
    replicas: &ReplicaManager,
    groups: &GroupCoordinator,
    metadata: &ClusterMetadata,
    seen: &BTreeSet<String>,
) -> (BTreeSet<String>, bool) {
    let me = cluster.me;
    let Some(registration) = metadata
        .brokers
        .get(&me)
        .filter(|b| b.incarnation == cluster.incarnation)
    else {
        debug!("metadata predates this broker's registration; waiting");
        return (seen.clone(), false);
    };
    let desired = desired_roles(metadata, me);
    drop_unassigned(replicas, metadata, &desired, seen);
    let mut hosted = BTreeMap::new();
    for ((name, index), role) in &desired {
        let Some(topic) = metadata.topics.get(name) else {
            continue;
        };
        let count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        match replicas
            .catalog
            .host(name, role.topic_id, count, &topic.configs, *index)
        {
            Ok(partition) => {
                hosted.insert((name.clone(), *index), partition);
            }
            Err(e) => warn!(topic = %name, partition = index, error = %e, "cannot hold replica"),
        }
    }
    let now = now_ms();
    let mut plan_changed = false;
    let mut newly_led = Vec::new();
    {
        let mut roles = cluster.roles.write();
        for (key, role) in &desired {
            plan_changed |= roles.get(key).is_none_or(|p| p.epoch_changed(role));
            let Some(partition) = hosted.get(key) else {
                continue;
            };
            let min_insync_replicas = metadata
                .topics
                .get(&key.0)
                .and_then(|t| t.configs.get("min.insync.replicas"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(replicas.settings.default_min_insync_replicas);
            match partition.apply_role(me, role, min_insync_replicas, now) {
                Ok(true) => {
                    debug!(topic = %key.0, partition = key.1, epoch = role.leader_epoch, isr = ?role.isr, "leading partition");
                    newly_led.push(key.clone());
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(topic = %key.0, partition = key.1, error = %e, "cannot take the role")
                }
            }
        }
        plan_changed |= roles.keys().any(|k| !desired.contains_key(k));
        *roles = desired;
    }
    if !newly_led.is_empty() {
        info!(
            partitions = newly_led.len(),
            first = %format!("{}-{}", newly_led[0].0, newly_led[0].1),
            "leading partitions in a new epoch"
        );
    }
    if plan_changed {
        cluster.roles_changed.send_modify(|n| *n += 1);
    }
    coordinate_offsets_partitions(groups, &hosted);
    let serving = !registration.fenced && metadata.cluster_id.is_some();
    let now_seen = metadata
        .topics
        .keys()
        .cloned()
        .chain(seen.iter().cloned())
        .collect();
    (now_seen, serving)
}

/// Drops the local replicas the metadata no longer assigns here: whole topics it deleted
/// (or replaced by a new incarnation), and partitions moved to other brokers.
fn drop_unassigned(
    replicas: &ReplicaManager,
    metadata: &ClusterMetadata,
    desired: &BTreeMap<PartitionKey, crate::replica::ReplicaRole>,
    seen: &BTreeSet<String>,
) {
    for topic in replicas.catalog.list() {
        let listed = metadata.topics.get(&topic.name);
        let gone = match listed {
            Some(record) => record.id != topic.id,
            None => seen.contains(&topic.name),
        };
        if gone {
            if let Err(e) = replicas.catalog.remove_topic(&topic.name) {
                warn!(topic = %topic.name, error = %e, "cannot drop local replicas");
            }
            continue;
        }
        if listed.is_none() {
            continue;
        }
        for partition in topic.partitions() {
            if !desired.contains_key(&(topic.name.clone(), partition.index)) {
                if let Err(e) = replicas
                    .catalog
                    .remove_replica(&topic.name, partition.index)
                {
                    warn!(topic = %topic.name, partition = partition.index, error = %e, "cannot drop a local replica");
                }
            }
        }
    }
}

/// Loads the offsets partitions this broker now leads (it coordinates their groups) and
/// unloads those it no longer leads.
fn coordinate_offsets_partitions(
    groups: &GroupCoordinator,
    hosted: &BTreeMap<PartitionKey, Arc<Partition>>,
) {
    let mut led = BTreeSet::new();
    let (mut loaded, mut unloaded) = (0usize, 0usize);
    for ((name, index), partition) in hosted {
        if name != OFFSETS_TOPIC {
            continue;
        }
        let Ok(epoch) = partition.leader_epoch(-1) else {
            continue;
        };
        led.insert(*index);
        match groups.offsets.loaded_epoch(*index) {
            Some(loaded) if loaded == epoch => continue,
            // Led in another epoch: leadership went elsewhere and came back between two
            // metadata states this broker applied, so its memory may miss what the other
            // leader committed. Start over from the log.
            Some(_) => groups.unload_partition(*index),
            None => {}
        }
        match groups.load_partition(Arc::clone(partition), epoch) {
            Ok(()) => loaded += 1,
            Err(e) => warn!(partition = index, error = %e, "cannot load an offsets partition"),
        }
    }
    for index in groups.offsets.loaded_partitions() {
        if !led.contains(&index) {
            groups.unload_partition(index);
            unloaded += 1;
        }
    }
    if loaded + unloaded > 0 {
        info!(
            loaded,
            unloaded,
            coordinating = led.len(),
            "offsets partitions (group coordination) changed"
        );
    }
}
