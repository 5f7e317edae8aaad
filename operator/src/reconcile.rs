//! The reconciler: the controller that watches BrokerClusters, and the pipeline each
//! reconciliation runs:
//!
//! 1. [`observe`](crate::observe): every read (the cluster's objects, its pods, the brokers'
//!    own view);
//! 2. [`plan`](crate::plan): one pure [`Plan`] of everything to do (scale, build, roll,
//!    balance);
//! 3. [`apply`](crate::apply): carries the plan out, thinly;
//! 4. status: computed by the pure [`compute_status`] from what was observed, planned and
//!    done, and written when it changed, with an Event per condition change.
//!
//! Deletion runs [`cleanup`] through the finalizer instead. It watches BrokerClusters as
//! untyped objects and parses each one itself, so one object the operator cannot read becomes
//! an error condition on that object instead of a failed list that would stall the watch of
//! every cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;

use crate::apply::{apply, delete_owned, Outcome};
use crate::context::object_key;
pub use crate::context::{api_resource, Context, Error};
use crate::crd::{BrokerCluster, BrokerClusterStatus};
use crate::metrics::Metrics;
use crate::names::{ClusterNames, FIELD_MANAGER, FINALIZER, PAUSE_ANNOTATION};
use crate::observe::{observe, Observation};
use crate::plan::{leader_rebalance_due, paused, plan, Plan};
use crate::reasons::{action, condition, event};
use crate::resources::names_of;
use crate::status::{changed_conditions, compute_status, settled, Observed};

/// Requeue interval of a Ready, settled cluster (the brokers' own state is polled, not
/// watched).
const READY_RESYNC: Duration = Duration::from_secs(60);
/// Requeue interval while a cluster is not Ready, or scales or rolls.
const BUSY_RESYNC: Duration = Duration::from_secs(3);
/// First retry after an error; doubled per consecutive error up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

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
    let key = object_key(&obj);
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &api_resource());
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(obj) => reconcile_cluster(&obj, &ctx).await,
            FinalizerEvent::Cleanup(obj) => cleanup(&obj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.set_api_reachable();
    match &result {
        Ok(_) => {
            ctx.note_success(&key);
            ctx.metrics.reconciled(started.elapsed());
        }
        Err(error) => ctx.metrics.failed(error.reason(), started.elapsed()),
    }
    result
}

/// Retry policy: exponential backoff per object.
pub fn error_policy(obj: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.note_failure(object_key(&obj));
    let delay = backoff(failures);
    tracing::warn!(cluster = %object_key(&obj), %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn parse<T: DeserializeOwned>(obj: &DynamicObject) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::to_value(obj)?)
}

/// One pass of the pipeline over a BrokerCluster that is not being deleted.
async fn reconcile_cluster(obj: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    let cluster: BrokerCluster = match parse(obj) {
        Ok(cluster) => cluster,
        Err(error) => return report_unreadable(obj, ctx, &error).await,
    };
    let names = names_of(&cluster)?;
    if paused(&cluster) {
        tracing::info!(cluster = %object_key(obj), "reconciliation paused by {PAUSE_ANNOTATION}");
        return Ok(Action::await_change());
    }
    let observed = observe(ctx, cluster, names).await?;
    let plan = plan(&observed)?;
    let outcome = apply(ctx, obj, &observed, &plan).await?;
    let status = compute_status(
        &observed.names,
        &status_input(&observed, &plan, &outcome),
        observed.cluster.status.as_ref(),
        &observed.now,
    );
    // Drains, restarts, catching up and rebalancing advance on the brokers' state, which is
    // polled, not watched: only a cluster with nothing left to do waits for the long resync.
    let unbalanced = observed
        .summary
        .as_ref()
        .is_some_and(|s| leader_rebalance_due(&observed.cluster, s));
    let resync = if settled(&status) && !unbalanced {
        READY_RESYNC
    } else {
        BUSY_RESYNC
    };
    publish_status(obj, ctx, &observed.cluster, status).await?;
    Ok(Action::requeue(resync))
}

/// What the status is computed from: what was observed, planned and done.
fn status_input<'a>(o: &'a Observation, plan: &'a Plan, outcome: &'a Outcome) -> Observed<'a> {
    let spec = &o.cluster.spec;
    Observed {
        generation: o.cluster.metadata.generation,
        desired_replicas: spec.replicas,
        version: spec.version.as_deref(),
        statefulset: outcome.statefulset.as_ref().or(o.statefulset.as_ref()),
        pods: &o.pods,
        summary: o.summary.as_ref(),
        spec_problem: plan.build.as_ref().err().cloned(),
        scale_problem: outcome.scale.problem.clone(),
        scaling: outcome.scale.in_progress.clone(),
        desired_pod_hash: plan.build.as_ref().ok().and_then(|b| b.pod_hash.clone()),
        rollout: outcome.rollout.as_ref(),
        gate_timeout_seconds: i64::from(spec.rollout.health_gate_timeout_seconds),
    }
}

fn now() -> Time {
    Time(Timestamp::now())
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
            condition::DEGRADED => condition.status == "False",
            condition::READY => condition.status == "True",
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
            action: action::RECONCILE.into(),
            secondary: None,
        };
        ctx.publish(obj, event).await;
    }
    Ok(())
}

/// A BrokerCluster the operator cannot read: report it on the object and wait for an edit.
async fn report_unreadable(
    obj: &DynamicObject,
    ctx: &Context,
    error: &serde_json::Error,
) -> Result<Action, Error> {
    let problem = format!("the BrokerCluster cannot be read: {error}");
    tracing::warn!(cluster = %object_key(obj), %problem);
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
            reason: event::INVALID_SPEC.into(),
            note: Some(problem.chars().take(1000).collect()),
            action: action::RECONCILE.into(),
            secondary: None,
        };
        ctx.publish(obj, event).await;
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
                Ok(_) => {
                    tracing::info!(cluster = %object_key(obj), claim = %name, "volume claim deleted")
                }
                // Deleted meanwhile (by the StatefulSet's retention policy): done.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
        "deleting the cluster and its volume claims"
    } else {
        "deleting the cluster; its volume claims are kept (storage.deleteClaimsOnDelete is false)"
    };
    tracing::info!(cluster = %object_key(obj), note);
    let event = Event {
        type_: EventType::Normal,
        reason: event::DELETING.into(),
        note: Some(note.into()),
        action: action::DELETE.into(),
        secondary: None,
    };
    ctx.publish(obj, event).await;
    Ok(Action::await_change())
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
