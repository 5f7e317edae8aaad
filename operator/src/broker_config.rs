//! The broker configuration a `BrokerCluster` runs with: the user's `spec.config` checked
//! against the keys the broker knows, merged with the keys the operator owns, rendered as the
//! properties file every broker pod reads.
//!
//! Invariants:
//! - a key the broker does not know, or one the operator sets itself, is refused (the same
//!   rule is in the CRD schema, so the API server refuses it first; this check covers objects
//!   stored before the rule existed);
//! - a value the broker would refuse at start-up is refused here, by the broker's own
//!   validation (the contract's, which the broker runs before it starts), so a bad value
//!   becomes an error on the BrokerCluster instead of crash-looping pods;
//! - the rendered file is deterministic (sorted keys), so its hash changes only when the
//!   configuration does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use tokafka_contract::config::{find, parse_voters, validate, Settings};

use crate::crd::{BrokerClusterSpec, OPERATOR_OWNED_KEYS};
use crate::names::ClusterNames;

/// Key of the properties file in the ConfigMap (mounted at [`CONFIG_DIR`]).
pub const PROPERTIES_KEY: &str = "broker.properties";
/// Where the ConfigMap is mounted in broker pods.
pub const CONFIG_DIR: &str = "/etc/tokafka";
/// Where each broker's volume is mounted.
pub const DATA_DIR: &str = "/var/lib/tokafka";

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigProblem {
    #[error("spec.config sets unknown broker key(s): {0}")]
    UnknownKeys(String),
    #[error(
        "spec.config sets key(s) the operator manages: {0} (use the BrokerCluster fields instead)"
    )]
    OwnedKeys(String),
    #[error("spec.config is refused by the broker: {0}")]
    BadValue(String),
}

/// The controller voters' node ids for a new cluster of `replicas` brokers: one voter for one
/// or two brokers, three up to four, five from five on. Once a cluster exists its voters never
/// change (they are read back from its ConfigMap), since a voter set is Raft membership.
pub fn initial_voters(replicas: i32) -> Vec<i32> {
    let count = match replicas {
        ..=2 => 1,
        3..=4 => 3,
        _ => 5,
    };
    (0..count).collect()
}

