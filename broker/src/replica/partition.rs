//! One replica of a partition hosted by this broker: its log, the idempotent-producer state
//! that guards appends, its role (leader with its followers' progress, or follower), and the
//! requests waiting on it.
//!
//! Locking (never held across an await):
//! - `role` (read-write): appends as leader and follower-progress updates hold it for reading,
//!   role changes for writing, so an append is never stamped with an epoch this replica no
//!   longer leads in (Kafka's `leaderIsrUpdateLock`);
//! - `producers` (mutex): the append lock; the producer sequence check and the log append are
//!   one atomic step. Taken after `role`, never before it;
//! - reads go straight to the log and take neither.
//!
//! Invariants:
//! - only a leader appends records it did not copy, stamped with its current leader epoch;
//! - the high watermark never passes the log end, and as leader it moves only as
//!   [`LeaderState`] allows (never past a record some in-sync replica lacks);
//! - every append, high-watermark move and role change wakes the waiting requests;
//! - an I/O failure of the replica's files takes its log directory offline (see
//!   [`super::log_dirs`]); from then on the replica neither leads, follows nor serves.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use kafka_protocol::ResponseError;
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use tokio::sync::Notify;
use tracing::warn;
use uuid::Uuid;

use super::leader::LeaderState;
use super::log_dirs::LogDir;
use super::producers::{load_producers, record_producer, remove_snapshot, Producers};
use super::wakeup::Wakeups;
use super::{AppendError, Appended, IsrProposal, NotCommitted, ReplicaRole};
use crate::log::format::BatchHeader;
use crate::log::{high_watermark, AppendInfo, LogConfig, LogError, PartitionLog};
use crate::producer::{last_sequence, BatchMeta, ProducerSnapshot, SequenceCheck, SnapshotError};

/// Who appends to a leader's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A producer; with acks=all the ISR must hold at least `min.insync.replicas`.
    Client { acks: i16 },
    /// A coordinator of this broker writing to the internal partition it loaded in
    /// `leader_epoch`: refused in any other epoch (the partition was led elsewhere meanwhile).
    Coordinator { leader_epoch: i32 },
}

pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    pub log: PartitionLog,
    producers: Mutex<Producers>,
    role: RwLock<Role>,
    wakeups: Wakeups,
    /// The high watermark last checkpointed, to skip rewriting it unchanged.
    checkpointed_high_watermark: AtomicI64,
    /// The log directory holding this replica; offline, so is the replica.
    log_dir: Arc<LogDir>,
}

/// An error that may be the storage failing under a replica (rather than a refusal).
pub trait StorageFailure: std::fmt::Display {
    /// Whether the error is an I/O failure of the replica's files.
    fn is_io(&self) -> bool;
}

impl StorageFailure for LogError {
    fn is_io(&self) -> bool {
        matches!(self, LogError::Io { .. })
    }
}

impl StorageFailure for SnapshotError {
    fn is_io(&self) -> bool {
        matches!(self, SnapshotError::Io { .. })
    }
}

impl StorageFailure for AppendError {
    fn is_io(&self) -> bool {
        matches!(self, AppendError::Log(e) if e.is_io())
    }
}

/// This replica's part in the partition now.
enum Role {
    /// Following `leader` in `leader_epoch` (or waiting for a leader: `leader` is -1). The
    /// fetcher appends what the leader has; the high watermark is the leader's.
    Follower { leader: i32, leader_epoch: i32 },
    /// Leading: the followers' progress and the ISR, behind a mutex so that follower fetches
    /// update it under the role's read lock.
    Leader(Box<Mutex<Leadership>>),
}

struct Leadership {
    state: LeaderState,
    /// The topic's `min.insync.replicas`.
    min_insync_replicas: usize,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({}-{})", self.topic, self.index)
    }
}

/// Exclusive appends to a led partition (see [`Partition::lock_appends_as_leader`]).
pub struct LeaderAppendGuard<'a> {
    partition: &'a Partition,
    // Field order is drop order: the append lock goes before the role lock.
    producers: MutexGuard<'a, Producers>,
    role: RwLockReadGuard<'a, Role>,
    leader_epoch: i32,
}

