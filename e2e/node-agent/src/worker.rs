//! The pod worker: one task per pod bound to this node, from volume setup to final deletion.
//!
//! It allocates the pod's address, materialises its volumes, runs init containers in order and
//! then every container under a supervisor (restart policy with back-off, startup/readiness/
//! liveness probes), reports status whenever something changes, and on deletion stops the
//! processes (SIGTERM, grace period, SIGKILL) before removing the pod object, as the kubelet
//! does. Decisions come from the pure modules; this one does the I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolume, PersistentVolumeClaim, Pod, PodStatus, Secret,
    ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::Client;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::hosts::PodName;
use crate::images::ImageMap;
use crate::podspec::{field_value, process_spec, KeyData, PodContext};
use crate::probe::{self, ProbeSpec, ProbeTracker};
use crate::status::{carried_restarts, pod_status, ContainerView, Exit, PodView, ProcessState};
use crate::volumes::{key_files, plan_volumes, FileSource, VolumePlan};
use crate::{addresses, process};

/// What the pod workers share.
pub struct Runtime {
    pub client: Client,
    pub node_name: String,
    pub host_ip: String,
    pub images: ImageMap,
    pub pods_dir: PathBuf,
    pub isolate: bool,
    pub base_env: Vec<(String, String)>,
    pub used_ips: Mutex<BTreeSet<Ipv4Addr>>,
    /// Naming facts of running pods by UID, for the hosts file.
    pub names: Mutex<BTreeMap<String, PodName>>,
    pub names_changed: Notify,
    /// Mount targets created on the host, removed when the agent stops.
    pub created_paths: Mutex<Vec<PathBuf>>,
}

/// Why a worker ends its containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// The pod is being deleted: stop, then remove the object.
    Delete(Duration),
    /// The agent is shutting down: stop, leave the object.
    Shutdown(Duration),
}

impl Stop {
    fn grace(self) -> Duration {
        match self {
            Stop::Delete(g) | Stop::Shutdown(g) => g,
        }
    }
}

const BACKOFF_MAX: Duration = Duration::from_secs(20);
const SHUTDOWN_GRACE_MAX: Duration = Duration::from_secs(10);

fn now() -> Time {
    Time(Timestamp::now())
}

/// Whether a container that ended (not stopped by the agent) runs again, by the pod's restart
/// policy: init containers rerun until they succeed (unless Never).
pub fn restarts(init: bool, policy: &str, succeeded: bool) -> bool {
    match (init, policy) {
        (true, "Never") => false,
        (true, _) => !succeeded,
        (false, "Always") => true,
        (false, "OnFailure") => !succeeded,
        (false, _) => false,
    }
}

/// The termination grace period: the deletion's own, else the pod's, else 30 s.
pub fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(secs as u64)
}

