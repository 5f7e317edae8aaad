//! The broker's log directories (`log.dirs`) and which of them still work.
//!
//! Each replica lives in one directory, as `<dir>/<topic>-<partition>/`. A directory goes
//! offline on the first I/O failure of any replica in it — a flush, a checkpoint, a snapshot,
//! an append (Kafka's `LogDirFailureChannel`): its replicas stop serving at once (appends and
//! reads answer KAFKA_STORAGE_ERROR, followers stop fetching) and the cluster layer reports
//! them to the controller, which moves their leadership and ISR membership to other brokers.
//! The replicas in other directories keep serving. A directory never comes back online in the
//! same process: a restart (after the disk is fixed) opens it afresh.
//!
//! The first directory also holds the broker's own metadata (identity, replica catalog,
//! controller log); when it goes offline, or when none is left, the broker stops (Kafka halts).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tracing::error;

/// One log directory and whether it still works.
#[derive(Debug)]
pub struct LogDir {
    pub path: PathBuf,
    online: AtomicBool,
    /// Shared by the directories of one broker: counts the directories gone offline.
    failures: Arc<watch::Sender<usize>>,
}

impl LogDir {
    /// A directory of its own (tests and tools), online.
    pub fn standalone(path: &Path) -> Arc<Self> {
        Arc::new(Self {
            path: path.to_path_buf(),
            online: AtomicBool::new(true),
            failures: Arc::new(watch::channel(0).0),
        })
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// The directory of replica `topic`-`index` here.
    pub fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.path.join(format!("{topic}-{index}"))
    }

    /// Takes the directory offline after `failure` (an I/O error of a replica in it). Only
    /// the first call logs and wakes the broker; later ones find it offline already.
    pub fn fail(&self, failure: &dyn std::fmt::Display) {
        if self.online.swap(false, Ordering::AcqRel) {
            error!(dir = %self.path.display(), error = %failure, "log directory offline: its replicas stop serving");
            self.failures.send_modify(|n| *n += 1);
        }
    }
}

/// Every log directory of the broker, in `log.dirs` order.
#[derive(Debug)]
pub struct LogDirs {
    dirs: Vec<Arc<LogDir>>,
    failures: Arc<watch::Sender<usize>>,
}

impl LogDirs {
    /// The directories at `paths`, all online.
    pub fn new(paths: &[PathBuf]) -> Self {
        let failures = Arc::new(watch::channel(0).0);
        let dirs = paths
            .iter()
            .map(|path| {
                Arc::new(LogDir {
                    path: path.clone(),
                    online: AtomicBool::new(true),
                    failures: Arc::clone(&failures),
                })
            })
            .collect();
        Self { dirs, failures }
    }

    pub fn all(&self) -> &[Arc<LogDir>] {
        &self.dirs
    }

    /// The directory among them that holds `path` (a replica's directory), if any.
    pub fn holding(&self, path: &Path) -> Option<&Arc<LogDir>> {
        self.dirs.iter().find(|d| path.starts_with(&d.path))
    }

    /// The broker cannot go on: the directory with its metadata is offline, or every one is.
    pub fn broker_must_stop(&self) -> bool {
        self.dirs.first().is_none_or(|d| !d.is_online()) || self.dirs.iter().all(|d| !d.is_online())
    }

    /// A watch of the number of directories gone offline: it changes on every failure.
    pub fn failures(&self) -> watch::Receiver<usize> {
        self.failures.subscribe()
    }
}

/// Where a new replica goes: the online directory holding the fewest replicas (the first of
/// those on a tie), given each directory's online state and replica count in `log.dirs`
/// order; `None` when every directory is offline.
pub fn choose_log_dir(dirs: &[(bool, usize)]) -> Option<usize> {
    dirs.iter()
        .enumerate()
        .filter(|(_, (online, _))| *online)
        .min_by_key(|(i, (_, replicas))| (*replicas, *i))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_replicas_go_to_the_emptiest_online_directory() {
        assert_eq!(choose_log_dir(&[(true, 2), (true, 1), (true, 1)]), Some(1));
        assert_eq!(choose_log_dir(&[(true, 0), (true, 0)]), Some(0));
        assert_eq!(choose_log_dir(&[(true, 5), (false, 0)]), Some(0));
        assert_eq!(choose_log_dir(&[(false, 0), (false, 0)]), None);
        assert_eq!(choose_log_dir(&[]), None);
    }

    #[tokio::test]
    async fn a_failure_takes_one_directory_offline_once_and_wakes_the_broker() {
        let dirs = LogDirs::new(&[PathBuf::from("/a"), PathBuf::from("/b")]);
        assert!(!dirs.broker_must_stop());
        let b = Arc::clone(&dirs.all()[1]);
        assert_eq!(
            dirs.holding(Path::new("/b/t-0")).map(|d| d.path.clone()),
            Some(PathBuf::from("/b"))
        );
        let mut failures = dirs.failures();
        b.fail(&"disk full");
        b.fail(&"disk full again");
        assert!(!b.is_online() && dirs.all()[0].is_online());
        tokio::time::timeout(std::time::Duration::from_secs(5), failures.changed())
            .await
            .expect("woken by the failure")
            .expect("open");
        assert_eq!(*failures.borrow(), 1, "counted once");
        assert!(
            !dirs.broker_must_stop(),
            "the metadata directory still works"
        );
        dirs.all()[0].fail(&"gone");
        assert!(dirs.broker_must_stop());
    }
}