impl LeaderAppendGuard<'_> {
    /// The partition's log, for reads under the lock (its end offset cannot move).
    pub fn log(&self) -> &PartitionLog {
        &self.partition.log
    }

    /// Appends as [`Partition::append_as_leader`] does, under the locks already held.
    ///
    /// # Errors
    /// As [`Partition::append_as_leader`].
    pub fn append(&mut self, records: &mut [u8]) -> Result<Appended, AppendError> {
        self.partition.check_online()?;
        let appended = self
            .partition
            .append_locked(&mut self.producers, records, self.leader_epoch)
            .map_err(|e| self.partition.storage_error(e))?;
        self.partition.advance_high_watermark(&self.role);
        Ok(appended)
    }
}

impl Drop for LeaderAppendGuard<'_> {
    fn drop(&mut self) {
        self.partition.wakeups.wake_all();
    }
}

impl Partition {
    /// Opens the replica's log in `dir` and rebuilds its producer state from the snapshot and
    /// the batches after it. The replica starts as a follower without leader; its high
    /// watermark is the checkpointed one (the log start when there is none), kept within the
    /// log.
    ///
    /// # Errors
    /// Log errors; a damaged snapshot or high-watermark checkpoint is not an error (the log is
    /// replayed, the high watermark starts at the log start).
    pub fn open(
        topic: &str,
        topic_id: Uuid,
        index: i32,
        dir: &Path,
        config: LogConfig,
    ) -> Result<Self, LogError> {
        let log_dir = LogDir::standalone(dir.parent().unwrap_or(dir));
        Self::open_at(topic, topic_id, index, dir, log_dir, config)
    }

    /// [`Partition::open`] of the replica's directory in `log_dir`.
    ///
    /// # Errors
    /// As [`Partition::open`].
    pub fn open_in(
        log_dir: &Arc<LogDir>,
        topic: &str,
        topic_id: Uuid,
        index: i32,
        config: LogConfig,
    ) -> Result<Self, LogError> {
        let dir = log_dir.partition_dir(topic, index);
        Self::open_at(topic, topic_id, index, &dir, Arc::clone(log_dir), config)
    }

    fn open_at(
        topic: &str,
        topic_id: Uuid,
        index: i32,
        dir: &Path,
        log_dir: Arc<LogDir>,
        config: LogConfig,
    ) -> Result<Self, LogError> {
        let log = PartitionLog::open(dir, config)?;
        let producers = load_producers(&log, topic, index)?;
        let restored = high_watermark::read(dir)?.unwrap_or_else(|| log.log_start_offset());
        let high_watermark = log.set_high_watermark(restored);
        Ok(Self {
            topic: topic.to_string(),
            topic_id,
            index,
            log,
            producers: Mutex::new(producers),
            role: RwLock::new(Role::Follower {
                leader: -1,
                leader_epoch: -1,
            }),
            wakeups: Wakeups::default(),
            checkpointed_high_watermark: AtomicI64::new(high_watermark),
            log_dir,
        })
    }

    // --- storage ---------------------------------------------------------------------------

    /// Whether the replica's log directory still works.
    pub fn is_online(&self) -> bool {
        self.log_dir.is_online()
    }

    /// The log directory holding this replica.
    pub fn log_dir(&self) -> &Arc<LogDir> {
        &self.log_dir
    }

    /// Passes `error` on, taking the log directory offline first when it is an I/O failure.
    pub fn storage_error<E: StorageFailure>(&self, error: E) -> E {
        if error.is_io() {
            self.log_dir
                .fail(&format_args!("{}-{}: {error}", self.topic, self.index));
        }
        error
    }

    /// Stops the replica after its log directory went offline: it leads and follows nothing
    /// any more, and the requests waiting on it are woken (they find it gone).
    pub fn take_offline(&self) {
        *self.role.write() = Role::Follower {
            leader: -1,
            leader_epoch: -1,
        };
        self.wakeups.wake_all();
    }

    fn check_online(&self) -> Result<(), AppendError> {
        if self.is_online() {
            Ok(())
        } else {
            Err(AppendError::Offline)
        }
    }

    // --- as leader -------------------------------------------------------------------------

