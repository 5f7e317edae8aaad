//! The topics this broker hosts: creation, deletion, partition growth and config changes,
//! persisted in `<data dir>/__tokafka/topics.json` so they survive restarts.
//!
//! Each topic's partitions live in `<data dir>/<topic>-<partition>/`. The registry is the only
//! writer of the topic list; lookups take a read lock for the time of a map access.

pub mod config;
pub mod partition;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::log::LogError;
pub use config::TopicConfigError;
pub use partition::{AppendError, Appended, Partition, ReplicaMode};

/// Longest legal topic name (Kafka's limit).
pub const TOPIC_NAME_MAX_CHARS: usize = 249;
const METADATA_DIR: &str = "__tokafka";
const TOPICS_FILE: &str = "topics.json";

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic `{0}` already exists")]
    AlreadyExists(String),
    #[error("topic `{0}` does not exist")]
    Unknown(String),
    #[error("invalid topic name `{name}`: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error(transparent)]
    InvalidConfig(#[from] TopicConfigError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("topic metadata {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Checks a topic name against Kafka's rules.
///
/// # Errors
/// [`TopicError::InvalidName`].
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |reason| {
        Err(TopicError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name == "." || name == ".." {
        return invalid("`.` and `..` are not allowed");
    }
    if name.len() > TOPIC_NAME_MAX_CHARS {
        return invalid("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

/// What is persisted about a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    /// The partitions held here when not all are (a broker in a cluster holds only those it
    /// replicates); `None` means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted: Option<Vec<i32>>,
}

pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub replication_factor: i16,
    configs: RwLock<BTreeMap<String, String>>,
    /// Indexed by partition; `None` for a partition not held here.
    partitions: RwLock<Vec<Option<Arc<Partition>>>>,
}

impl Topic {
    /// The partitions held here.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().iter().flatten().cloned().collect()
    }

    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.read().get(i).cloned().flatten())
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions.read().len() as i32
    }

    pub fn configs(&self) -> BTreeMap<String, String> {
        self.configs.read().clone()
    }

    fn record(&self) -> TopicRecord {
        let partitions = self.partitions.read();
        let all = partitions.iter().all(Option::is_some);
        TopicRecord {
            name: self.name.clone(),
            id: self.id,
            partitions: partitions.len() as i32,
            replication_factor: self.replication_factor,
            configs: self.configs(),
            hosted: (!all).then(|| {
                partitions
                    .iter()
                    .filter_map(|p| p.as_ref().map(|p| p.index))
                    .collect()
            }),
        }
    }
}

/// One config change of IncrementalAlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

pub struct TopicRegistry {
    data_dir: PathBuf,
    broker: Arc<BrokerConfig>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serialises changes to the topic list and their persistence.
    changes: Mutex<()>,
}

fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{index}"))
}

impl TopicRegistry {
    /// Loads the persisted topics and opens their partitions (recovering any that were not
    /// closed cleanly).
    ///
    /// # Errors
    /// Unreadable metadata or a partition that cannot be opened.
    pub fn open(broker: Arc<BrokerConfig>) -> Result<Self, TopicError> {
        let data_dir = broker.data_dir.clone();
        let meta_dir = data_dir.join(METADATA_DIR);
        std::fs::create_dir_all(&meta_dir).map_err(|source| TopicError::Store {
            path: meta_dir.clone(),
            source,
        })?;
        let path = meta_dir.join(TOPICS_FILE);
        let records: Vec<TopicRecord> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| TopicError::Store {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(TopicError::Store { path, source }),
        };
        let registry = Self {
            data_dir,
            broker,
            topics: RwLock::new(HashMap::new()),
            changes: Mutex::new(()),
        };
        for record in records {
            let topic = registry.open_topic(&record)?;
            registry
                .topics
                .write()
                .insert(record.name.clone(), Arc::new(topic));
        }
        Ok(registry)
    }

