//! Desired objects of a `BrokerCluster`, built by pure functions from its spec.
//!
//! Invariants:
//! - every object carries the cluster's labels and a controller owner reference to the
//!   BrokerCluster, so garbage collection removes it with the cluster;
//! - the StatefulSet uses the `OnDelete` update strategy: pods change only when the operator
//!   restarts them (one at a time, health-gated), never all at once by the StatefulSet
//!   controller;
//! - a broker's node id is its pod ordinal and its advertised address its stable DNS name, so
//!   a rescheduled pod comes back as the same broker with the same volume;
//! - the pod template carries a hash of the broker configuration, so a configuration change is
//!   a template change the rollout sees.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::broker_config::{render_properties, CONFIG_DIR, DATA_DIR, PROPERTIES_KEY};
use crate::crd::BrokerCluster;
use crate::names::{
    ClusterNames, DATA_VOLUME, POD_HASH_ANNOTATION, POD_INDEX_LABEL, RESTART_ANNOTATION,
};

/// Non-root user and group the broker runs as (distroless `nonroot`).
const BROKER_UID: i64 = 65532;
/// Time a broker gets to move leadership away and close its logs on SIGTERM.
const TERMINATION_GRACE_SECONDS: i64 = 90;

/// Why desired objects cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("the BrokerCluster has no {0} yet")]
    MissingMetadata(&'static str),
}

/// Everything a cluster owns, as it should be.
#[derive(Clone, Debug)]
pub struct DesiredObjects {
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub client_service: Service,
    pub statefulset: StatefulSet,
    pub pod_disruption_budget: PodDisruptionBudget,
}

/// Names of `cluster` (it must have a name and a namespace).
///
/// # Errors
/// [`BuildError::MissingMetadata`].
pub fn names_of(cluster: &BrokerCluster) -> Result<ClusterNames, BuildError> {
    let name = cluster
        .metadata
        .name
        .as_deref()
        .ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = cluster
        .metadata
        .namespace
        .as_deref()
        .ok_or(BuildError::MissingMetadata("namespace"))?;
    Ok(ClusterNames::new(name, namespace))
}

/// The objects of `cluster` running `settings` (from
/// [`crate::broker_config::cluster_settings`]) with `replicas` brokers.
///
/// # Errors
/// [`BuildError::MissingMetadata`] when the cluster has no name, namespace or uid.
pub fn desired_objects(
    cluster: &BrokerCluster,
    settings: &BTreeMap<String, String>,
    replicas: i32,
) -> Result<DesiredObjects, BuildError> {
    let names = names_of(cluster)?;
    let owner = cluster
        .controller_owner_ref(&())
        .ok_or(BuildError::MissingMetadata("uid"))?;
    let properties = render_properties(&names, settings);
    Ok(DesiredObjects {
        config_map: config_map(&names, &owner, &properties),
        headless_service: headless_service(cluster, &names, &owner),
        client_service: client_service(cluster, &names, &owner),
        statefulset: statefulset(cluster, &names, &owner, &properties, replicas),
        pod_disruption_budget: pod_disruption_budget(&names, &owner),
    })
}

