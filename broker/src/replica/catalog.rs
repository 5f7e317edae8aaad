//! The replicas this broker hosts: which partitions of which topics are on its disk, opened
//! at start-up and kept in line with the cluster metadata by the cluster's applier.
//!
//! The list is persisted in `<data dir>/__tokafka/topics.json` (written atomically on every
//! change), so that a restarted broker opens its logs before it has heard from the
//! controller. It is not a topic store: what topics exist, their partitions, replicas and
//! configs are the controller quorum's; this catalog only remembers what is held here. Each
//! replica lives in `<log dir>/<topic>-<partition>/` in one of the `log.dirs` (the one that
//! holds it already, else the online one with the fewest replicas; see [`super::log_dirs`]).
//!
//! Invariants:
//! - one entry per topic name, for one topic id: a replica of a topic's newer incarnation
//!   (same name, new id) replaces the older one and its data;
//! - the catalog is the only writer of `topics.json`; changes are serialised by one lock, and
//!   lookups take a read lock for the time of a map access.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use super::log_dirs::{choose_log_dir, LogDir, LogDirs};
use super::partition::Partition;
use crate::config::BrokerConfig;
use crate::log::durable::write_atomically;
use crate::log::LogError;
use crate::topics::config::log_config;

const METADATA_DIR: &str = "__tokafka";
const CATALOG_FILE: &str = "topics.json";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("replica catalog {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("partition index {0} is out of range")]
    BadIndex(i32),
    #[error("every log directory is offline")]
    NoOnlineLogDir,
}

/// What is persisted about a topic held here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    /// The topic's partition count when last seen (the slots of `hosted`).
    pub partitions: i32,
    /// Kept for the files of earlier versions; not read.
    #[serde(default)]
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    /// The partitions held here when not all are; `None` means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted: Option<Vec<i32>>,
}

/// A topic with at least one replica here.
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    configs: RwLock<BTreeMap<String, String>>,
    /// Indexed by partition; `None` for a partition not held here.
    partitions: RwLock<Vec<Option<Arc<Partition>>>>,
}