    fn open_topic(&self, record: &TopicRecord) -> Result<Topic, TopicError> {
        let log_config = config::log_config(&record.configs, &self.broker);
        let mut partitions = Vec::with_capacity(record.partitions.max(0) as usize);
        for index in 0..record.partitions {
            if record.hosted.as_ref().is_some_and(|h| !h.contains(&index)) {
                partitions.push(None);
                continue;
            }
            let dir = partition_dir(&self.data_dir, &record.name, index);
            partitions.push(Some(Arc::new(Partition::open_as(
                &record.name,
                record.id,
                index,
                &dir,
                log_config.clone(),
                self.replica_mode(),
            )?)));
        }
        Ok(Topic {
            name: record.name.clone(),
            id: record.id,
            replication_factor: record.replication_factor,
            configs: RwLock::new(record.configs.clone()),
            partitions: RwLock::new(partitions),
        })
    }

    fn persist(&self) -> Result<(), TopicError> {
        let mut records: Vec<TopicRecord> =
            self.topics.read().values().map(|t| t.record()).collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        let meta_dir = self.data_dir.join(METADATA_DIR);
        let path = meta_dir.join(TOPICS_FILE);
        let tmp = meta_dir.join(format!("{TOPICS_FILE}.tmp"));
        let store = |source| TopicError::Store {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&records)
            .map_err(|e| store(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let file = std::fs::File::create(&tmp).map_err(store)?;
        use std::io::Write;
        (&file).write_all(&bytes).map_err(store)?;
        file.sync_data().map_err(store)?;
        std::fs::rename(&tmp, &path).map_err(store)?;
        std::fs::File::open(&meta_dir)
            .and_then(|d| d.sync_all())
            .map_err(store)?;
        Ok(())
    }

    /// Who moves a partition's high watermark: replication in a cluster, the append itself
    /// on a standalone broker.
    fn replica_mode(&self) -> ReplicaMode {
        // In a cluster every partition is replicated, `__consumer_offsets` included: its
        // high watermark moves only as the in-sync replicas fetch, and commits wait for it.
        if self.broker.cluster.is_some() {
            ReplicaMode::Replicated
        } else {
            ReplicaMode::Standalone
        }
    }

    pub fn broker_config(&self) -> &BrokerConfig {
        &self.broker
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().values().find(|t| t.id == id).cloned()
    }

    /// All topics, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut topics: Vec<_> = self.topics.read().values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// Every hosted partition.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.list().iter().flat_map(|t| t.partitions()).collect()
    }

    /// Checks a creation request without doing it; returns the partition count and
    /// replication factor that would be used (`-1` means the broker default).
    ///
    /// # Errors
    /// The reason the creation would fail.
    pub fn validate_create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<(i32, i16), TopicError> {
        validate_topic_name(name)?;
        if self.get(name).is_some() {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        let partitions = if partitions == -1 {
            self.broker.num_partitions
        } else {
            partitions
        };
        if !(1..=100_000).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(format!(
                "{partitions} (must be between 1 and 100000)"
            )));
        }
        let replication_factor = if replication_factor == -1 {
            self.broker.default_replication_factor
        } else {
            replication_factor
        };
        if replication_factor != 1 {
            return Err(TopicError::InvalidReplicationFactor(format!(
                "{replication_factor} is larger than the 1 available broker"
            )));
        }
        for (key, value) in configs {
            config::validate_entry(key, value)?;
        }
        Ok((partitions, replication_factor))
    }

