//! Apply, the third step of a reconciliation: carries out a [`Plan`] and reports what
//! happened ([`Outcome`]). It decides nothing the plan did not; the one answer it waits for is
//! the cluster's to a drain, which [`ScalePlan::report`] turns into the scaling's report.
//!
//! Order, and why:
//! 1. scaling through the admin API (cancel drains, forget removed brokers, start a drain),
//!    before the StatefulSet changes size, so a broker leaves only once drained;
//! 2. data claims grow before the StatefulSet is applied (the claim template cannot change);
//! 3. the ConfigMap, the headless Service, the client Service and the PodDisruptionBudget
//!    before the StatefulSet: its pods mount the ConfigMap and need the headless Service for
//!    their stable names, and no pod should run unprotected by the budget;
//! 4. the rolling restart last, against the pod template just applied; balancing only after
//!    a complete rollout.
//!
//! [`ScalePlan::report`]: crate::plan::ScalePlan::report

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::admin::{BrokerAdmin, Command};
use crate::context::{object_key, Context, Error};
use crate::names::FIELD_MANAGER;
use crate::observe::Observation;
use crate::plan::{Build, ClaimGrowth, Plan, RolloutPlan, ScaleReport};
use crate::reasons::{action, event};
use crate::rollout;

/// What carrying out a plan did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub scale: ScaleReport,
    /// The StatefulSet as applied; `None` when the spec could not be applied.
    pub statefulset: Option<StatefulSet>,
    /// The rollout step carried out, if one was.
    pub rollout: Option<rollout::Step>,
}

/// Carries out `plan`, made from `o`, for the BrokerCluster `obj`.
///
/// # Errors
/// [`Error::Kube`] when the API server refused a write; what came before it stays done.
pub async fn apply(
    ctx: &Context,
    obj: &DynamicObject,
    o: &Observation,
    plan: &Plan,
) -> Result<Outcome, Error> {
    let admin = o.admin(&ctx.http);
    let scale = scale(ctx, obj, &admin, plan).await;
    let statefulset = match &plan.build {
        Ok(build) => Some(apply_objects(ctx, obj, o, build).await?),
        Err(_) => None,
    };
    let rollout = match plan.rollout_now(&scale) {
        Some(rollout) => {
            let admin = admin.asking(plan.scale.replicas());
            roll(ctx, obj, o, &admin, rollout).await?;
            Some(rollout.step.clone())
        }
        None => None,
    };
    Ok(Outcome {
        scale,
        statefulset,
        rollout,
    })
}

fn normal(reason: &str, action: &str, note: String) -> Event {
    Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    }
}

/// The scaling actions: cancels the drains of brokers that stay, forgets removed brokers,
/// starts the planned drain.
async fn scale(
    ctx: &Context,
    obj: &DynamicObject,
    admin: &BrokerAdmin,
    plan: &Plan,
) -> ScaleReport {
    for &id in &plan.scale.cancel_drains {
        match admin.send(Command::CancelDrain(id)).await {
            Ok(()) => {
                let note = format!("broker {id} stays: its drain is cancelled");
                ctx.publish(obj, normal(event::DRAIN_CANCELLED, action::SCALE, note))
                    .await;
            }
            Err(error) => {
                tracing::warn!(cluster = %object_key(obj), broker = id, %error, "could not cancel a drain");
            }
        }
    }
    for &id in &plan.scale.forget {
        if let Err(error) = admin.send(Command::Forget(id)).await {
            tracing::debug!(cluster = %object_key(obj), broker = id, %error, "could not forget a removed broker yet");
        }
    }
    let drained = match plan.scale.drain() {
        Some(broker) => {
            let answer = admin.send(Command::Drain(broker)).await;
            if answer.is_ok() {
                let note =
                    format!("draining broker {broker}: its replicas move to the brokers that stay");
                ctx.publish(obj, normal(event::DRAINING_BROKER, action::SCALE, note))
                    .await;
            }
            Some(answer)
        }
        None => None,
    };
    plan.scale.report(drained.as_ref())
}

