//! Durable storage of the controller quorum for openraft: the Raft log, the vote, the
//! committed index, and the metadata state machine with its snapshots.
//!
//! Files in the quorum directory:
//! - `log`: appended records `[len u32][crc32c u32][json entry]`, fsynced before an append is
//!   acknowledged; a torn tail (crash mid-append) fails its length or CRC and is dropped on
//!   load. Truncation and purging rewrite the file (rare: the log is kept short by snapshots).
//! - `vote`, `committed`, `purged`, `snapshot`: small JSON files replaced atomically.
//!
//! The state machine lives in memory and is rebuilt on start from the snapshot plus the
//! committed log entries after it, which openraft re-applies.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{Cursor, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StoredMembership, Vote,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::metadata::{ClusterMetadata, CommandResult};
use super::TypeConfig;
use crate::log::durable;

pub type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: std::io::Error,
) -> StorageError<NodeId> {
    StorageError::from_io_error(subject, verb, e)
}

fn json_err(e: serde_json::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    match durable::read(path)? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(json_err),
        None => Ok(None),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    Ok(durable::write_atomically(
        path,
        &serde_json::to_vec(value).map_err(json_err)?,
    )?)
}

fn encode_record(entry: &Entry<TypeConfig>) -> std::io::Result<Vec<u8>> {
    let body = serde_json::to_vec(entry).map_err(json_err)?;
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes the records of a log file, stopping at the first torn or damaged one.
fn decode_records(bytes: &[u8]) -> Vec<Entry<TypeConfig>> {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        let crc = u32::from_be_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]);
        let Some(body) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32c::crc32c(body) != crc {
            break;
        }
        match serde_json::from_slice(body) {
            Ok(entry) => entries.push(entry),
            Err(_) => break,
        }
        pos += 8 + len;
    }
    entries
}

/// The Raft log and vote of one controller.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<tokio::sync::Mutex<LogInner>>,
}

struct LogInner {
    dir: PathBuf,
    file: std::fs::File,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

impl LogInner {
    fn rewrite(&mut self) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for entry in self.entries.values() {
            bytes.extend_from_slice(&encode_record(entry)?);
        }
        let path = self.dir.join("log");
        durable::write_atomically(&path, &bytes)?;
        self.file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Ok(())
    }
}

impl LogStore {
    /// Opens the log in `dir`, dropping a torn tail.
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("log");
        let bytes = durable::read(&path)?.unwrap_or_default();
        let entries: BTreeMap<u64, Entry<TypeConfig>> = decode_records(&bytes)
            .into_iter()
            .map(|e| (e.log_id.index, e))
            .collect();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let mut inner = LogInner {
            dir: dir.to_path_buf(),
            file,
            entries,
            last_purged: read_json(&dir.join("purged"))?,
            vote: read_json(&dir.join("vote"))?,
            committed: read_json(&dir.join("committed"))?,
        };
        // Rewrite when the tail was torn, so later appends follow whole records.
        let valid: usize = inner
            .entries
            .values()
            .map(|e| encode_record(e).map_or(0, |r| r.len()))
            .sum();
        if valid != bytes.len() {
            inner.rewrite()?;
        }
        Ok(Self {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let inner = self.inner.lock().await;
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let inner = self.inner.lock().await;
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock().await;
        write_json(&inner.dir.join("vote"), vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let mut inner = self.inner.lock().await;
        write_json(&inner.dir.join("committed"), &committed)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock().await;
        let mut bytes = Vec::new();
        let mut appended = Vec::new();
        for entry in entries {
            bytes.extend_from_slice(
                &encode_record(&entry)
                    .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?,
            );
            appended.push(entry);
        }
        let result = inner
            .file
            .write_all(&bytes)
            .and_then(|()| inner.file.sync_data());
        if let Err(e) = result {
            let kind = e.kind();
            callback.log_io_completed(Err(std::io::Error::new(kind, e.to_string())));
            return Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, e));
        }
        for entry in appended {
            inner.entries.insert(entry.log_id.index, entry);
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock().await;
        inner.entries.retain(|index, _| *index < log_id.index);
        inner
            .rewrite()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock().await;
        write_json(&inner.dir.join("purged"), &Some(log_id))
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        inner.last_purged = Some(log_id);
        inner.entries.retain(|index, _| *index > log_id.index);
        inner
            .rewrite()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }
}

/// The state machine's durable image.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: Option<SnapshotMeta<NodeId, openraft::BasicNode>>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    metadata: ClusterMetadata,
}

