//! Followers: one fetcher per leader broker copies the batches of the partitions this broker
//! follows, byte for byte and with the leader's offsets, and takes the leader's high
//! watermark.
//!
//! Before fetching in a new leader epoch a follower truncates any divergent tail: it asks the
//! leader (OffsetForLeaderEpoch) where its own latest epoch ends there and cuts its log at
//! that offset (Kafka's KIP-101/279 design), so a former leader drops records the new leader
//! never had. The fetchers restart whenever the roles change; each start truncates again,
//! which is cheap and always safe.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::node::Cluster;
use super::roles::{fetch_plan, PartitionKey};
use crate::replica::{Partition, ReplicaManager, ReplicaRole as Role};
use crate::replication::client::{
    ConnectionConfig, EpochQuery, FetchParams, LeaderConnection, PartitionFetch,
};

/// Pause of a partition whose fetch the leader refused.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Most OffsetForLeaderEpoch rounds of one truncation (each unsettled round moves to an
/// older epoch of this log).
const MAX_TRUNCATION_ROUNDS: usize = 16;

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Runs the fetchers for as long as `stop` is not cancelled, following role changes.
pub fn spawn_fetchers(
    replicas: Arc<ReplicaManager>,
    cluster: Arc<Cluster>,
    stop: CancellationToken,
) {
    tokio::spawn(manage(replicas, cluster, stop));
}

