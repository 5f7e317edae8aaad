//! A volume provisioner: a PersistentVolume (a host directory) for every pending claim.
//!
//! The local cluster has no storage driver. The agent installs a default StorageClass
//! `standard` (kind's name for its default class, so manifests work on both) with provisioner
//! [`PROVISIONER`] and immediate binding, and creates a pre-bound hostPath PersistentVolume for
//! each claim it finds pending; kube-controller-manager's PV controller then binds the two.
//! The directory lives under the agent's volume root, keyed by the claim's UID, so it survives
//! pod restarts and rescheduling and goes only when the claim is deleted.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

pub const PROVISIONER: &str = "tokafka.io/node-agent";
pub const STORAGE_CLASS: &str = "standard";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// The default StorageClass the agent serves.
pub fn storage_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(STORAGE_CLASS.into()),
            annotations: Some(BTreeMap::from([(
                "storageclass.kubernetes.io/is-default-class".into(),
                "true".into(),
            )])),
            ..Default::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("Immediate".into()),
        ..Default::default()
    }
}

/// Whether the claim waits for this provisioner: pending, unbound, of our class (or none).
pub fn wants_volume(pvc: &PersistentVolumeClaim) -> bool {
    let spec = pvc.spec.as_ref();
    let pending = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
        == "Pending";
    let unbound = spec
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
        .is_empty();
    let class = spec.and_then(|s| s.storage_class_name.as_deref());
    let ours = matches!(class, None | Some("") | Some(STORAGE_CLASS));
    pending
        && unbound
        && ours
        && pvc.metadata.deletion_timestamp.is_none()
        && pvc.metadata.uid.is_some()
}

/// The PersistentVolume for `pvc`, with its directory under `root`.
pub fn volume_for_claim(pvc: &PersistentVolumeClaim, root: &Path) -> Option<PersistentVolume> {
    let uid = pvc.metadata.uid.as_ref()?;
    let spec = pvc.spec.as_ref()?;
    let name = format!("pvc-{uid}");
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .unwrap_or_else(|| Quantity("1Gi".into()));
    Some(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.into(),
                PROVISIONER.into(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".into(), storage)])),
            access_modes: Some(
                spec.access_modes
                    .clone()
                    .unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            ),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            storage_class_name: spec.storage_class_name.clone(),
            volume_mode: Some("Filesystem".into()),
            host_path: Some(HostPathVolumeSource {
                path: root.join(&name).to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: pvc.metadata.namespace.clone(),
                name: pvc.metadata.name.clone(),
                uid: Some(uid.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Whether a volume is ours and its claim is gone, so volume and directory can be deleted.
pub fn released(pv: &PersistentVolume) -> bool {
    let ours = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY))
        .map(String::as_str)
        == Some(PROVISIONER);
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    let delete = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        == Some("Delete");
    ours && delete && phase == Some("Released")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(v: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(v).unwrap()
    }

    fn pending() -> PersistentVolumeClaim {
        claim(json!({
            "metadata": {"name": "data-web-0", "namespace": "ns", "uid": "u-1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                     "resources": {"requests": {"storage": "2Gi"}}},
            "status": {"phase": "Pending"}
        }))
    }

    #[test]
    fn pending_claim_of_our_class_gets_a_prebound_volume() {
        let pvc = pending();
        assert!(wants_volume(&pvc));
        let pv = volume_for_claim(&pvc, Path::new("/vols")).unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u-1"));
        let spec = pv.spec.unwrap();
        assert_eq!(spec.host_path.unwrap().path, "/vols/pvc-u-1");
        assert_eq!(spec.capacity.unwrap()["storage"], Quantity("2Gi".into()));
        let r = spec.claim_ref.unwrap();
        assert_eq!(
            (r.namespace.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (Some("ns"), Some("data-web-0"), Some("u-1"))
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
    }

    #[test]
    fn bound_or_foreign_claims_are_left_alone() {
        let mut pvc = pending();
        pvc.spec.as_mut().unwrap().volume_name = Some("pv-1".into());
        assert!(!wants_volume(&pvc));
        let mut pvc = pending();
        pvc.spec.as_mut().unwrap().storage_class_name = Some("fast-ssd".into());
        assert!(!wants_volume(&pvc));
        let mut pvc = pending();
        pvc.status.as_mut().unwrap().phase = Some("Bound".into());
        assert!(!wants_volume(&pvc));
    }

    #[test]
    fn only_our_released_volumes_are_deleted() {
        let mut pv = volume_for_claim(&pending(), Path::new("/v")).unwrap();
        assert!(!released(&pv));
        pv.status = Some(k8s_openapi::api::core::v1::PersistentVolumeStatus {
            phase: Some("Released".into()),
            ..Default::default()
        });
        assert!(released(&pv));
        pv.metadata.annotations = None;
        assert!(!released(&pv));
    }
}
