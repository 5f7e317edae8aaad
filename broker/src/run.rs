//! Running a broker: claim the data directory, open the hosted replicas, join the cluster
//! (a node alone bootstraps its one-voter quorum), serve the HTTP side port at once and the
//! Kafka listener only once the broker can serve — registered, unfenced and caught up with
//! the metadata, as Kafka's brokers do — run the periodic work, and shut down cleanly: move
//! leadership away, stop accepting, answer the requests already read, flush, and mark every
//! log clean.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::broker::Broker;
use crate::cluster::Cluster;
use crate::config::BrokerConfig;
use crate::data_dir::DataDirError;
use crate::group::offsets::OffsetStore;
use crate::group::GroupCoordinator;
use crate::replica::{CatalogError, ReplicaManager};
use crate::{data_dir, http, server};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Replicas(#[from] CatalogError),
    #[error("{0}")]
    Bind(std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::security::tls::TlsError),
    #[error(transparent)]
    Cluster(crate::controller::quorum::QuorumError),
    #[error("stopped before the broker could serve")]
    StoppedBeforeServing,
    #[error("closing the logs failed: {0}")]
    Close(String),
    #[error("stopped: the log directory holding the broker's metadata, or every log directory, is offline")]
    LogDirsOffline,
}

/// A broker serving in the background.
pub struct RunningBroker {
    pub broker: Arc<Broker>,
    /// The bound address of the first listener.
    pub kafka_address: SocketAddr,
    /// Every listener's name and bound address, in the order of `listeners`.
    pub listener_addresses: Vec<(String, SocketAddr)>,
    pub http_address: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), RunError>>,
}

impl RunningBroker {
    /// Requests a graceful shutdown and waits for it.
    ///
    /// # Errors
    /// A failure to close the logs cleanly.
    pub async fn shutdown(self) -> Result<(), RunError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// The token that stops the broker (e.g. wired to SIGTERM).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the broker has stopped.
    ///
    /// # Errors
    /// A failure to close the logs cleanly.
    pub async fn wait(self) -> Result<(), RunError> {
        self.task
            .await
            .unwrap_or_else(|e| Err(RunError::Close(e.to_string())))
    }
}

/// Starts a broker and returns once it serves: its Kafka listener is bound only then, so a
/// client that connects the moment the port opens gets full answers. Cancelling `shutdown`
/// before that (e.g. on SIGTERM) stops the start.
///
/// # Errors
/// The data directory, the replicas or the controller voter cannot be opened, a listener
/// cannot be bound, or `shutdown` was cancelled first.
pub async fn start_until(
    config: BrokerConfig,
    shutdown: CancellationToken,
) -> Result<RunningBroker, RunError> {
    let config = Arc::new(config);
    // Unusable TLS material stops the start before anything is opened.
    let tls = server::load_tls(&config)?;
    let http_listener = server::bind(&config.http_listen)
        .await
        .map_err(RunError::Bind)?;
    let http_address = http_listener.local_addr().map_err(RunError::Bind)?;
    let opening = Arc::clone(&config);
    let (replicas, isr_proposals) = tokio::task::spawn_blocking(move || {
        data_dir::claim(&opening.data_dir, opening.node_id)?;
        ReplicaManager::open(opening).map_err(RunError::from)
    })
    .await
    .map_err(|e| RunError::Close(e.to_string()))??;
    let groups = Arc::new(GroupCoordinator::new(
        OffsetStore::new(config.offsets_topic_partitions),
        config.group_limits,
    ));
    // The cluster's own tasks stop after the broker has stopped serving (controlled shutdown
    // needs the quorum and the followers while leadership moves away).
    let cluster_stop = CancellationToken::new();
    let cluster = Cluster::start(
        &config,
        Arc::clone(&replicas),
        Arc::clone(&groups),
        isr_proposals,
        cluster_stop.clone(),
    )
    .await
    .map_err(RunError::Cluster)?;
    let broker = Arc::new(Broker::new(Arc::clone(&config), replicas, cluster, groups));
    let http_task = tokio::spawn(http::serve(
        Arc::clone(&broker),
        http_listener,
        shutdown.clone(),
    ));
    let housekeeping = tokio::spawn(housekeeping(Arc::clone(&broker), shutdown.clone()));
    let group_timers = tokio::spawn(Arc::clone(&broker.groups).run_timers(shutdown.clone()));
    let started = tokio::time::Instant::now();
    let serving = tokio::select! {
        () = shutdown.cancelled() => false,
        s = wait_until_serving(&broker) => s,
    };
    let kafka_listeners = if serving {
        server::bind_all(&config, tls.as_ref())
            .await
            .map_err(RunError::Bind)
    } else {
        Err(RunError::StoppedBeforeServing)
    };
    let kafka_listeners = match kafka_listeners {
        Ok(listeners) => listeners,
        Err(e) => {
            shutdown.cancel();
            let _ = tokio::join!(http_task, housekeeping, group_timers);
            close(&broker, cluster_stop).await?;
            return Err(e);
        }
    };
    let mut listener_addresses = Vec::with_capacity(kafka_listeners.len());
    for listener in &kafka_listeners {
        let address = listener.socket.local_addr().map_err(RunError::Bind)?;
        listener_addresses.push((listener.context.name.clone(), address));
    }
    let kafka_address = listener_addresses[0].1;
    if let Some(tls) = &tls {
        tokio::spawn(Arc::clone(tls).watch(shutdown.clone()));
    }
    let tracker = TaskTracker::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(broker.config.max_connections));
    let accepts: Vec<_> = kafka_listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(server::accept_loop(
                Arc::clone(&broker),
                listener,
                Arc::clone(&limit),
                shutdown.clone(),
                tracker.clone(),
            ))
        })
        .collect();
    let accept = futures::future::join_all(accepts);
    broker.set_ready(true);
    info!(
        node_id = broker.config.node_id,
        %kafka_address,
        %http_address,
        data_dir = %broker.config.data_dir.display(),
        replicas = broker.replicas.catalog.all_partitions().len(),
        ready_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "broker serving"
    );
    let task = {
        let broker = Arc::clone(&broker);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let log_dirs_failed = tokio::select! {
                () = shutdown.cancelled() => false,
                () = log_dirs_unusable(&broker) => true,
            };
            if log_dirs_failed {
                error!("the broker cannot go on without its log directories: stopping");
                shutdown.cancel();
            }
            info!("controlled shutdown: moving leadership away");
            broker.cluster.controlled_shutdown().await;
            info!("shutting down: no new connections, finishing requests in flight");
            broker.set_ready(false);
            let _ = accept.await;
            tracker.close();
            let grace = Duration::from_millis(broker.config.shutdown_timeout_ms);
            if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
                warn!("requests still in flight after the shutdown timeout");
            }
            let _ = tokio::join!(housekeeping, group_timers, http_task);
            close(&broker, cluster_stop).await?;
            if log_dirs_failed {
                return Err(RunError::LogDirsOffline);
            }
            info!("broker stopped cleanly");
            Ok(())
        })
    };
    Ok(RunningBroker {
        broker,
        kafka_address,
        listener_addresses,
        http_address,
        shutdown,
        task,
    })
}

