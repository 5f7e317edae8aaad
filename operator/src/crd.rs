//! The `BrokerCluster` API (`tokafka.io/v1alpha1`): a replicated tokafka cluster as users
//! declare it, and the status the operator reports.
//!
//! Invariants the API server enforces from the generated schema (so a bad spec is refused
//! with a clear message before the operator sees it):
//! - `replicas` is at least 1;
//! - `defaultReplicationFactor` and `minInsyncReplicas` are at least 1, the replication factor
//!   is at most `replicas`, and `minInsyncReplicas` at most the replication factor;
//! - `storage.size` is a quantity and never shrinks (volume claims cannot);
//! - ports are valid and distinct;
//! - `rebalance.leaderImbalanceThresholdPercent` is between 0 and 100.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::{Message, Rule};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use tokafka_contract::config::KEYS;

/// A tokafka cluster: a StatefulSet of brokers that form one replicated cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tokafka.io",
    version = "v1alpha1",
    kind = "BrokerCluster",
    plural = "brokerclusters",
    shortname = "bc",
    namespaced,
    status = "BrokerClusterStatus",
    doc = "A replicated tokafka cluster: a StatefulSet of Kafka-compatible brokers",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.readyReplicasText"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.currentVersion"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase","description":"Ready, Progressing or Degraded"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("!has(self.defaultReplicationFactor) || self.defaultReplicationFactor <= self.replicas")
        .message("defaultReplicationFactor must not exceed replicas"),
    validation = Rule::new("!has(self.minInsyncReplicas) || self.minInsyncReplicas <= (has(self.defaultReplicationFactor) ? self.defaultReplicationFactor : (self.replicas < 3 ? self.replicas : 3))")
        .message("minInsyncReplicas must not exceed the replication factor"),
)]
#[serde(rename_all = "camelCase")]
pub struct BrokerClusterSpec {
    /// Number of brokers.
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// The broker image, e.g. `ghcr.io/tokafka/broker:0.1.0`.
    #[x_kube(validation = Rule::new("self != ''").message("image must not be empty"))]
    pub image: String,
    /// The tokafka version the image runs (reported in status, gates rolling upgrades).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub storage: StorageSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Broker configuration (Kafka key names), passed to every broker. Only keys the broker
    /// knows, and not the ones the operator sets from other fields, are accepted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = known_config_keys_rule())]
    #[schemars(extend("maxProperties" = 256))]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub listeners: ListenerPorts,
    /// Replication factor of new topics (default: 3, or `replicas` when fewer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub default_replication_factor: Option<i32>,
    /// `min.insync.replicas` of the cluster (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_insync_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,
    #[serde(default)]
    pub rollout: RolloutSpec,
    #[serde(default)]
    pub rebalance: RebalanceSpec,
}

/// Keys the operator sets from the spec or per pod; `spec.config` may not set them.
pub const OPERATOR_OWNED_KEYS: &[&str] = &[
    "node.id",
    "log.dirs",
    "listeners",
    "advertised.listeners",
    "http.listeners",
    "controller.quorum.voters",
    "controller.listeners",
    "broker.rack",
    "default.replication.factor",
    "min.insync.replicas",
    "auto.leader.rebalance.enable",
    "leader.imbalance.per.broker.percentage",
    // Listeners and their TLS material come from the cluster's listener and certificate
    // settings (the pods hold the files), not from free-form configuration.
    "listener.security.protocol.map",
    "inter.broker.listener.name",
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.client.auth",
];

/// Keys `spec.config` may set: every broker key the operator does not own.
pub fn user_settable_keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter()
        .map(|k| k.name)
        .filter(|name| !OPERATOR_OWNED_KEYS.contains(name))
}

/// The CEL rule that refuses `spec.config` keys the broker does not know or the operator
/// owns, naming them in the message.
fn known_config_keys_rule() -> Rule {
    // A map literal: membership in a map is a constant-cost lookup, where a list would cost
    // the API server's CEL budget a string comparison per key.
    let allowed = user_settable_keys()
        .map(|k| format!("'{k}': true"))
        .collect::<Vec<_>>()
        .join(", ");
    Rule::new(format!("self.all(k, k in {{{allowed}}})")).message(Message::Expression(format!(
        "'config key ' + self.filter(k, !(k in {{{allowed}}}))[0] + ' is not a broker key, or is one the operator sets itself'"
    )))
}

/// The brokers' persistent volumes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each broker's volume claim, e.g. `10Gi`. It may grow, never shrink.
    #[x_kube(
        validation = Rule::new("isQuantity(self)").message("size must be a quantity such as 10Gi"),
        validation = Rule::new("!isQuantity(self) || !isQuantity(oldSelf) || quantity(self).compareTo(quantity(oldSelf)) >= 0").message("storage size cannot shrink"),
    )]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Delete a removed broker's volume claim on scale-down (default: keep it).
    #[serde(default)]
    pub delete_claims_on_scale_down: bool,
    /// Delete all volume claims when the BrokerCluster is deleted (default: keep them).
    #[serde(default)]
    pub delete_claims_on_delete: bool,
}

