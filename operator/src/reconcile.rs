//! The reconciler: brings the objects a `BrokerCluster` owns to their desired state, reports
//! status and Events, and cleans up on deletion.
//!
//! It watches BrokerClusters as untyped objects and parses each one itself, so one object the
//! operator cannot read becomes an error condition on that object instead of a failed list
//! that would stall the watch of every cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::admin;
use crate::broker_config::{
    cluster_settings, initial_voters, parse_properties, parse_voter_ids, PROPERTIES_KEY,
};
use crate::crd::{BrokerCluster, BrokerClusterStatus};
use crate::metrics::Metrics;
use crate::names::{ClusterNames, FIELD_MANAGER, FINALIZER, PAUSE_ANNOTATION};
use crate::resources::{
    claim_size_change, desired_objects, keep_immutable_fields, names_of, recorded_pod_hash,
    BuildError,
};
use crate::rollout;
use crate::scaling;
use crate::status::{
    changed_conditions, compute_status, pod_ordinal, pod_ready, Observed, DEGRADED, PROGRESSING,
    READY,
};

/// Requeue interval of a Ready, settled cluster (the brokers' own state is polled, not
/// watched).
const READY_RESYNC: Duration = Duration::from_secs(60);
/// Requeue interval while a cluster is not Ready, or scales or rolls.
const BUSY_RESYNC: Duration = Duration::from_secs(3);
/// First retry after an error; doubled per consecutive error up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why a reconciliation failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("serialising: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// A short label for the error metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Build(_) => "build",
            Error::Finalizer(_) => "finalizer",
            Error::Json(_) => "serialise",
        }
    }
}

