//! `tokafka-broker dev-cluster`: a local multi-broker cluster on 127.0.0.1 for people trying
//! tokafka without Kubernetes. Broker `i` (1-based) serves Kafka on port 19091+i, HTTP on
//! 19643+i and, for the first three, a controller voter on 19191+i; its data lives in
//! `DIR/<i>` and its pid in `DIR/<i>/pid`.
//!
//! [`broker_args`] is the pure plan (tested); [`run`] starts the processes, prints the
//! bootstrap line once every broker serves (its `/readyz` answers), forwards SIGTERM and waits
//! for them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use tracing::{info, warn};

/// Kafka port of broker 1; broker `i` uses this plus `i - 1`.
pub const FIRST_KAFKA_PORT: u16 = 19092;
/// Controller port of voter 1.
pub const FIRST_CONTROLLER_PORT: u16 = 19192;
/// HTTP port of broker 1.
pub const FIRST_HTTP_PORT: u16 = 19644;
/// Controller voters: the first brokers, at most this many.
pub const MAX_VOTERS: u16 = 3;

#[derive(Debug, thiserror::Error)]
pub enum DevClusterError {
    #[error("--brokers must be between 1 and 50, not {0}")]
    BadCount(u16),
    #[error("broker {node} exited with {status} while starting; see {log}")]
    Exited {
        node: u16,
        status: std::process::ExitStatus,
        log: PathBuf,
    },
    #[error("brokers {0:?} did not serve within {1:?}; see their broker.log")]
    NotReady(Vec<u16>, std::time::Duration),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The bootstrap address list of a dev cluster of `brokers`.
pub fn bootstrap(brokers: u16) -> String {
    (0..brokers)
        .map(|i| format!("127.0.0.1:{}", FIRST_KAFKA_PORT + i))
        .collect::<Vec<_>>()
        .join(",")
}

/// Command-line arguments of each broker (by node id) of a dev cluster of `brokers` in
/// `dir`, with `sets` (`KEY=VALUE`) passed on to every broker after the cluster defaults.
///
/// # Errors
/// [`DevClusterError::BadCount`].
pub fn broker_args(
    brokers: u16,
    dir: &Path,
    sets: &[String],
) -> Result<Vec<(u16, Vec<String>)>, DevClusterError> {
    if !(1..=50).contains(&brokers) {
        return Err(DevClusterError::BadCount(brokers));
    }
    let voters = brokers.min(MAX_VOTERS);
    let voter_list = (1..=voters)
        .map(|id| format!("{id}@127.0.0.1:{}", FIRST_CONTROLLER_PORT + id - 1))
        .collect::<Vec<_>>()
        .join(",");
    let replication = brokers.min(3);
    Ok((1..=brokers)
        .map(|id| {
            let mut args = vec![
                "--node-id".to_string(),
                id.to_string(),
                "--data-dir".to_string(),
                dir.join(id.to_string()).display().to_string(),
                "--listen".to_string(),
                format!("127.0.0.1:{}", FIRST_KAFKA_PORT + id - 1),
                "--http-listen".to_string(),
                format!("127.0.0.1:{}", FIRST_HTTP_PORT + id - 1),
                "--controller-voters".to_string(),
                voter_list.clone(),
                "--set".to_string(),
                format!("default.replication.factor={replication}"),
                "--set".to_string(),
                format!("offsets.topic.replication.factor={replication}"),
                "--set".to_string(),
                format!("min.insync.replicas={}", replication.min(2)),
            ];
            for set in sets {
                args.push("--set".to_string());
                args.push(set.clone());
            }
            (id, args)
        })
        .collect())
}

/// Starts the brokers, prints the bootstrap address, and stops them all when `stop`
/// resolves (SIGTERM or Ctrl-C); returns once every broker has exited.
///
/// # Errors
/// A broker that cannot be started, or a pid file that cannot be written.
pub async fn run(
    brokers: u16,
    dir: &Path,
    sets: &[String],
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), DevClusterError> {
    let plan = broker_args(brokers, dir, sets)?;
    let exe = std::env::current_exe().map_err(|source| DevClusterError::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    let mut children: Vec<(u16, Child)> = Vec::new();
    let started = match start_all(&exe, plan, dir, &mut children) {
        Ok(()) => wait_until_serving(&mut children, dir).await,
        Err(e) => Err(e),
    };
    if let Err(e) = started {
        // No broker outlives a start that failed half-way.
        stop_all(&mut children);
        return Err(e);
    }
    println!(
        "tokafka dev cluster of {brokers} brokers; bootstrap servers: {}",
        bootstrap(brokers)
    );
    println!("logs and data in {}", dir.display());
    stop.await;
    stop_all(&mut children);
    Ok(())
}

/// Starts one broker process per `(node id, arguments)` with its log and pid file under
/// `dir/<node id>`; the started ones are in `children` even when a later one fails.
fn start_all(
    exe: &Path,
    plan: Vec<(u16, Vec<String>)>,
    dir: &Path,
    children: &mut Vec<(u16, Child)>,
) -> Result<(), DevClusterError> {
    for (id, args) in plan {
        let node_dir = dir.join(id.to_string());
        let io = |source| DevClusterError::Io {
            path: node_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&node_dir).map_err(io)?;
        let log = std::fs::File::create(node_dir.join("broker.log")).map_err(io)?;
        let err = log.try_clone().map_err(io)?;
        let child = Command::new(exe)
            .args(&args)
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|source| DevClusterError::Io {
                path: exe.to_path_buf(),
                source,
            })?;
        let pid = child.id();
        children.push((id, child));
        std::fs::write(node_dir.join("pid"), format!("{pid}\n")).map_err(io)?;
        info!(node = id, pid, "started broker");
    }
    Ok(())
}

/// How long the brokers get to serve.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Polls each broker's `/readyz` until all answer 200 (a broker answers only once it serves
/// clients), failing early when one exits and late after [`READY_WITHIN`].
async fn wait_until_serving(
    children: &mut [(u16, Child)],
    dir: &Path,
) -> Result<(), DevClusterError> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    let mut waiting: Vec<u16> = children.iter().map(|(id, _)| *id).collect();
    while !waiting.is_empty() {
        for (id, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(DevClusterError::Exited {
                    node: *id,
                    status,
                    log: dir.join(id.to_string()).join("broker.log"),
                });
            }
        }
        let mut still = Vec::new();
        for id in waiting {
            let url = format!("http://127.0.0.1:{}/readyz", FIRST_HTTP_PORT + id - 1);
            let ready = http
                .get(&url)
                .timeout(std::time::Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if !ready {
                still.push(id);
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(DevClusterError::NotReady(waiting, READY_WITHIN));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Sends SIGTERM to every running broker and waits for all of them.
fn stop_all(children: &mut Vec<(u16, Child)>) {
    for (id, child) in children.iter() {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) with a pid of a child this process started; no memory involved.
            let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
            if rc != 0 {
                warn!(node = id, "cannot signal broker");
            }
        }
    }
    for (id, child) in children.iter_mut() {
        match child.wait() {
            Ok(status) => info!(node = id, %status, "broker stopped"),
            Err(e) => warn!(node = id, error = %e, "cannot wait for broker"),
        }
    }
    children.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_brokers_get_the_documented_ports_and_voters() {
        let plan =
            broker_args(3, Path::new("/tmp/dc"), &["log.retention.ms=60000".into()]).expect("plan");
        assert_eq!(plan.len(), 3);
        let (id, args) = &plan[1];
        assert_eq!(*id, 2);
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        assert_eq!(value("--listen").as_deref(), Some("127.0.0.1:19093"));
        assert_eq!(value("--data-dir").as_deref(), Some("/tmp/dc/2"));
        assert_eq!(
            value("--controller-voters").as_deref(),
            Some("1@127.0.0.1:19192,2@127.0.0.1:19193,3@127.0.0.1:19194")
        );
        assert_eq!(
            args.last().map(String::as_str),
            Some("log.retention.ms=60000")
        );
        assert_eq!(
            bootstrap(3),
            "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
        );
    }

    #[test]
    fn at_most_three_voters_and_sane_counts() {
        let plan = broker_args(5, Path::new("d"), &[]).expect("plan");
        let voters = plan[4]
            .1
            .iter()
            .skip_while(|a| *a != "--controller-voters")
            .nth(1)
            .cloned()
            .unwrap_or_default();
        assert_eq!(voters.split(',').count(), 3);
        assert!(broker_args(0, Path::new("d"), &[]).is_err());
        assert!(broker_args(51, Path::new("d"), &[]).is_err());
    }
}
