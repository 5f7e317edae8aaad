//! The HTTP side port: `/metrics` (Prometheus text), `/healthz` (the process serves),
//! `/readyz` (the broker has opened its logs and listens for clients) and the cluster admin
//! API ([`admin`]).

pub mod admin;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(admin::routes())
        .with_state(broker)
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let body = broker
        .metrics
        .render(&broker.replicas.catalog.all_partitions());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn readyz(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    if broker.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves the side port until `shutdown` is cancelled.
///
/// # Errors
/// Server I/O errors.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(broker))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