/// What every reconciliation shares.
pub struct Context {
    pub client: Client,
    pub http: reqwest::Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object (`namespace/name`), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, recorder: Recorder, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            http: reqwest::Client::new(),
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn note_failure(&self, key: String) -> u32 {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    fn note_success(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

/// The BrokerCluster API resource (for the untyped watch).
pub fn api_resource() -> ApiResource {
    ApiResource::erase::<BrokerCluster>(&())
}

fn key(obj: &DynamicObject) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Exponential backoff for the `failures`-th consecutive failure.
pub fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Reconciles one BrokerCluster.
///
/// # Errors
/// [`Error`] when the API server refused a call; the controller retries with backoff.
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let object_key = key(&obj);
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &api_resource());
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(obj) => apply(&obj, &ctx).await,
            FinalizerEvent::Cleanup(obj) => cleanup(&obj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.set_api_reachable();
    match &result {
        Ok(_) => {
            ctx.note_success(&object_key);
            ctx.metrics.reconciled(started.elapsed());
        }
        Err(error) => ctx.metrics.failed(error.reason(), started.elapsed()),
    }
    result
}

/// Retry policy: exponential backoff per object.
pub fn error_policy(obj: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.note_failure(key(&obj));
    let delay = backoff(failures);
    tracing::warn!(cluster = %key(&obj), %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn parse<T: DeserializeOwned>(obj: &DynamicObject) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::to_value(obj)?)
}

async fn apply(obj: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    let cluster: BrokerCluster = match parse(obj) {
        Ok(cluster) => cluster,
        Err(error) => return report_unreadable(obj, ctx, &error).await,
    };
    let names = names_of(&cluster)?;
    if paused(&cluster) {
        tracing::info!(cluster = %key(obj), "reconciliation paused by {PAUSE_ANNOTATION}");
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let ns = names.namespace.as_str();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let voters = config_maps
        .get_opt(&names.config_map())
        .await?
        .and_then(|cm| cm.data)
        .and_then(|data| data.get(PROPERTIES_KEY).cloned())
        .and_then(|text| {
            parse_properties(&text)
                .get("controller.quorum.voters")
                .and_then(|v| parse_voter_ids(v))
        })
        .unwrap_or_else(|| initial_voters(cluster.spec.replicas));
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), ns);
    let existing = statefulsets.get_opt(&names.statefulset()).await?;
    let running = existing.as_ref().and_then(|s| s.spec.replicas);
    let http_port = cluster.spec.listeners.http;
    let asked = running.unwrap_or(0).max(cluster.spec.replicas);
    // One look at the cluster per reconciliation: scaling, the rollout and status all read
    // it (a step taken now shows in the next one, a few seconds later).
    let summary = admin::cluster_summary(&ctx.http, &names, asked, http_port).await;
    let scale = scaling::scale_step(
        running,
        cluster.spec.replicas,
        &voters,
        summary.as_ref(),
        &names,
    );
    let (replicas, scale_problem, scaling_note) = run_scale_step(
        obj,
        ctx,
        &names,
        &scale,
        summary.as_ref(),
        running,
        cluster.spec.replicas,
        asked,
        http_port,
    )
    .await;
    let mut desired_pod_hash = None;
    let spec_problem = match cluster_settings(&cluster.spec, &names, &voters) {
        Ok(settings) => {
            let mut desired = desired_objects(&cluster, &settings, replicas)?;
            desired_pod_hash = desired
                .statefulset
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(recorded_pod_hash)
                .map(str::to_string);
            if let Some(existing) = &existing {
                keep_immutable_fields(&mut desired.statefulset, existing);
                if let Some((from, to)) = claim_size_change(&cluster, existing) {
                    expand_claims(obj, ctx, &names, existing, &from, &to).await?;
                }
            }
            apply_object(client, ns, &desired.config_map).await?;
            apply_object(client, ns, &desired.headless_service).await?;
            apply_object(client, ns, &desired.client_service).await?;
            apply_object(client, ns, &desired.pod_disruption_budget).await?;
            apply_object(client, ns, &desired.statefulset).await?;
            None
        }
        Err(problem) => Some(problem.to_string()),
    };

    let statefulset = statefulsets.get_opt(&names.statefulset()).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&names.selector_string()))
        .await?
        .items;
    let step = match &desired_pod_hash {
        // No rolling restart while a broker drains.
        Some(hash) if scaling_note.is_none() => {
            let step = rollout::next_step(
                &broker_pods(&pods, replicas, hash),
                summary.as_ref(),
                &rollout::Policy {
                    paused: cluster.spec.rollout.paused,
                    max_under_replicated: usize::try_from(
                        cluster.spec.rollout.max_under_replicated_partitions,
                    )
                    .unwrap_or(0),
                    voters: voters.clone(),
                    max_parallel: usize::try_from(cluster.spec.rollout.max_parallel)
                        .unwrap_or(1)
                        .max(1),
                },
            );
            run_rollout_step(obj, ctx, &cluster, &names, &step, replicas).await?;
            if step == rollout::Step::Complete {
                if let Some(summary) = &summary {
                    balance(obj, ctx, &cluster, &names, summary, replicas).await;
                }
            }
            Some(step)
        }
        _ => None,
    };
    let observed = Observed {
        generation: cluster.metadata.generation,
        desired_replicas: cluster.spec.replicas,
        version: cluster.spec.version.as_deref(),
        statefulset: statefulset.as_ref(),
        pods: &pods,
        summary: summary.as_ref(),
        spec_problem,
        scale_problem,
        scaling: scaling_note,
        desired_pod_hash,
        rollout: step.as_ref(),
        gate_timeout_seconds: i64::from(cluster.spec.rollout.health_gate_timeout_seconds),
    };
    let status = compute_status(&names, &observed, cluster.status.as_ref(), &now());
    // Drains, restarts, catching up and rebalancing advance on the brokers' state, which is
    // polled, not watched: only a cluster with nothing left to do waits for the long resync.
    let condition_is = |type_: &str, value: &str| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == value)
    };
    let unbalanced = summary
        .as_ref()
        .is_some_and(|s| leader_rebalance_due(&cluster, s));
    let settled = condition_is(READY, "True")
        && condition_is(PROGRESSING, "False")
        && condition_is(DEGRADED, "False")
        && !unbalanced;
    publish_status(obj, ctx, &cluster, status).await?;
    Ok(Action::requeue(if settled {
        READY_RESYNC
    } else {
        BUSY_RESYNC
    }))
}