impl Topic {
    /// The replicas held here.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().iter().flatten().cloned().collect()
    }

    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.read().get(i).cloned().flatten())
    }

    /// The topic's configs as the metadata last gave them.
    pub fn configs(&self) -> BTreeMap<String, String> {
        self.configs.read().clone()
    }

    fn record(&self) -> TopicRecord {
        let partitions = self.partitions.read();
        let all = partitions.iter().all(Option::is_some);
        TopicRecord {
            name: self.name.clone(),
            id: self.id,
            partitions: i32::try_from(partitions.len()).unwrap_or(i32::MAX),
            replication_factor: 0,
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

/// The hosted replicas.
pub struct Catalog {
    data_dir: PathBuf,
    pub log_dirs: LogDirs,
    broker: Arc<BrokerConfig>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serialises changes to the catalog and their persistence.
    changes: Mutex<()>,
}

/// The persisted catalog of `data_dir` (empty when there is none).
///
/// # Errors
/// An unreadable or malformed file.
pub fn read_records(data_dir: &Path) -> Result<Vec<TopicRecord>, CatalogError> {
    let path = data_dir.join(METADATA_DIR).join(CATALOG_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| CatalogError::Store {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CatalogError::Store { path, source }),
    }
}

impl Catalog {
    /// Opens every replica the persisted catalog lists (recovering logs that were not closed
    /// cleanly). Each starts as a follower without leader until the metadata says more.
    ///
    /// # Errors
    /// Unreadable catalog or a replica that cannot be opened.
    pub fn open(broker: Arc<BrokerConfig>) -> Result<Self, CatalogError> {
        let data_dir = broker.data_dir.clone();
        let meta_dir = data_dir.join(METADATA_DIR);
        std::fs::create_dir_all(&meta_dir).map_err(|source| CatalogError::Store {
            path: meta_dir.clone(),
            source,
        })?;
        let log_dirs = LogDirs::new(&broker.log_dirs);
        for dir in log_dirs.all() {
            std::fs::create_dir_all(&dir.path).map_err(|source| CatalogError::Store {
                path: dir.path.clone(),
                source,
            })?;
        }
        let catalog = Self {
            data_dir,
            log_dirs,
            broker,
            topics: RwLock::new(HashMap::new()),
            changes: Mutex::new(()),
        };
        let (mut topics, mut replicas) = (0usize, 0usize);
        for record in read_records(&catalog.data_dir)? {
            let topic = catalog.open_topic(&record)?;
            replicas += topic.partitions.read().iter().flatten().count();
            topics += 1;
            catalog
                .topics
                .write()
                .insert(record.name.clone(), Arc::new(topic));
        }
        info!(topics, replicas, "opened the hosted replicas");
        Ok(catalog)
    }

    fn open_topic(&self, record: &TopicRecord) -> Result<Topic, CatalogError> {
        let config = log_config(&record.configs, &self.broker);
        let slots = usize::try_from(record.partitions).unwrap_or(0);
        let mut partitions = Vec::with_capacity(slots);
        for index in 0..record.partitions {
            if record.hosted.as_ref().is_some_and(|h| !h.contains(&index)) {
                partitions.push(None);
                continue;
            }
            let log_dir = self.log_dir_for(&record.name, index, &partitions)?;
            partitions.push(Some(Arc::new(Partition::open_in(
                &log_dir,
                &record.name,
                record.id,
                index,
                config.clone(),
            )?)));
        }
        Ok(Topic {
            name: record.name.clone(),
            id: record.id,
            configs: RwLock::new(record.configs.clone()),
            partitions: RwLock::new(partitions),
        })
    }

    fn persist(&self) -> Result<(), CatalogError> {
        let mut records: Vec<TopicRecord> =
            self.topics.read().values().map(|t| t.record()).collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        let meta_dir = self.data_dir.join(METADATA_DIR);
        let bytes = serde_json::to_vec_pretty(&records).map_err(|e| CatalogError::Store {
            path: meta_dir.join(CATALOG_FILE),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        write_atomically(&meta_dir.join(CATALOG_FILE), &bytes).map_err(LogError::from)?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().values().find(|t| t.id == id).cloned()
    }

    /// The replica of `name`-`index`, when held here.
    pub fn partition(&self, name: &str, index: i32) -> Option<Arc<Partition>> {
        self.get(name).and_then(|t| t.partition(index))
    }

    /// All topics with a replica here, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut topics: Vec<_> = self.topics.read().values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// Every hosted replica.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.list().iter().flat_map(|t| t.partitions()).collect()
    }

    /// Holds partition `index` of topic `name` (id `id`) here, as the cluster metadata says:
    /// returns the replica, opened (or created empty) from its directory. A local topic of
    /// the same name with another id is an older, deleted incarnation: it and its data go
    /// first. Configs that changed in the metadata reach the logs of every held replica.
    ///
    /// # Errors
    /// I/O errors; a replica that cannot be opened.
    pub fn host(
        &self,
        name: &str,
        id: Uuid,
        partition_count: i32,
        configs: &BTreeMap<String, String>,
        index: i32,
    ) -> Result<Arc<Partition>, CatalogError> {
        let _changes = self.changes.lock();
        if let Some(old) = self.get(name).filter(|t| t.id != id) {
            info!(topic = name, old_id = %old.id, new_id = %id, "replacing a deleted incarnation");
            self.remove_locked(name)?;
        }
        if let Some(topic) = self.get(name) {
            if *topic.configs.read() != *configs {
                self.apply_configs(&topic, configs)?;
            }
            if let Some(partition) = topic.partition(index) {
                return Ok(partition);
            }
        }
        let slot = usize::try_from(index).map_err(|_| CatalogError::BadIndex(index))?;
        let log_dir = self.log_dir_for(name, index, &[])?;
        let partition = Arc::new(Partition::open_in(
            &log_dir,
            name,
            id,
            index,
            log_config(configs, &self.broker),
        )?);
        let topic = self.get(name).unwrap_or_else(|| {
            Arc::new(Topic {
                name: name.to_string(),
                id,
                configs: RwLock::new(configs.clone()),
                partitions: RwLock::new(Vec::new()),
            })
        });
        {
            let mut partitions = topic.partitions.write();
            let count = usize::try_from(partition_count).unwrap_or(0);
            let wanted = (slot + 1).max(count);
            if partitions.len() < wanted {
                partitions.resize(wanted, None);
            }
            partitions[slot] = Some(Arc::clone(&partition));
        }
        self.topics
            .write()
            .insert(name.to_string(), Arc::clone(&topic));
        self.persist()?;
        Ok(partition)
    }

    /// The directory replica `name`-`index` lives in: the online one holding its files
    /// already, else the online one with the fewest replicas (counting those held and
    /// `opening`, replicas being opened that are not in the catalog yet).
    fn log_dir_for(
        &self,
        name: &str,
        index: i32,
        opening: &[Option<Arc<Partition>>],
    ) -> Result<Arc<LogDir>, CatalogError> {
        let dirs = self.log_dirs.all();
        if let Some(existing) = dirs
            .iter()
            .find(|d| d.is_online() && d.partition_dir(name, index).is_dir())
        {
            return Ok(Arc::clone(existing));
        }
        let held = self.all_partitions();
        let load: Vec<(bool, usize)> = dirs
            .iter()
            .map(|dir| {
                let replicas = held
                    .iter()
                    .chain(opening.iter().flatten())
                    .filter(|p| Arc::ptr_eq(p.log_dir(), dir))
                    .count();
                (dir.is_online(), replicas)
            })
            .collect();
        choose_log_dir(&load)
            .and_then(|i| dirs.get(i))
            .cloned()
            .ok_or(CatalogError::NoOnlineLogDir)
    }

    /// Gives every held replica of `topic` the log settings of `configs`.
    fn apply_configs(
        &self,
        topic: &Topic,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), CatalogError> {
        let config = log_config(configs, &self.broker);
        for partition in topic.partitions() {
            partition.log.update_config(config.clone())?;
        }
        *topic.configs.write() = configs.clone();
        self.persist()?;
        info!(topic = %topic.name, "applied changed topic configs");
        Ok(())
    }

    /// Drops every replica of topic `name` held here, and their data (the metadata deleted
    /// the topic).
    ///
    /// # Errors
    /// I/O errors persisting the catalog.
    pub fn remove_topic(&self, name: &str) -> Result<(), CatalogError> {
        let _changes = self.changes.lock();
        self.remove_locked(name)
    }

    /// Drops replica `index` of topic `name` and its data (the metadata moved it to other
    /// brokers); the topic goes too when it was the last one held.
    ///
    /// # Errors
    /// I/O errors persisting the catalog.
    pub fn remove_replica(&self, name: &str, index: i32) -> Result<(), CatalogError> {
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
        discard(&partition);
        info!(topic = name, partition = index, "dropped local replica");
        Ok(())
    }

    fn remove_locked(&self, name: &str) -> Result<(), CatalogError> {
        let Some(topic) = self.topics.write().remove(name) else {
            return Ok(());
        };
        self.persist()?;
        for partition in topic.partitions() {
            discard(&partition);
        }
        info!(topic = name, "dropped local replicas");
        Ok(())
    }

    /// Runs `each` on every hosted replica whose log directory is online, logging (with
    /// `what`) and counting failures.
    pub fn for_each<E: std::fmt::Display>(
        &self,
        what: &'static str,
        mut each: impl FnMut(&Partition) -> Result<(), E>,
    ) -> usize {
        let mut failures = 0;
        for partition in self.all_partitions().iter().filter(|p| p.is_online()) {
            if let Err(e) = each(partition) {
                warn!(topic = %partition.topic, partition = partition.index, error = %e, "{what} failed");
                failures += 1;
            }
        }
        failures
    }

    /// Closes every replica cleanly. Returns the first error after trying them all.
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

/// Closes a dropped replica and deletes its directory (failures are logged: the replica is
/// already out of the catalog).
fn discard(partition: &Partition) {
    if let Err(e) = partition.close() {
        warn!(topic = %partition.topic, partition = partition.index, error = %e, "close failed");
    }
    let dir = partition.log.dir().to_path_buf();
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        warn!(dir = %dir.display(), error = %e, "cannot remove a dropped replica");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(dir: &Path) -> Catalog {
        Catalog::open(Arc::new(BrokerConfig::for_tests(dir))).expect("open")
    }

    #[test]
    fn hosted_replicas_and_their_configs_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = Uuid::from_u128(7);
        let configs = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        {
            let catalog = catalog(dir.path());
            catalog.host("orders", id, 5, &configs, 1).expect("host 1");
            catalog.host("orders", id, 5, &configs, 3).expect("host 3");
            catalog.close_all().expect("close");
        }
        let catalog = catalog(dir.path());
        let topic = catalog.get("orders").expect("persisted");
        assert_eq!(topic.id, id);
        let held: Vec<i32> = topic.partitions().iter().map(|p| p.index).collect();
        assert_eq!(held, [1, 3]);
        assert_eq!(topic.configs(), configs);
        assert_eq!(
            topic.partition(1).expect("held").log.config().retention_ms,
            Some(1000)
        );
    }

    #[test]
    fn a_new_incarnation_replaces_the_old_one_and_its_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = catalog(dir.path());
        let old = catalog
            .host("t", Uuid::from_u128(1), 1, &BTreeMap::new(), 0)
            .expect("host");
        old.log
            .append(&mut crate::log::test_batches::batch(
                &crate::log::test_batches::BatchSpec::records(3),
            ))
            .expect("append");
        let new = catalog
            .host("t", Uuid::from_u128(2), 1, &BTreeMap::new(), 0)
            .expect("host again");
        assert_eq!(new.topic_id, Uuid::from_u128(2));
        assert_eq!(new.log.log_end_offset(), 0, "the old data went");
        catalog.remove_replica("t", 0).expect("remove");
        assert!(
            catalog.get("t").is_none(),
            "the last replica took the topic"
        );
    }

    #[test]
    fn replicas_spread_over_the_log_dirs_stay_in_theirs_and_avoid_offline_ones() {
        let root = tempfile::tempdir().expect("tempdir");
        let (first, second) = (root.path().join("a"), root.path().join("b"));
        let open = || {
            let mut config = BrokerConfig::for_tests(&first);
            config.log_dirs = vec![first.clone(), second.clone()];
            Catalog::open(Arc::new(config)).expect("open")
        };
        let dir_of = |p: &Partition| p.log_dir().path.clone();
        let id = Uuid::from_u128(4);
        let placed: Vec<PathBuf> = {
            let catalog = open();
            (0..4)
                .map(|i| catalog.host("t", id, 4, &BTreeMap::new(), i).expect("host"))
                .map(|p| dir_of(&p))
                .collect()
        };
        assert_eq!(
            placed,
            [first.clone(), second.clone(), first.clone(), second.clone()]
        );
        let catalog = open();
        let reopened: Vec<PathBuf> = (0..4)
            .map(|i| dir_of(&catalog.partition("t", i).expect("held")))
            .collect();
        assert_eq!(
            reopened, placed,
            "a replica stays in the directory holding it"
        );
        catalog.log_dirs.all()[1].fail(&"test");
        let p = catalog
            .host("u", Uuid::from_u128(5), 1, &BTreeMap::new(), 0)
            .expect("host");
        assert_eq!(dir_of(&p), first, "never on an offline directory");
        catalog.log_dirs.all()[0].fail(&"test");
        assert!(matches!(
            catalog.host("v", Uuid::from_u128(6), 1, &BTreeMap::new(), 0),
            Err(CatalogError::NoOnlineLogDir)
        ));
    }

    #[test]
    fn changed_configs_reach_the_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = catalog(dir.path());
        let id = Uuid::from_u128(3);
        let p = catalog.host("t", id, 1, &BTreeMap::new(), 0).expect("host");
        let changed = BTreeMap::from([("retention.bytes".to_string(), "4096".to_string())]);
        catalog.host("t", id, 1, &changed, 0).expect("host again");
        assert_eq!(p.log.config().retention_bytes, Some(4096));
    }
}