/// Runs one pod until it is deleted or the agent shuts down.
///
/// `pods` carries the latest version of the pod object (None once it is gone from the API);
/// `shutdown` turns true when the agent stops.
pub async fn run_pod(
    rt: Arc<Runtime>,
    mut pods: watch::Receiver<Option<Pod>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(pod) = pods.borrow().clone() else {
        return;
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(rt.client.clone(), &ns);
    let pod_dir = rt.pods_dir.join(format!("{ns}_{name}_{uid}"));

    let ip = {
        let mut used = rt.used_ips.lock().expect("ip lock");
        let ip = addresses::allocate(&used).expect("127.1.0.0/16 exhausted");
        used.insert(ip);
        ip
    };
    info!(namespace = %ns, pod = %name, ip = %ip, "starting pod");
    let spec = pod.spec.clone().unwrap_or_default();
    let view = Arc::new(Mutex::new(PodView {
        pod_ip: Some(ip.to_string()),
        host_ip: rt.host_ip.clone(),
        start_time: pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .or_else(|| Some(now())),
        sandbox_ready: false,
        init_containers: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                ContainerView::waiting(&c.name, c.image.as_deref().unwrap_or(""), "PodInitializing")
            })
            .collect(),
        containers: spec
            .containers
            .iter()
            .map(|c| ContainerView {
                restart_count: carried_restarts(pod.status.as_ref(), &c.name),
                ..ContainerView::waiting(
                    &c.name,
                    c.image.as_deref().unwrap_or(""),
                    "ContainerCreating",
                )
            })
            .collect(),
        message: None,
    }));
    rt.names.lock().expect("names lock").insert(
        uid.clone(),
        PodName {
            ip: ip.to_string(),
            namespace: ns.clone(),
            hostname: Some(spec.hostname.clone().unwrap_or_else(|| name.clone())),
            subdomain: spec.subdomain.clone(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ready: false,
        },
    );
    rt.names_changed.notify_one();

    let changed = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel::<Option<Stop>>(None);
    // The reporter outlives the containers, so their final states are reported too.
    let (done_tx, done_rx) = watch::channel(false);
    let reporter = tokio::spawn(report_status(
        rt.clone(),
        api.clone(),
        name.clone(),
        uid.clone(),
        view.clone(),
        changed.clone(),
        pod.status.clone(),
        done_rx,
    ));
    let lifecycle = tokio::spawn(lifecycle(
        rt.clone(),
        pod.clone(),
        ip,
        pod_dir.clone(),
        view.clone(),
        changed.clone(),
        stop_rx.clone(),
    ));

    // Wait for deletion of the pod or shutdown of the agent.
    let stop = loop {
        let deleting = pods.borrow().as_ref().map_or(Some(grace_of(&pod)), |p| {
            p.metadata.deletion_timestamp.as_ref().map(|_| grace_of(p))
        });
        if let Some(grace) = deleting {
            break Stop::Delete(grace);
        }
        if *shutdown.borrow() {
            break Stop::Shutdown(grace_of(&pod).min(SHUTDOWN_GRACE_MAX));
        }
        // Labels can change while a pod runs; Service names follow them.
        let labels = pods
            .borrow()
            .as_ref()
            .map(|p| p.metadata.labels.clone().unwrap_or_default());
        if let Some(labels) = labels {
            if let Some(n) = rt.names.lock().expect("names lock").get_mut(&uid) {
                if n.labels != labels {
                    n.labels = labels;
                    rt.names_changed.notify_one();
                }
            }
        }
        tokio::select! {
            r = pods.changed() => if r.is_err() { break Stop::Shutdown(grace_of(&pod).min(SHUTDOWN_GRACE_MAX)) },
            r = shutdown.changed() => if r.is_err() { break Stop::Shutdown(grace_of(&pod).min(SHUTDOWN_GRACE_MAX)) },
        }
    };
    info!(namespace = %ns, pod = %name, ?stop, "stopping pod");
    let _ = stop_tx.send(Some(stop)); // receivers live in the tasks joined below
    if let Err(e) = lifecycle.await {
        warn!(namespace = %ns, pod = %name, error = %e, "pod lifecycle task failed");
    }
    let _ = done_tx.send(true); // the reporter is joined right below
    changed.notify_one();
    if let Err(e) = reporter.await {
        warn!(namespace = %ns, pod = %name, error = %e, "status task failed");
    }

    rt.names.lock().expect("names lock").remove(&uid);
    rt.names_changed.notify_one();
    rt.used_ips.lock().expect("ip lock").remove(&ip);
    if let Stop::Delete(_) = stop {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => info!(namespace = %ns, pod = %name, "pod deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                debug!(namespace = %ns, pod = %name, "pod already gone")
            }
            Err(e) => warn!(namespace = %ns, pod = %name, error = %e, "final pod deletion failed"),
        }
        if let Err(e) = std::fs::remove_dir_all(&pod_dir) {
            debug!(path = %pod_dir.display(), error = %e, "pod directory not removed");
        }
    }
}

