//! The status of a `BrokerCluster`, computed by a pure function from what the reconciler
//! observed: the StatefulSet, the broker pods and the cluster's own view (the brokers' admin
//! API).
//!
//! Invariants:
//! - `Ready` is True only when every desired broker's pod is Ready and the cluster itself
//!   reports every one of them registered and unfenced with no offline partition: pods being
//!   Ready is not enough;
//! - `Degraded` is True when the spec cannot be applied or data is at risk (offline or
//!   under-replicated partitions);
//! - a condition's `lastTransitionTime` changes only when its status does.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use tokafka_contract::admin::ClusterSummary;

use crate::crd::{BrokerClusterStatus, BrokerState, RolloutStatus};
use crate::names::{ClusterNames, POD_INDEX_LABEL};
use crate::reasons::condition::{DEGRADED, PROGRESSING, READY};
use crate::reasons::reason;
use crate::resources::recorded_pod_hash;
use crate::rollout::{halted, Step};

/// What the reconciler saw of one cluster.
#[derive(Clone, Debug, Default)]
pub struct Observed<'a> {
    pub generation: Option<i64>,
    pub desired_replicas: i32,
    pub version: Option<&'a str>,
    pub statefulset: Option<&'a StatefulSet>,
    pub pods: &'a [Pod],
    /// The cluster's view; `None` when no broker answered.
    pub summary: Option<&'a ClusterSummary>,
    /// Why the spec cannot be applied, if it cannot.
    pub spec_problem: Option<String>,
    /// Why the StatefulSet was left at fewer or more replicas than asked, if it was.
    pub scale_problem: Option<String>,
    /// A scale-down in progress (a broker draining), if any.
    pub scaling: Option<String>,
    /// The pod hash every broker should run (`None`: unknown, nothing counts as updated).
    pub desired_pod_hash: Option<String>,
    /// What the rollout decided this time.
    pub rollout: Option<&'a Step>,
    /// The rollout's timeout for one gate, in seconds.
    pub gate_timeout_seconds: i64,
}

/// Ready and not being deleted.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod's StatefulSet ordinal (its pod-index label).
pub fn pod_ordinal(pod: &Pod) -> Option<i32> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POD_INDEX_LABEL))
        .and_then(|i| i.parse().ok())
}

/// The state of broker `id` as the cluster reports it.
fn broker_state(summary: Option<&ClusterSummary>, id: i32, pod: Option<&Pod>) -> String {
    let Some(pod) = pod else {
        return "PodMissing".into();
    };
    let Some(summary) = summary else {
        return if pod_ready(pod) {
            "Unknown"
        } else {
            "Starting"
        }
        .into();
    };
    match summary.brokers.iter().find(|b| b.id == id) {
        None => "NotRegistered".into(),
        Some(b) if b.drained => "Drained".into(),
        Some(b) if b.decommissioning => "Draining".into(),
        Some(b) if b.shutting_down => "ShuttingDown".into(),
        Some(b) if b.fenced => "Fenced".into(),
        Some(_) => "Running".into(),
    }
}

struct Verdict {
    status: bool,
    reason: &'static str,
    message: String,
}

fn ready_verdict(o: &Observed, ready_pods: i32) -> Verdict {
    if let Some(problem) = &o.spec_problem {
        return Verdict {
            status: false,
            reason: reason::INVALID_SPEC,
            message: problem.clone(),
        };
    }
    if ready_pods < o.desired_replicas {
        return Verdict {
            status: false,
            reason: reason::BROKERS_NOT_READY,
            message: format!(
                "{ready_pods} of {} broker pods are Ready",
                o.desired_replicas
            ),
        };
    }
    let Some(summary) = o.summary else {
        return Verdict {
            status: false,
            reason: reason::CLUSTER_UNREACHABLE,
            message: "no broker's admin API answered".into(),
        };
    };
    let serving: Vec<i32> = (0..o.desired_replicas)
        .filter(|id| summary.brokers.iter().any(|b| b.id == *id && !b.fenced))
        .collect();
    if serving.len() < usize::try_from(o.desired_replicas).unwrap_or(0) {
        return Verdict {
            status: false,
            reason: reason::BROKERS_NOT_SERVING,
            message: format!(
                "{} of {} brokers are registered and unfenced",
                serving.len(),
                o.desired_replicas
            ),
        };
    }
    if summary.offline_partitions > 0 {
        return Verdict {
            status: false,
            reason: reason::OFFLINE_PARTITIONS,
            message: format!("{} partitions have no leader", summary.offline_partitions),
        };
    }
    Verdict {
        status: true,
        reason: reason::ALL_BROKERS_READY,
        message: format!("{} brokers form one cluster", o.desired_replicas),
    }
}