async fn manage(replicas: Arc<ReplicaManager>, cluster: Arc<Cluster>, stop: CancellationToken) {
    let mut changes = cluster.subscribe_roles();
    let mut running: Vec<(CancellationToken, tokio::task::JoinHandle<()>)> = Vec::new();
    loop {
        // The old fetchers finish (an append in flight completes) before new ones start, so
        // that two never append to one partition.
        for (token, _) in &running {
            token.cancel();
        }
        for (_, task) in running.drain(..) {
            let _ = task.await;
        }
        let roles = cluster.roles();
        for (leader, keys) in fetch_plan(&roles, cluster.me) {
            let token = stop.child_token();
            let partitions: Vec<(PartitionKey, Role)> = keys
                .into_iter()
                .filter_map(|k| roles.get(&k).cloned().map(|r| (k, r)))
                .collect();
            let task = tokio::spawn(follow_leader(
                Arc::clone(&replicas),
                Arc::clone(&cluster),
                leader,
                partitions,
                token.clone(),
            ));
            running.push((token, task));
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

/// A partition being followed.
struct Followed {
    key: PartitionKey,
    role: Role,
    partition: Arc<Partition>,
    /// Not fetched before this time: the leader refused the last fetch (it may not have
    /// applied the same metadata yet) or an append failed; the fetch is retried after it.
    paused_until: Option<Instant>,
    /// The leader's log start this replica last deleted up to: segment boundaries differ
    /// between replicas, so the local log start may stay below it, and the deletion is only
    /// worth trying again when the leader's moves.
    followed_log_start: i64,
}

impl Followed {
    fn pause(&mut self) {
        self.paused_until = Some(Instant::now() + RETRY_AFTER);
    }
}

/// Fetches from `leader` until `stop`: connects (with backoff), truncates, then fetches.
async fn follow_leader(
    replicas: Arc<ReplicaManager>,
    cluster: Arc<Cluster>,
    leader: i32,
    partitions: Vec<(PartitionKey, Role)>,
    stop: CancellationToken,
) {
    let mut followed: Vec<Followed> = partitions
        .into_iter()
        .filter_map(|(key, role)| {
            let partition = replicas.catalog.partition(&key.0, key.1)?;
            Some(Followed {
                key,
                role,
                partition,
                paused_until: None,
                followed_log_start: 0,
            })
        })
        .collect();
    let mut backoff = Duration::from_millis(50);
    let mut truncated = false;
    while !stop.is_cancelled() {
        let Some(address) = leader_address(&cluster, leader) else {
            pause(&stop, backoff).await;
            continue;
        };
        let config = ConnectionConfig::new(format!("tokafka-follower-{}", cluster.me));
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            c = LeaderConnection::connect(&address, config) => c,
        };
        let mut connection = match connected {
            Ok(c) => c,
            Err(e) => {
                debug!(leader, %address, error = %e, "cannot reach leader");
                pause(&stop, backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        if !truncated {
            match truncate_divergent(&mut connection, &cluster, &mut followed, &stop).await {
                Ok(()) => truncated = true,
                Err(e) => {
                    warn!(leader, error = %e, "truncation query failed");
                    pause(&stop, backoff).await;
                    continue;
                }
            }
        }
        if let Err(e) = fetch_loop(&mut connection, &cluster, &mut followed, &stop).await {
            debug!(leader, error = %e, "fetch from leader failed; reconnecting");
            pause(&stop, backoff).await;
        }
    }
}

async fn pause(stop: &CancellationToken, duration: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(duration) => {}
    }
}

fn leader_address(cluster: &Cluster, leader: i32) -> Option<String> {
    cluster
        .metadata()
        .brokers
        .get(&leader)
        .map(|b| format!("{}:{}", b.host, b.port))
}

/// Cuts each followed log where it stops agreeing with the leader, with Kafka's rule
/// ([`PartitionLog::truncation_point`](crate::log::PartitionLog::truncation_point)): ask
/// where this log's latest epoch ends on the leader, cut, and ask again about the new latest
/// epoch while the answer is not final.
async fn truncate_divergent(
    connection: &mut LeaderConnection,
    cluster: &Cluster,
    followed: &mut [Followed],
    stop: &CancellationToken,
) -> Result<(), crate::replication::client::ClientError> {
    let mut unsettled: Vec<usize> = (0..followed.len()).collect();
    for _ in 0..MAX_TRUNCATION_ROUNDS {
        let asked: Vec<EpochQuery> = unsettled
            .iter()
            .filter_map(|&i| {
                let f = &followed[i];
                f.partition.log.latest_epoch().map(|epoch| EpochQuery {
                    topic: f.key.0.clone(),
                    partition: f.key.1,
                    current_leader_epoch: f.role.leader_epoch,
                    leader_epoch: epoch,
                })
            })
            .collect();
        if asked.is_empty() {
            return Ok(());
        }
        let answers = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            a = connection.offset_for_leader_epoch(cluster.me, &asked) => a?,
        };
        unsettled.clear();
        for answer in answers {
            let Some(i) = followed
                .iter()
                .position(|f| f.key.0 == answer.topic && f.key.1 == answer.partition)
            else {
                continue;
            };
            let f = &mut followed[i];
            if answer.error_code != 0 {
                debug!(topic = %f.key.0, partition = f.key.1, code = answer.error_code, "leader refused the epoch query");
                f.pause();
                continue;
            }
            // A negative epoch or offset is Kafka's UNDEFINED answer.
            let leader_answer = (answer.leader_epoch >= 0 && answer.end_offset >= 0)
                .then_some((answer.leader_epoch, answer.end_offset));
            let log_end = f.partition.log.log_end_offset();
            let (cut, settled) = f.partition.log.truncation_point(leader_answer);
            // Called even when no record goes: it also drops an empty epoch begun at the end.
            let partition = Arc::clone(&f.partition);
            match tokio::task::spawn_blocking(move || partition.truncate_to(cut)).await {
                Ok(Ok(new_end)) => {
                    if new_end < log_end {
                        info!(topic = %f.key.0, partition = f.key.1, from = log_end, to = new_end, "truncated divergent tail");
                    }
                }
                Ok(Err(e)) => {
                    warn!(topic = %f.key.0, partition = f.key.1, error = %e, "truncation failed");
                    f.pause();
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "truncation task failed");
                    continue;
                }
            }
            if !settled {
                unsettled.push(i);
            }
        }
    }
    for &i in &unsettled {
        let f = &followed[i];
        warn!(topic = %f.key.0, partition = f.key.1, rounds = MAX_TRUNCATION_ROUNDS, "truncation did not settle; fetching from where the log ends");
    }
    Ok(())
}

/// Fetches until an error or `stop`.
async fn fetch_loop(
    connection: &mut LeaderConnection,
    cluster: &Cluster,
    followed: &mut [Followed],
    stop: &CancellationToken,
) -> Result<(), crate::replication::client::ClientError> {
    let params = FetchParams {
        replica_id: cluster.me,
        replica_epoch: -1,
        max_wait_ms: i32::try_from(cluster.config.replica_fetch_wait_max_ms).unwrap_or(500),
        min_bytes: 1,
        max_bytes: cluster.config.replica_fetch_max_bytes.saturating_mul(16),
    };
    loop {
        let now = Instant::now();
        let requests: Vec<PartitionFetch> = followed
            .iter()
            .filter(|f| f.partition.is_online())
            .filter(|f| f.paused_until.is_none_or(|until| until <= now))
            .map(|f| PartitionFetch {
                topic: f.key.0.clone(),
                topic_id: f.role.topic_id,
                partition: f.key.1,
                fetch_offset: f.partition.log.log_end_offset(),
                current_leader_epoch: f.role.leader_epoch,
                last_fetched_epoch: f.partition.log.latest_epoch(),
                log_start_offset: f.partition.log.log_start_offset(),
                partition_max_bytes: cluster.config.replica_fetch_max_bytes,
            })
            .collect();
        if requests.is_empty() {
            let next = followed
                .iter()
                .filter(|f| f.partition.is_online())
                .filter_map(|f| f.paused_until)
                .min();
            let Some(next) = next else {
                stop.cancelled().await;
                return Ok(());
            };
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep_until(next) => continue,
            }
        }
        let outcome = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            o = connection.fetch(&params, &requests) => o?,
        };
        let index: HashMap<(String, i32), usize> = followed
            .iter()
            .enumerate()
            .map(|(i, f)| (f.key.clone(), i))
            .collect();
        for fetched in outcome.partitions {
            let Some(&i) = index.get(&(fetched.topic.clone(), fetched.partition)) else {
                continue;
            };
            let f = &mut followed[i];
            apply_fetched(f, fetched).await;
        }
    }
}