    /// Appends `records` (a mutable copy of the request bytes) as leader: the batches get
    /// their offsets and this leader's epoch, idempotent batches are checked against the
    /// producer state first (a retry is answered with its original offsets and nothing is
    /// written), and the high watermark moves as far as the ISR allows.
    ///
    /// # Errors
    /// NOT_LEADER_OR_FOLLOWER when this replica does not lead (or, for a coordinator, leads
    /// in another epoch); NOT_ENOUGH_REPLICAS for acks=all below `min.insync.replicas`; the
    /// producer-state and log refusals. Nothing is written then.
    pub fn append_as_leader(
        &self,
        records: &mut [u8],
        origin: AppendOrigin,
    ) -> Result<Appended, AppendError> {
        self.check_online()?;
        let role = self.role.read();
        let leader_epoch = Self::check_append(&role, origin)?;
        let appended = {
            let mut producers = self.producers.lock();
            self.append_locked(&mut producers, records, leader_epoch)
                .map_err(|e| self.storage_error(e))?
        };
        self.advance_high_watermark(&role);
        drop(role);
        self.wakeups.wake_all();
        Ok(appended)
    }

    /// Takes the append lock of a partition led in `leader_epoch` and keeps it until the guard
    /// is dropped: no other append happens meanwhile, so a coordinator can decide what to
    /// append from what the log holds (offsets compaction does). Reads are not blocked.
    ///
    /// # Errors
    /// NOT_LEADER_OR_FOLLOWER when this replica does not lead in `leader_epoch`.
    pub fn lock_appends_as_leader(
        &self,
        leader_epoch: i32,
    ) -> Result<LeaderAppendGuard<'_>, AppendError> {
        self.check_online()?;
        let role = self.role.read();
        let leader_epoch = Self::check_append(&role, AppendOrigin::Coordinator { leader_epoch })?;
        Ok(LeaderAppendGuard {
            partition: self,
            producers: self.producers.lock(),
            role,
            leader_epoch,
        })
    }

    /// The epoch an append of `origin` is stamped with, or why it is refused.
    fn check_append(role: &Role, origin: AppendOrigin) -> Result<i32, AppendError> {
        let Role::Leader(leadership) = role else {
            return Err(AppendError::NotLeader);
        };
        let leadership = leadership.lock();
        let epoch = leadership.state.leader_epoch;
        match origin {
            AppendOrigin::Coordinator { leader_epoch } if leader_epoch != epoch => {
                Err(AppendError::NotLeader)
            }
            AppendOrigin::Client { acks: -1 }
                if leadership.state.isr.len() < leadership.min_insync_replicas =>
            {
                Err(AppendError::NotEnoughReplicas {
                    isr: leadership.state.isr.len(),
                    min_insync_replicas: leadership.min_insync_replicas,
                })
            }
            _ => Ok(epoch),
        }
    }

    fn append_locked(
        &self,
        producers: &mut Producers,
        records: &mut [u8],
        leader_epoch: i32,
    ) -> Result<Appended, AppendError> {
        let Some(header) = super::producers::idempotent_batch(records)? else {
            let info = self.log.append_with_leader_epoch(records, leader_epoch)?;
            return Ok(appended(info, leader_epoch, false));
        };
        let last_seq = last_sequence(header.base_sequence, header.record_count);
        match producers.check(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            last_seq,
        )? {
            SequenceCheck::Duplicate(meta) => Ok(Appended {
                base_offset: meta.first_offset,
                last_offset: meta.last_offset,
                leader_epoch,
                duplicate: true,
            }),
            SequenceCheck::Append => {
                let info = self.log.append_with_leader_epoch(records, leader_epoch)?;
                producers.record(
                    header.producer_id,
                    header.producer_epoch,
                    BatchMeta {
                        first_sequence: header.base_sequence,
                        last_sequence: last_seq,
                        first_offset: info.base_offset,
                        last_offset: info.last_offset,
                    },
                );
                Ok(appended(info, leader_epoch, false))
            }
        }
    }

    /// Moves a leader's high watermark as far as its tracking allows. True when it moved.
    fn advance_high_watermark(&self, role: &Role) -> bool {
        let Role::Leader(leadership) = role else {
            return false;
        };
        let hw = leadership
            .lock()
            .state
            .high_watermark(self.log.log_end_offset());
        if hw > self.log.high_watermark() {
            self.log.set_high_watermark(hw);
            true
        } else {
            false
        }
    }

    /// The leader epoch, checked against the one a client believes current (`-1`: not
    /// given). Only the leader serves produce, consume and offset queries.
    ///
    /// # Errors
    /// NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH (the client's epoch is older) or
    /// UNKNOWN_LEADER_EPOCH (newer than this replica knows).
    pub fn leader_epoch(&self, client_epoch: i32) -> Result<i32, ResponseError> {
        if !self.is_online() {
            return Err(ResponseError::KafkaStorageError);
        }
        let role = self.role.read();
        let Role::Leader(leadership) = &*role else {
            return Err(ResponseError::NotLeaderOrFollower);
        };
        let epoch = leadership.lock().state.leader_epoch;
        if client_epoch < 0 || client_epoch == epoch {
            Ok(epoch)
        } else if client_epoch < epoch {
            Err(ResponseError::FencedLeaderEpoch)
        } else {
            Err(ResponseError::UnknownLeaderEpoch)
        }
    }

    /// Whether this replica leads in `leader_epoch` now.
    pub fn leads_in(&self, leader_epoch: i32) -> bool {
        self.leader_epoch(-1) == Ok(leader_epoch)
    }

    /// Records a follower's fetch at `fetch_offset` (its log end): its progress, the high
    /// watermark that follows, and an ISR expansion to propose. Does nothing unless leading.
    pub fn record_follower_fetch(
        &self,
        follower: i32,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Option<IsrProposal> {
        let role = self.role.read();
        let Role::Leader(leadership) = &*role else {
            return None;
        };
        let (effect, proposal) = {
            let mut leadership = leadership.lock();
            let effect = leadership.state.on_follower_fetch(
                follower,
                fetch_offset,
                self.log.log_end_offset(),
                self.log.high_watermark(),
                now_ms,
            );
            let proposal = effect
                .propose_isr
                .clone()
                .map(|isr| self.proposal(&leadership.state, isr));
            (effect, proposal)
        };
        if let Some(hw) = effect.high_watermark {
            self.log.set_high_watermark(hw);
            drop(role);
            self.wakeups.wake_all();
        }
        proposal
    }

    /// The ISR without followers that have not caught up for `lag_max_ms`, proposed (and
    /// marked pending) when it differs from the committed ISR.
    pub fn shrink_isr_candidate(&self, now_ms: i64, lag_max_ms: i64) -> Option<IsrProposal> {
        let role = self.role.read();
        let Role::Leader(leadership) = &*role else {
            return None;
        };
        let mut leadership = leadership.lock();
        let isr = leadership.state.shrink_candidate(now_ms, lag_max_ms)?;
        leadership.state.set_pending(isr.clone());
        Some(self.proposal(&leadership.state, isr))
    }

    /// Forgets a proposed ISR change the controller refused or never committed, so that it
    /// can be proposed again (only if this replica still leads in the proposal's epochs).
    pub fn isr_change_failed(&self, proposal: &IsrProposal) {
        if let Role::Leader(leadership) = &*self.role.read() {
            let mut leadership = leadership.lock();
            if leadership.state.leader_epoch == proposal.leader_epoch
                && leadership.state.partition_epoch == proposal.partition_epoch
            {
                leadership.state.clear_pending();
            }
        }
    }

    fn proposal(&self, state: &LeaderState, isr: Vec<i32>) -> IsrProposal {
        IsrProposal {
            topic: self.topic.clone(),
            partition: self.index,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            isr,
        }
    }

    /// Waits until the high watermark reaches `offset` while this replica leads in
    /// `leader_epoch` (what acks=all produces and offset commits wait for).
    ///
    /// # Errors
    /// [`NotCommitted::LeadershipLost`] when the replica stops leading in that epoch first;
    /// [`NotCommitted::TimedOut`] at `deadline`.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits.
    pub async fn wait_for_high_watermark(
        &self,
        offset: i64,
        leader_epoch: i32,
        deadline: tokio::time::Instant,
    ) -> Result<(), NotCommitted> {
        // The common case (a leader alone in its ISR, or followers already caught up) needs
        // no waiter.
        if self.log.high_watermark() >= offset && self.leads_in(leader_epoch) {
            return Ok(());
        }
        let waiter = Arc::new(Notify::new());
        loop {
            self.wakeups.register(&waiter);
            if !self.leads_in(leader_epoch) {
                return Err(NotCommitted::LeadershipLost);
            }
            if self.log.high_watermark() >= offset {
                return Ok(());
            }
            tokio::select! {
                () = waiter.notified() => {}
                () = tokio::time::sleep_until(deadline) => return Err(NotCommitted::TimedOut),
            }
        }
    }

    /// Registers `waiter` for the next change of this partition (see [`Wakeups`]).
    pub fn register_waiter(&self, waiter: &Arc<Notify>) {
        self.wakeups.register(waiter);
    }

    // --- role changes ----------------------------------------------------------------------

    /// Applies `role` from the metadata. Leading in a new epoch starts the epoch in the log
    /// (so OffsetForLeaderEpoch answers for it before its first append) and resets the
    /// followers' tracking; the same epoch only takes the new ISR and replicas. Following
    /// forgets any leadership. Returns true when this replica starts leading in a new epoch.
    ///
    /// # Errors
    /// The epoch could not be recorded in the log; the role is then unchanged.
    pub fn apply_role(
        &self,
        me: i32,
        role: &ReplicaRole,
        min_insync_replicas: usize,
        now_ms: i64,
    ) -> Result<bool, LogError> {
        if !self.is_online() {
            // An offline replica takes no role; the controller hears of it from the cluster.
            return Ok(false);
        }
        let mut current = self.role.write();
        let started = if role.leader == me {
            if let Role::Leader(leadership) = &*current {
                let mut leadership = leadership.lock();
                if leadership.state.leader_epoch == role.leader_epoch {
                    leadership.state.update_membership(
                        role.partition_epoch,
                        &role.replicas,
                        &role.isr,
                    );
                    leadership.min_insync_replicas = min_insync_replicas;
                    drop(leadership);
                    self.advance_high_watermark(&current);
                    drop(current);
                    self.wakeups.wake_all();
                    return Ok(false);
                }
            }
            self.log
                .begin_leader_epoch(role.leader_epoch)
                .map_err(|e| self.storage_error(e))?;
            let state = LeaderState::new(
                me,
                role.leader_epoch,
                role.partition_epoch,
                &role.replicas,
                &role.isr,
                self.log.log_end_offset(),
                now_ms,
            );
            *current = Role::Leader(Box::new(Mutex::new(Leadership {
                state,
                min_insync_replicas,
            })));
            self.advance_high_watermark(&current);
            true
        } else {
            *current = Role::Follower {
                leader: role.leader,
                leader_epoch: role.leader_epoch,
            };
            false
        };
        drop(current);
        self.wakeups.wake_all();
        Ok(started)
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.is_online() && matches!(&*self.role.read(), Role::Leader(_))
    }

    /// The leader this replica follows and its epoch, when following.
    pub fn followed_leader(&self) -> Option<(i32, i32)> {
        if !self.is_online() {
            return None;
        }
        match &*self.role.read() {
            Role::Follower {
                leader,
                leader_epoch,
            } => Some((*leader, *leader_epoch)),
            Role::Leader(_) => None,
        }
    }

    // --- as follower -----------------------------------------------------------------------

    /// A follower's append of batches copied from the leader, with the leader's offsets and
    /// epochs (see [`PartitionLog::append_replicated`]). The producer state learns every
    /// idempotent batch, so that this replica dedupes retries once it leads; nothing is
    /// refused on sequence grounds (the leader decided). The high watermark is not moved.
    ///
    /// # Errors
    /// As [`PartitionLog::append_replicated`]; nothing is written then.
    pub fn append_as_follower(&self, records: &mut [u8]) -> Result<AppendInfo, LogError> {
        let info = {
            let mut producers = self.producers.lock();
            let info = self
                .log
                .append_replicated(records)
                .map_err(|e| self.storage_error(e))?;
            let mut position = 0usize;
            // The log validated every batch: each header parses and its size moves forward.
            while let Some(header) = records
                .get(position..)
                .and_then(|rest| BatchHeader::parse(rest).ok())
            {
                record_producer(&mut producers, &header);
                position += header.size_bytes();
            }
            info
        };
        self.wakeups.wake_all();
        Ok(info)
    }

    /// Takes the leader's high watermark (within this replica's log). True when it moved.
    pub fn follow_high_watermark(&self, leader_high_watermark: i64) -> bool {
        let hw = leader_high_watermark.min(self.log.log_end_offset());
        if hw > self.log.high_watermark() {
            self.log.set_high_watermark(hw);
            self.wakeups.wake_all();
            true
        } else {
            false
        }
    }

    /// Removes every batch at or after `offset` (see [`PartitionLog::truncate_to`]) and
    /// forgets the producer batches that went with them. Returns the new log end offset.
    ///
    /// # Errors
    /// Log errors.
    pub fn truncate_to(&self, offset: i64) -> Result<i64, LogError> {
        let mut producers = self.producers.lock();
        let old_end = self.log.log_end_offset();
        let new_end = self
            .log
            .truncate_to(offset)
            .map_err(|e| self.storage_error(e))?;
        if new_end < old_end {
            // Forget the cut batches in memory; the snapshot is rewritten at the new end (one
            // left past it is deleted at the next open).
            producers.truncate_to(new_end);
            drop(producers);
            self.snapshot_after_truncation();
        }
        Ok(new_end)
    }

    /// Deletes the whole log and restarts it, empty, at `offset` (see
    /// [`PartitionLog::truncate_fully_and_start_at`]), forgetting every producer.
    ///
    /// # Errors
    /// Log errors; I/O errors deleting the snapshot.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), LogError> {
        let mut producers = self.producers.lock();
        remove_snapshot(self.log.dir()).map_err(|e| self.storage_error(e))?;
        self.log
            .truncate_fully_and_start_at(offset)
            .map_err(|e| self.storage_error(e))?;
        *producers = Producers::default();
        drop(producers);
        self.snapshot_after_truncation();
        Ok(())
    }

    fn snapshot_after_truncation(&self) {
        if let Err(e) = self.snapshot_producers() {
            warn!(topic = %self.topic, partition = self.index, error = %e, "producer snapshot after truncation failed");
        }
    }

    // --- housekeeping ----------------------------------------------------------------------

    /// Writes the high watermark to the partition's checkpoint when it moved since the last
    /// one. Durable when this returns.
    ///
    /// # Errors
    /// I/O errors; the previous checkpoint then stays.
    pub fn checkpoint_high_watermark(&self) -> Result<(), LogError> {
        let high_watermark = self.log.high_watermark();
        if self.checkpointed_high_watermark.load(Ordering::Acquire) == high_watermark {
            return Ok(());
        }
        high_watermark::write(self.log.dir(), high_watermark).map_err(|e| self.storage_error(e))?;
        self.checkpointed_high_watermark
            .store(high_watermark, Ordering::Release);
        Ok(())
    }

    /// Writes the producer-state snapshot for the current log end.
    ///
    /// # Errors
    /// I/O errors.
    pub fn snapshot_producers(&self) -> Result<(), SnapshotError> {
        let snapshot = {
            let producers = self.producers.lock();
            ProducerSnapshot {
                offset: self.log.log_end_offset(),
                state: producers.clone(),
            }
        };
        snapshot
            .write(self.log.dir())
            .map_err(|e| self.storage_error(e))
    }

    /// Flushes the log when its flush policy says so.
    ///
    /// # Errors
    /// I/O errors (the log directory then goes offline).
    pub fn flush_due(&self) -> Result<(), LogError> {
        self.log
            .maybe_flush()
            .map(|_| ())
            .map_err(|e| self.storage_error(e))
    }

    /// Applies retention to the log; returns the segments deleted.
    ///
    /// # Errors
    /// I/O errors (the log directory then goes offline).
    pub fn apply_retention(&self) -> Result<usize, LogError> {
        self.log
            .apply_retention()
            .map_err(|e| self.storage_error(e))
    }

    /// Flushes, snapshots producer state, checkpoints the high watermark and closes the log
    /// cleanly. Waiting requests are woken (they find the replica gone).
    ///
    /// # Errors
    /// Log errors (a snapshot failure is logged: the log replay covers it).
    pub fn close(&self) -> Result<(), LogError> {
        *self.role.write() = Role::Follower {
            leader: -1,
            leader_epoch: -1,
        };
        self.wakeups.wake_all();
        if !self.is_online() {
            // Nothing can be written there; the next start recovers the log.
            return Ok(());
        }
        if let Err(e) = self.snapshot_producers() {
            warn!(topic = %self.topic, partition = self.index, error = %e, "producer snapshot failed");
        }
        self.checkpoint_high_watermark()?;
        self.log.close()
    }
}

fn appended(info: AppendInfo, leader_epoch: i32, duplicate: bool) -> Appended {
    Appended {
        base_offset: info.base_offset,
        last_offset: info.last_offset,
        leader_epoch,
        duplicate,
    }
}