fn degraded_verdict(o: &Observed, halted_by: Option<&str>) -> Verdict {
    if let Some(problem) = &o.spec_problem {
        return Verdict {
            status: true,
            reason: reason::INVALID_SPEC,
            message: problem.clone(),
        };
    }
    if let Some(gate) = halted_by {
        return Verdict {
            status: true,
            reason: reason::ROLLOUT_HALTED,
            message: format!("the rolling restart is halted: {gate}"),
        };
    }
    if let Some(problem) = &o.scale_problem {
        return Verdict {
            status: true,
            reason: reason::SCALE_DOWN_BLOCKED,
            message: problem.clone(),
        };
    }
    match o.summary {
        Some(s) if s.offline_partitions > 0 => Verdict {
            status: true,
            reason: reason::OFFLINE_PARTITIONS,
            message: format!("{} partitions have no leader", s.offline_partitions),
        },
        Some(s) if s.under_replicated_partitions > 0 => Verdict {
            status: true,
            reason: reason::UNDER_REPLICATED_PARTITIONS,
            message: format!(
                "{} partitions have fewer in-sync replicas than replicas",
                s.under_replicated_partitions
            ),
        },
        _ => Verdict {
            status: false,
            reason: reason::HEALTHY,
            message: "no partition at risk".into(),
        },
    }
}

/// "restarting broker 4", or "restarting brokers 4, 3" for a batch.
fn restarting_message(ordinals: &[i32]) -> String {
    let list = ordinals
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ordinals.len() == 1 {
        format!("restarting broker {list}")
    } else {
        format!("restarting brokers {list}")
    }
}

fn progressing_verdict(o: &Observed, ready_pods: i32, updated: i32) -> Verdict {
    if o.spec_problem.is_some() {
        return Verdict {
            status: false,
            reason: reason::STABLE,
            message: "nothing can be done until the spec is fixed".into(),
        };
    }
    // The rollout answers Wait, Restart or Paused only while some broker runs an outdated
    // template.
    if let Some(scaling) = &o.scaling {
        return Verdict {
            status: true,
            reason: reason::SCALING_DOWN,
            message: scaling.clone(),
        };
    }
    let rolling = match o.rollout {
        Some(Step::Paused { .. }) => {
            Some((reason::ROLLOUT_PAUSED, "the rollout is paused".to_string()))
        }
        Some(Step::Wait { gate }) => Some((reason::ROLLING_RESTART, format!("waiting: {gate}"))),
        Some(Step::Restart { ordinals }) => {
            Some((reason::ROLLING_RESTART, restarting_message(ordinals)))
        }
        Some(Step::Complete) | None => None,
    };
    if let Some((reason, message)) = rolling {
        return Verdict {
            status: true,
            reason,
            message: format!(
                "{updated} of {} brokers run the current template; {message}",
                o.desired_replicas
            ),
        };
    }
    if let Some(moving) = o
        .summary
        .map(|s| s.reassigning_partitions)
        .filter(|n| *n > 0)
    {
        return Verdict {
            status: true,
            reason: reason::REASSIGNING_PARTITIONS,
            message: format!("{moving} partitions are moving between brokers"),
        };
    }
    let sts_behind = o.statefulset.is_some_and(|s| {
        s.status.as_ref().and_then(|st| st.observed_generation) < s.metadata.generation
    });
    if ready_pods != o.desired_replicas || sts_behind || o.statefulset.is_none() {
        return Verdict {
            status: true,
            reason: reason::BROKERS_STARTING,
            message: format!(
                "{ready_pods} of {} broker pods are Ready",
                o.desired_replicas
            ),
        };
    }
    Verdict {
        status: false,
        reason: reason::STABLE,
        message: "nothing to do".into(),
    }
}