/// Appends what one partition's answer brought and takes the leader's high watermark.
async fn apply_fetched(f: &mut Followed, fetched: crate::replication::client::FetchedPartition) {
    let code = ResponseError::try_from_code(fetched.error_code);
    match code {
        None => {}
        Some(ResponseError::OffsetOutOfRange) => {
            let log = &f.partition.log;
            if fetched.log_start_offset > log.log_end_offset() {
                // The leader deleted what we would fetch next: start over at its log start.
                let partition = Arc::clone(&f.partition);
                let start = fetched.log_start_offset;
                let _ = tokio::task::spawn_blocking(move || {
                    partition.truncate_fully_and_start_at(start)
                })
                .await;
            } else {
                warn!(topic = %f.key.0, partition = f.key.1, "follower ahead of the leader; retrying");
                f.pause();
            }
            return;
        }
        Some(other) => {
            debug!(topic = %f.key.0, partition = f.key.1, error = ?other, "leader refused the fetch");
            f.pause();
            return;
        }
    }
    let whole = whole_batches_len(&fetched.records);
    if whole > 0 {
        let mut records = fetched.records[..whole].to_vec();
        let partition = Arc::clone(&f.partition);
        let result =
            tokio::task::spawn_blocking(move || partition.append_as_follower(&mut records)).await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                warn!(topic = %f.key.0, partition = f.key.1, error = %e, "replicated append refused");
                f.pause();
                return;
            }
            Err(e) => {
                warn!(error = %e, "append task failed");
                return;
            }
        }
    }
    let log = &f.partition.log;
    if fetched.log_start_offset > log.log_start_offset()
        && fetched.log_start_offset > f.followed_log_start
    {
        f.followed_log_start = fetched.log_start_offset;
        // The leader deleted (retention, compaction) below its log start: drop the whole
        // segments below it here too, so that no replica keeps what the leader superseded
        // without what superseded it.
        let partition = Arc::clone(&f.partition);
        let start = fetched.log_start_offset;
        let deleted =
            tokio::task::spawn_blocking(move || partition.log.delete_segments_below(start)).await;
        if let Ok(Err(e)) = deleted {
            debug!(topic = %f.key.0, partition = f.key.1, error = %e, "cannot follow the leader's log start");
        }
    }
    f.partition.follow_high_watermark(fetched.high_watermark);
}

/// Length of the longest prefix of `records` made of whole batches (a fetch answer may end
/// in a partial batch).
pub fn whole_batches_len(records: &[u8]) -> usize {
    let mut position = 0usize;
    while let Some(length_bytes) = records.get(position + 8..position + 12) {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(length_bytes);
        let Ok(length) = usize::try_from(i32::from_be_bytes(raw)) else {
            break;
        };
        let end = position + 12 + length;
        if end > records.len() || length == 0 {
            break;
        }
        position = end;
    }
    position
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_batches::{batch, BatchSpec};

    #[test]
    fn only_whole_batches_are_kept() {
        let a = batch(&BatchSpec::records(2));
        let b = batch(&BatchSpec::records(3).seed(9));
        let mut both = a.clone();
        both.extend_from_slice(&b);
        assert_eq!(whole_batches_len(&both), both.len());
        assert_eq!(whole_batches_len(&both[..both.len() - 1]), a.len());
        assert_eq!(whole_batches_len(&both[..a.len() + 5]), a.len());
        assert_eq!(whole_batches_len(&both[..7]), 0);
        assert_eq!(whole_batches_len(&[]), 0);
        let mut negative = a.clone();
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(whole_batches_len(&negative), 0);
    }
}