    /// Creates a topic.
    ///
    /// # Errors
    /// As [`validate_create`](Self::validate_create), plus I/O errors.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        let _changes = self.changes.lock();
        let (partitions, replication_factor) =
            self.validate_create(name, partitions, replication_factor, &configs)?;
        let record = TopicRecord {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor,
            configs,
            hosted: None,
        };
        // Leftovers of an earlier topic with this name must not be resurrected.
        for index in 0..partitions {
            let dir = partition_dir(&self.data_dir, name, index);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|source| TopicError::Store {
                    path: dir.clone(),
                    source,
                })?;
            }
        }
        let topic = Arc::new(self.open_topic(&record)?);
        self.topics
            .write()
            .insert(name.to_string(), Arc::clone(&topic));
        self.persist()?;
        info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic and its data.
    ///
    /// # Errors
    /// [`TopicError::Unknown`], I/O errors.
    pub fn delete(&self, name: &str) -> Result<(), TopicError> {
        let _changes = self.changes.lock();
        let topic = self
            .topics
            .write()
            .remove(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        self.persist()?;
        for partition in topic.partitions() {
            let dir = partition.log.dir().to_path_buf();
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                warn!(dir = %dir.display(), error = %e, "cannot remove deleted partition");
            }
        }
        info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Grows a topic to `total` partitions.
    ///
    /// # Errors
    /// [`TopicError::Unknown`], [`TopicError::InvalidPartitions`] when `total` does not grow it.
    pub fn create_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let _changes = self.changes.lock();
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let current = topic.partition_count();
        if total <= current {
            return Err(TopicError::InvalidPartitions(format!(
                "topic currently has {current} partitions, {total} would not increase it"
            )));
        }
        if total > 100_000 {
            return Err(TopicError::InvalidPartitions(format!(
                "{total} is more than 100000"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let log_config = config::log_config(&topic.configs(), &self.broker);
        let mut added = Vec::new();
        for index in current..total {
            let dir = partition_dir(&self.data_dir, name, index);
            added.push(Some(Arc::new(Partition::open_as(
                name,
                topic.id,
                index,
                &dir,
                log_config.clone(),
                self.replica_mode(),
            )?)));
        }
        topic.partitions.write().extend(added);
        self.persist()?;
        info!(topic = name, partitions = total, "added partitions");
        Ok(())
    }

    /// Applies config changes to a topic (all or nothing).
    ///
    /// # Errors
    /// [`TopicError::Unknown`], [`TopicError::InvalidConfig`].
    pub fn alter_configs(
        &self,
        name: &str,
        ops: &[ConfigOp],
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let _changes = self.changes.lock();
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let mut configs = topic.configs();
        for op in ops {
            match op {
                ConfigOp::Set(key, value) => {
                    config::validate_entry(key, value)?;
                    configs.insert(key.clone(), value.clone());
                }
                ConfigOp::Delete(key) => {
                    config::validate_entry(key, &config::broker_default(key, &self.broker))?;
                    configs.remove(key);
                }
                ConfigOp::Append(key, value) | ConfigOp::Subtract(key, value) => {
                    if key != "cleanup.policy" {
                        return Err(TopicError::InvalidConfig(TopicConfigError {
                            key: key.clone(),
                            value: value.clone(),
                            reason: "APPEND and SUBTRACT apply to list configs only".into(),
                        }));
                    }
                    let current = configs
                        .get(key)
                        .cloned()
                        .unwrap_or_else(|| self.broker.cleanup_policy.clone());
                    let mut items: Vec<String> = current
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    if matches!(op, ConfigOp::Append(..)) {
                        if !items.contains(value) {
                            items.push(value.clone());
                        }
                    } else {
                        items.retain(|i| i != value);
                    }
                    let joined = items.join(",");
                    config::validate_entry(key, &joined)?;
                    configs.insert(key.clone(), joined);
                }
            }
        }
        if validate_only {
            return Ok(());
        }
        let log_config = config::log_config(&configs, &self.broker);
        for partition in topic.partitions() {
            partition.log.update_config(log_config.clone())?;
        }
        *topic.configs.write() = configs;
        self.persist()?;
        info!(topic = name, "altered topic configs");
        Ok(())
    }

    /// Holds partition `index` of topic `name` as the cluster metadata says (a broker in a
    /// cluster holds only the partitions it replicates). A local topic of the same name with
    /// another id is an older, deleted incarnation: it and its data go first. Returns the
    /// partition, opened (or created empty) from its directory.
    ///
    /// # Errors
    /// I/O errors; a partition that cannot be opened.
    pub fn host_replica(
        &self,
        name: &str,
        id: Uuid,
        partition_count: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
        index: i32,
    ) -> Result<Arc<Partition>, TopicError> {
        let _changes = self.changes.lock();
        if let Some(old) = self.get(name).filter(|t| t.id != id) {
            info!(topic = name, old_id = %old.id, new_id = %id, "replacing a deleted incarnation");
            self.remove_locked(name)?;
        }
        if let Some(partition) = self.get(name).and_then(|t| t.partition(index)) {
            return Ok(partition);
        }
        let slot = usize::try_from(index)
            .map_err(|_| TopicError::InvalidPartitions(format!("{index}")))?;
        let log_config = config::log_config(configs, &self.broker);
        let dir = partition_dir(&self.data_dir, name, index);
        let partition = Arc::new(Partition::open_as(
            name,
            id,
            index,
            &dir,
            log_config,
            self.replica_mode(),
        )?);
        let topic = self.get(name).unwrap_or_else(|| {
            Arc::new(Topic {
                name: name.to_string(),
                id,
                replication_factor,
                configs: RwLock::new(configs.clone()),
                partitions: RwLock::new(Vec::new()),
            })
        });
        {
            let mut partitions = topic.partitions.write();
            let wanted = slot.max(
                usize::try_from(partition_count)
                    .unwrap_or(0)
                    .saturating_sub(1),
            );
            if partitions.len() <= wanted {
                partitions.resize(wanted + 1, None);
            }
            partitions[slot] = Some(Arc::clone(&partition));
        }
        self.topics
            .write()
            .insert(name.to_string(), Arc::clone(&topic));
        self.persist()?;
        Ok(partition)
    }

    /// Drops a topic held here and its data (the metadata no longer lists it here).
    ///
    /// # Errors
    /// I/O errors persisting the topic list.
    pub fn remove_replicas(&self, name: &str) -> Result<(), TopicError> {
        let _changes = self.changes.lock();
        self.remove_locked(name)
    }

    /// Drops partition `index` of topic `name` held here and its data (the metadata moved
    /// the replica to other brokers); the topic goes too when it was the last one held.
    ///
    /// # Errors
    /// I/O errors persisting the topic list.
    pub fn remove_replica(&self, name: &str, index: i32) -> Result<(), TopicError> {
        let _changes = self.changes.lock();
        let Some(topic) = self.get(name) else {
            return Ok(());
        };
        let removed = {
            let mut partitions = topic.partitions.write();
            usize::try_from(index)
                .ok()
                .and_then(|slot| partitions.get_mut(slot))
                .and_then(Option::take)
        };
        let Some(partition) = removed else {
            return Ok(());
        };
        if topic.partitions.read().iter().all(Option::is_none) {
            self.topics.write().remove(name);
        }
        self.persist()?;
        if let Err(e) = partition.close() {
            warn!(topic = name, partition = index, error = %e, "close failed");
        }
        let dir = partition.log.dir().to_path_buf();
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            warn!(dir = %dir.display(), error = %e, "cannot remove a dropped partition");
        }
        info!(topic = name, partition = index, "dropped local replica");
        Ok(())
    }

    fn remove_locked(&self, name: &str) -> Result<(), TopicError> {
        let Some(topic) = self.topics.write().remove(name) else {
            return Ok(());
        };
        self.persist()?;
        for partition in topic.partitions() {
            if let Err(e) = partition.close() {
                warn!(topic = name, partition = partition.index, error = %e, "close failed");
            }
            let dir = partition.log.dir().to_path_buf();
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                warn!(dir = %dir.display(), error = %e, "cannot remove a dropped partition");
            }
        }
        info!(topic = name, "dropped local replicas");
        Ok(())
    }

    /// Runs retention on every partition; returns segments deleted.
    pub fn apply_retention(&self) -> usize {
        let mut deleted = 0;
        for partition in self.all_partitions() {
            match partition.log.apply_retention() {
                Ok(n) => deleted += n,
                Err(e) => {
                    warn!(topic = %partition.topic, partition = partition.index, error = %e, "retention failed")
                }
            }
        }
        deleted
    }

    /// Flushes partitions whose `flush.ms` has passed.
    pub fn flush_due(&self) {
        for partition in self.all_partitions() {
            if let Err(e) = partition.log.maybe_flush() {
                warn!(topic = %partition.topic, partition = partition.index, error = %e, "flush failed");
            }
        }
    }

    /// Snapshots the producer state of every partition.
    /// Checkpoints the high watermark of every replicated partition that moved.
    pub fn checkpoint_high_watermarks(&self) {
        for partition in self.all_partitions() {
            if let Err(e) = partition.checkpoint_high_watermark() {
                warn!(topic = %partition.topic, partition = partition.index, error = %e, "high-watermark checkpoint failed");
            }
        }
    }

    pub fn snapshot_producers(&self) {
        for partition in self.all_partitions() {
            if let Err(e) = partition.snapshot_producers() {
                warn!(topic = %partition.topic, partition = partition.index, error = %e, "producer snapshot failed");
            }
        }
    }

    /// Closes every partition cleanly. Returns the first error after trying them all.
    ///
    /// # Errors
    /// The first log error.
    pub fn close_all(&self) -> Result<(), LogError> {
        let mut first_error = None;
        for partition in self.all_partitions() {
            if let Err(e) = partition.close() {
                warn!(topic = %partition.topic, partition = partition.index, error = %e, "close failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(dir: &Path) -> TopicRegistry {
        TopicRegistry::open(Arc::new(BrokerConfig::for_tests(dir))).expect("open")
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "has space", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topics_survive_reopen_with_configs_and_partitions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = {
            let topics = registry(dir.path());
            let mut configs = BTreeMap::new();
            configs.insert("retention.ms".to_string(), "1000".to_string());
            let topic = topics.create("orders", 3, -1, configs).expect("create");
            topics.create_partitions("orders", 5, false).expect("grow");
            topics.close_all().expect("close");
            topic.id
        };
        let topics = registry(dir.path());
        let topic = topics.get("orders").expect("persisted");
        assert_eq!((topic.id, topic.partition_count()), (id, 5));
        assert_eq!(
            topic.configs().get("retention.ms").map(String::as_str),
            Some("1000")
        );
        assert!(topics.get_by_id(id).is_some());
    }

    #[test]
    fn bad_requests_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let topics = registry(dir.path());
        topics.create("t", 2, 1, BTreeMap::new()).expect("create");
        assert!(matches!(
            topics.create("t", 1, 1, BTreeMap::new()),
            Err(TopicError::AlreadyExists(_))
        ));
        assert!(matches!(
            topics.create("u", 0, 1, BTreeMap::new()),
            Err(TopicError::InvalidPartitions(_))
        ));
        assert!(matches!(
            topics.create("u", 1, 3, BTreeMap::new()),
            Err(TopicError::InvalidReplicationFactor(_))
        ));
        assert!(matches!(
            topics.create_partitions("t", 2, false),
            Err(TopicError::InvalidPartitions(_))
        ));
        let bad = [
            ConfigOp::Set("retention.ms".into(), "5".into()),
            ConfigOp::Set("bogus".into(), "1".into()),
        ];
        assert!(matches!(
            topics.alter_configs("t", &bad, false),
            Err(TopicError::InvalidConfig(_))
        ));
        assert!(
            topics.get("t").expect("t").configs().is_empty(),
            "all or nothing"
        );
        assert!(topics.get("u").is_none());
        topics.delete("t").expect("delete");
        assert!(matches!(topics.delete("t"), Err(TopicError::Unknown(_))));
    }
}
