//! Scheduling: the node agent is the cluster's only node, so it binds pending pods to itself
//! instead of running kube-scheduler, but refuses the pods that kube-scheduler would leave
//! Pending on a one-node cluster such as kind's: a node selector or required node affinity the
//! node does not satisfy, or a required pod anti-affinity that a pod already on the node
//! violates (say, two brokers of one cluster with hostname anti-affinity). Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A pod already placed on the node, as anti-affinity sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub uid: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// Whether `pod` waits for the default scheduler.
pub fn wants_binding(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let unscheduled = spec.node_name.as_deref().unwrap_or("").is_empty();
    let default_scheduler = matches!(
        spec.scheduler_name.as_deref(),
        None | Some("default-scheduler")
    );
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let terminal = matches!(phase, Some("Succeeded") | Some("Failed"));
    unscheduled && default_scheduler && !terminal && pod.metadata.deletion_timestamp.is_none()
}

pub const NODE_MISMATCH: &str =
    "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.";
pub const ANTI_AFFINITY: &str =
    "0/1 nodes are available: 1 node(s) didn't match pod anti-affinity rules.";

/// Why `pod` cannot go on the node (kube-scheduler's message), or None when it fits.
pub fn unschedulable(
    pod: &Pod,
    node_labels: &BTreeMap<String, String>,
    placed: &[Placed],
) -> Option<&'static str> {
    let spec = pod.spec.as_ref()?;
    if let Some(sel) = &spec.node_selector {
        if sel.iter().any(|(k, v)| node_labels.get(k) != Some(v)) {
            return Some(NODE_MISMATCH);
        }
    }
    let affinity = spec.affinity.as_ref();
    let required_nodes = affinity
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(required) = required_nodes {
        let any_term = required.node_selector_terms.iter().any(|t| {
            t.match_expressions
                .iter()
                .flatten()
                .all(|e| node_requirement(e, node_labels))
        });
        if !any_term {
            return Some(NODE_MISMATCH);
        }
    }
    let own_ns = pod.metadata.namespace.clone().unwrap_or_default();
    let own_uid = pod.metadata.uid.clone().unwrap_or_default();
    let anti = affinity
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    for term in anti.iter().flat_map(|t| t.iter()) {
        // On one node every topology key the node carries is one domain.
        if !node_labels.contains_key(&term.topology_key) {
            continue;
        }
        let namespaces = term
            .namespaces
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| vec![own_ns.clone()]);
        let Some(selector) = &term.label_selector else {
            continue;
        };
        let violated = placed.iter().any(|p| {
            p.uid != own_uid
                && namespaces.contains(&p.namespace)
                && selector_matches(selector, &p.labels)
        });
        if violated {
            return Some(ANTI_AFFINITY);
        }
    }
    None
}

fn node_requirement(e: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&e.key);
    let values = e.values.clone().unwrap_or_default();
    match e.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => !value.is_some_and(|v| values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if e.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a label selector selects `labels` (an empty selector selects everything).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = sel.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => !value.is_some_and(|v| values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "ns", "uid": "me"}, "spec": spec}),
        )
        .unwrap()
    }

    fn node() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("kubernetes.io/hostname".into(), "n1".into()),
            ("kubernetes.io/os".into(), "linux".into()),
        ])
    }

    fn broker(uid: &str) -> Placed {
        Placed {
            uid: uid.into(),
            namespace: "ns".into(),
            labels: BTreeMap::from([("app".into(), "broker".into())]),
        }
    }

    fn anti_affine() -> Pod {
        pod(
            json!({"containers": [], "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "broker"}}}
            ]}}}),
        )
    }

    #[test]
    fn unscheduled_pods_of_the_default_scheduler_are_bound() {
        assert!(wants_binding(&pod(json!({"containers": []}))));
        assert!(wants_binding(&pod(
            json!({"containers": [], "schedulerName": "default-scheduler"})
        )));
    }

    #[test]
    fn scheduled_or_foreign_scheduler_pods_are_left_alone() {
        assert!(!wants_binding(&pod(
            json!({"containers": [], "nodeName": "n"})
        )));
        assert!(!wants_binding(&pod(
            json!({"containers": [], "schedulerName": "other"})
        )));
    }

    #[test]
    fn node_selector_must_match_the_node() {
        let fits = pod(json!({"containers": [], "nodeSelector": {"kubernetes.io/os": "linux"}}));
        assert_eq!(unschedulable(&fits, &node(), &[]), None);
        let misfit = pod(json!({"containers": [], "nodeSelector": {"disk": "ssd"}}));
        assert_eq!(unschedulable(&misfit, &node(), &[]), Some(NODE_MISMATCH));
    }

    #[test]
    fn required_node_affinity_needs_one_matching_term() {
        let p = pod(
            json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "Exists"}]},
                {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}
            ]}}}}),
        );
        assert_eq!(unschedulable(&p, &node(), &[]), None);
        let p = pod(
            json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]}}}}),
        );
        assert_eq!(unschedulable(&p, &node(), &[]), Some(NODE_MISMATCH));
    }

    #[test]
    fn required_hostname_anti_affinity_allows_one_pod_per_node() {
        assert_eq!(unschedulable(&anti_affine(), &node(), &[]), None);
        assert_eq!(
            unschedulable(&anti_affine(), &node(), &[broker("other")]),
            Some(ANTI_AFFINITY)
        );
        // The pod itself does not count, nor pods of other namespaces.
        assert_eq!(
            unschedulable(&anti_affine(), &node(), &[broker("me")]),
            None
        );
        let mut elsewhere = broker("other");
        elsewhere.namespace = "other-ns".into();
        assert_eq!(unschedulable(&anti_affine(), &node(), &[elsewhere]), None);
    }

    #[test]
    fn selector_expressions_are_matched() {
        let sel: LabelSelector = serde_json::from_value(json!({"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["broker", "controller"]},
            {"key": "canary", "operator": "DoesNotExist"}
        ]}))
        .unwrap();
        assert!(selector_matches(&sel, &broker("x").labels));
        let mut canary = broker("x").labels;
        canary.insert("canary".into(), "true".into());
        assert!(!selector_matches(&sel, &canary));
    }
}
