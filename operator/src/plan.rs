//! Plan, the second step of a reconciliation: everything it will do, decided by one pure
//! function of the [`Observation`]: the scaling actions ([`ScalePlan`]), the objects to apply
//! and the claims to grow ([`Build`]), the rolling restart and the balancing after it
//! ([`RolloutPlan`]). [`crate::apply`] carries the plan out and decides nothing of its own.
//!
//! Invariants:
//! - one plan per observation: the same observation gives the same plan;
//! - a spec that cannot be applied builds nothing and restarts nothing (its problem is
//!   reported instead);
//! - no broker restarts, and nothing is balanced, while a broker drains or removed brokers
//!   are being forgotten ([`Plan::rollout_now`]); whether a drain this plan asks for starts is
//!   the cluster's answer, so that is settled by the answer, in [`ScalePlan::report`];
//! - balancing happens only once the rollout is complete.

use k8s_openapi::api::core::v1::Pod;
use tokafka_contract::admin::ClusterSummary;

use crate::admin::{AdminError, Command};
use crate::broker_config::{cluster_settings, cluster_voters};
use crate::crd::BrokerCluster;
use crate::names::PAUSE_ANNOTATION;
use crate::observe::Observation;
use crate::reasons::event;
use crate::resources::{
    claim_size_change, desired_objects, keep_immutable_fields, recorded_pod_hash, BuildError,
    DesiredObjects,
};
use crate::rollout;
use crate::scaling::{self, ScaleStep};
use crate::status::{pod_ordinal, pod_ready};

/// What one reconciliation does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The controller voters' node ids.
    pub voters: Vec<i32>,
    pub scale: ScalePlan,
    /// The objects to apply, or why the spec cannot be applied.
    pub build: Result<Build, String>,
    /// The rolling restart and what follows it, when the spec can be applied; carried out
    /// only when [`Plan::rollout_now`] says so.
    pub rollout: Option<RolloutPlan>,
}

/// The scaling actions, through the brokers' admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePlan {
    /// The StatefulSet's size, and whether a broker drains first.
    pub step: ScaleStep,
    /// Brokers that stay but drain: their drains are cancelled.
    pub cancel_drains: Vec<i32>,
    /// Removed brokers, stopped and holding nothing: forgotten.
    pub forget: Vec<i32>,
    /// Removed brokers still registered (`forget` among them): the scale-down is not over
    /// until they are forgotten.
    pub leftover: Vec<i32>,
}

/// What the scaling leaves to report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScaleReport {
    /// Why a scale-down is held (`ScaleDownBlocked`).
    pub problem: Option<String>,
    /// What is in progress (a broker draining, removed brokers being forgotten).
    pub in_progress: Option<String>,
}

impl ScalePlan {
    /// The StatefulSet's replica count.
    pub fn replicas(&self) -> i32 {
        self.step.replicas()
    }

    /// The broker this plan starts draining, if any.
    pub fn drain(&self) -> Option<i32> {
        match self.step {
            ScaleStep::Decommission { broker, .. } => Some(broker),
            _ => None,
        }
    }

    /// The report once the scaling actions ran: `drained` is the cluster's answer to the
    /// drain of [`Self::drain`] (`None` when there is none). A refused drain holds the
    /// scale-down; one that starts is in progress.
    pub fn report(&self, drained: Option<&Result<(), AdminError>>) -> ScaleReport {
        let draining = |broker: i32| format!("draining broker {broker} before removing its pod");
        match (&self.step, drained) {
            (ScaleStep::Run { .. }, _) if !self.leftover.is_empty() => ScaleReport {
                problem: None,
                in_progress: Some(format!(
                    "forgetting removed broker(s) {:?} once they have stopped",
                    self.leftover
                )),
            },
            (ScaleStep::Run { .. }, _) => ScaleReport::default(),
            (ScaleStep::Blocked { reason, .. }, _) => ScaleReport {
                problem: Some(reason.clone()),
                in_progress: None,
            },
            (ScaleStep::Draining { broker, .. }, _)
            | (ScaleStep::Decommission { broker, .. }, Some(Ok(())) | None) => ScaleReport {
                problem: None,
                in_progress: Some(draining(*broker)),
            },
            (ScaleStep::Decommission { broker, .. }, Some(Err(error))) => ScaleReport {
                problem: Some(format!("broker {broker} cannot be drained: {error}")),
                in_progress: None,
            },
        }
    }
}