/// The `controller.quorum.voters` value for these voters (node id = pod ordinal).
pub fn voters_value(names: &ClusterNames, voters: &[i32], controller_port: i32) -> String {
    voters
        .iter()
        .map(|id| format!("{id}@{}:{controller_port}", names.pod_host(*id)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Node ids named by a `controller.quorum.voters` value (the broker's own parser); `None`
/// when it is malformed.
pub fn parse_voter_ids(value: &str) -> Option<Vec<i32>> {
    parse_voters(value)
        .ok()?
        .into_keys()
        .map(|id| i32::try_from(id).ok())
        .collect()
}

/// The voters of a cluster: those of its ConfigMap once it exists (a voter set is Raft
/// membership: it never changes), else [`initial_voters`] for `replicas` brokers.
pub fn cluster_voters(config_map: Option<&ConfigMap>, replicas: i32) -> Vec<i32> {
    config_map
        .and_then(|cm| cm.data.as_ref())
        .and_then(|data| data.get(PROPERTIES_KEY))
        .and_then(|text| {
            parse_properties(text)
                .get("controller.quorum.voters")
                .and_then(|v| parse_voter_ids(v))
        })
        .unwrap_or_else(|| initial_voters(replicas))
}

/// The cluster-wide settings every broker of `spec` runs with (per-pod ones are flags).
///
/// # Errors
/// [`ConfigProblem`] when `spec.config` uses unknown or operator-owned keys or values the
/// broker refuses.
pub fn cluster_settings(
    spec: &BrokerClusterSpec,
    names: &ClusterNames,
    voters: &[i32],
) -> Result<BTreeMap<String, String>, ConfigProblem> {
    let unknown: Vec<&str> = spec
        .config
        .keys()
        .map(String::as_str)
        .filter(|k| find(k).is_none())
        .collect();
    if !unknown.is_empty() {
        return Err(ConfigProblem::UnknownKeys(unknown.join(", ")));
    }
    let owned: Vec<&str> = spec
        .config
        .keys()
        .map(String::as_str)
        .filter(|k| OPERATOR_OWNED_KEYS.contains(k))
        .collect();
    if !owned.is_empty() {
        return Err(ConfigProblem::OwnedKeys(owned.join(", ")));
    }
    let mut settings: BTreeMap<String, String> = spec.config.clone();
    let replication = spec
        .default_replication_factor
        .unwrap_or_else(|| spec.replicas.clamp(1, 3));
    settings.insert(
        "controller.quorum.voters".into(),
        voters_value(names, voters, spec.listeners.controller),
    );
    settings.insert("default.replication.factor".into(), replication.to_string());
    settings.insert(
        "min.insync.replicas".into(),
        spec.min_insync_replicas.unwrap_or(1).to_string(),
    );
    settings.insert(
        "auto.leader.rebalance.enable".into(),
        spec.rebalance.enabled.to_string(),
    );
    settings.insert(
        "leader.imbalance.per.broker.percentage".into(),
        spec.rebalance
            .leader_imbalance_threshold_percent
            .to_string(),
    );
    check_with_broker_parser(&settings, names, spec)?;
    Ok(settings)
}

/// Runs the broker's own validation (the contract's) over the settings plus the per-pod keys
/// of broker 0, so a value the broker would refuse is refused now.
fn check_with_broker_parser(
    settings: &BTreeMap<String, String>,
    names: &ClusterNames,
    spec: &BrokerClusterSpec,
) -> Result<(), ConfigProblem> {
    let mut full = Settings::defaults();
    let per_pod = [
        ("node.id".to_string(), "0".to_string()),
        ("log.dirs".to_string(), DATA_DIR.to_string()),
        (
            "listeners".to_string(),
            format!("0.0.0.0:{}", spec.listeners.kafka),
        ),
        (
            "advertised.listeners".to_string(),
            format!("{}:{}", names.pod_host(0), spec.listeners.kafka),
        ),
        (
            "http.listeners".to_string(),
            format!("0.0.0.0:{}", spec.listeners.http),
        ),
    ];
    for (key, value) in settings.iter().chain(per_pod.iter().map(|(k, v)| (k, v))) {
        full.set(key, value, "spec.config")
            .map_err(|e| ConfigProblem::BadValue(e.to_string()))?;
    }
    validate(&full).map_err(|e| ConfigProblem::BadValue(e.to_string()))
}

/// The properties file holding `settings` (sorted, one `key=value` per line).
pub fn render_properties(names: &ClusterNames, settings: &BTreeMap<String, String>) -> String {
    let mut out = format!(
        "# Managed by tokafka-operator for BrokerCluster {}/{}; edits are overwritten.\n",
        names.namespace, names.cluster
    );
    for (key, value) in settings {
        out.push_str(&format!("{key}={value}\n"));
    }
    out
}

/// Reads `key=value` lines back (the inverse of [`render_properties`]).
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BrokerClusterSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    const BASE: &str = "replicas: 3\nimage: tokafka-broker:dev\nstorage:\n  size: 1Gi\n";

    #[test]
    fn the_operator_sets_voters_replication_and_rebalance() {
        let names = ClusterNames::new("demo", "kafka");
        let settings = cluster_settings(
            &spec(&format!(
                "{BASE}minInsyncReplicas: 2\nconfig:\n  num.partitions: '6'\n"
            )),
            &names,
            &initial_voters(3),
        )
        .expect("valid");
        assert_eq!(
            settings["controller.quorum.voters"],
            "0@demo-0.demo-brokers.kafka.svc:9093,1@demo-1.demo-brokers.kafka.svc:9093,2@demo-2.demo-brokers.kafka.svc:9093"
        );
        assert_eq!(settings["default.replication.factor"], "3");
        assert_eq!(settings["min.insync.replicas"], "2");
        assert_eq!(settings["num.partitions"], "6");
        assert_eq!(settings["auto.leader.rebalance.enable"], "true");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let names = ClusterNames::new("demo", "kafka");
        let err = cluster_settings(
            &spec(&format!(
                "{BASE}config:\n  num.partitionz: '6'\n  log.retention.ms: '1'\n"
            )),
            &names,
            &[0],
        )
        .expect_err("unknown key");
        assert_eq!(err, ConfigProblem::UnknownKeys("num.partitionz".into()));
    }

    #[test]
    fn operator_owned_keys_are_refused() {
        let names = ClusterNames::new("demo", "kafka");
        let err = cluster_settings(
            &spec(&format!("{BASE}config:\n  node.id: '7'\n")),
            &names,
            &[0],
        )
        .expect_err("owned key");
        assert!(matches!(err, ConfigProblem::OwnedKeys(k) if k == "node.id"));
    }

    #[test]
    fn values_the_broker_refuses_are_refused() {
        let names = ClusterNames::new("demo", "kafka");
        let err = cluster_settings(
            &spec(&format!("{BASE}config:\n  num.partitions: many\n")),
            &names,
            &[0],
        )
        .expect_err("bad value");
        assert!(err.to_string().contains("num.partitions"), "{err}");
    }

    #[test]
    fn voter_sets_follow_the_initial_size_and_parse_back() {
        assert_eq!(initial_voters(1), [0]);
        assert_eq!(initial_voters(2), [0]);
        assert_eq!(initial_voters(4), [0, 1, 2]);
        assert_eq!(initial_voters(7), [0, 1, 2, 3, 4]);
        let names = ClusterNames::new("demo", "kafka");
        assert_eq!(
            parse_voter_ids(&voters_value(&names, &[0, 1, 2], 9093)),
            Some(vec![0, 1, 2])
        );
        assert_eq!(parse_voter_ids("x@y:1"), None);
        assert_eq!(parse_voter_ids(""), None);
    }

    #[test]
    fn properties_round_trip() {
        let names = ClusterNames::new("demo", "kafka");
        let settings = BTreeMap::from([
            ("a.b".to_string(), "1".to_string()),
            ("c".to_string(), "x=y".to_string()),
        ]);
        assert_eq!(
            parse_properties(&render_properties(&names, &settings)),
            settings
        );
    }
}