/// [`start_until`] with a shutdown token of its own.
///
/// # Errors
/// As [`start_until`].
pub async fn start(config: BrokerConfig) -> Result<RunningBroker, RunError> {
    start_until(config, CancellationToken::new()).await
}

/// Completes once the broker must stop for its log directories (see
/// [`crate::replica::log_dirs::LogDirs::broker_must_stop`]).
async fn log_dirs_unusable(broker: &Broker) {
    let log_dirs = &broker.replicas.catalog.log_dirs;
    let mut failures = log_dirs.failures();
    while !log_dirs.broker_must_stop() {
        if failures.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Waits until the cluster says this broker may serve, logging while it waits.
async fn wait_until_serving(broker: &Broker) -> bool {
    const NOTE_EVERY: Duration = Duration::from_secs(5);
    loop {
        if broker.cluster.wait_until_serving(NOTE_EVERY).await {
            return true;
        }
        info!("waiting for the controller quorum to register and unfence this broker");
    }
}

/// Closes every log cleanly, then stops the cluster's tasks and the controller voter.
async fn close(broker: &Arc<Broker>, cluster_stop: CancellationToken) -> Result<(), RunError> {
    let closing = Arc::clone(broker);
    tokio::task::spawn_blocking(move || closing.replicas.catalog.close_all())
        .await
        .map_err(|e| RunError::Close(e.to_string()))?
        .map_err(|e| RunError::Close(e.to_string()))?;
    cluster_stop.cancel();
    broker.cluster.stop_voter().await;
    Ok(())
}

/// Periodic work until shutdown.
async fn housekeeping(broker: Arc<Broker>, shutdown: CancellationToken) {
    let config = &broker.config;
    let mut retention = tokio::time::interval(Duration::from_millis(
        config.retention_check_interval_ms.max(100),
    ));
    let mut flush = tokio::time::interval(Duration::from_millis(100));
    let mut snapshot = tokio::time::interval(Duration::from_millis(
        config.producer_snapshot_interval_ms.max(100),
    ));
    // Kafka's replica.high.watermark.checkpoint.interval.ms.
    let mut high_watermarks = tokio::time::interval(Duration::from_secs(5));
    loop {
        let b = Arc::clone(&broker);
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = retention.tick() => {
                let deleted = tokio::task::spawn_blocking(move || b.replicas.apply_retention() + b.groups.offsets.compact_all()).await.unwrap_or(0);
                if deleted > 0 {
                    info!(segments = deleted, "retention and compaction deleted segments");
                }
            }
            _ = flush.tick() => {
                let _ = tokio::task::spawn_blocking(move || b.replicas.flush_due()).await;
            }
            _ = high_watermarks.tick() => {
                let _ = tokio::task::spawn_blocking(move || b.replicas.checkpoint_high_watermarks()).await;
            }
            _ = snapshot.tick() => {
                let _ = tokio::task::spawn_blocking(move || b.replicas.snapshot_producers()).await;
            }
        }
    }
}
