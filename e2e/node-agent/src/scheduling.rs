//! Scheduling: the node agent is the cluster's only node, so it binds every pending pod to
//! itself instead of running kube-scheduler.

use k8s_openapi::api::core::v1::Pod;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
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
}