/// Carries out a scaling step through the brokers' admin API: starts a drain, cancels the
/// drains of brokers that stay, forgets brokers whose pods are gone. Returns the StatefulSet's
/// replica count, why a scale-down is held (if it is) and what is in progress (if anything).
#[allow(clippy::too_many_arguments)]
async fn run_scale_step(
    obj: &DynamicObject,
    ctx: &Context,
    names: &ClusterNames,
    step: &scaling::ScaleStep,
    summary: Option<&tokafka_contract::admin::ClusterSummary>,
    running: Option<i32>,
    desired: i32,
    asked: i32,
    http_port: i32,
) -> (i32, Option<String>, Option<String>) {
    use reqwest::Method;
    let replicas = step.replicas();
    if let Some(summary) = summary {
        // Only brokers that stay (0..desired) get their drains cancelled: one on its way out
        // while the StatefulSet steps down still counts among `replicas`.
        for id in scaling::drains_to_cancel(summary, names, desired) {
            let path = format!("/v1/brokers/{id}/decommission");
            match admin::call(&ctx.http, names, asked, http_port, Method::DELETE, &path).await {
                Ok(()) => {
                    let event = Event {
                        type_: EventType::Normal,
                        reason: "DrainCancelled".into(),
                        note: Some(format!("broker {id} stays: its drain is cancelled")),
                        action: "Scale".into(),
                        secondary: None,
                    };
                    publish_event(ctx, obj, event).await;
                }
                Err(error) => {
                    tracing::warn!(cluster = %key(obj), broker = id, %error, "could not cancel a drain")
                }
            }
        }
        if let Some(running) = running {
            for id in scaling::brokers_to_forget(summary, names, running.min(replicas)) {
                let path = format!("/v1/brokers/{id}");
                if let Err(error) =
                    admin::call(&ctx.http, names, asked, http_port, Method::DELETE, &path).await
                {
                    tracing::debug!(cluster = %key(obj), broker = id, %error, "could not forget a removed broker yet");
                }
            }
        }
    }
    let leftover = summary
        .map(|s| scaling::removed_brokers(s, names, replicas))
        .unwrap_or_default();
    match step {
        scaling::ScaleStep::Run { .. } if !leftover.is_empty() => (
            replicas,
            None,
            Some(format!(
                "forgetting removed broker(s) {leftover:?} once they have stopped"
            )),
        ),
        scaling::ScaleStep::Run { .. } => (replicas, None, None),
        scaling::ScaleStep::Blocked { reason, .. } => (replicas, Some(reason.clone()), None),
        scaling::ScaleStep::Draining { broker, .. } => (
            replicas,
            None,
            Some(format!("draining broker {broker} before removing its pod")),
        ),
        scaling::ScaleStep::Decommission { broker, .. } => {
            let path = format!("/v1/brokers/{broker}/decommission");
            match admin::call(&ctx.http, names, asked, http_port, Method::POST, &path).await {
                Ok(()) => {
                    let event = Event {
                        type_: EventType::Normal,
                        reason: "DrainingBroker".into(),
                        note: Some(format!(
                            "draining broker {broker}: its replicas move to the brokers that stay"
                        )),
                        action: "Scale".into(),
                        secondary: None,
                    };
                    publish_event(ctx, obj, event).await;
                    (
                        replicas,
                        None,
                        Some(format!("draining broker {broker} before removing its pod")),
                    )
                }
                Err(error) => (
                    replicas,
                    Some(format!("broker {broker} cannot be drained: {error}")),
                    None,
                ),
            }
        }
    }
}