/// The objects of a spec that can be applied.
#[derive(Clone, Debug)]
pub struct Build {
    /// With the immutable fields of the StatefulSet that exists kept.
    pub objects: DesiredObjects,
    /// The pod hash every broker should run.
    pub pod_hash: Option<String>,
    /// Claims to grow before the objects are applied.
    pub claims: Option<ClaimGrowth>,
}

/// Data claims to grow: the spec asks for `to` where the StatefulSet's template says `from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimGrowth {
    pub from: String,
    pub to: String,
    /// The claims not at `to` yet, by ordinal.
    pub claims: Vec<String>,
}

/// The rolling restart, and what follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutPlan {
    pub step: rollout::Step,
    /// Leadership goes back to preferred replicas: brokers were restarted and the gates pass
    /// again.
    pub elect_preferred_leaders: bool,
    /// With the rollout complete, one balancing action.
    pub balance: Option<Balance>,
}

/// Keeping a settled cluster balanced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    /// Replicas move so every broker holds about as many (after a scale-up).
    SpreadReplicas,
    /// Leadership moves back to preferred replicas (`spec.rebalance`).
    RebalanceLeaders,
}

impl Balance {
    pub fn command(self) -> Command {
        match self {
            Balance::SpreadReplicas => Command::SpreadReplicas,
            Balance::RebalanceLeaders => Command::ElectPreferredLeaders,
        }
    }

    /// The Event reason and note of the action.
    pub fn event(self) -> (&'static str, &'static str) {
        match self {
            Balance::SpreadReplicas => (
                event::SPREADING_REPLICAS,
                "replicas move so every broker holds about as many",
            ),
            Balance::RebalanceLeaders => (
                event::REBALANCING_LEADERS,
                "leadership moves back to preferred replicas (imbalance above the threshold)",
            ),
        }
    }
}

impl Plan {
    /// The rollout to carry out once the scaling actions reported `scale`: none while a
    /// broker drains or removed brokers are being forgotten.
    pub fn rollout_now(&self, scale: &ScaleReport) -> Option<&RolloutPlan> {
        self.rollout
            .as_ref()
            .filter(|_| scale.in_progress.is_none())
    }
}

/// Whether reconciling `cluster` is paused by the [`PAUSE_ANNOTATION`] (`"true"`).
pub fn paused(cluster: &BrokerCluster) -> bool {
    cluster
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PAUSE_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// Whether `spec.rebalance` asks for a preferred-leader election now.
pub fn leader_rebalance_due(cluster: &BrokerCluster, summary: &ClusterSummary) -> bool {
    cluster.spec.rebalance.enabled
        && scaling::needs_leader_rebalance(
            summary,
            cluster.spec.rebalance.leader_imbalance_threshold_percent,
        )
}

/// The plan for what `o` observed.
///
/// # Errors
/// [`BuildError`] when the cluster has no uid to own objects with.
pub fn plan(o: &Observation) -> Result<Plan, BuildError> {
    let cluster = &o.cluster;
    let voters = cluster_voters(o.config_map.as_ref(), cluster.spec.replicas);
    let scale = scale_plan(o, &voters);
    let replicas = scale.replicas();
    let build = match cluster_settings(&cluster.spec, &o.names, &voters) {
        Ok(settings) => Ok(build(o, desired_objects(cluster, &settings, replicas)?)),
        Err(problem) => Err(problem.to_string()),
    };
    let rollout = build
        .as_ref()
        .ok()
        .and_then(|b| b.pod_hash.as_deref())
        .map(|hash| rollout_plan(o, &voters, replicas, hash));
    Ok(Plan {
        voters,
        scale,
        build,
        rollout,
    })
}

fn scale_plan(o: &Observation, voters: &[i32]) -> ScalePlan {
    let desired = o.cluster.spec.replicas;
    let running = o.running();
    let summary = o.summary.as_ref();
    let step = scaling::scale_step(running, desired, voters, summary, &o.names);
    let replicas = step.replicas();
    let Some(summary) = summary else {
        return ScalePlan {
            step,
            cancel_drains: Vec::new(),
            forget: Vec::new(),
            leftover: Vec::new(),
        };
    };
    ScalePlan {
        // Only brokers that stay (0..desired) get their drains cancelled: one on its way out
        // while the StatefulSet steps down still counts among `replicas`.
        cancel_drains: scaling::drains_to_cancel(summary, &o.names, desired),
        forget: running
            .map(|running| scaling::brokers_to_forget(summary, &o.names, running.min(replicas)))
            .unwrap_or_default(),
        leftover: scaling::removed_brokers(summary, &o.names, replicas),
        step,
    }
}

fn build(o: &Observation, mut objects: DesiredObjects) -> Build {
    let pod_hash = objects
        .statefulset
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(recorded_pod_hash)
        .map(str::to_string);
    let mut claims = None;
    if let Some(existing) = &o.statefulset {
        keep_immutable_fields(&mut objects.statefulset, existing);
        claims = claim_size_change(&o.cluster, existing).map(|(from, to)| {
            let claims = o
                .claims
                .iter()
                .filter(|c| requested_storage(c) != Some(to.as_str()))
                .filter_map(|c| c.metadata.name.clone())
                .collect();
            ClaimGrowth { from, to, claims }
        });
    }
    Build {
        objects,
        pod_hash,
        claims,
    }
}

fn requested_storage(claim: &k8s_openapi::api::core::v1::PersistentVolumeClaim) -> Option<&str> {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.as_str())
}

