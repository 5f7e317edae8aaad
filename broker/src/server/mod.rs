//! The Kafka-protocol listener: accepts connections (at most `max.connections` at once) and
//! serves each on its own task until shutdown.

pub mod connection;
pub mod sendfile;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::Broker;

/// Binds the listener.
///
/// # Errors
/// The bind error, naming the address (e.g. the port is in use).
pub async fn bind(address: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {address}: {e}")))
}

/// Accepts connections until `shutdown` is cancelled; connection tasks are tracked by
/// `tracker` so the caller can wait for requests in flight to finish.
pub async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(broker.config.max_connections));
    let local: Option<SocketAddr> = listener.local_addr().ok();
    info!(address = ?local, "Kafka listener ready");
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let broker = Arc::clone(&broker);
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    broker.metrics.connections.inc();
                    connection::serve(Arc::clone(&broker), stream, shutdown).await;
                    broker.metrics.connections.dec();
                    drop(permit);
                });
            }
            Err(e) => warn!(error = %e, "accept failed"),
        }
    }
    info!("Kafka listener stopped accepting");
}