/// Carries `lastTransitionTime` over from `previous` when the status did not change.
fn condition(
    previous: &[Condition],
    type_: &str,
    v: Verdict,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if v.status { "True" } else { "False" }.to_string();
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: v.reason.to_string(),
        message: v.message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// The status to report for what was observed, given the previous status and the time now.
pub fn compute_status(
    names: &ClusterNames,
    observed: &Observed,
    previous: Option<&BrokerClusterStatus>,
    now: &Time,
) -> BrokerClusterStatus {
    let previous_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let pods_by_ordinal = |id: i32| observed.pods.iter().find(|p| pod_ordinal(p) == Some(id));
    let ready_pods = i32::try_from(
        (0..observed.desired_replicas)
            .filter(|id| pods_by_ordinal(*id).is_some_and(pod_ready))
            .count(),
    )
    .unwrap_or(i32::MAX);
    let updated = i32::try_from(
        observed
            .pods
            .iter()
            .filter(|p| {
                observed.desired_pod_hash.is_some()
                    && recorded_pod_hash(&p.metadata) == observed.desired_pod_hash.as_deref()
            })
            .count(),
    )
    .unwrap_or(i32::MAX);
    let previous_rollout = previous.and_then(|p| p.rollout.as_ref());
    let blocked_by = match observed.rollout {
        Some(Step::Wait { gate }) => Some(gate.to_string()),
        _ => None,
    };
    let blocked_since = blocked_by.as_ref().map(|gate| {
        previous_rollout
            .filter(|r| r.blocked_by.as_ref() == Some(gate))
            .and_then(|r| r.blocked_since.clone())
            .unwrap_or_else(|| now.clone())
    });
    let halted_by = match (&blocked_by, &blocked_since) {
        (Some(gate), Some(since))
            if halted(
                since.0.as_second(),
                now.0.as_second(),
                observed.gate_timeout_seconds,
            ) =>
        {
            Some(gate.as_str())
        }
        _ => None,
    };
    let current = match observed.rollout {
        Some(Step::Restart { ordinals }) => Some(
            ordinals
                .iter()
                .map(|o| names.pod(*o))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Some(Step::Wait { .. }) => previous_rollout.and_then(|r| r.current.clone()),
        _ => None,
    };
    let ready = ready_verdict(observed, ready_pods);
    let is_ready = ready.status;
    let degraded = degraded_verdict(observed, halted_by);
    let is_degraded = degraded.status;
    let progressing = progressing_verdict(observed, ready_pods, updated);
    let conditions = vec![
        condition(previous_conditions, READY, ready, observed.generation, now),
        condition(
            previous_conditions,
            PROGRESSING,
            progressing,
            observed.generation,
            now,
        ),
        condition(
            previous_conditions,
            DEGRADED,
            degraded,
            observed.generation,
            now,
        ),
    ];
    let phase = if is_degraded {
        DEGRADED
    } else if is_ready {
        READY
    } else {
        PROGRESSING
    };
    let brokers = (0..observed.desired_replicas)
        .map(|id| {
            let counts = observed
                .summary
                .and_then(|s| s.brokers.iter().find(|b| b.id == id));
            BrokerState {
                broker_id: id,
                pod: names.pod(id),
                state: broker_state(observed.summary, id, pods_by_ordinal(id)),
                replicas: counts.map_or(0, |b| i32::try_from(b.replicas).unwrap_or(i32::MAX)),
                leaders: counts.map_or(0, |b| i32::try_from(b.leaders).unwrap_or(i32::MAX)),
            }
        })
        .collect();
    let all_current = is_ready && updated == observed.desired_replicas;
    let previous_version = previous.and_then(|p| p.current_version.clone());
    BrokerClusterStatus {
        observed_generation: observed.generation,
        conditions,
        phase: Some(phase.into()),
        replicas: observed.desired_replicas,
        ready_replicas: ready_pods,
        ready_replicas_text: Some(format!("{ready_pods}/{}", observed.desired_replicas)),
        selector: Some(names.selector_string()),
        current_version: if all_current {
            observed.version.map(str::to_string).or(previous_version)
        } else {
            previous_version
        },
        target_version: observed.version.map(str::to_string),
        brokers,
        under_replicated_partitions: observed.summary.map_or(0, |s| {
            i32::try_from(s.under_replicated_partitions).unwrap_or(i32::MAX)
        }),
        leader_imbalance_percent: observed.summary.map_or(0, |s| {
            s.leader_imbalance_percent
                .values()
                .copied()
                .max()
                .map_or(0, |m| i32::try_from(m).unwrap_or(i32::MAX))
        }),
        rollout: Some(RolloutStatus {
            updated,
            total: observed.desired_replicas,
            current,
            blocked_by,
            blocked_since,
        }),
    }
}

/// Whether a cluster with `status` has nothing left to do: Ready, not Progressing, not
/// Degraded.
pub fn settled(status: &BrokerClusterStatus) -> bool {
    let is = |type_: &str, value: &str| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == value)
    };
    is(READY, "True") && is(PROGRESSING, "False") && is(DEGRADED, "False")
}

