//! The Kafka-protocol listeners: each named listener of `listeners` is bound with its
//! security protocol; connections on all of them (at most `max.connections` at once) are
//! served each on its own task until shutdown.

pub mod connection;
pub mod sendfile;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::config::BrokerConfig;
pub use crate::security::session::{Identity, ListenerContext, Session};
use crate::security::tls::{ReloadingTls, TlsError};

/// Binds the listener.
///
/// # Errors
/// The bind error, naming the address (e.g. the port is in use).
pub async fn bind(address: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {address}: {e}")))
}

/// A Kafka listener, bound and ready to accept.
pub struct BoundListener {
    pub context: Arc<ListenerContext>,
    pub socket: TcpListener,
}

/// The TLS configuration the broker's TLS listeners share, loaded once (None without TLS).
///
/// # Errors
/// The key, certificates or CA cannot be used.
pub fn load_tls(config: &BrokerConfig) -> Result<Option<Arc<ReloadingTls>>, TlsError> {
    config
        .security
        .tls
        .clone()
        .map(ReloadingTls::load)
        .transpose()
}

/// Binds every listener of `config` (an empty host binds every interface).
///
/// # Errors
/// The first bind error, naming its address.
pub async fn bind_all(
    config: &BrokerConfig,
    tls: Option<&Arc<ReloadingTls>>,
) -> std::io::Result<Vec<BoundListener>> {
    let mut bound = Vec::with_capacity(config.listeners.listeners.len());
    for listener in &config.listeners.listeners {
        let address = if listener.bind.host.is_empty() {
            format!("0.0.0.0:{}", listener.bind.port)
        } else {
            listener.bind.address()
        };
        let socket = bind(&address).await?;
        let tls = listener.protocol.uses_tls().then(|| tls.cloned()).flatten();
        bound.push(BoundListener {
            context: Arc::new(ListenerContext {
                name: listener.bind.name.clone(),
                protocol: listener.protocol,
                tls,
            }),
            socket,
        });
    }
    Ok(bound)
}

/// Accepts connections on one listener until `shutdown` is cancelled; `limit` bounds the
/// connections of all listeners together; connection tasks are tracked by `tracker` so the
/// caller can wait for requests in flight to finish.
pub async fn accept_loop(
    broker: Arc<Broker>,
    listener: BoundListener,
    limit: Arc<Semaphore>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let local: Option<SocketAddr> = listener.socket.local_addr().ok();
    let name = listener.context.name.clone();
    info!(listener = name, protocol = listener.context.protocol.name(), address = ?local, "Kafka listener ready");
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.socket.accept() => a,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let broker = Arc::clone(&broker);
                let shutdown = shutdown.clone();
                let context = Arc::clone(&listener.context);
                tracker.spawn(async move {
                    broker.metrics.connections.inc();
                    connection::serve(Arc::clone(&broker), stream, context, shutdown).await;
                    broker.metrics.connections.dec();
                    drop(permit);
                });
            }
            Err(e) => warn!(error = %e, "accept failed"),
        }
    }
    info!(listener = name, "Kafka listener stopped accepting");
}
