//! Prometheus metrics of the broker. Label values come from bounded sets only: API names
//! (a fixed table) and hosted partitions (bounded by the topics an operator creates).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::replica::Partition;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    request_seconds: Family<Labels, Histogram>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub connections: Gauge,
    pub connections_rejected: Counter,
    pub failed_authentications: Counter,
    partitions: Gauge,
    log_end_offset: Family<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    log_start_offset: Family<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    log_size_bytes: Family<Labels, Gauge<u64, AtomicU64>>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tokafka");
        let requests = Family::<Labels, Counter>::default();
        let request_seconds = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        let connections = Gauge::default();
        let connections_rejected = Counter::default();
        let failed_authentications = Counter::default();
        let partitions = Gauge::default();
        let log_end_offset = Family::default();
        let log_start_offset = Family::default();
        let log_size_bytes = Family::default();
        registry.register("requests", "Requests handled, by API", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Request handling time, by API",
            request_seconds.clone(),
        );
        registry.register("bytes_in", "Request bytes received", bytes_in.clone());
        registry.register("bytes_out", "Response bytes sent", bytes_out.clone());
        registry.register(
            "connections",
            "Open client connections",
            connections.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections closed for protocol errors",
            connections_rejected.clone(),
        );
        registry.register(
            "failed_authentications",
            "SASL authentications refused (bad credentials, unknown users, malformed exchanges)",
            failed_authentications.clone(),
        );
        registry.register("partitions", "Hosted partitions", partitions.clone());
        registry.register(
            "log_end_offset",
            "Log end offset, by partition",
            log_end_offset.clone(),
        );
        registry.register(
            "log_start_offset",
            "Log start offset, by partition",
            log_start_offset.clone(),
        );
        registry.register(
            "log_size_bytes",
            "Bytes of record batches, by partition",
            log_size_bytes.clone(),
        );
        Self {
            registry,
            requests,
            request_seconds: request_seconds.clone(),
            bytes_in,
            bytes_out,
            connections,
            connections_rejected,
            failed_authentications,
            partitions,
            log_end_offset,
            log_start_offset,
            log_size_bytes,
        }
    }

    /// Counts one handled request of `api` that took `elapsed`.
    pub fn observe_request(&self, api: &'static str, elapsed: Duration) {
        let labels = vec![("api", api.to_string())];
        self.requests.get_or_create(&labels).inc();
        self.request_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Renders the Prometheus text exposition, refreshing the per-partition gauges first.
    pub fn render(&self, partitions: &[std::sync::Arc<Partition>]) -> String {
        self.log_end_offset.clear();
        self.log_start_offset.clear();
        self.log_size_bytes.clear();
        self.partitions
            .set(i64::try_from(partitions.len()).unwrap_or(i64::MAX));
        for p in partitions {
            let labels = vec![
                ("topic", p.topic.clone()),
                ("partition", p.index.to_string()),
            ];
            self.log_end_offset
                .get_or_create(&labels)
                .set(p.log.log_end_offset());
            self.log_start_offset
                .get_or_create(&labels)
                .set(p.log.log_start_offset());
            self.log_size_bytes
                .get_or_create(&labels)
                .set(p.log.size_bytes());
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