/// Keeps a settled cluster balanced through the admin API: replicas spread over all brokers
/// (after a scale-up), and leadership on preferred replicas when spec.rebalance asks.
async fn balance(
    obj: &DynamicObject,
    ctx: &Context,
    cluster: &BrokerCluster,
    names: &ClusterNames,
    summary: &tokafka_contract::admin::ClusterSummary,
    replicas: i32,
) {
    let port = cluster.spec.listeners.http;
    let (reason, note, path) = if scaling::needs_spread(summary, names, replicas) {
        (
            "SpreadingReplicas",
            "replicas move so every broker holds about as many",
            "/v1/cluster/spread-replicas",
        )
    } else if leader_rebalance_due(cluster, summary) {
        (
            "RebalancingLeaders",
            "leadership moves back to preferred replicas (imbalance above the threshold)",
            "/v1/cluster/preferred-leader-election",
        )
    } else {
        return;
    };
    match admin::call(
        &ctx.http,
        names,
        replicas,
        port,
        reqwest::Method::POST,
        path,
    )
    .await
    {
        Ok(()) => {
            let event = Event {
                type_: EventType::Normal,
                reason: reason.into(),
                note: Some(note.into()),
                action: "Balance".into(),
                secondary: None,
            };
            publish_event(ctx, obj, event).await;
        }
        Err(error) => tracing::warn!(cluster = %key(obj), %error, "{reason} refused"),
    }
}

/// Whether spec.rebalance asks for a preferred-leader election now.
fn leader_rebalance_due(
    cluster: &BrokerCluster,
    summary: &tokafka_contract::admin::ClusterSummary,
) -> bool {
    cluster.spec.rebalance.enabled
        && scaling::needs_leader_rebalance(
            summary,
            cluster.spec.rebalance.leader_imbalance_threshold_percent,
        )
}

fn paused(cluster: &BrokerCluster) -> bool {
    cluster
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PAUSE_ANNOTATION))
        .is_some_and(|v| v == "true")
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

/// Carries out one rollout step: a restart deletes the pod of each broker of the batch (each
/// broker moves its leadership away on SIGTERM, and the StatefulSet recreates the pod from the
/// current template), with one RestartingBroker Event per pod. When restarted brokers are back
/// and the gates pass again, leadership returns to the preferred replicas.
async fn run_rollout_step(
    obj: &DynamicObject,
    ctx: &Context,
    cluster: &BrokerCluster,
    names: &ClusterNames,
    step: &rollout::Step,
    replicas: i32,
) -> Result<(), Error> {
    let restarted_before = cluster
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .and_then(|r| r.current.clone());
    let gates_passed = matches!(
        step,
        rollout::Step::Complete | rollout::Step::Restart { .. }
    );
    if restarted_before.is_some() && gates_passed {
        admin::preferred_leader_election(&ctx.http, names, replicas, cluster.spec.listeners.http)
            .await;
    }
    let rollout::Step::Restart { ordinals } = step else {
        return Ok(());
    };
    for &ordinal in ordinals {
        let pod = names.pod(ordinal);
        tracing::info!(cluster = %key(obj), %pod, broker = ordinal, "rolling restart: restarting broker");
        delete_owned::<Pod>(&ctx.client, &names.namespace, &pod).await?;
        let event = Event {
            type_: EventType::Normal,
            reason: "RestartingBroker".into(),
            note: Some(format!(
                "restarting broker {ordinal} (pod {pod}) onto the current template"
            )),
            action: "RollingRestart".into(),
            // The pod as the related object: it also keeps one Event per broker, where the
            // recorder would otherwise count repeats of one Event.
            secondary: Some(k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.clone()),
                namespace: Some(names.namespace.clone()),
                ..Default::default()
            }),
        };
        publish_event(ctx, obj, event).await;
    }
    Ok(())
}