fn metadata(names: &ClusterNames, name: String, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(names.labels()),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The pod hash of `cluster` running `properties`: the first 16 hex digits of the SHA-256 of
/// everything in the spec that reaches a broker pod, plus the restart annotation.
pub fn pod_hash(cluster: &BrokerCluster, properties: &str) -> String {
    let spec = &cluster.spec;
    let restart = cluster
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESTART_ANNOTATION));
    let inputs = serde_json::json!({
        "image": spec.image,
        "version": spec.version,
        "resources": spec.resources,
        "listeners": spec.listeners,
        "podTemplate": spec.pod_template,
        "properties": properties,
        "restart": restart,
    });
    let digest = Sha256::digest(inputs.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The pod hash a pod records (its template's annotation).
pub fn recorded_pod_hash(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(POD_HASH_ANNOTATION))
        .map(String::as_str)
}

fn config_map(names: &ClusterNames, owner: &OwnerReference, properties: &str) -> ConfigMap {
    ConfigMap {
        metadata: metadata(names, names.config_map(), owner),
        data: Some(BTreeMap::from([(
            PROPERTIES_KEY.to_string(),
            properties.to_string(),
        )])),
        ..ConfigMap::default()
    }
}

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: number,
        target_port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// Gives each broker pod its stable DNS name, including before it is Ready (brokers must
/// reach each other's controller listeners to become Ready at all).
fn headless_service(
    cluster: &BrokerCluster,
    names: &ClusterNames,
    owner: &OwnerReference,
) -> Service {
    let ports = &cluster.spec.listeners;
    Service {
        metadata: metadata(names, names.headless_service(), owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(names.selector()),
            ports: Some(vec![
                port("kafka", ports.kafka),
                port("controller", ports.controller),
                port("http", ports.http),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The bootstrap address for Kafka clients: Ready brokers only.
fn client_service(
    cluster: &BrokerCluster,
    names: &ClusterNames,
    owner: &OwnerReference,
) -> Service {
    Service {
        metadata: metadata(names, names.client_service(), owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(names.selector()),
            ports: Some(vec![port("kafka", cluster.spec.listeners.kafka)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn pod_disruption_budget(names: &ClusterNames, owner: &OwnerReference) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(names, names.pod_disruption_budget(), owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(names.selector()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str, port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    }
}

/// The broker container's arguments: the shared properties file plus the per-pod addresses.
/// Servers bind the pod's IP (correct everywhere, and required where pods share a network).
fn broker_args(cluster: &BrokerCluster, names: &ClusterNames) -> Vec<String> {
    let ports = &cluster.spec.listeners;
    vec![
        format!("--config={CONFIG_DIR}/{PROPERTIES_KEY}"),
        format!("--data-dir={DATA_DIR}/data"),
        format!("--listen=$(POD_IP):{}", ports.kafka),
        format!(
            "--advertised-listener=$(POD_NAME).{}.$(POD_NAMESPACE).svc:{}",
            names.headless_service(),
            ports.kafka
        ),
        format!("--http-listen=$(POD_IP):{}", ports.http),
        format!("--controller-listen=$(POD_IP):{}", ports.controller),
        "--log-format=json".to_string(),
    ]
}

fn broker_container(cluster: &BrokerCluster, names: &ClusterNames) -> Container {
    let ports = &cluster.spec.listeners;
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_IP", "status.podIP"),
        // The broker reads TOKAFKA_<KEY> variables: node.id is the pod's ordinal.
        field_env(
            "TOKAFKA_NODE_ID",
            &format!("metadata.labels['{POD_INDEX_LABEL}']"),
        ),
    ];
    if let Some(label) = cluster
        .spec
        .pod_template
        .as_ref()
        .and_then(|p| p.rack_label.as_deref())
    {
        // The API server copies the node's topology labels onto the pod at binding; a node
        // without the label gives an empty rack (none).
        env.push(field_env(
            "TOKAFKA_BROKER_RACK",
            &format!("metadata.labels['{label}']"),
        ));
    }
    Container {
        name: "broker".into(),
        image: Some(cluster.spec.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(broker_args(cluster, names)),
        env: Some(env),
        ports: Some(vec![
            container_port("kafka", ports.kafka),
            container_port("controller", ports.controller),
            container_port("http", ports.http),
        ]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        readiness_probe: Some(http_probe("/readyz", ports.http, 5, 3)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(30),
            ..http_probe("/healthz", ports.http, 10, 6)
        }),
        resources: cluster.spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn container_port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: number,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn retention(delete: bool) -> String {
    if delete { "Delete" } else { "Retain" }.to_string()
}

fn statefulset(
    cluster: &BrokerCluster,
    names: &ClusterNames,
    owner: &OwnerReference,
    properties: &str,
    replicas: i32,
) -> StatefulSet {
    let spec = &cluster.spec;
    let overrides = spec.pod_template.clone().unwrap_or_default();
    let mut template_labels = names.labels();
    if let Some(version) = &spec.version {
        template_labels.insert("app.kubernetes.io/version".into(), version.clone());
    }
    let pod_spec = PodSpec {
        containers: vec![broker_container(cluster, names)],
        volumes: Some(vec![Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        }]),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(BROKER_UID),
            run_as_group: Some(BROKER_UID),
            fs_group: Some(BROKER_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        affinity: overrides.affinity,
        tolerations: (!overrides.tolerations.is_empty()).then_some(overrides.tolerations),
        node_selector: (!overrides.node_selector.is_empty()).then_some(overrides.node_selector),
        topology_spread_constraints: (!overrides.topology_spread_constraints.is_empty())
            .then_some(overrides.topology_spread_constraints),
        ..PodSpec::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(names.labels()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(spec.storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: metadata(names, names.statefulset(), owner),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(names.headless_service()),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention(spec.storage.delete_claims_on_delete)),
                    when_scaled: Some(retention(spec.storage.delete_claims_on_scale_down)),
                },
            ),
            selector: LabelSelector {
                match_labels: Some(names.selector()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(BTreeMap::from([(
                        POD_HASH_ANNOTATION.to_string(),
                        pod_hash(cluster, properties),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

/// Keeps the claim templates (and the selector) of the StatefulSet that exists: the API server
/// refuses changes to them. A larger `storage.size` reaches the brokers by expanding their
/// claims instead ([`claim_size_change`]).
pub fn keep_immutable_fields(desired: &mut StatefulSet, existing: &StatefulSet) {
    desired
        .spec
        .volume_claim_templates
        .clone_from(&existing.spec.volume_claim_templates);
    desired.spec.selector = existing.spec.selector.clone();
}

/// The size of the existing StatefulSet's data claim template, when it differs from the one
/// `cluster` asks for: `(from, to)`.
pub fn claim_size_change(
    cluster: &BrokerCluster,
    existing: &StatefulSet,
) -> Option<(String, String)> {
    let current = existing
        .spec
        .volume_claim_templates
        .iter()
        .flatten()
        .find(|c| c.metadata.name.as_deref() == Some(DATA_VOLUME))
        .and_then(|c| c.spec.as_ref())
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())?;
    (current != cluster.spec.storage.size).then(|| (current, cluster.spec.storage.size.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker_config::{cluster_settings, initial_voters};

    fn cluster(yaml: &str) -> BrokerCluster {
        let mut cluster = BrokerCluster::new("demo", serde_yaml::from_str(yaml).expect("spec"));
        cluster.metadata.namespace = Some("kafka".into());
        cluster.metadata.uid = Some("0000-1111".into());
        cluster
    }

    const BASE: &str =
        "replicas: 3\nimage: tokafka-broker:dev\nversion: 0.1.0\nstorage:\n  size: 2Gi\n";

    fn build(c: &BrokerCluster) -> DesiredObjects {
        let names = names_of(c).expect("names");
        let settings =
            cluster_settings(&c.spec, &names, &initial_voters(c.spec.replicas)).expect("settings");
        desired_objects(c, &settings, c.spec.replicas).expect("objects")
    }

    fn pod_spec(objects: &DesiredObjects) -> &PodSpec {
        objects
            .statefulset
            .spec
            .template
            .spec
            .as_ref()
            .expect("pod spec")
    }

    #[test]
    fn every_object_is_owned_by_the_cluster_and_labelled() {
        let c = cluster(BASE);
        let objects = build(&c);
        let metas = [
            &objects.config_map.metadata,
            &objects.headless_service.metadata,
            &objects.client_service.metadata,
            &objects.statefulset.metadata,
            &objects.pod_disruption_budget.metadata,
        ];
        for meta in metas {
            let owners = meta.owner_references.as_ref().expect("owners");
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "BrokerCluster");
            assert_eq!(owners[0].uid, "0000-1111");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("kafka"));
            assert_eq!(
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get("tokafka.io/cluster"))
                    .map(String::as_str),
                Some("demo")
            );
        }
    }

    #[test]
    fn the_statefulset_is_ondelete_parallel_with_claims_and_the_headless_service() {
        let objects = build(&cluster(BASE));
        let spec = &objects.statefulset.spec;
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("demo-brokers"));
        assert_eq!(
            spec.update_strategy
                .as_ref()
                .and_then(|u| u.type_.as_deref()),
            Some("OnDelete")
        );
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let claims = spec.volume_claim_templates.as_ref().expect("claims");
        assert_eq!(
            claims[0]
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .map(|r| r["storage"].0.as_str()),
            Some("2Gi")
        );
        let retention = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .expect("retention");
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        // The pods' labels satisfy the selector.
        let labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .expect("labels");
        for (k, v) in spec.selector.match_labels.as_ref().expect("selector") {
            assert_eq!(labels.get(k), Some(v));
        }
        let headless = objects.headless_service.spec.as_ref().expect("spec");
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert_eq!(headless.publish_not_ready_addresses, Some(true));
    }

    #[test]
    fn claims_follow_the_deletion_policy() {
        let objects = build(&cluster(&format!(
            "{BASE}  deleteClaimsOnDelete: true\n  deleteClaimsOnScaleDown: true\n"
        )));
        let retention = objects
            .statefulset
            .spec
            .persistent_volume_claim_retention_policy
            .clone()
            .expect("retention");
        assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Delete"));
    }

    #[test]
    fn brokers_take_their_id_from_the_ordinal_and_advertise_their_stable_name() {
        let objects = build(&cluster(BASE));
        let container = &pod_spec(&objects).containers[0];
        let args = container.args.as_ref().expect("args");
        assert!(
            args.contains(
                &"--advertised-listener=$(POD_NAME).demo-brokers.$(POD_NAMESPACE).svc:9092"
                    .to_string()
            ),
            "{args:?}"
        );
        assert!(args.contains(&"--listen=$(POD_IP):9092".to_string()));
        let node_id = container
            .env
            .as_ref()
            .expect("env")
            .iter()
            .find(|e| e.name == "TOKAFKA_NODE_ID")
            .expect("node id env");
        assert_eq!(
            node_id
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str()),
            Some("metadata.labels['apps.kubernetes.io/pod-index']")
        );
        let config = objects.config_map.data.as_ref().expect("data");
        assert!(config[PROPERTIES_KEY]
            .contains("controller.quorum.voters=0@demo-0.demo-brokers.kafka.svc:9093,"));
    }

    #[test]
    fn a_configuration_change_changes_the_pod_template() {
        let hash = |c: &BrokerCluster| {
            build(c)
                .statefulset
                .spec
                .template
                .metadata
                .and_then(|m| m.annotations)
                .map(|a| a[POD_HASH_ANNOTATION].clone())
        };
        let before = hash(&cluster(BASE));
        assert_eq!(before, hash(&cluster(BASE)), "deterministic");
        assert_ne!(
            before,
            hash(&cluster(&format!("{BASE}config:\n  num.partitions: '3'\n")))
        );
    }

    #[test]
    fn pod_overrides_and_security_context_apply() {
        let objects = build(&cluster(&format!(
            "{BASE}podTemplate:\n  nodeSelector:\n    disk: ssd\n  tolerations:\n  - key: dedicated\n    operator: Exists\n"
        )));
        let pod = pod_spec(&objects);
        assert_eq!(
            pod.node_selector.as_ref().map(|n| n["disk"].as_str()),
            Some("ssd")
        );
        assert_eq!(pod.tolerations.as_ref().map(Vec::len), Some(1));
        let security = pod.security_context.as_ref().expect("security");
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(
            pod.containers[0]
                .security_context
                .as_ref()
                .and_then(|s| s.read_only_root_filesystem),
            Some(true)
        );
    }

    #[test]
    fn claim_templates_of_an_existing_statefulset_are_kept_and_growth_is_reported() {
        let existing = build(&cluster(BASE)).statefulset;
        let grown = cluster(&BASE.replace("2Gi", "5Gi"));
        let mut desired = build(&grown).statefulset;
        assert_eq!(
            claim_size_change(&grown, &existing),
            Some(("2Gi".to_string(), "5Gi".to_string()))
        );
        keep_immutable_fields(&mut desired, &existing);
        assert_eq!(
            desired.spec.volume_claim_templates,
            existing.spec.volume_claim_templates
        );
        assert_eq!(claim_size_change(&cluster(BASE), &existing), None);
    }

    #[test]
    fn the_rack_comes_from_the_pods_topology_label() {
        let rack_env = |c: &BrokerCluster| {
            build(c)
                .statefulset
                .spec
                .template
                .spec
                .and_then(|p| p.containers[0].env.clone())
                .and_then(|env| env.into_iter().find(|e| e.name == "TOKAFKA_BROKER_RACK"))
        };
        assert_eq!(rack_env(&cluster(BASE)), None);
        let zoned = cluster(&format!(
            "{BASE}podTemplate:\n  rackLabel: topology.kubernetes.io/zone\n"
        ));
        let env = rack_env(&zoned).expect("rack env");
        assert_eq!(
            env.value_from
                .and_then(|v| v.field_ref)
                .map(|f| f.field_path),
            Some("metadata.labels['topology.kubernetes.io/zone']".to_string())
        );
    }

    #[test]
    fn the_pdb_allows_one_broker_down() {
        let objects = build(&cluster(BASE));
        assert_eq!(
            objects
                .pod_disruption_budget
                .spec
                .and_then(|s| s.max_unavailable),
            Some(IntOrString::Int(1))
        );
    }

    #[test]
    fn a_cluster_without_uid_cannot_own_objects() {
        let mut c = cluster(BASE);
        c.metadata.uid = None;
        let names = names_of(&c).expect("names");
        let settings = cluster_settings(&c.spec, &names, &[0]).expect("settings");
        assert_eq!(
            desired_objects(&c, &settings, 3).err(),
            Some(BuildError::MissingMetadata("uid"))
        );
    }
}