/// Sets up volumes, runs init containers in order, then all containers until stopped.
async fn lifecycle(
    rt: Arc<Runtime>,
    pod: Pod,
    ip: Ipv4Addr,
    pod_dir: PathBuf,
    view: Arc<Mutex<PodView>>,
    changed: Arc<Notify>,
    mut stop: watch::Receiver<Option<Stop>>,
) {
    let ctx = loop {
        match prepare(&rt, &pod, ip, &pod_dir).await {
            Ok(ctx) => break ctx,
            Err(message) => {
                {
                    let mut guard = view.lock().expect("view lock");
                    let v = &mut *guard;
                    v.message = Some(message.clone());
                    for c in v.containers.iter_mut().chain(v.init_containers.iter_mut()) {
                        c.state = ProcessState::Waiting {
                            reason: "ContainerCreating".into(),
                            message: Some(message.clone()),
                        };
                    }
                }
                changed.notify_one();
                if sleep_or_stop(Duration::from_secs(1), &mut stop)
                    .await
                    .is_some()
                {
                    return;
                }
            }
        }
    };
    {
        let mut v = view.lock().expect("view lock");
        v.sandbox_ready = true;
        v.message = None;
        for c in v.containers.iter_mut() {
            c.state = ProcessState::Waiting {
                reason: "PodInitializing".into(),
                message: None,
            };
        }
    }
    changed.notify_one();
    let ctx = Arc::new(ctx);
    let spec = pod.spec.clone().unwrap_or_default();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let slot = Slot {
            view: view.clone(),
            changed: changed.clone(),
            init: true,
            index: i,
        };
        if !run_container(
            rt.clone(),
            pod.clone(),
            c.clone(),
            ctx.clone(),
            slot,
            stop.clone(),
        )
        .await
        {
            return;
        }
    }
    let mut tasks = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let slot = Slot {
            view: view.clone(),
            changed: changed.clone(),
            init: false,
            index: i,
        };
        tasks.push(tokio::spawn(run_container(
            rt.clone(),
            pod.clone(),
            c.clone(),
            ctx.clone(),
            slot,
            stop.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await; // a panicked container task is already logged by tokio; the pod goes on
    }
}

/// Gathers what the pod refers to and writes its file volumes.
async fn prepare(
    rt: &Runtime,
    pod: &Pod,
    ip: Ipv4Addr,
    pod_dir: &Path,
) -> Result<PodContext, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut ctx = PodContext {
        pod_ip: ip.to_string(),
        host_ip: rt.host_ip.clone(),
        base_env: rt.base_env.clone(),
        ..Default::default()
    };
    let hostname = spec
        .hostname
        .clone()
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    ctx.base_env.push(("HOSTNAME".into(), hostname));

    // ConfigMaps and Secrets named by env and envFrom.
    let containers: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect();
    let mut cm_names = BTreeSet::new();
    let mut secret_names = BTreeSet::new();
    for c in &containers {
        for e in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
            if let Some(r) = &e.config_map_key_ref {
                cm_names.insert(r.name.clone());
            }
            if let Some(r) = &e.secret_key_ref {
                secret_names.insert(r.name.clone());
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cm_names.insert(r.name.clone());
            }
            if let Some(r) = &f.secret_ref {
                secret_names.insert(r.name.clone());
            }
        }
    }
    for n in cm_names {
        if let Some(d) = config_map(rt, &ns, &n).await? {
            ctx.config_maps.insert(n, d);
        }
    }
    for n in secret_names {
        if let Some(d) = secret(rt, &ns, &n).await? {
            ctx.secrets.insert(n, d);
        }
    }

    let plans = plan_volumes(pod).map_err(|e| e.to_string())?;
    let fs_group = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    for (name, plan) in plans {
        let is_host_path = matches!(plan, VolumePlan::HostPath { .. });
        let plan_kind = match plan {
            VolumePlan::Claim { .. } | VolumePlan::EmptyDir => PlanKind::Writable,
            _ => PlanKind::Other,
        };
        let dir = match plan {
            VolumePlan::Claim { claim_name } => claim_dir(rt, &ns, &claim_name).await?,
            VolumePlan::HostPath { path } => path,
            VolumePlan::EmptyDir => pod_dir.join("volumes").join(&name),
            VolumePlan::Files { sources } => {
                let dir = pod_dir.join("volumes").join(&name);
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|e| format!("volume {name}: {e}"))?;
                }
                for s in sources {
                    for (path, content) in files_of(rt, pod, &ctx, &name, s).await? {
                        let file = dir.join(&path);
                        if let Some(parent) = file.parent() {
                            std::fs::create_dir_all(parent)
                                .map_err(|e| format!("volume {name}: {e}"))?;
                        }
                        std::fs::write(&file, content)
                            .map_err(|e| format!("volume {name}: writing {path}: {e}"))?;
                    }
                }
                dir
            }
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("volume {name}: creating {}: {e}", dir.display()))?;
        if matches!(plan_kind, PlanKind::Writable) {
            // As kind's local-path provisioner and the kubelet's emptyDir: writable by all.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| format!("volume {name}: {e}"))?;
        }
        if let (Some(gid), false) = (fs_group, is_host_path) {
            process::apply_fs_group(&dir, gid)
                .map_err(|e| format!("volume {name}: applying fsGroup {gid}: {e}"))?;
        }
        ctx.volume_dirs.insert(name, dir);
    }
    Ok(ctx)
}