/// Grows every broker's data claim to `to` (claims cannot shrink, and the schema refuses a
/// smaller size). A storage class that cannot expand refuses the patch: that becomes a Warning
/// Event, not a failed reconciliation, since the brokers keep running on the old size.
async fn expand_claims(
    obj: &DynamicObject,
    ctx: &Context,
    names: &ClusterNames,
    existing: &StatefulSet,
    from: &str,
    to: &str,
) -> Result<(), Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let pods = existing.spec.replicas.unwrap_or(0);
    let patch = serde_json::json!({ "spec": { "resources": { "requests": { "storage": to } } } });
    for ordinal in 0..pods {
        let claim = format!("{}-{}", crate::names::DATA_VOLUME, names.pod(ordinal));
        let Some(current) = claims.get_opt(&claim).await? else {
            continue;
        };
        let requested = current
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.as_str());
        if requested == Some(to) {
            continue;
        }
        if let Err(error) = claims
            .patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            let event = Event {
                type_: EventType::Warning,
                reason: "VolumeExpansionFailed".into(),
                note: Some(
                    format!("claim {claim} cannot grow from {from} to {to}: {error}")
                        .chars()
                        .take(1000)
                        .collect(),
                ),
                action: "ExpandVolume".into(),
                secondary: None,
            };
            publish_event(ctx, obj, event).await;
            return Ok(());
        }
    }
    Ok(())
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Server-side apply of one owned object, as the operator's field manager.
async fn apply_object<K>(client: &Client, ns: &str, object: &K) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    Api::<K>::namespaced(client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await?;
    Ok(())
}

/// A JSON merge patch that turns `before` into exactly `after`: a field `after` leaves out is
/// patched to null (deleted), where a plain merge patch would keep its old value (a rollout's
/// `current` or `blockedBy` outliving the rollout, say).
fn replacing_merge_patch(
    before: Option<&serde_json::Value>,
    after: &serde_json::Value,
) -> serde_json::Value {
    use serde_json::Value;
    match (before, after) {
        (Some(Value::Object(old)), Value::Object(new)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in new {
                patch.insert(key.clone(), replacing_merge_patch(old.get(key), value));
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => after.clone(),
    }
}

/// Writes `status` when it differs from the stored one, with an Event per condition change.
async fn publish_status(
    obj: &DynamicObject,
    ctx: &Context,
    cluster: &BrokerCluster,
    status: BrokerClusterStatus,
) -> Result<(), Error> {
    if cluster.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let before = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &api_resource());
    let previous = obj.data.get("status");
    let patch = replacing_merge_patch(previous, &serde_json::to_value(&status)?);
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": patch })),
    )
    .await?;
    for condition in changed_conditions(&before, &status.conditions) {
        let healthy = match condition.type_.as_str() {
            "Degraded" => condition.status == "False",
            "Ready" => condition.status == "True",
            _ => true,
        };
        let event = Event {
            type_: if healthy {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: condition.reason.clone(),
            note: Some(format!(
                "{}={}: {}",
                condition.type_, condition.status, condition.message
            )),
            action: "Reconcile".into(),
            secondary: None,
        };
        publish_event(ctx, obj, event).await;
    }
    Ok(())
}

/// Events are best effort: a refused Event must not fail the reconciliation.
async fn publish_event(ctx: &Context, obj: &DynamicObject, event: Event) {
    let reference = obj.object_ref(&api_resource());
    if let Err(error) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(cluster = %key(obj), %error, "could not publish an Event");
    }
}

