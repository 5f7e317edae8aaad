//! The Node object, its status heartbeat and its Lease.
//!
//! kube-controller-manager's node lifecycle controller marks a node NotReady (and taints and
//! evicts its pods) when its Lease is not renewed, so the agent renews it every few seconds
//! and reports a Ready condition with the node status.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::ObjectMeta;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_DURATION_SECONDS: i32 = 40;

/// Facts about the node the agent registers.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    pub address: String,
    pub kubelet_port: i32,
    pub kubelet_version: String,
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
}

pub fn node(info: &NodeInfo) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(info.name.clone()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".into(), info.name.clone()),
                ("kubernetes.io/os".into(), "linux".into()),
                (
                    "kubernetes.io/arch".into(),
                    std::env::consts::ARCH
                        .replace("x86_64", "amd64")
                        .replace("aarch64", "arm64"),
                ),
                ("tokafka.io/node-agent".into(), "true".into()),
            ])),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: None,
    }
}

pub fn node_status(info: &NodeInfo, now: &Time, ready_since: &Time) -> NodeStatus {
    let resources = BTreeMap::from([
        ("cpu".into(), Quantity(info.cpu.clone())),
        ("memory".into(), Quantity(info.memory.clone())),
        ("pods".into(), Quantity(info.max_pods.to_string())),
        ("ephemeral-storage".into(), Quantity("100Gi".into())),
    ]);
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(ready_since.clone()),
    };
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: info.address.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: info.name.clone(),
            },
        ]),
        allocatable: Some(resources.clone()),
        capacity: Some(resources),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "node agent has sufficient memory",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "node agent has no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "node agent has sufficient PID",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "tokafka node agent is posting ready status",
            ),
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: info.kubelet_port,
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
            container_runtime_version: format!(
                "tokafka-node-agent://{}",
                env!("CARGO_PKG_VERSION")
            ),
            kubelet_version: info.kubelet_version.clone(),
            kube_proxy_version: String::new(),
            operating_system: "linux".into(),
            os_image: "local processes".into(),
            kernel_version: String::new(),
            machine_id: String::new(),
            system_uuid: String::new(),
            boot_id: String::new(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn lease(node_name: &str, now: &MicroTime) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node_name.into()),
            namespace: Some(LEASE_NAMESPACE.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node_name.into()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(now.clone()),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn info() -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            address: "127.0.0.1".into(),
            kubelet_port: 10250,
            kubelet_version: "v1.37.2".into(),
            cpu: "2".into(),
            memory: "24Gi".into(),
            max_pods: 110,
        }
    }

    #[test]
    fn node_reports_ready_with_its_address() {
        let now = Time(Timestamp::from_second(100).unwrap());
        let s = node_status(&info(), &now, &now);
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(s.addresses.unwrap()[0].address, "127.0.0.1");
        assert_eq!(s.node_info.unwrap().kubelet_version, "v1.37.2");
    }

    #[test]
    fn lease_is_held_by_the_node() {
        let l = lease("n1", &MicroTime(Timestamp::from_second(5).unwrap()));
        assert_eq!(l.metadata.namespace.as_deref(), Some(LEASE_NAMESPACE));
        assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("n1"));
    }
}