/// Grows the planned claims, then applies the objects in order; returns the StatefulSet as
/// applied.
async fn apply_objects(
    ctx: &Context,
    obj: &DynamicObject,
    o: &Observation,
    build: &Build,
) -> Result<StatefulSet, Error> {
    if let Some(growth) = &build.claims {
        grow_claims(ctx, obj, o, growth).await;
    }
    let (client, ns) = (&ctx.client, o.names.namespace.as_str());
    let objects = &build.objects;
    apply_object(client, ns, &objects.config_map).await?;
    apply_object(client, ns, &objects.headless_service).await?;
    apply_object(client, ns, &objects.client_service).await?;
    apply_object(client, ns, &objects.pod_disruption_budget).await?;
    apply_object(client, ns, &objects.statefulset).await
}

/// Grows each claim to `growth.to` (claims cannot shrink, and the schema refuses a smaller
/// size). A storage class that cannot expand refuses the patch: that becomes a Warning Event
/// and stops the growth, not a failed reconciliation, since the brokers keep running on the
/// old size.
async fn grow_claims(ctx: &Context, obj: &DynamicObject, o: &Observation, growth: &ClaimGrowth) {
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &o.names.namespace);
    let patch =
        serde_json::json!({ "spec": { "resources": { "requests": { "storage": growth.to } } } });
    for claim in &growth.claims {
        if let Err(error) = claims
            .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            let event = Event {
                type_: EventType::Warning,
                reason: event::VOLUME_EXPANSION_FAILED.into(),
                note: Some(
                    format!(
                        "claim {claim} cannot grow from {} to {}: {error}",
                        growth.from, growth.to
                    )
                    .chars()
                    .take(1000)
                    .collect(),
                ),
                action: action::EXPAND_VOLUME.into(),
                secondary: None,
            };
            ctx.publish(obj, event).await;
            return;
        }
    }
}

/// Carries out one rollout step: first leadership back to the preferred replicas when the
/// plan says so (best effort: the brokers' own rebalance would get there too, later); a
/// restart deletes the pod of each broker of the batch (each broker moves its leadership
/// away on SIGTERM, and the StatefulSet recreates the pod from the current template), with one
/// RestartingBroker Event per pod; a complete rollout then balances.
async fn roll(
    ctx: &Context,
    obj: &DynamicObject,
    o: &Observation,
    admin: &BrokerAdmin,
    rollout: &RolloutPlan,
) -> Result<(), Error> {
    if rollout.elect_preferred_leaders {
        admin.send_best_effort(Command::ElectPreferredLeaders).await;
    }
    if let rollout::Step::Restart { ordinals } = &rollout.step {
        for &ordinal in ordinals {
            let pod = o.names.pod(ordinal);
            tracing::info!(cluster = %object_key(obj), %pod, broker = ordinal, "rolling restart: restarting broker");
            delete_owned::<Pod>(&ctx.client, &o.names.namespace, &pod).await?;
            let event = Event {
                secondary: Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.clone()),
                    namespace: Some(o.names.namespace.clone()),
                    ..ObjectReference::default()
                }),
                // The pod as the related object: it also keeps one Event per broker, where
                // the recorder would otherwise count repeats of one Event.
                ..normal(
                    event::RESTARTING_BROKER,
                    action::ROLLING_RESTART,
                    format!("restarting broker {ordinal} (pod {pod}) onto the current template"),
                )
            };
            ctx.publish(obj, event).await;
        }
    }
    if let Some(balance) = rollout.balance {
        match admin.send(balance.command()).await {
            Ok(()) => {
                let (reason, note) = balance.event();
                ctx.publish(obj, normal(reason, action::BALANCE, note.into()))
                    .await;
            }
            Err(error) => {
                let (reason, _) = balance.event();
                tracing::warn!(cluster = %object_key(obj), %error, "{reason} refused");
            }
        }
    }
    Ok(())
}

/// Server-side apply of one owned object, as the operator's field manager; returns the object
/// as the API server holds it after the apply.
async fn apply_object<K>(client: &Client, ns: &str, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let applied = Api::<K>::namespaced(client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await?;
    Ok(applied)
}

/// Deletes one object the cluster owns, directly or through its StatefulSet (dependents in
/// the background, a pod with its grace period); absent is fine.
pub async fn delete_owned<K>(client: &Client, ns: &str, name: &str) -> Result<(), Error>
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
