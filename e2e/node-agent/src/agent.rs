//! Wiring: node registration and heartbeat, the pod watch that binds pods and drives pod
//! workers, the volume provisioner and the hosts-file writer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Binding, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::hosts::{self, ServiceName};
use crate::node::{self, NodeInfo};
use crate::provision;
use crate::scheduling::{unschedulable, wants_binding, Placed};
use crate::worker::{run_pod, Runtime};

const FIELD_MANAGER: &str = "tokafka-node-agent";

pub struct Config {
    pub node: NodeInfo,
    pub volumes_dir: PathBuf,
    pub hosts_file: Option<PathBuf>,
}

/// Runs the agent until `shutdown` turns true, then stops every pod it runs.
///
/// # Errors
/// Registering the node or the storage class fails.
pub async fn run(
    rt: Arc<Runtime>,
    cfg: Config,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    register_node(&rt.client, &cfg.node).await?;
    ensure_storage_class(&rt.client).await?;
    info!(node = %cfg.node.name, "node registered");

    let mut background: Vec<JoinHandle<()>> = vec![
        tokio::spawn(heartbeat(rt.client.clone(), cfg.node.clone())),
        tokio::spawn(provision_claims(rt.client.clone(), cfg.volumes_dir.clone())),
        tokio::spawn(delete_released_volumes(
            rt.client.clone(),
            cfg.volumes_dir.clone(),
        )),
    ];
    let hosts_task = cfg.hosts_file.clone().map(|path| {
        let (reader, writer) = reflector::store::<Service>();
        let services = watcher(
            Api::<Service>::all(rt.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(writer)
        .touched_objects();
        let rt2 = rt.clone();
        background.push(tokio::spawn(async move {
            futures::pin_mut!(services);
            while let Some(ev) = services.next().await {
                if let Err(e) = ev {
                    debug!(error = %e, "service watch error");
                }
                rt2.names_changed.notify_one();
            }
        }));
        tokio::spawn(write_hosts(
            rt.clone(),
            reader,
            path,
            cfg.node.name.clone(),
            shutdown.clone(),
        ))
    });

    let mut workers: HashMap<String, (watch::Sender<Option<Pod>>, JoinHandle<()>)> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut sched = Scheduler {
        node_name: cfg.node.name.clone(),
        node_labels: node::node(&cfg.node).metadata.labels.unwrap_or_default(),
        placed: HashMap::new(),
        pending: HashMap::new(),
    };
    let mut seen_in_init: HashSet<String> = HashSet::new();
    let pods = watcher(
        Api::<Pod>::all(rt.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    futures::pin_mut!(pods);
    loop {
        let event = tokio::select! {
            ev = pods.try_next() => ev,
            _ = shutdown.changed() => break,
        };
        let event = match event {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => {
                warn!(error = %e, "pod watch error");
                continue;
            }
        };
        workers.retain(|uid, (_, handle)| {
            if handle.is_finished() {
                finished.insert(uid.clone());
                false
            } else {
                true
            }
        });
        match event {
            watcher::Event::Init => seen_in_init.clear(),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                seen_in_init.insert(uid.clone());
                if sched.track(&pod) {
                    sched.retry_pending(&rt.client);
                }
                if wants_binding(&pod) {
                    sched.schedule(&rt.client, pod);
                    continue;
                }
                sched.pending.remove(&uid);
                let ours = pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
                    == Some(cfg.node.name.as_str());
                if !ours || finished.contains(&uid) {
                    continue;
                }
                if !workers.contains_key(&uid) && terminal(&pod) {
                    // Finished before this agent started: never run again, only finalise deletion.
                    if pod.metadata.deletion_timestamp.is_some() {
                        finished.insert(uid);
                        tokio::spawn(finalise_deletion(rt.client.clone(), pod));
                    }
                    continue;
                }
                match workers.get(&uid) {
                    Some((tx, _)) => {
                        let _ = tx.send(Some(pod)); // the worker may be finishing; nothing to tell it then
                    }
                    None => {
                        let (tx, rx) = watch::channel(Some(pod));
                        let handle = tokio::spawn(run_pod(rt.clone(), rx, shutdown.clone()));
                        workers.insert(uid, (tx, handle));
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some((tx, _)) = workers.get(&uid) {
                    let _ = tx.send(None);
                }
                sched.pending.remove(&uid);
                if sched.placed.remove(&uid).is_some() {
                    sched.retry_pending(&rt.client);
                }
            }
            watcher::Event::InitDone => {
                for (uid, (tx, _)) in &workers {
                    if !seen_in_init.contains(uid) {
                        let _ = tx.send(None);
                    }
                }
            }
        }
    }

    info!(pods = workers.len(), "stopping all pods");
    for (_, (_, handle)) in workers {
        let _ = handle.await;
    }
    if let Some(t) = hosts_task {
        let _ = t.await;
    }
    for t in background {
        t.abort();
    }
    Ok(())
}

/// The binding side of the agent: which pods are on the node (including those just bound,
/// before their update arrives, as kube-scheduler assumes them) and which wait for room.
struct Scheduler {
    node_name: String,
    node_labels: BTreeMap<String, String>,
    placed: HashMap<String, Placed>,
    /// Unschedulable pods and the reason last reported on them.
    pending: HashMap<String, (Pod, &'static str)>,
}

impl Scheduler {
    /// Records where `pod` is; true when it left the node (room for pending pods).
    fn track(&mut self, pod: &Pod) -> bool {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        if node.is_empty() {
            return false; // unbound: an assumed placement stays until the binding shows
        }
        if node == self.node_name && !terminal(pod) {
            self.placed.insert(uid, placed(pod));
            false
        } else {
            self.placed.remove(&uid).is_some()
        }
    }

    /// Binds `pod` when it fits, else marks it unschedulable (once per reason).
    fn schedule(&mut self, client: &Client, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let placed: Vec<Placed> = self.placed.values().cloned().collect();
        match unschedulable(&pod, &self.node_labels, &placed) {
            None => {
                self.pending.remove(&uid);
                self.placed.insert(uid, self::placed(&pod));
                tokio::spawn(bind(client.clone(), pod, self.node_name.clone()));
            }
            Some(reason) => {
                let reported = self.pending.get(&uid).map(|(_, r)| *r);
                if reported != Some(reason) {
                    tokio::spawn(report_unschedulable(client.clone(), pod.clone(), reason));
                }
                self.pending.insert(uid, (pod, reason));
            }
        }
    }

    fn retry_pending(&mut self, client: &Client) {
        let waiting: Vec<Pod> = self.pending.values().map(|(p, _)| p.clone()).collect();
        for pod in waiting {
            self.schedule(client, pod);
        }
    }
}

fn placed(pod: &Pod) -> Placed {
    Placed {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
    }
}

/// Sets PodScheduled=False/Unschedulable with kube-scheduler's message.
async fn report_unschedulable(client: Client, pod: Pod, reason: &'static str) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    info!(namespace = %ns, pod = %name, reason, "pod unschedulable");
    let patch = serde_json::json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": reason,
        "lastTransitionTime": Time(Timestamp::now()),
    }]}});
    if let Err(e) = Api::<Pod>::namespaced(client, &ns)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        debug!(namespace = %ns, pod = %name, error = %e, "reporting unschedulable pod failed");
    }
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// Removes a deleted pod whose containers are long gone (the kubelet's last word on a pod).
async fn finalise_deletion(client: Client, pod: Pod) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let dp = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match Api::<Pod>::namespaced(client, &ns).delete(&name, &dp).await {
        Ok(_) => info!(namespace = %ns, pod = %name, "finished pod deleted"),
        Err(e) => debug!(namespace = %ns, pod = %name, error = %e, "deleting finished pod failed"),
    }
}