fn rollout_plan(o: &Observation, voters: &[i32], replicas: i32, hash: &str) -> RolloutPlan {
    let spec = &o.cluster.spec;
    let policy = rollout::Policy {
        paused: spec.rollout.paused,
        max_under_replicated: usize::try_from(spec.rollout.max_under_replicated_partitions)
            .unwrap_or(0),
        voters: voters.to_vec(),
        max_parallel: usize::try_from(spec.rollout.max_parallel)
            .unwrap_or(1)
            .max(1),
    };
    let summary = o.summary.as_ref();
    let step = rollout::next_step(&broker_pods(&o.pods, replicas, hash), summary, &policy);
    let restarted_before = o
        .cluster
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .is_some_and(|r| r.current.is_some());
    let gates_passed = matches!(
        step,
        rollout::Step::Complete | rollout::Step::Restart { .. }
    );
    let balance = match (&step, summary) {
        (rollout::Step::Complete, Some(summary)) => balance(o, summary, replicas),
        _ => None,
    };
    RolloutPlan {
        step,
        elect_preferred_leaders: restarted_before && gates_passed,
        balance,
    }
}

/// Replicas spread over all brokers first (after a scale-up), else leadership on preferred
/// replicas when `spec.rebalance` asks.
fn balance(o: &Observation, summary: &ClusterSummary, replicas: i32) -> Option<Balance> {
    if scaling::needs_spread(summary, &o.names, replicas) {
        Some(Balance::SpreadReplicas)
    } else if leader_rebalance_due(&o.cluster, summary) {
        Some(Balance::RebalanceLeaders)
    } else {
        None
    }
}

