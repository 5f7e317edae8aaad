//! Test builders shared by the decision modules' tests: the brokers' cluster summary, and a
//! whole observation of a cluster ([`Scene`]) for the plan.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod, PodCondition, PodStatus,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use tokafka_contract::admin::{BrokerSummary, ClusterSummary, QuorumSummary, VoterSummary};

use crate::broker_config::initial_voters;
use crate::crd::{BrokerCluster, BrokerClusterSpec, BrokerClusterStatus, RolloutStatus};
use crate::names::{ClusterNames, DATA_VOLUME, POD_HASH_ANNOTATION, POD_INDEX_LABEL};
use crate::observe::Observation;
use crate::plan::plan;

/// The names of the cluster the builders describe: `demo` in namespace `kafka`.
pub fn names() -> ClusterNames {
    ClusterNames::new("demo", "kafka")
}

/// A serving broker registered from pod `demo-<id>`, holding `replicas` replicas and leading
/// `leaders` partitions.
pub fn broker(id: i32, replicas: usize, leaders: usize) -> BrokerSummary {
    BrokerSummary {
        id,
        host: names().pod_host(id),
        port: 9092,
        rack: None,
        fenced: false,
        shutting_down: false,
        decommissioning: false,
        drained: false,
        replicas,
        leaders,
        restart_blockers: 0,
        out_of_sync: 0,
        partition_peers: Vec::new(),
    }
}

/// A controller quorum of `voters` led by `leader`, every voter caught up.
pub fn quorum(leader: i32, voters: &[i32]) -> QuorumSummary {
    QuorumSummary {
        leader,
        term: 1,
        voters: voters
            .iter()
            .map(|id| VoterSummary {
                id: *id,
                lag_entries: 0,
                following: true,
                caught_up: true,
            })
            .collect(),
    }
}

/// A healthy cluster of `brokers` whose largest replication factor is `max_rf` (its quorum
/// state unknown: see [`quorum`]).
pub fn summary(brokers: Vec<BrokerSummary>, max_rf: usize) -> ClusterSummary {
    ClusterSummary {
        brokers,
        partitions: 6,
        under_replicated_partitions: 0,
        offline_partitions: 0,
        reassigning_partitions: 0,
        leader_imbalance_percent: BTreeMap::new(),
        max_replication_factor: max_rf,
        quorum: None,
    }
}

/// A BrokerCluster `demo` in namespace `kafka` of `replicas` brokers, as the API server holds
/// it (with a uid and a generation).
pub fn cluster(replicas: i32) -> BrokerCluster {
    let spec = serde_yaml::from_str(&format!(
        "replicas: {replicas}\nimage: tokafka-broker:dev\nversion: 0.1.0\nstorage:\n  size: 1Gi\n"
    ))
    .expect("spec");
    let mut cluster = BrokerCluster::new("demo", spec);
    cluster.metadata.namespace = Some("kafka".into());
    cluster.metadata.uid = Some("0000-1111".into());
    cluster.metadata.generation = Some(1);
    cluster
}

/// A Ready broker pod of `ordinal` running the template of pod hash `hash`.
pub fn pod(ordinal: i32, hash: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(names().pod(ordinal)),
            labels: Some(BTreeMap::from([(
                POD_INDEX_LABEL.to_string(),
                ordinal.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                POD_HASH_ANNOTATION.to_string(),
                hash.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        status: Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    }
}

/// An observation of the cluster `demo`, built from a settled one:
/// `Scene::settled(5).scaled_to(3).observation()`.
pub struct Scene(Observation);

impl Scene {
    /// A cluster of `replicas` brokers that runs what its spec asks: its objects applied,
    /// every pod Ready on the current template, every broker serving, replicas and
    /// leadership even, a quorum led by broker 0 with every voter caught up.
    pub fn settled(replicas: i32) -> Self {
        let mut o = Observation {
            cluster: cluster(replicas),
            names: names(),
            config_map: None,
            statefulset: None,
            pods: Vec::new(),
            summary: None,
            claims: Vec::new(),
            now: Time(Timestamp::from_second(1_000).expect("time")),
        };
        let built = match plan(&o).expect("plan").build {
            Ok(built) => built,
            Err(problem) => panic!("the fixture's spec is invalid: {problem}"),
        };
        let hash = built.pod_hash.clone().expect("pod hash");
        o.config_map = Some(built.objects.config_map);
        o.statefulset = Some(built.objects.statefulset);
        o.pods = (0..replicas).map(|ordinal| pod(ordinal, &hash)).collect();
        let voters = initial_voters(replicas);
        o.summary = Some(ClusterSummary {
            quorum: Some(quorum(0, &voters)),
            ..summary((0..replicas).map(|id| broker(id, 3, 1)).collect(), 3)
        });
        Self(o)
    }

    /// Grown to `replicas` brokers since it was created (its voters stay those of its first
    /// size), and settled again.
    pub fn grown_to(mut self, replicas: i32) -> Self {
        let o = &mut self.0;
        let hash = o.pods[0]
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(POD_HASH_ANNOTATION).cloned())
            .expect("hash");
        let before = o.cluster.spec.replicas;
        o.cluster.spec.replicas = replicas;
        if let Some(statefulset) = o.statefulset.as_mut() {
            statefulset.spec.replicas = Some(replicas);
        }
        o.pods
            .extend((before..replicas).map(|ordinal| pod(ordinal, &hash)));
        if let Some(summary) = o.summary.as_mut() {
            summary
                .brokers
                .extend((before..replicas).map(|id| broker(id, 3, 1)));
        }
        self
    }

    /// `spec.replicas` set to `replicas`; nothing else changed yet.
    pub fn scaled_to(mut self, replicas: i32) -> Self {
        self.0.cluster.spec.replicas = replicas;
        self
    }

    /// Changes the spec (its objects as applied stay as they were).
    pub fn spec(mut self, change: impl FnOnce(&mut BrokerClusterSpec)) -> Self {
        change(&mut self.0.cluster.spec);
        self
    }

    /// Changes the cluster's own view; panics when there is none.
    pub fn summary(mut self, change: impl FnOnce(&mut ClusterSummary)) -> Self {
        change(self.0.summary.as_mut().expect("a summary"));
        self
    }

    /// No broker's admin API answered.
    pub fn unreachable(mut self) -> Self {
        self.0.summary = None;
        self
    }

    /// Pod `ordinal` runs an older template.
    pub fn outdated(mut self, ordinal: i32) -> Self {
        let pod = self
            .0
            .pods
            .iter_mut()
            .find(|p| p.metadata.name == Some(names().pod(ordinal)))
            .expect("pod");
        *pod = crate::testing::pod(ordinal, "older");
        self
    }

    /// The last status says pods `current` were being restarted.
    pub fn restarting(mut self, current: &str) -> Self {
        self.0.cluster.status = Some(BrokerClusterStatus {
            rollout: Some(RolloutStatus {
                updated: 0,
                total: self.0.cluster.spec.replicas,
                current: Some(current.into()),
                blocked_by: None,
                blocked_since: None,
            }),
            ..BrokerClusterStatus::default()
        });
        self
    }

    /// The data claims of pods `0..` with these requested sizes.
    pub fn claims(mut self, sizes: &[&str]) -> Self {
        self.0.claims = sizes
            .iter()
            .zip(0..)
            .map(|(size, ordinal)| PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(format!("{DATA_VOLUME}-{}", names().pod(ordinal))),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            Quantity((*size).to_string()),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            })
            .collect();
        self
    }

    pub fn observation(self) -> Observation {
        self.0
    }
}
