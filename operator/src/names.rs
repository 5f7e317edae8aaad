//! Names and labels of the objects a `BrokerCluster` owns.
//!
//! Invariant: every name is derived from the cluster's name alone, so the reconciler can find
//! (and garbage collection can remove) everything a cluster owns without keeping state.

use std::collections::BTreeMap;

/// Label holding the BrokerCluster's name on everything it owns, pods included.
pub const CLUSTER_LABEL: &str = "tokafka.io/cluster";
/// Label set by the StatefulSet controller on each pod: its ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The field manager of the operator's server-side applies.
pub const FIELD_MANAGER: &str = "tokafka-operator";
/// Finalizer that lets the operator clean up before a BrokerCluster goes away.
pub const FINALIZER: &str = "tokafka.io/cleanup";
/// Annotation on the pod template, and so on each pod: hash of what the broker runs (image,
/// configuration, resources, pod overrides, restart token). A pod whose hash differs from the
/// desired one is restarted by the rollout; nothing else restarts pods, so an operator
/// upgrade that changes how the template is written rolls nothing.
pub const POD_HASH_ANNOTATION: &str = "tokafka.io/pod-hash";
/// Annotation on a BrokerCluster: a new value restarts every broker (a rolling restart).
pub const RESTART_ANNOTATION: &str = "tokafka.io/restart";
/// Annotation on a BrokerCluster: `"true"` stops every change to it until removed.
pub const PAUSE_ANNOTATION: &str = "tokafka.io/pause-reconciliation";
/// Name of the volume claim template (claims are `data-<pod>`).
pub const DATA_VOLUME: &str = "data";

/// The object names of one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNames {
    pub cluster: String,
    pub namespace: String,
}

impl ClusterNames {
    pub fn new(cluster: &str, namespace: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            namespace: namespace.to_string(),
        }
    }

    /// The StatefulSet (its pods are `<cluster>-<ordinal>`).
    pub fn statefulset(&self) -> String {
        self.cluster.clone()
    }

    /// The client Service: bootstrap address for Kafka clients.
    pub fn client_service(&self) -> String {
        self.cluster.clone()
    }

    /// The headless Service that gives each broker pod a stable DNS name.
    pub fn headless_service(&self) -> String {
        format!("{}-brokers", self.cluster)
    }

    pub fn config_map(&self) -> String {
        format!("{}-config", self.cluster)
    }

    pub fn pod_disruption_budget(&self) -> String {
        self.cluster.clone()
    }

    pub fn pod(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.cluster)
    }

    /// The stable DNS name of a broker pod, without the cluster domain (resolved through the
    /// pods' DNS search path, and independent of the cluster's domain).
    pub fn pod_host(&self, ordinal: i32) -> String {
        format!(
            "{}.{}.{}.svc",
            self.pod(ordinal),
            self.headless_service(),
            self.namespace
        )
    }

    /// The client Service's DNS name.
    pub fn bootstrap_host(&self) -> String {
        format!("{}.{}.svc", self.client_service(), self.namespace)
    }

    /// Labels every owned object carries; the pod selector is the same set.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "tokafka".to_string()),
            (
                "app.kubernetes.io/instance".to_string(),
                self.cluster.clone(),
            ),
            (
                "app.kubernetes.io/component".to_string(),
                "broker".to_string(),
            ),
            (
                "app.kubernetes.io/managed-by".to_string(),
                FIELD_MANAGER.to_string(),
            ),
            (CLUSTER_LABEL.to_string(), self.cluster.clone()),
        ])
    }

    /// The pod selector: the stable subset of [`Self::labels`].
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "tokafka".to_string()),
            (CLUSTER_LABEL.to_string(), self.cluster.clone()),
        ])
    }

    /// The selector as a label-selector string (`status.selector`, list calls).
    pub fn selector_string(&self) -> String {
        self.selector()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_hosts_go_through_the_headless_service() {
        let names = ClusterNames::new("demo", "kafka");
        assert_eq!(names.pod_host(2), "demo-2.demo-brokers.kafka.svc");
        assert_eq!(names.bootstrap_host(), "demo.kafka.svc");
    }

    #[test]
    fn the_selector_is_a_subset_of_the_labels() {
        let names = ClusterNames::new("demo", "kafka");
        let labels = names.labels();
        for (k, v) in names.selector() {
            assert_eq!(labels.get(&k), Some(&v));
        }
        assert_eq!(
            names.selector_string(),
            "app.kubernetes.io/name=tokafka,tokafka.io/cluster=demo"
        );
    }
}