/// The rollout's view of the pods of brokers `0..replicas`.
fn broker_pods(pods: &[Pod], replicas: i32, desired_hash: &str) -> Vec<rollout::BrokerPod> {
    (0..replicas)
        .map(|ordinal| {
            let pod = pods.iter().find(|p| pod_ordinal(p) == Some(ordinal));
            rollout::BrokerPod {
                ordinal,
                present: pod.is_some_and(|p| p.metadata.deletion_timestamp.is_none()),
                ready: pod.is_some_and(pod_ready),
                up_to_date: pod.and_then(|p| recorded_pod_hash(&p.metadata)) == Some(desired_hash),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testing::{broker, Scene};

    fn plan_of(scene: Scene) -> Plan {
        plan(&scene.observation()).expect("plan")
    }

    fn refused() -> AdminError {
        AdminError::Refused {
            request: "POST /v1/brokers/4/decommission".into(),
            status: "400 Bad Request".into(),
            body: r#"{"error":"nowhere to go"}"#.into(),
        }
    }

    #[test]
    fn a_settled_cluster_plans_nothing_but_its_objects() {
        let plan = plan_of(Scene::settled(3));
        assert_eq!(plan.voters, [0, 1, 2]);
        assert_eq!(plan.scale.step, ScaleStep::Run { replicas: 3 });
        assert!(plan.scale.cancel_drains.is_empty() && plan.scale.forget.is_empty());
        let build = plan.build.as_ref().expect("valid spec");
        assert_eq!(build.objects.statefulset.spec.replicas, Some(3));
        assert_eq!(build.claims, None);
        let report = plan.scale.report(None);
        assert_eq!(report, ScaleReport::default());
        assert_eq!(
            plan.rollout_now(&report),
            Some(&RolloutPlan {
                step: rollout::Step::Complete,
                elect_preferred_leaders: false,
                balance: None,
            })
        );
    }

    #[test]
    fn an_invalid_spec_builds_nothing_and_restarts_nothing() {
        let plan = plan_of(Scene::settled(3).outdated(2).spec(|spec| {
            spec.config.insert("num.partitionz".into(), "6".into());
        }));
        let problem = plan.build.expect_err("invalid");
        assert!(problem.contains("num.partitionz"), "{problem}");
        assert_eq!(plan.rollout, None);
    }

    #[test]
    fn a_value_the_broker_refuses_is_the_spec_problem() {
        let plan = plan_of(Scene::settled(3).spec(|spec| {
            spec.config
                .insert("broker.session.timeout.ms".into(), "1000".into());
        }));
        let problem = plan.build.expect_err("invalid");
        assert!(problem.contains("broker.session.timeout.ms"), "{problem}");
    }

    #[test]
    fn an_outdated_broker_is_restarted() {
        let plan = plan_of(Scene::settled(3).outdated(1));
        let rollout = plan.rollout.expect("rollout");
        assert_eq!(rollout.step, rollout::Step::Restart { ordinals: vec![1] });
        assert!(!rollout.elect_preferred_leaders);
        assert_eq!(rollout.balance, None);
    }

    #[test]
    fn a_scale_down_drains_the_highest_broker_and_the_drain_holds_the_rollout() {
        let plan = plan_of(Scene::settled(3).grown_to(5).scaled_to(3).outdated(0));
        assert_eq!(
            plan.scale.step,
            ScaleStep::Decommission {
                broker: 4,
                replicas: 5
            }
        );
        assert_eq!(plan.scale.drain(), Some(4));
        assert_eq!(plan.scale.replicas(), 5);
        let started = plan.scale.report(Some(&Ok(())));
        assert_eq!(
            started.in_progress.as_deref(),
            Some("draining broker 4 before removing its pod")
        );
        assert_eq!(plan.rollout_now(&started), None);
    }

    #[test]
    fn a_refused_drain_holds_the_scale_down_and_lets_the_rollout_go_on() {
        let plan = plan_of(Scene::settled(3).grown_to(5).scaled_to(3).outdated(0));
        let report = plan.scale.report(Some(&Err(refused())));
        assert_eq!(
            report.problem.as_deref(),
            Some(
                r#"broker 4 cannot be drained: POST /v1/brokers/4/decommission: 400 Bad Request {"error":"nowhere to go"}"#
            )
        );
        assert_eq!(report.in_progress, None);
        let rollout = plan.rollout_now(&report).expect("rollout goes on");
        assert_eq!(rollout.step, rollout::Step::Restart { ordinals: vec![0] });
    }

    #[test]
    fn a_draining_broker_holds_the_rollout() {
        let plan = plan_of(
            Scene::settled(3)
                .grown_to(5)
                .scaled_to(3)
                .outdated(0)
                .summary(|s| s.brokers[4].decommissioning = true),
        );
        assert_eq!(plan.scale.drain(), None);
        let report = plan.scale.report(None);
        assert_eq!(
            report.in_progress.as_deref(),
            Some("draining broker 4 before removing its pod")
        );
        assert_eq!(plan.rollout_now(&report), None);
    }

    #[test]
    fn a_drained_broker_leaves_and_is_forgotten_once_stopped() {
        // 5 → 4: broker 4 drained; the StatefulSet shrinks to 4.
        let drained = Scene::settled(3).grown_to(5).scaled_to(4).summary(|s| {
            let b = &mut s.brokers[4];
            (b.decommissioning, b.drained, b.replicas) = (true, true, 0);
        });
        let plan = plan_of(drained);
        assert_eq!(plan.scale.step, ScaleStep::Run { replicas: 4 });
        assert_eq!(plan.scale.leftover, [4]);
        assert!(plan.scale.forget.is_empty(), "still running: not forgotten");
        let report = plan.scale.report(None);
        assert_eq!(
            report.in_progress.as_deref(),
            Some("forgetting removed broker(s) [4] once they have stopped")
        );
        assert_eq!(plan.rollout_now(&report), None);
        // Its pod gone and the broker fenced: forgotten.
        let mut stopped = Scene::settled(3)
            .grown_to(5)
            .scaled_to(4)
            .summary(|s| {
                let b = &mut s.brokers[4];
                (b.decommissioning, b.drained, b.replicas, b.fenced) = (true, true, 0, true);
            })
            .observation();
        if let Some(statefulset) = stopped.statefulset.as_mut() {
            statefulset.spec.replicas = Some(4);
        }
        stopped.pods.truncate(4);
        assert_eq!(super::plan(&stopped).expect("plan").scale.forget, [4]);
    }

    #[test]
    fn brokers_that_stay_have_their_drains_cancelled() {
        let plan = plan_of(
            Scene::settled(3)
                .grown_to(5)
                .summary(|s| s.brokers[4].decommissioning = true),
        );
        assert_eq!(plan.scale.step, ScaleStep::Run { replicas: 5 });
        assert_eq!(plan.scale.cancel_drains, [4]);
    }

    #[test]
    fn a_scale_down_below_the_voters_is_held_at_the_current_size() {
        let plan = plan_of(Scene::settled(3).scaled_to(2));
        assert_eq!(plan.scale.replicas(), 3);
        let report = plan.scale.report(None);
        assert!(
            report
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("controller quorum")),
            "{report:?}"
        );
        let build = plan.build.expect("valid spec");
        assert_eq!(build.objects.statefulset.spec.replicas, Some(3));
    }

    #[test]
    fn the_voters_come_from_the_config_map_once_it_exists() {
        assert_eq!(plan_of(Scene::settled(3).grown_to(5)).voters, [0, 1, 2]);
        let mut created = Scene::settled(3).grown_to(5).observation();
        created.config_map = None;
        assert_eq!(plan(&created).expect("plan").voters, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_complete_rollout_spreads_new_brokers_before_rebalancing_leaders() {
        let spread = plan_of(Scene::settled(3).grown_to(5).summary(|s| {
            s.brokers[3] = broker(3, 0, 0);
            s.brokers[4] = broker(4, 0, 0);
        }));
        let rollout = spread.rollout.expect("rollout");
        assert_eq!(rollout.balance, Some(Balance::SpreadReplicas));
        let imbalanced =
            Scene::settled(3).summary(|s| s.leader_imbalance_percent = BTreeMap::from([(1, 50)]));
        assert_eq!(
            plan_of(imbalanced).rollout.and_then(|r| r.balance),
            Some(Balance::RebalanceLeaders)
        );
        let disabled = Scene::settled(3)
            .summary(|s| s.leader_imbalance_percent = BTreeMap::from([(1, 50)]))
            .spec(|spec| spec.rebalance.enabled = false);
        assert_eq!(plan_of(disabled).rollout.and_then(|r| r.balance), None);
    }

    #[test]
    fn nothing_is_balanced_while_the_rollout_runs() {
        let restarting = Scene::settled(3)
            .outdated(2)
            .summary(|s| s.leader_imbalance_percent = BTreeMap::from([(1, 50)]));
        assert_eq!(plan_of(restarting).rollout.and_then(|r| r.balance), None);
    }

    #[test]
    fn leadership_moves_back_once_restarted_brokers_pass_the_gates() {
        let back = plan_of(Scene::settled(3).restarting("demo-0"));
        assert!(back.rollout.expect("rollout").elect_preferred_leaders);
        let waiting = plan_of(
            Scene::settled(3)
                .restarting("demo-0")
                .outdated(1)
                .unreachable(),
        );
        let rollout = waiting.rollout.expect("rollout");
        assert!(matches!(rollout.step, rollout::Step::Wait { .. }));
        assert!(!rollout.elect_preferred_leaders);
        let never_restarted = plan_of(Scene::settled(3));
        assert!(
            !never_restarted
                .rollout
                .expect("rollout")
                .elect_preferred_leaders
        );
    }

    #[test]
    fn claims_grow_where_they_are_smaller_and_the_template_stays() {
        let plan = plan_of(
            Scene::settled(3)
                .spec(|spec| spec.storage.size = "2Gi".into())
                .claims(&["2Gi", "1Gi", "1Gi"]),
        );
        let build = plan.build.expect("valid spec");
        assert_eq!(
            build.claims,
            Some(ClaimGrowth {
                from: "1Gi".into(),
                to: "2Gi".into(),
                claims: vec!["data-demo-1".into(), "data-demo-2".into()],
            })
        );
        let template = build.objects.statefulset.spec.volume_claim_templates;
        let size = template
            .as_ref()
            .and_then(|t| t[0].spec.as_ref())
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .map(|r| r["storage"].0.clone());
        assert_eq!(
            size.as_deref(),
            Some("1Gi"),
            "the claim template cannot change"
        );
    }

    #[test]
    fn the_pause_annotation_pauses() {
        let mut cluster = crate::testing::cluster(3);
        assert!(!paused(&cluster));
        cluster.metadata.annotations = Some(BTreeMap::from([(
            PAUSE_ANNOTATION.to_string(),
            "true".to_string(),
        )]));
        assert!(paused(&cluster));
    }
}