async fn config_map(rt: &Runtime, ns: &str, name: &str) -> Result<Option<KeyData>, String> {
    let api: Api<ConfigMap> = Api::namespaced(rt.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(cm) => Ok(cm.map(|cm| {
            let mut data = cm.data.unwrap_or_default();
            for (k, v) in cm.binary_data.unwrap_or_default() {
                data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
            }
            data
        })),
        Err(e) => Err(format!("reading configmap {ns}/{name}: {e}")),
    }
}

async fn secret(rt: &Runtime, ns: &str, name: &str) -> Result<Option<KeyData>, String> {
    let api: Api<Secret> = Api::namespaced(rt.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(s) => Ok(s.map(|s| {
            let mut data: KeyData = s.string_data.unwrap_or_default();
            for (k, v) in s.data.unwrap_or_default() {
                data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
            }
            data
        })),
        Err(e) => Err(format!("reading secret {ns}/{name}: {e}")),
    }
}

/// The host directory of the volume bound to a claim; an error (retried) while unbound.
async fn claim_dir(rt: &Runtime, ns: &str, claim: &str) -> Result<PathBuf, String> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(rt.client.clone(), ns);
    let pvc = pvcs
        .get_opt(claim)
        .await
        .map_err(|e| format!("reading persistentvolumeclaim {ns}/{claim}: {e}"))?
        .ok_or_else(|| format!("persistentvolumeclaim {claim:?} not found"))?;
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|_| bound);
    let pv_name =
        pv_name.ok_or_else(|| format!("persistentvolumeclaim {claim:?} is not bound yet"))?;
    let pvs: Api<PersistentVolume> = Api::all(rt.client.clone());
    let pv = pvs
        .get(&pv_name)
        .await
        .map_err(|e| format!("reading persistentvolume {pv_name}: {e}"))?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .ok_or_else(|| format!("persistentvolume {pv_name} is neither hostPath nor local"))?;
    Ok(PathBuf::from(path))
}

async fn files_of(
    rt: &Runtime,
    pod: &Pod,
    ctx: &PodContext,
    volume: &str,
    source: FileSource,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    match source {
        FileSource::ConfigMap {
            name,
            items,
            optional,
        } => match config_map(rt, &ns, &name).await? {
            Some(data) => {
                key_files(&name, &data, &items).map_err(|e| format!("volume {volume}: {e}"))
            }
            None if optional => Ok(Vec::new()),
            None => Err(format!("volume {volume}: configmap {name:?} not found")),
        },
        FileSource::Secret {
            name,
            items,
            optional,
        } => match secret(rt, &ns, &name).await? {
            Some(data) => {
                key_files(&name, &data, &items).map_err(|e| format!("volume {volume}: {e}"))
            }
            None if optional => Ok(Vec::new()),
            None => Err(format!("volume {volume}: secret {name:?} not found")),
        },
        FileSource::DownwardApi { items } => items
            .into_iter()
            .map(|(path, f)| {
                field_value(pod, &f, ctx)
                    .map(|v| (path, v))
                    .map_err(|e| e.to_string())
            })
            .collect(),
        FileSource::ServiceAccountToken {
            path,
            expiration_seconds,
            audience,
        } => {
            let sa = pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into());
            let api: Api<ServiceAccount> = Api::namespaced(rt.client.clone(), &ns);
            let req = TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences: audience.map(|a| vec![a]),
                    expiration_seconds: Some(expiration_seconds),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: pod.metadata.name.clone(),
                        uid: pod.metadata.uid.clone(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let token = api
                .create_token_request(&sa, &PostParams::default(), &req)
                .await
                .map_err(|e| format!("volume {volume}: token for serviceaccount {ns}/{sa}: {e}"))?;
            Ok(vec![(
                path,
                token.status.and_then(|s| s.token).unwrap_or_default(),
            )])
        }
    }
}

