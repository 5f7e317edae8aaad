//! What one broker process serves from: its configuration, the replica layer, its part in the
//! cluster, the group coordinator and its metrics. Built once by [`crate::run::start`]; the
//! protocol and HTTP handlers receive it. Nothing below this module refers to it, so the
//! layers it holds never hold each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::cluster::Cluster;
use crate::config::BrokerConfig;
use crate::group::GroupCoordinator;
use crate::metrics::Metrics;
use crate::replica::ReplicaManager;

pub struct Broker {
    pub config: Arc<BrokerConfig>,
    pub replicas: Arc<ReplicaManager>,
    pub cluster: Arc<Cluster>,
    pub groups: Arc<GroupCoordinator>,
    pub metrics: Metrics,
    ready: AtomicBool,
}

impl Broker {
    pub fn new(
        config: Arc<BrokerConfig>,
        replicas: Arc<ReplicaManager>,
        cluster: Arc<Cluster>,
        groups: Arc<GroupCoordinator>,
    ) -> Self {
        Self {
            config,
            replicas,
            cluster,
            groups,
            metrics: Metrics::new(),
            ready: AtomicBool::new(false),
        }
    }

    /// Whether the broker serves clients (its Kafka listener is open and it is not stopping).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// The cluster id clients see: the one the controller quorum agreed on (a broker serves
    /// only once it knows it).
    pub fn cluster_id(&self) -> String {
        self.cluster.cluster_id().unwrap_or_default()
    }
}