async fn register_node(client: &Client, info: &NodeInfo) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    nodes
        .patch(&info.name, &pp, &Patch::Apply(&node::node(info)))
        .await
        .map_err(|e| anyhow::anyhow!("registering node {}: {e}", info.name))?;
    patch_node_status(&nodes, info, &Time(Timestamp::now())).await?;
    Ok(())
}

async fn patch_node_status(nodes: &Api<Node>, info: &NodeInfo, since: &Time) -> anyhow::Result<()> {
    let status = node::node_status(info, &Time(Timestamp::now()), since);
    nodes
        .patch_status(
            &info.name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "status": status })),
        )
        .await
        .map_err(|e| anyhow::anyhow!("updating status of node {}: {e}", info.name))?;
    Ok(())
}

async fn ensure_storage_class(client: &Client) -> anyhow::Result<()> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    if classes.get_opt(provision::STORAGE_CLASS).await?.is_none() {
        match classes
            .create(&PostParams::default(), &provision::storage_class())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "creating storage class {}: {e}",
                    provision::STORAGE_CLASS
                ))
            }
        }
    }
    Ok(())
}

/// Renews the node's Lease every 10 s and its Ready status every 20 s.
async fn heartbeat(client: Client, info: NodeInfo) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, node::LEASE_NAMESPACE);
    let since = Time(Timestamp::now());
    let mut tick = 0u64;
    loop {
        let lease = node::lease(&info.name, &MicroTime(Timestamp::now()));
        if let Err(e) = leases
            .patch(
                &info.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
        {
            warn!(error = %e, "renewing node lease failed");
        }
        if tick.is_multiple_of(2) {
            if let Err(e) = patch_node_status(&nodes, &info, &since).await {
                warn!(error = %e, "node status heartbeat failed");
            }
        }
        tick += 1;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

async fn bind(client: Client, pod: Pod, node_name: String) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node_name.clone()),
            ..Default::default()
        },
    };
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    match pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => info!(namespace = %ns, pod = %name, node = %node_name, "pod bound"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            debug!(namespace = %ns, pod = %name, "pod already bound")
        }
        Err(e) => warn!(namespace = %ns, pod = %name, error = %e, "binding pod failed"),
    }
}