enum PlanKind {
    Writable,
    Other,
}

/// Where a container's view lives in the pod view.
struct Slot {
    view: Arc<Mutex<PodView>>,
    changed: Arc<Notify>,
    init: bool,
    index: usize,
}

impl Slot {
    fn update(&self, f: impl FnOnce(&mut ContainerView)) {
        {
            let mut v = self.view.lock().expect("view lock");
            let list = if self.init {
                &mut v.init_containers
            } else {
                &mut v.containers
            };
            f(&mut list[self.index]);
        }
        self.changed.notify_one();
    }
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<Option<Stop>>) -> Option<Stop> {
    let deadline = Instant::now() + d;
    loop {
        let requested = *stop.borrow();
        if let Some(s) = requested {
            return Some(s);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return None,
            r = stop.changed() => if r.is_err() { return None },
        }
    }
}

enum Outcome {
    Exited(std::process::ExitStatus),
    Stopped(std::process::ExitStatus),
    Unhealthy(std::process::ExitStatus, &'static str),
}

fn exit_of(
    status: std::process::ExitStatus,
    started_at: &Time,
    reason_override: Option<&str>,
) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    let signal = status.signal();
    let exit_code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
    let reason = reason_override.map(str::to_string).unwrap_or_else(|| {
        if exit_code == 0 {
            "Completed".into()
        } else {
            "Error".into()
        }
    });
    Exit {
        exit_code,
        signal,
        reason,
        started_at: Some(started_at.clone()),
        finished_at: now(),
    }
}