/// A BrokerCluster the operator cannot read: report it on the object and wait for an edit.
async fn report_unreadable(
    obj: &DynamicObject,
    ctx: &Context,
    error: &serde_json::Error,
) -> Result<Action, Error> {
    let problem = format!("the BrokerCluster cannot be read: {error}");
    tracing::warn!(cluster = %key(obj), %problem);
    let previous: Option<BrokerClusterStatus> = obj
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let names = ClusterNames::new(&obj.name_any(), &obj.namespace().unwrap_or_default());
    let observed = Observed {
        generation: obj.metadata.generation,
        spec_problem: Some(problem.clone()),
        ..Observed::default()
    };
    let status = compute_status(&names, &observed, previous.as_ref(), &now());
    if previous.as_ref() != Some(&status) {
        let namespace = obj.namespace().unwrap_or_default();
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &namespace, &api_resource());
        api.patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
        let event = Event {
            type_: EventType::Warning,
            reason: "InvalidSpec".into(),
            note: Some(problem.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        publish_event(ctx, obj, event).await;
    }
    Ok(Action::await_change())
}

/// Deletion: the operator deletes the owned objects (owner references would have garbage
/// collection remove them too, later); the volume claims go too when
/// `storage.deleteClaimsOnDelete` is set, else they stay for a later cluster of the same name
/// to reuse.
async fn cleanup(obj: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    let delete_claims = obj
        .data
        .pointer("/spec/storage/deleteClaimsOnDelete")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let names = ClusterNames::new(&obj.name_any(), &obj.namespace().unwrap_or_default());
    // Garbage collection would remove these too, but on its own schedule; deleting them now
    // stops the brokers as soon as the cluster is deleted.
    let client = &ctx.client;
    let ns = names.namespace.as_str();
    delete_owned::<StatefulSet>(client, ns, &names.statefulset()).await?;
    delete_owned::<PodDisruptionBudget>(client, ns, &names.pod_disruption_budget()).await?;
    delete_owned::<Service>(client, ns, &names.client_service()).await?;
    delete_owned::<Service>(client, ns, &names.headless_service()).await?;
    delete_owned::<ConfigMap>(client, ns, &names.config_map()).await?;
    let note = if delete_claims {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(ctx.client.clone(), &names.namespace);
        let listed = claims
            .list(&ListParams::default().labels(&names.selector_string()))
            .await?;
        for claim in listed.items {
            let name = claim.name_any();
            match claims.delete(&name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(cluster = %key(obj), claim = %name, "volume claim deleted"),
                // Deleted meanwhile (by the StatefulSet's retention policy): done.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
        "deleting the cluster and its volume claims"
    } else {
        "deleting the cluster; its volume claims are kept (storage.deleteClaimsOnDelete is false)"
    };
    tracing::info!(cluster = %key(obj), note);
    let event = Event {
        type_: EventType::Normal,
        reason: "Deleting".into(),
        note: Some(note.into()),
        action: "Delete".into(),
        secondary: None,
    };
    publish_event(ctx, obj, event).await;
    Ok(Action::await_change())
}

/// Deletes one object the cluster owns, directly or through its StatefulSet (dependents in
/// the background, a pod with its grace period); absent is fine.
async fn delete_owned<K>(client: &Client, ns: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match Api::<K>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Starts the controller for BrokerClusters in `namespace` (all when `None`) and runs it
/// until `shutdown` resolves.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use futures::StreamExt;
    use kube::runtime::watcher;
    use kube::runtime::Controller;

    let resource = api_resource();
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    macro_rules! api {
        ($t:ty) => {
            match &namespace {
                Some(ns) => Api::<$t>::namespaced(client.clone(), ns),
                None => Api::<$t>::all(client.clone()),
            }
        };
    }
    let clusters: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let recorder = Recorder::new(client.clone(), FIELD_MANAGER.into());
    let context = Arc::new(Context::new(client.clone(), recorder, metrics));
    Controller::new_with(clusters, watcher::Config::default(), resource)
        .owns(api!(StatefulSet), owned.clone())
        .owns(api!(Service), owned.clone())
        .owns(api!(ConfigMap), owned.clone())
        .owns(api!(PodDisruptionBudget), owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object.name, "reconciled"),
                Err(error) => tracing::debug!(%error, "controller event"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_patch_deletes_what_the_new_status_leaves_out() {
        let before = serde_json::json!({
            "phase": "Progressing",
            "rollout": {"updated": 4, "current": "demo-0", "blockedBy": "broker pod 0 is not Ready"},
            "brokers": [{"brokerId": 0}],
        });
        let after = serde_json::json!({"phase": "Ready", "rollout": {"updated": 5}, "brokers": []});
        let patch = replacing_merge_patch(Some(&before), &after);
        assert_eq!(
            patch,
            serde_json::json!({
                "phase": "Ready",
                "rollout": {"updated": 5, "current": null, "blockedBy": null},
                "brokers": [],
            })
        );
        assert_eq!(replacing_merge_patch(None, &after), after);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(30), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
