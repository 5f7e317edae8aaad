//! The state one broker process serves from: its configuration and identity, the hosted
//! topics, the producer-id allocator, metrics, and the signal that wakes long-polling fetches.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::BrokerConfig;
use crate::group::offsets::{OffsetStore, OffsetStoreError};
use crate::group::GroupCoordinator;
use crate::metrics::Metrics;
use crate::topics::{TopicError, TopicRegistry};

const IDENTITY_FILE: &str = "__tokafka/meta.json";
const PRODUCER_IDS_FILE: &str = "__tokafka/producer-ids";
/// Producer ids reserved on disk at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error(transparent)]
    Offsets(#[from] OffsetStoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {path} belongs to node {found}, not node {configured}")]
    NodeIdMismatch {
        path: PathBuf,
        found: i32,
        configured: i32,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BrokerError + '_ {
    move |source| BrokerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically and durably.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), BrokerError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp).map_err(io_error(&tmp))?;
    (&file).write_all(bytes).map_err(io_error(&tmp))?;
    file.sync_data().map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
    }
    Ok(())
}

/// Who this data directory belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Identity {
    cluster_id: String,
    node_id: i32,
}

/// Hands out producer ids, reserving them on disk in blocks so that an id is never reused
/// across restarts.
pub struct ProducerIdAllocator {
    path: PathBuf,
    /// (next id, end of the reserved block)
    state: Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    fn open(path: PathBuf) -> Result<Self, BrokerError> {
        let next = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<i64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(BrokerError::Io { path, source: e }),
        };
        Ok(Self {
            path,
            state: Mutex::new((next, next)),
        })
    }

    /// The next unused producer id of a standalone broker.
    ///
    /// # Errors
    /// I/O errors reserving a new block.
    pub fn allocate(&self) -> Result<i64, BrokerError> {
        let mut state = self.state.lock();
        if state.0 >= state.1 {
            let end = state.0 + PRODUCER_ID_BLOCK;
            write_durably(&self.path, end.to_string().as_bytes())?;
            state.1 = end;
        }
        let id = state.0;
        state.0 += 1;
        Ok(id)
    }
}

pub struct Broker {
    pub config: Arc<BrokerConfig>,
    pub topics: TopicRegistry,
    pub cluster_id: String,
    pub producer_ids: ProducerIdAllocator,
    pub metrics: Metrics,
    pub groups: Arc<GroupCoordinator>,
    /// Notified after every append and high-watermark move, to wake long-polling fetches and
    /// acks=-1 produces.
    pub appended: Notify,
    /// Set once at start when the broker is part of a cluster.
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    ready: AtomicBool,
}

impl Broker {
    /// Opens the data directory: identity, topics (recovering their logs) and producer ids.
    ///
    /// # Errors
    /// I/O errors, a data directory of another node, or a partition that cannot be opened.
    pub fn open(config: BrokerConfig) -> Result<Arc<Self>, BrokerError> {
        let config = Arc::new(config);
        let meta_dir = config.data_dir.join("__tokafka");
        std::fs::create_dir_all(&meta_dir).map_err(io_error(&meta_dir))?;
        let identity_path = config.data_dir.join(IDENTITY_FILE);
        let identity = match std::fs::read(&identity_path) {
            Ok(bytes) => {
                serde_json::from_slice::<Identity>(&bytes).map_err(|e| BrokerError::Io {
                    path: identity_path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Identity {
                    cluster_id: new_cluster_id(),
                    node_id: config.node_id,
                };
                let bytes = serde_json::to_vec(&identity).map_err(|e| BrokerError::Io {
                    path: identity_path.clone(),
                    source: std::io::Error::other(e),
                })?;
                write_durably(&identity_path, &bytes)?;
                identity
            }
            Err(e) => {
                return Err(BrokerError::Io {
                    path: identity_path,
                    source: e,
                })
            }
        };
        if identity.node_id != config.node_id {
            return Err(BrokerError::NodeIdMismatch {
                path: config.data_dir.clone(),
                found: identity.node_id,
                configured: config.node_id,
            });
        }
        let producer_ids = ProducerIdAllocator::open(config.data_dir.join(PRODUCER_IDS_FILE))?;
        let topics = TopicRegistry::open(Arc::clone(&config))?;
        // In a cluster the offsets topic is the controller's, loaded partition by partition
        // as this broker comes to lead it.
        let offsets = if config.cluster.is_some() {
            OffsetStore::replicated(config.offsets_topic_partitions)
        } else {
            OffsetStore::open(&topics, config.offsets_topic_partitions)?
        };
        let groups = Arc::new(GroupCoordinator::new(offsets, config.group_limits));
        Ok(Arc::new(Self {
            groups,
            config,
            topics,
            cluster_id: identity.cluster_id,
            producer_ids,
            metrics: Metrics::new(),
            appended: Notify::new(),
            cluster: std::sync::OnceLock::new(),
            ready: AtomicBool::new(false),
        }))
    }

    /// The cluster this broker is part of; `None` when standalone.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// The cluster id clients see: the one the controller quorum agreed on in a cluster
    /// (every broker answers the same), else this broker's own.
    pub fn cluster_id(&self) -> String {
        self.cluster()
            .and_then(|c| c.metadata().cluster_id.clone())
            .unwrap_or_else(|| self.cluster_id.clone())
    }
}

/// A Kafka-style cluster id: 16 random bytes in URL-safe base64 without padding.
pub fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut bits: u128 = u128::from_be_bytes(bytes);
    let mut out = String::with_capacity(22);
    for _ in 0..22 {
        out.push(ALPHABET[(bits & 63) as usize] as char);
        bits >>= 6;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_producer_ids_survive_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cluster_id, first) = {
            let broker = Broker::open(BrokerConfig::for_tests(dir.path())).expect("open");
            let a = broker.producer_ids.allocate().expect("id");
            let b = broker.producer_ids.allocate().expect("id");
            assert_eq!(b, a + 1);
            (broker.cluster_id.clone(), b)
        };
        let broker = Broker::open(BrokerConfig::for_tests(dir.path())).expect("reopen");
        assert_eq!(broker.cluster_id, cluster_id);
        assert_eq!(cluster_id.len(), 22);
        assert!(
            broker.producer_ids.allocate().expect("id") > first,
            "ids are never reused"
        );
    }

    #[test]
    fn a_data_dir_of_another_node_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Broker::open(BrokerConfig::for_tests(dir.path())).expect("open"));
        let mut config = BrokerConfig::for_tests(dir.path());
        config.node_id = 7;
        assert!(matches!(
            Broker::open(config),
            Err(BrokerError::NodeIdMismatch {
                found: 1,
                configured: 7,
                ..
            })
        ));
    }
}