/// Runs one container until it ends for good or the pod stops; true when it succeeded (init).
async fn run_container(
    rt: Arc<Runtime>,
    pod: Pod,
    container: Container,
    ctx: Arc<PodContext>,
    slot: Slot,
    mut stop: watch::Receiver<Option<Stop>>,
) -> bool {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let hostname = spec.hostname.clone().unwrap_or_else(|| pod_name.clone());
    let log_dir = rt.pods_dir.join(format!(
        "{ns}_{pod_name}_{}",
        pod.metadata.uid.clone().unwrap_or_default()
    ));
    let log_path = log_dir.join("logs").join(format!("{}.log", container.name));
    let mut backoff = Duration::from_secs(1);
    loop {
        if stop.borrow().is_some() {
            return false;
        }
        let prepared = process_spec(&pod, &container, &rt.images, &ctx).map_err(|e| {
            let reason = if matches!(e, crate::podspec::SpecError::ImageNotMapped { .. }) {
                "ErrImagePull"
            } else {
                "CreateContainerConfigError"
            };
            (reason, e.to_string())
        });
        let probes = prepared.clone().and_then(|_| {
            let p = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
                probe
                    .as_ref()
                    .map(|p| ProbeSpec::from_probe(p, &container, &ctx.pod_ip))
                    .transpose()
            };
            Ok((
                p(&container.startup_probe),
                p(&container.readiness_probe),
                p(&container.liveness_probe),
            ))
            .and_then(|(s, r, l)| match (s, r, l) {
                (Ok(s), Ok(r), Ok(l)) => Ok((s, r, l)),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    Err(("CreateContainerConfigError", e.to_string()))
                }
            })
        });
        let (pspec, (startup, readiness, liveness)) = match (prepared, probes) {
            (Ok(p), Ok(probes)) => (p, probes),
            (Err((reason, message)), _) | (_, Err((reason, message))) => {
                warn!(namespace = %ns, pod = %pod_name, container = %container.name, %message, "cannot start container");
                slot.update(|c| {
                    c.state = ProcessState::Waiting {
                        reason: reason.into(),
                        message: Some(message),
                    }
                });
                if sleep_or_stop(backoff, &mut stop).await.is_some() {
                    return false;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let mut created = Vec::new();
        let spawned = process::spawn(&pspec, &hostname, &log_path, rt.isolate, &mut created);
        rt.created_paths.lock().expect("paths lock").extend(created);
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                warn!(namespace = %ns, pod = %pod_name, container = %container.name, error = %e, "cannot start container");
                slot.update(|c| {
                    c.state = ProcessState::Waiting {
                        reason: "RunContainerError".into(),
                        message: Some(e.to_string()),
                    }
                });
                if sleep_or_stop(backoff, &mut stop).await.is_some() {
                    return false;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let started_at = now();
        let ran_since = Instant::now();
        info!(namespace = %ns, pod = %pod_name, container = %container.name, pid = child.id(), "container started");
        let has_startup = startup.is_some();
        let has_readiness = readiness.is_some();
        slot.update(|c| {
            c.state = ProcessState::Running {
                started_at: started_at.clone(),
            };
            c.started = !has_startup;
            c.ready = !has_startup && !has_readiness && !slot.init;
        });

        let outcome = supervise(
            &mut child,
            &slot,
            &pspec.env,
            startup,
            readiness,
            liveness,
            grace_of(&pod),
            &mut stop,
        )
        .await;
        let (status, reason) = match &outcome {
            Outcome::Exited(s) | Outcome::Stopped(s) => (*s, None),
            Outcome::Unhealthy(s, why) => (*s, Some(*why)),
        };
        let exit = exit_of(status, &started_at, None);
        info!(namespace = %ns, pod = %pod_name, container = %container.name, exit_code = exit.exit_code, reason = reason.unwrap_or(""), "container ended");
        let succeeded = exit.exit_code == 0 && reason.is_none();
        let stopped = matches!(outcome, Outcome::Stopped(_));
        let restart = !stopped && restarts(slot.init, &policy, succeeded);
        slot.update(|c| {
            c.state = ProcessState::Terminated(exit.clone());
            c.ready = false;
            c.started = false;
            c.done = !restart && !stopped;
        });
        if !restart {
            return succeeded && !stopped;
        }
        if ran_since.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        slot.update(|c| {
            c.last_exit = Some(exit.clone());
            c.restart_count += 1;
            if c.restart_count > 1 {
                c.state = ProcessState::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(format!(
                        "back-off {}s restarting failed container",
                        backoff.as_secs()
                    )),
                };
            }
        });
        if sleep_or_stop(backoff, &mut stop).await.is_some() {
            return false;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Startup,
    Readiness,
    Liveness,
}

#[allow(clippy::too_many_arguments)]
async fn supervise(
    child: &mut tokio::process::Child,
    slot: &Slot,
    env: &[(String, String)],
    startup: Option<ProbeSpec>,
    readiness: Option<ProbeSpec>,
    liveness: Option<ProbeSpec>,
    grace: Duration,
    stop: &mut watch::Receiver<Option<Stop>>,
) -> Outcome {
    let begin = Instant::now();
    let mut started = startup.is_none();
    let mut probes: Vec<(Kind, ProbeSpec, ProbeTracker, Instant)> = [
        (Kind::Startup, startup, false),
        (Kind::Readiness, readiness, false),
        (Kind::Liveness, liveness, true),
    ]
    .into_iter()
    .filter_map(|(k, s, healthy)| {
        s.map(|s| {
            let due = begin + s.initial_delay;
            (k, s, ProbeTracker::new(healthy), due)
        })
    })
    .collect();
    let far = Duration::from_secs(3600);
    loop {
        let requested = *stop.borrow();
        if let Some(s) = requested {
            return Outcome::Stopped(terminate(child, s.grace()).await);
        }
        let next = probes
            .iter()
            .filter(|(k, ..)| (*k == Kind::Startup) != started)
            .map(|p| p.3)
            .min()
            .unwrap_or_else(|| Instant::now() + far);
        tokio::select! {
            status = child.wait() => {
                return Outcome::Exited(status.unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(255 << 8)));
            }
            r = stop.changed() => {
                if r.is_err() {
                    return Outcome::Stopped(terminate(child, grace).await);
                }
            }
            _ = tokio::time::sleep_until(next) => {
                let now_i = Instant::now();
                for i in 0..probes.len() {
                    let (kind, spec, _, due) = &probes[i];
                    let (kind, active) = (*kind, (*kind == Kind::Startup) != started);
                    if !active || *due > now_i {
                        continue;
                    }
                    let ok = probe::run(spec, env).await;
                    let (_, spec, tracker, due) = &mut probes[i];
                    *due = Instant::now() + spec.period;
                    let flipped = tracker.record(ok, spec);
                    match (kind, flipped) {
                        (Kind::Startup, Some(true)) => {
                            started = true;
                            let ready_now = !probes.iter().any(|p| p.0 == Kind::Readiness);
                            slot.update(|c| { c.started = true; c.ready = ready_now && !slot.init; });
                            for p in probes.iter_mut().filter(|p| p.0 != Kind::Startup) {
                                p.3 = Instant::now() + p.1.initial_delay;
                            }
                        }
                        (Kind::Startup, Some(false)) => {
                            return Outcome::Unhealthy(terminate(child, grace).await, "StartupProbeFailed");
                        }
                        (Kind::Readiness, Some(r)) => slot.update(|c| c.ready = r),
                        (Kind::Liveness, Some(false)) => {
                            return Outcome::Unhealthy(terminate(child, grace).await, "LivenessProbeFailed");
                        }
                        _ => {}
                    }
                    break; // recompute due times after each probe
                }
            }
        }
    }
}

async fn terminate(child: &mut tokio::process::Child, grace: Duration) -> std::process::ExitStatus {
    match process::terminate(child, grace).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "waiting for a stopped container failed");
            std::os::unix::process::ExitStatusExt::from_raw(137 << 8)
        }
    }
}