/// The ports every broker listens on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kafka != self.controller && self.kafka != self.http && self.controller != self.http").message("listener ports must be distinct"))]
pub struct ListenerPorts {
    #[schemars(range(min = 1, max = 65535))]
    pub kafka: i32,
    #[schemars(range(min = 1, max = 65535))]
    pub controller: i32,
    /// Metrics, health and the admin API.
    #[schemars(range(min = 1, max = 65535))]
    pub http: i32,
}

impl Default for ListenerPorts {
    fn default() -> Self {
        Self {
            kafka: 9092,
            controller: 9093,
            http: 9644,
        }
    }
}

/// Overrides merged into the broker pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// The node label whose value becomes each broker's rack (`broker.rack`):
    /// `topology.kubernetes.io/zone` or `topology.kubernetes.io/region`, the labels the API
    /// server copies from a pod's node onto the pod when it is bound (Kubernetes 1.35+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['topology.kubernetes.io/zone', 'topology.kubernetes.io/region']").message("rackLabel must be topology.kubernetes.io/zone or topology.kubernetes.io/region"))]
    pub rack_label: Option<String>,
}

/// How changes roll over the brokers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Stop between brokers until unpaused.
    #[serde(default)]
    pub paused: bool,
    /// Brokers restarted together at most: only brokers that share no partition, each
    /// passing its own gates, and at most one controller voter.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub max_parallel: i32,
    /// How long a restarted broker may take to be Ready and back in sync.
    #[serde(default = "ten_minutes")]
    #[schemars(range(min = 1))]
    pub health_gate_timeout_seconds: i32,
    /// Under-replicated partitions tolerated before a restart.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_under_replicated_partitions: i32,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            paused: false,
            max_parallel: one(),
            health_gate_timeout_seconds: ten_minutes(),
            max_under_replicated_partitions: 0,
        }
    }
}

fn one() -> i32 {
    1
}

fn ten_minutes() -> i32 {
    600
}

/// Automatic preferred-leader rebalancing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// A broker's leader imbalance (percent) above which leadership is rebalanced.
    #[serde(default = "ten_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub leader_imbalance_threshold_percent: i32,
}

impl Default for RebalanceSpec {
    fn default() -> Self {
        Self {
            enabled: enabled(),
            leader_imbalance_threshold_percent: ten_percent(),
        }
    }
}

fn enabled() -> bool {
    true
}

fn ten_percent() -> i32 {
    10
}

/// What the operator observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BrokerClusterStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing and Degraded, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One of Ready, Progressing, Degraded (the printer column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// `ready/desired`, for the READY column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas_text: Option<String>,
    /// The label selector of the broker pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerState>,
    #[serde(default)]
    pub under_replicated_partitions: i32,
    /// The highest per-broker leader imbalance, in percent.
    #[serde(default)]
    pub leader_imbalance_percent: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// One broker as the operator sees it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerState {
    pub broker_id: i32,
    pub pod: String,
    /// e.g. Running, Fenced, Draining, Drained.
    pub state: String,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub leaders: i32,
}

/// Progress of a rolling restart or upgrade.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Brokers already on the current pod template.
    pub updated: i32,
    pub total: i32,
    /// The broker pods being restarted, if any (several joined with ", ").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// The gate the rollout waits on, if it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
    /// Since when it has waited on that gate (a wait longer than
    /// `spec.rollout.healthGateTimeoutSeconds` halts the rollout: Degraded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_since: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn the_crd_is_namespaced_with_short_name_scale_and_columns() {
        let crd = BrokerCluster::crd();
        assert_eq!(crd.spec.group, "tokafka.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["bc".to_string()][..])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        let scale = version
            .subresources
            .as_ref()
            .and_then(|s| s.scale.as_ref())
            .expect("scale subresource");
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Ready", "Version", "Status", "Age"]);
    }

    #[test]
    fn the_schema_carries_the_validation_rules() {
        let schema = serde_json::to_string(&BrokerCluster::crd()).expect("json");
        for rule in [
            "defaultReplicationFactor must not exceed replicas",
            "minInsyncReplicas must not exceed the replication factor",
            "storage size cannot shrink",
            "listener ports must be distinct",
        ] {
            assert!(schema.contains(rule), "missing rule: {rule}");
        }
        let replicas = &BrokerCluster::crd().spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| s.properties.as_ref())
            .and_then(|p| p.get("spec"))
            .and_then(|s| s.properties.as_ref())
            .and_then(|p| p.get("replicas"))
            .and_then(|r| r.minimum)
            .expect("replicas has a minimum");
        assert_eq!(*replicas, 1.0);
    }

    #[test]
    fn a_minimal_spec_takes_the_defaults() {
        let spec: BrokerClusterSpec =
            serde_yaml::from_str("replicas: 3\nimage: tokafka/broker:dev\nstorage:\n  size: 1Gi\n")
                .expect("parse");
        assert_eq!(spec.listeners, ListenerPorts::default());
        assert_eq!(spec.rollout.max_parallel, 1);
        assert!(spec.rebalance.enabled);
        assert!(!spec.storage.delete_claims_on_delete);
    }
}
