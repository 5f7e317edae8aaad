//! The operator's Prometheus metrics and its HTTP side port (`/metrics`, `/healthz`,
//! `/readyz`), served by a minimal HTTP/1 server on the hyper that kube's client brings: the
//! answers are a pure function of the path ([`Metrics::answer`]), the server around it bounds
//! connections and the time a request's head may take.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once; further ones wait in the accept backlog.
const CONNECTIONS_MAX: usize = 32;
/// Wait after a failed accept before the next.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);
/// Time a client gets to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub reason: &'static str,
}

/// Metrics and health of one operator process.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    duration: Histogram,
    leader: Gauge,
    /// Set once the API server answered; cleared never (liveness is the process itself).
    api_reachable: AtomicBool,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("tokafka_operator");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let errors = Family::<ErrorLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciliations by result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconciliation took",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Arc::new(Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            api_reachable: AtomicBool::new(false),
        })
    }

    pub fn reconciled(&self, took: Duration) {
        self.reconciles
            .get_or_create(&ResultLabel { result: "success" })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn failed(&self, reason: &'static str, took: Duration) {
        self.reconciles
            .get_or_create(&ResultLabel { result: "error" })
            .inc();
        self.errors.get_or_create(&ErrorLabel { reason }).inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn set_api_reachable(&self) {
        self.api_reachable.store(true, Ordering::Relaxed);
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// One answer of the side port.
pub type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: Option<&'static str>, body: String) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

impl Metrics {
    /// The answer to `method path`: `/metrics` (OpenMetrics text), `/healthz` (the process
    /// serves), `/readyz` (ready once the API server has answered: a replica waiting for the
    /// Lease is Ready too); 405 for a method other than GET or HEAD, 404 elsewhere.
    pub fn answer(&self, method: &Method, path: &str) -> Answer {
        if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
            return answer(StatusCode::NOT_FOUND, None, String::new());
        }
        if method != Method::GET && method != Method::HEAD {
            let mut refused = answer(StatusCode::METHOD_NOT_ALLOWED, None, String::new());
            refused
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
            return refused;
        }
        match path {
            "/metrics" => match self.encode() {
                Ok(body) => answer(StatusCode::OK, Some(OPENMETRICS), body),
                Err(_) => answer(StatusCode::INTERNAL_SERVER_ERROR, None, String::new()),
            },
            "/healthz" => answer(StatusCode::OK, Some(TEXT), "ok\n".into()),
            _ if self.api_reachable.load(Ordering::Relaxed) => {
                answer(StatusCode::OK, Some(TEXT), "ready\n".into())
            }
            _ => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(TEXT),
                "not ready\n".into(),
            ),
        }
    }
}

/// Serves the side port on `listener` until dropped, at most [`CONNECTIONS_MAX`] connections
/// at once. A failed accept (out of file descriptors, say) is logged and retried after
/// [`ACCEPT_RETRY`]; a failed connection is logged.
///
/// # Cancel safety
/// Dropping the future stops accepting; connections already accepted run to their end.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "the HTTP side port cannot accept a connection");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let answer = metrics.answer(request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(answer) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "side-port connection failed");
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn body(answer: Answer) -> String {
        let bytes = answer.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text() {
        let metrics = Metrics::new();
        metrics.reconciled(Duration::from_millis(20));
        metrics.failed("kube", Duration::from_millis(20));
        let answer = metrics.answer(&Method::GET, "/metrics");
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(answer.headers()[header::CONTENT_TYPE], OPENMETRICS);
        let text = body(answer).await;
        assert!(text.contains("tokafka_operator_reconciles_total{result=\"success\"} 1"));
        assert!(text.contains("tokafka_operator_reconcile_errors_total{reason=\"kube\"} 1"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[tokio::test]
    async fn ready_once_the_api_server_answered_and_always_healthy() {
        let metrics = Metrics::new();
        let answer = metrics.answer(&Method::GET, "/readyz");
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(answer).await, "not ready\n");
        metrics.set_api_reachable();
        let answer = metrics.answer(&Method::GET, "/readyz");
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(body(answer).await, "ready\n");
        assert_eq!(body(metrics.answer(&Method::GET, "/healthz")).await, "ok\n");
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let metrics = Metrics::new();
        assert_eq!(
            metrics.answer(&Method::GET, "/").status(),
            StatusCode::NOT_FOUND
        );
        let post = metrics.answer(&Method::POST, "/metrics");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[header::ALLOW], "GET,HEAD");
        assert_eq!(
            metrics.answer(&Method::HEAD, "/healthz").status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn the_server_answers_over_tcp() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(serve(listener, Metrics::new()));
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut reply))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nok\n"), "{reply}");
        server.abort();
    }
}
