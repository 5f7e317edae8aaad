//! What every reconciliation shares (the API client, the HTTP client of the brokers' admin
//! API, the Event recorder, metrics, the failure counts behind the backoff) and the one error
//! type of its I/O steps. It sits below [`crate::observe`], [`crate::apply`] and
//! [`crate::reconcile`], which all use it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::api::{ApiResource, DynamicObject};
use kube::runtime::events::{Event, Recorder};
use kube::{Client, Resource, ResourceExt};

use crate::crd::BrokerCluster;
use crate::metrics::Metrics;
use crate::resources::BuildError;

/// Why a reconciliation failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("serialising: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// A short label for the error metric (a fixed set).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Build(_) => "build",
            Error::Finalizer(_) => "finalizer",
            Error::Json(_) => "serialise",
        }
    }
}

/// What every reconciliation shares.
pub struct Context {
    pub client: Client,
    pub http: reqwest::Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object (`namespace/name`), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, recorder: Recorder, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            http: reqwest::Client::new(),
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more consecutive failure of `key`; returns the count.
    pub fn note_failure(&self, key: String) -> u32 {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    pub fn note_success(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    /// Publishes `event` about `obj`. Events are best effort: a refused Event must not fail
    /// the reconciliation.
    pub async fn publish(&self, obj: &DynamicObject, event: Event) {
        let reference = obj.object_ref(&api_resource());
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(cluster = %object_key(obj), %error, "could not publish an Event");
        }
    }
}

/// The BrokerCluster API resource (for the untyped watch).
pub fn api_resource() -> ApiResource {
    ApiResource::erase::<BrokerCluster>(&())
}

/// `namespace/name` of an object, for logs and the failure counts.
pub fn object_key(obj: &DynamicObject) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}