/// Conditions whose status changed from `before` to `after` (for Events).
pub fn changed_conditions<'a>(before: &[Condition], after: &'a [Condition]) -> Vec<&'a Condition> {
    after
        .iter()
        .filter(|c| {
            !before
                .iter()
                .any(|b| b.type_ == c.type_ && b.status == c.status && b.reason == c.reason)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testing::{self, broker};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::Timestamp;

    fn pod(ordinal: i32, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("demo-{ordinal}")),
                labels: Some(BTreeMap::from([(
                    POD_INDEX_LABEL.to_string(),
                    ordinal.to_string(),
                )])),
                annotations: Some(BTreeMap::from([(
                    crate::names::POD_HASH_ANNOTATION.to_string(),
                    "hash1".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn summary(ids: &[i32], fenced: &[i32], urp: usize, offline: usize) -> ClusterSummary {
        let mut brokers: Vec<_> = ids.iter().map(|id| broker(*id, 4, 2)).collect();
        for b in &mut brokers {
            b.fenced = fenced.contains(&b.id);
        }
        ClusterSummary {
            under_replicated_partitions: urp,
            offline_partitions: offline,
            leader_imbalance_percent: BTreeMap::from([(0, 0), (1, 50), (2, 0)]),
            ..testing::summary(brokers, 3)
        }
    }

    fn now(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("time"))
    }

    fn condition_of<'a>(status: &'a BrokerClusterStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition")
    }

    fn observed<'a>(pods: &'a [Pod], summary: Option<&'a ClusterSummary>) -> Observed<'a> {
        Observed {
            generation: Some(2),
            desired_replicas: 3,
            version: Some("0.1.0"),
            statefulset: None,
            pods,
            summary,
            spec_problem: None,
            scale_problem: None,
            scaling: None,
            desired_pod_hash: Some("hash1".into()),
            rollout: None,
            gate_timeout_seconds: 600,
        }
    }

    #[test]
    fn ready_needs_ready_pods_and_the_clusters_own_word() {
        let names = ClusterNames::new("demo", "kafka");
        let pods = [pod(0, true), pod(1, true), pod(2, true)];
        let healthy = summary(&[0, 1, 2], &[], 0, 0);
        let status = compute_status(&names, &observed(&pods, Some(&healthy)), None, &now(10));
        assert_eq!(condition_of(&status, READY).status, "True");
        assert_eq!(status.phase.as_deref(), Some("Ready"));
        assert_eq!(status.ready_replicas_text.as_deref(), Some("3/3"));
        assert_eq!(status.leader_imbalance_percent, 50);
        assert_eq!(status.brokers[1].state, "Running");
        assert_eq!(status.brokers[1].leaders, 2);

        let fenced = summary(&[0, 1, 2], &[2], 0, 0);
        let status = compute_status(&names, &observed(&pods, Some(&fenced)), None, &now(10));
        assert_eq!(condition_of(&status, READY).reason, "BrokersNotServing");
        assert_eq!(status.brokers[2].state, "Fenced");

        let status = compute_status(&names, &observed(&pods, None), None, &now(10));
        assert_eq!(condition_of(&status, READY).reason, "ClusterUnreachable");

        let one_down = [pod(0, true), pod(1, false), pod(2, true)];
        let status = compute_status(&names, &observed(&one_down, Some(&healthy)), None, &now(10));
        assert_eq!(condition_of(&status, READY).reason, "BrokersNotReady");
        assert_eq!(condition_of(&status, PROGRESSING).status, "True");
        assert_eq!(status.phase.as_deref(), Some("Progressing"));
    }

    #[test]
    fn partitions_at_risk_degrade_the_cluster() {
        let names = ClusterNames::new("demo", "kafka");
        let pods = [pod(0, true), pod(1, true), pod(2, true)];
        let urp = summary(&[0, 1, 2], &[], 2, 0);
        let status = compute_status(&names, &observed(&pods, Some(&urp)), None, &now(10));
        assert_eq!(
            condition_of(&status, DEGRADED).reason,
            "UnderReplicatedPartitions"
        );
        assert_eq!(status.under_replicated_partitions, 2);
        assert_eq!(status.phase.as_deref(), Some("Degraded"));
        let offline = summary(&[0, 1, 2], &[], 0, 1);
        let status = compute_status(&names, &observed(&pods, Some(&offline)), None, &now(10));
        assert_eq!(condition_of(&status, READY).reason, "OfflinePartitions");
        assert_eq!(condition_of(&status, DEGRADED).status, "True");
    }

    #[test]
    fn an_invalid_spec_is_reported_not_ready_and_degraded() {
        let names = ClusterNames::new("demo", "kafka");
        let o = Observed {
            spec_problem: Some("spec.config sets unknown broker key(s): x".into()),
            ..observed(&[], None)
        };
        let status = compute_status(&names, &o, None, &now(10));
        let ready = condition_of(&status, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert!(ready.message.contains("unknown broker key"));
        assert_eq!(condition_of(&status, DEGRADED).reason, "InvalidSpec");
        assert_eq!(condition_of(&status, PROGRESSING).status, "False");
    }

    #[test]
    fn a_gate_held_past_the_timeout_halts_the_rollout() {
        use crate::rollout::Gate;
        let names = ClusterNames::new("demo", "kafka");
        let pods = [pod(0, true), pod(1, true), pod(2, true)];
        let healthy = summary(&[0, 1, 2], &[], 0, 0);
        let wait = Step::Wait {
            gate: Gate::InSyncReplicas {
                broker: 2,
                partitions: 1,
            },
        };
        let o = Observed {
            desired_pod_hash: Some("hash2".into()),
            rollout: Some(&wait),
            ..observed(&pods, Some(&healthy))
        };
        let first = compute_status(&names, &o, None, &now(100));
        let rollout = first.rollout.clone().expect("rollout");
        assert_eq!(rollout.updated, 0);
        assert_eq!(rollout.blocked_since, Some(now(100)));
        assert!(rollout.blocked_by.expect("gate").contains("broker 2"));
        assert_eq!(condition_of(&first, PROGRESSING).reason, "RollingRestart");
        assert_eq!(condition_of(&first, DEGRADED).status, "False");
        let later = compute_status(&names, &o, Some(&first), &now(699));
        assert_eq!(
            later.rollout.as_ref().and_then(|r| r.blocked_since.clone()),
            Some(now(100))
        );
        assert_eq!(condition_of(&later, DEGRADED).status, "False");
        let halted = compute_status(&names, &o, Some(&later), &now(700));
        assert_eq!(condition_of(&halted, DEGRADED).reason, "RolloutHalted");
        assert!(condition_of(&halted, DEGRADED)
            .message
            .contains("min.insync.replicas"));
    }

    #[test]
    fn a_batch_restart_names_every_pod_and_one_restart_names_its_pod() {
        let names = ClusterNames::new("demo", "kafka");
        let pods = [pod(0, true), pod(1, true), pod(2, true)];
        let healthy = summary(&[0, 1, 2], &[], 0, 0);
        let batch = Step::Restart {
            ordinals: vec![2, 0],
        };
        let o = Observed {
            desired_pod_hash: Some("hash2".into()),
            rollout: Some(&batch),
            ..observed(&pods, Some(&healthy))
        };
        let status = compute_status(&names, &o, None, &now(10));
        let current = status.rollout.as_ref().and_then(|r| r.current.clone());
        assert_eq!(current.as_deref(), Some("demo-2, demo-0"));
        assert!(condition_of(&status, PROGRESSING)
            .message
            .ends_with("restarting brokers 2, 0"));
        let one = Step::Restart { ordinals: vec![1] };
        let o = Observed {
            rollout: Some(&one),
            ..o
        };
        let status = compute_status(&names, &o, None, &now(10));
        let current = status.rollout.as_ref().and_then(|r| r.current.clone());
        assert_eq!(current.as_deref(), Some("demo-1"));
        assert!(condition_of(&status, PROGRESSING)
            .message
            .ends_with("restarting broker 1"));
    }

    #[test]
    fn only_a_ready_cluster_with_nothing_under_way_is_settled() {
        let names = ClusterNames::new("demo", "kafka");
        let pods = [pod(0, true), pod(1, true), pod(2, true)];
        let healthy = summary(&[0, 1, 2], &[], 0, 0);
        let status = compute_status(&names, &observed(&pods, Some(&healthy)), None, &now(10));
        assert!(!settled(&status), "no StatefulSet yet: progressing");
        let caught_up = StatefulSet {
            metadata: ObjectMeta {
                generation: Some(4),
                ..ObjectMeta::default()
            },
            status: Some(k8s_openapi::api::apps::v1::StatefulSetStatus {
                observed_generation: Some(4),
                ..Default::default()
            }),
            ..StatefulSet::default()
        };
        let rolled_out = |summary| Observed {
            statefulset: Some(&caught_up),
            ..observed(&pods, summary)
        };
        let status = compute_status(&names, &rolled_out(Some(&healthy)), None, &now(10));
        assert!(settled(&status));
        let urp = summary(&[0, 1, 2], &[], 1, 0);
        let status = compute_status(&names, &rolled_out(Some(&urp)), None, &now(10));
        assert!(!settled(&status), "degraded");
        let moving = ClusterSummary {
            reassigning_partitions: 2,
            ..summary(&[0, 1, 2], &[], 0, 0)
        };
        let status = compute_status(&names, &rolled_out(Some(&moving)), None, &now(10));
        assert!(!settled(&status), "progressing");
        assert!(
            !settled(&BrokerClusterStatus::default()),
            "no conditions yet"
        );
    }

    #[test]
    fn transition_times_move_only_on_a_status_change() {
        let names = ClusterNames::new("demo", "kafka");
        let pods = [pod(0, true), pod(1, true), pod(2, true)];
        let healthy = summary(&[0, 1, 2], &[], 0, 0);
        let first = compute_status(&names, &observed(&pods, Some(&healthy)), None, &now(10));
        let second = compute_status(
            &names,
            &observed(&pods, Some(&healthy)),
            Some(&first),
            &now(20),
        );
        assert_eq!(condition_of(&second, READY).last_transition_time, now(10));
        assert!(changed_conditions(&first.conditions, &second.conditions).is_empty());
        let third = compute_status(&names, &observed(&pods, None), Some(&second), &now(30));
        assert_eq!(condition_of(&third, READY).last_transition_time, now(30));
        let changed = changed_conditions(&second.conditions, &third.conditions);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].type_, READY);
    }
}
