//! The read path (Kafka's `fetchMessages`): one pass reads each requested partition as its
//! leader — committed records for consumers, the whole log for followers, whose progress it
//! records — and the fetch long-polls with per-partition wake-ups until it has `min_bytes`,
//! an error, its deadline, or the broker shuts down.
//!
//! Records are returned as file regions, so that the server sends them from the segment files
//! without copying.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Partition, ReplicaManager, TopicRef};
use crate::clock::now_ms;
use crate::log::{FileRegion, LogError, ReadLimits};

/// Longest long-poll the broker honours, whatever the client asks.
pub const MAX_WAIT_CAP: Duration = Duration::from_secs(60);

/// The request-wide settings of a fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchParams {
    /// The broker id of a follower's fetch; `None` for a consumer's.
    pub follower: Option<i32>,
    pub max_wait: Duration,
    pub min_bytes: u64,
    /// The request's byte limit (the broker's `fetch.max.bytes` caps it further).
    pub max_bytes: u64,
}

/// One partition of a fetch.
#[derive(Debug, Clone, Copy)]
pub struct PartitionFetch<'a> {
    pub topic: TopicRef<'a>,
    pub partition: i32,
    pub fetch_offset: i64,
    /// The leader epoch the client believes current (`-1`: not given).
    pub current_leader_epoch: i32,
    pub partition_max_bytes: i32,
}

/// What one partition's read found.
#[derive(Debug, Default)]
pub struct FetchedPartition {
    /// `None` when served; NOT_LEADER_OR_FOLLOWER also for a partition not hosted here (the
    /// caller, which knows the cluster metadata, tells that apart).
    pub error: Option<FetchError>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Whole batches from the fetch offset on.
    pub records: Option<FileRegion>,
}

/// Why a partition was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchError {
    /// Not hosted on this broker.
    NotHosted,
    /// A Kafka error to answer with.
    Refused(ResponseError),
}

struct Pass {
    partitions: Vec<FetchedPartition>,
    bytes: u64,
    has_error: bool,
}

impl ReplicaManager {
    /// Answers a fetch once it has `min_bytes`, an error, its `max_wait` (capped at
    /// [`MAX_WAIT_CAP`]) has passed, or `shutdown` is cancelled (then with what there is,
    /// possibly nothing). Results are in the order of `partitions`.
    ///
    /// # Cancel safety
    /// Cancel-safe: follower progress is recorded at most once per pass and reads change
    /// nothing.
    pub async fn fetch(
        &self,
        params: FetchParams,
        partitions: &[PartitionFetch<'_>],
        shutdown: &CancellationToken,
    ) -> Vec<FetchedPartition> {
        let deadline = Instant::now() + params.max_wait.min(MAX_WAIT_CAP);
        let hosted: Vec<Option<Arc<Partition>>> = partitions
            .iter()
            .map(|p| self.partition(p.topic, p.partition))
            .collect();
        let waiter = Arc::new(Notify::new());
        loop {
            // Register before reading, so a change in between is not missed.
            for partition in hosted.iter().flatten() {
                partition.register_waiter(&waiter);
            }
            let pass = self.read_pass(&params, partitions, &hosted);
            let expired = Instant::now() >= deadline || shutdown.is_cancelled();
            if pass.bytes >= params.min_bytes.max(1)
                || pass.has_error
                || expired
                || params.min_bytes == 0
            {
                return pass.partitions;
            }
            tokio::select! {
                () = waiter.notified() => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = shutdown.cancelled() => {}
            }
        }
    }

    fn read_pass(
        &self,
        params: &FetchParams,
        partitions: &[PartitionFetch<'_>],
        hosted: &[Option<Arc<Partition>>],
    ) -> Pass {
        let budget = self.settings.fetch_max_bytes.min(params.max_bytes);
        let mut pass = Pass {
            partitions: Vec::with_capacity(partitions.len()),
            bytes: 0,
            has_error: false,
        };
        let now = now_ms();
        for (fetch, partition) in partitions.iter().zip(hosted) {
            let limit = budget
                .saturating_sub(pass.bytes)
                .min(u64::try_from(fetch.partition_max_bytes).unwrap_or(0));
            let fetched = match partition {
                None => FetchedPartition {
                    error: Some(FetchError::NotHosted),
                    high_watermark: -1,
                    log_start_offset: -1,
                    records: None,
                },
                Some(partition) => {
                    self.read_partition(params, fetch, partition, limit, pass.bytes == 0, now)
                }
            };
            pass.has_error |= fetched.error.is_some();
            pass.bytes += fetched.records.as_ref().map_or(0, |r| r.len);
            pass.partitions.push(fetched);
        }
        pass
    }

    /// Reads one partition as its leader, in the epoch the client names.
    fn read_partition(
        &self,
        params: &FetchParams,
        fetch: &PartitionFetch<'_>,
        partition: &Partition,
        max_bytes: u64,
        first: bool,
        now_ms: i64,
    ) -> FetchedPartition {
        let refused = |code| FetchedPartition {
            error: Some(FetchError::Refused(code)),
            high_watermark: -1,
            log_start_offset: -1,
            records: None,
        };
        // Only the leader serves, consumers and followers alike.
        if let Err(code) = partition.leader_epoch(fetch.current_leader_epoch) {
            return refused(code);
        }
        if let Some(follower) = params.follower {
            if let Some(proposal) =
                partition.record_follower_fetch(follower, fetch.fetch_offset, now_ms)
            {
                self.propose_isr(proposal);
            }
        }
        let log = &partition.log;
        let limits = ReadLimits {
            max_bytes,
            min_one_batch: first,
            // Followers copy the whole log; consumers see committed records only.
            max_offset: params.follower.is_none().then(|| log.high_watermark()),
        };
        match log.read(fetch.fetch_offset, limits) {
            Ok(read) => FetchedPartition {
                error: None,
                high_watermark: read.high_watermark,
                log_start_offset: read.log_start_offset,
                records: read.region,
            },
            Err(LogError::OffsetOutOfRange {
                log_start_offset,
                log_end_offset,
                ..
            }) => FetchedPartition {
                error: Some(FetchError::Refused(ResponseError::OffsetOutOfRange)),
                high_watermark: log.high_watermark().min(log_end_offset),
                log_start_offset,
                records: None,
            },
            Err(e) => {
                let e = partition.storage_error(e);
                warn!(topic = %partition.topic, partition = partition.index, offset = fetch.fetch_offset, error = %e, "fetch read failed");
                refused(ResponseError::KafkaStorageError)
            }
        }
    }
}