/// Reports the pod's status whenever the view changes, until the pod stops.
#[allow(clippy::too_many_arguments)]
async fn report_status(
    rt: Arc<Runtime>,
    api: Api<Pod>,
    name: String,
    uid: String,
    view: Arc<Mutex<PodView>>,
    changed: Arc<Notify>,
    initial: Option<PodStatus>,
    done: watch::Receiver<bool>,
) {
    let mut last: Option<PodStatus> = initial;
    let mut reported: Option<PodStatus> = None;
    loop {
        let stopping = *done.borrow();
        let v = view.lock().expect("view lock").clone();
        let status = pod_status(&v, &now(), last.as_ref());
        let ready = v.containers.iter().all(|c| c.ready) && !v.containers.is_empty();
        if let Some(n) = rt.names.lock().expect("names lock").get_mut(&uid) {
            if n.ready != ready {
                n.ready = ready;
                rt.names_changed.notify_one();
            }
        }
        if reported.as_ref() != Some(&status) {
            let patch = serde_json::json!({ "status": status });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => reported = Some(status.clone()),
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(e) => debug!(pod = %name, error = %e, "status update failed, retrying"),
            }
        }
        last = Some(status);
        if stopping {
            return;
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn restart_policy_decides_whether_a_container_runs_again() {
        assert!(restarts(false, "Always", true));
        assert!(restarts(false, "OnFailure", false));
        assert!(!restarts(false, "OnFailure", true));
        assert!(!restarts(false, "Never", false));
        assert!(restarts(true, "Always", false));
        assert!(!restarts(true, "Always", true));
        assert!(!restarts(true, "Never", false));
    }

    #[test]
    fn deletion_grace_period_overrides_the_pods() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "terminationGracePeriodSeconds": 7}
        }))
        .unwrap();
        assert_eq!(grace_of(&pod), Duration::from_secs(7));
        pod.metadata.deletion_grace_period_seconds = Some(0);
        assert_eq!(grace_of(&pod), Duration::ZERO);
        pod.spec.as_mut().unwrap().termination_grace_period_seconds = None;
        pod.metadata.deletion_grace_period_seconds = None;
        assert_eq!(grace_of(&pod), Duration::from_secs(30));
    }
}