/// The metadata state machine, shared with readers through a watch channel.
#[derive(Clone)]
pub struct StateMachine {
    dir: PathBuf,
    inner: Arc<RwLock<StoredSnapshot>>,
    /// Publishes every applied state: (last applied index, metadata).
    published: Arc<watch::Sender<(u64, Arc<ClusterMetadata>)>>,
    snapshot_seq: Arc<std::sync::atomic::AtomicU64>,
}

impl StateMachine {
    /// Loads the last snapshot from `dir`.
    ///
    /// # Errors
    /// I/O errors or a damaged snapshot.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let stored: StoredSnapshot = read_json(&dir.join("snapshot"))?.unwrap_or_default();
        let index = stored.last_applied.map_or(0, |l| l.index);
        let (tx, _rx) = watch::channel((index, Arc::new(stored.metadata.clone())));
        Ok(Self {
            dir: dir.to_path_buf(),
            inner: Arc::new(RwLock::new(stored)),
            published: Arc::new(tx),
            snapshot_seq: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        })
    }

    /// A receiver of every applied metadata state.
    pub fn subscribe(&self) -> watch::Receiver<(u64, Arc<ClusterMetadata>)> {
        self.published.subscribe()
    }

    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        Arc::clone(&self.published.borrow().1)
    }

    fn publish(&self) {
        let inner = self.inner.read();
        let index = inner.last_applied.map_or(0, |l| l.index);
        self.published
            .send_replace((index, Arc::new(inner.metadata.clone())));
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let seq = self
            .snapshot_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (meta, bytes) = {
            let mut inner = self.inner.write();
            let meta = SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id: format!("{}-{seq}", inner.last_applied.map_or(0, |l| l.index)),
            };
            inner.meta = Some(meta.clone());
            let bytes = serde_json::to_vec(&*inner)
                .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, json_err(e)))?;
            (meta, bytes)
        };
        durable::write_atomically(&self.dir.join("snapshot"), &bytes)
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e.into()))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(
        Option<LogId<NodeId>>,
        StoredMembership<NodeId, openraft::BasicNode>,
    )> {
        let inner = self.inner.read();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        {
            let mut inner = self.inner.write();
            for entry in entries {
                inner.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => results.push(Ok(())),
                    EntryPayload::Normal(command) => results.push(inner.metadata.apply(&command)),
                    EntryPayload::Membership(membership) => {
                        inner.membership = StoredMembership::new(Some(entry.log_id), membership);
                        results.push(Ok(()));
                    }
                }
            }
        }
        self.publish();
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let bytes = snapshot.into_inner();
        let mut stored: StoredSnapshot = serde_json::from_slice(&bytes)
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, json_err(e)))?;
        stored.meta = Some(meta.clone());
        stored.last_applied = meta.last_log_id;
        stored.membership = meta.last_membership.clone();
        durable::write_atomically(
            &self.dir.join("snapshot"),
            &serde_json::to_vec(&stored)
                .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, json_err(e)))?,
        )
        .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e.into()))?;
        *self.inner.write() = stored;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let inner = self.inner.read();
        let Some(meta) = inner.meta.clone() else {
            return Ok(None);
        };
        let bytes = std::fs::read(self.dir.join("snapshot"))
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::Command;
    use openraft::CommittedLeaderId;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::FenceBroker { id: index as i32 }),
        }
    }

    #[test]
    fn a_torn_log_tail_is_dropped_on_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bytes = Vec::new();
        for i in 1..=3 {
            bytes.extend_from_slice(&encode_record(&entry(i)).expect("encode"));
        }
        let whole = bytes.len();
        bytes.extend_from_slice(&encode_record(&entry(4)).expect("encode")[..10]);
        std::fs::write(dir.path().join("log"), &bytes).expect("write");
        let store = LogStore::open(dir.path()).expect("open");
        let inner = store.inner.try_lock().expect("lock");
        assert_eq!(
            inner.entries.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("log"))
                .expect("stat")
                .len() as usize,
            whole
        );
    }
}
