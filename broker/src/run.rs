//! Running a broker: open the data directory, bind the Kafka and HTTP listeners, run the
//! periodic work (retention and offsets compaction, time-based flushes, producer snapshots),
//! and shut down cleanly: stop accepting, answer the requests already read, flush, and mark
//! every log clean.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::{Broker, BrokerError};
use crate::config::BrokerConfig;
use crate::{http, server};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("{0}")]
    Bind(std::io::Error),
    #[error(transparent)]
    Cluster(crate::controller::quorum::QuorumError),
    #[error("closing the logs failed: {0}")]
    Close(String),
}

/// A broker serving in the background.
pub struct RunningBroker {
    pub broker: Arc<Broker>,
    pub kafka_address: SocketAddr,
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
        self.task
            .await
            .unwrap_or_else(|e| Err(RunError::Close(e.to_string())))
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

/// Opens the broker and starts serving.
///
/// # Errors
/// Opening the data directory or binding a listener failed.
pub async fn start(config: BrokerConfig) -> Result<RunningBroker, RunError> {
    let kafka_listener = server::bind(&config.listen).await.map_err(RunError::Bind)?;
    let http_listener = server::bind(&config.http_listen)
        .await
        .map_err(RunError::Bind)?;
    let kafka_address = kafka_listener.local_addr().map_err(RunError::Bind)?;
    let http_address = http_listener.local_addr().map_err(RunError::Bind)?;
    let broker = tokio::task::spawn_blocking(move || Broker::open(config))
        .await
        .map_err(|e| RunError::Close(e.to_string()))??;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    // The cluster's own tasks stop after the broker has stopped serving (controlled shutdown
    // needs the quorum and the followers while leadership moves away).
    let cluster_stop = CancellationToken::new();
    if let Some(cluster_config) = broker.config.cluster.clone() {
        let cluster = crate::cluster::Cluster::start(&broker, cluster_config, cluster_stop.clone())
            .await
            .map_err(RunError::Cluster)?;
        let _ = broker.cluster.set(Arc::clone(&cluster));
        crate::cluster::fetcher::spawn_fetchers(Arc::clone(&broker), cluster, cluster_stop.clone());
    }

    let http_task = tokio::spawn(http::serve(
        Arc::clone(&broker),
        http_listener,
        shutdown.clone(),
    ));
    let housekeeping = tokio::spawn(housekeeping(Arc::clone(&broker), shutdown.clone()));
    let group_timers = tokio::spawn(Arc::clone(&broker.groups).run_timers(shutdown.clone()));
    let accept = tokio::spawn(server::accept_loop(
        Arc::clone(&broker),
        kafka_listener,
        shutdown.clone(),
        tracker.clone(),
    ));
    broker.set_ready(true);
    info!(node_id = broker.config.node_id, %kafka_address, %http_address, data_dir = %broker.config.data_dir.display(), "broker started");

    let task = {
        let broker = Arc::clone(&broker);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            if let Some(cluster) = broker.cluster() {
                info!("controlled shutdown: moving leadership away");
                cluster.controlled_shutdown().await;
            }
            info!("shutting down: no new connections, finishing requests in flight");
            broker.set_ready(false);
            let _ = accept.await;
            tracker.close();
            let grace = Duration::from_millis(broker.config.shutdown_timeout_ms);
            if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
                warn!("requests still in flight after the shutdown timeout");
            }
            let _ = housekeeping.await;
            let _ = group_timers.await;
            let _ = http_task.await;
            let closing = Arc::clone(&broker);
            tokio::task::spawn_blocking(move || closing.topics.close_all())
                .await
                .map_err(|e| RunError::Close(e.to_string()))?
                .map_err(|e| RunError::Close(e.to_string()))?;
            cluster_stop.cancel();
            if let Some(cluster) = broker.cluster() {
                cluster.stop_voter().await;
            }
            info!("broker stopped cleanly");
            Ok(())
        })
    };
    Ok(RunningBroker {
        broker,
        kafka_address,
        http_address,
        shutdown,
        task,
    })
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
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = retention.tick() => {
                let b = Arc::clone(&broker);
                let deleted = tokio::task::spawn_blocking(move || b.topics.apply_retention() + b.groups.offsets.compact_all()).await.unwrap_or(0);
                if deleted > 0 {
                    info!(segments = deleted, "retention and compaction deleted segments");
                }
            }
            _ = flush.tick() => {
                let b = Arc::clone(&broker);
                let _ = tokio::task::spawn_blocking(move || b.topics.flush_due()).await;
            }
            _ = high_watermarks.tick(), if config.cluster.is_some() => {
                let b = Arc::clone(&broker);
                let _ = tokio::task::spawn_blocking(move || b.topics.checkpoint_high_watermarks()).await;
            }
            _ = snapshot.tick() => {
                let b = Arc::clone(&broker);
                let _ = tokio::task::spawn_blocking(move || b.topics.snapshot_producers()).await;
            }
        }
    }
}
