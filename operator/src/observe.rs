//! Observe, the first step of a reconciliation: every read it makes, done once and up front,
//! so the plan is decided from one picture and no later step reads to decide.
//!
//! What it reads: the cluster's ConfigMap (the voters it was created with), its StatefulSet,
//! the brokers' own view through the admin API, the broker pods, and, only when the spec asks
//! for larger volumes than the StatefulSet's claim template, the brokers' data claims.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use tokafka_contract::admin::ClusterSummary;

use crate::admin::BrokerAdmin;
use crate::context::{Context, Error};
use crate::crd::BrokerCluster;
use crate::names::{ClusterNames, DATA_VOLUME};
use crate::resources::claim_size_change;

/// What one reconciliation saw of one cluster.
#[derive(Clone, Debug)]
pub struct Observation {
    pub cluster: BrokerCluster,
    pub names: ClusterNames,
    /// The ConfigMap holding the broker configuration, once it exists.
    pub config_map: Option<ConfigMap>,
    pub statefulset: Option<StatefulSet>,
    /// The broker pods (by the cluster's selector).
    pub pods: Vec<Pod>,
    /// The cluster's own view, from the first broker of `0..asked()` that answered; `None`
    /// when none did.
    pub summary: Option<ClusterSummary>,
    /// The data claims of the StatefulSet's pods that exist, by ordinal; read only when the
    /// spec asks for a size other than the StatefulSet's claim template.
    pub claims: Vec<PersistentVolumeClaim>,
    /// When the observation was made.
    pub now: Time,
}

impl Observation {
    /// The StatefulSet's size; `None` before it exists.
    pub fn running(&self) -> Option<i32> {
        self.statefulset.as_ref().and_then(|s| s.spec.replicas)
    }

    /// The pods whose brokers the admin API asks: every one that runs or should.
    pub fn asked(&self) -> i32 {
        self.running().unwrap_or(0).max(self.cluster.spec.replicas)
    }

    /// The cluster's admin API, asking the brokers of `0..asked()`.
    pub fn admin(&self, http: &reqwest::Client) -> BrokerAdmin {
        BrokerAdmin {
            http: http.clone(),
            names: self.names.clone(),
            replicas: self.asked(),
            port: self.cluster.spec.listeners.http,
        }
    }
}

/// Reads what `cluster` (named `names`) is made of.
///
/// # Errors
/// [`Error::Kube`] when the API server refused a read (an admin API that does not answer is
/// no error: `summary` is `None`).
pub async fn observe(
    ctx: &Context,
    cluster: BrokerCluster,
    names: ClusterNames,
) -> Result<Observation, Error> {
    let ns = names.namespace.clone();
    let ns = ns.as_str();
    let config_map = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns)
        .get_opt(&names.config_map())
        .await?;
    let statefulset = Api::<StatefulSet>::namespaced(ctx.client.clone(), ns)
        .get_opt(&names.statefulset())
        .await?;
    let partial = Observation {
        cluster,
        names,
        config_map,
        statefulset,
        pods: Vec::new(),
        summary: None,
        claims: Vec::new(),
        now: Time(Timestamp::now()),
    };
    // One look at the cluster per reconciliation: scaling, the rollout and status all read
    // it (a step taken now shows in the next one, a few seconds later).
    let summary = partial.admin(&ctx.http).cluster_summary().await;
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&partial.names.selector_string()))
        .await?
        .items;
    let mut claims = Vec::new();
    if let Some(existing) = &partial.statefulset {
        if claim_size_change(&partial.cluster, existing).is_some() {
            let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns);
            for ordinal in 0..existing.spec.replicas.unwrap_or(0) {
                let claim = format!("{DATA_VOLUME}-{}", partial.names.pod(ordinal));
                if let Some(found) = api.get_opt(&claim).await? {
                    claims.push(found);
                }
            }
        }
    }
    let observation = Observation {
        pods,
        summary,
        claims,
        now: Time(Timestamp::now()),
        ..partial
    };
    Ok(observation)
}