/// Creates a pre-bound volume for every claim that waits for one.
async fn provision_claims(client: Client, root: PathBuf) {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let claims = watcher(
        Api::<PersistentVolumeClaim>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects();
    futures::pin_mut!(claims);
    while let Some(ev) = claims.next().await {
        let pvc = match ev {
            Ok(pvc) => pvc,
            Err(e) => {
                debug!(error = %e, "claim watch error");
                continue;
            }
        };
        if !provision::wants_volume(&pvc) {
            continue;
        }
        let Some(pv) = provision::volume_for_claim(&pvc, &root) else {
            continue;
        };
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        match pvs.create(&PostParams::default(), &pv).await {
            Ok(_) => {
                info!(claim = pvc.metadata.name.as_deref().unwrap_or(""), volume = %pv_name, "volume provisioned")
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => warn!(volume = %pv_name, error = %e, "provisioning volume failed"),
        }
    }
}

/// Deletes our volumes (object and directory) once their claim is gone.
async fn delete_released_volumes(client: Client, root: PathBuf) {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let events = watcher(pvs.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(events);
    while let Some(ev) = events.next().await {
        let Ok(pv) = ev else { continue };
        if !provision::released(&pv) {
            continue;
        }
        let name = pv.metadata.name.clone().unwrap_or_default();
        if let Some(path) = pv
            .spec
            .as_ref()
            .and_then(|s| s.host_path.as_ref())
            .map(|h| PathBuf::from(&h.path))
        {
            if path.starts_with(&root) {
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    debug!(path = %path.display(), error = %e, "volume directory not removed");
                }
            }
        }
        match pvs.delete(&name, &Default::default()).await {
            Ok(_) => info!(volume = %name, "released volume deleted"),
            Err(e) => debug!(volume = %name, error = %e, "deleting released volume failed"),
        }
    }
}

/// Keeps the agent's block of the hosts file current; removes it on shutdown.
async fn write_hosts(
    rt: Arc<Runtime>,
    services: Store<Service>,
    path: PathBuf,
    owner: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut written: Option<BTreeMap<String, std::collections::BTreeSet<String>>> = None;
    loop {
        let pods: Vec<_> = rt
            .names
            .lock()
            .expect("names lock")
            .values()
            .cloned()
            .collect();
        let svcs: Vec<ServiceName> = services
            .state()
            .iter()
            .map(|s| ServiceName {
                name: s.metadata.name.clone().unwrap_or_default(),
                namespace: s.metadata.namespace.clone().unwrap_or_default(),
                selector: s
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.clone())
                    .unwrap_or_default(),
                publish_not_ready: s
                    .spec
                    .as_ref()
                    .and_then(|s| s.publish_not_ready_addresses)
                    .unwrap_or(false),
                headless: s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None"),
            })
            .collect();
        let entries = hosts::entries(&pods, &svcs);
        if written.as_ref() != Some(&entries) {
            if let Err(e) = rewrite(&path, &owner, Some(&entries)) {
                warn!(path = %path.display(), error = %e, "updating hosts file failed");
            } else {
                written = Some(entries);
            }
        }
        tokio::select! {
            _ = rt.names_changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => {
                // Pods stop after this; their names go with the block.
                if let Err(e) = rewrite(&path, &owner, None) {
                    warn!(path = %path.display(), error = %e, "removing hosts block failed");
                }
                return;
            }
        }
    }
}

/// Rewrites the hosts file in place (it may be a bind mount, so no rename).
pub fn rewrite(
    path: &std::path::Path,
    owner: &str,
    entries: Option<&BTreeMap<String, std::collections::BTreeSet<String>>>,
) -> std::io::Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let updated = hosts::splice(&existing, owner, entries);
    if updated != existing {
        std::fs::write(path, updated)?;
    }
    Ok(())
}
