//! Decides how each pod volume is materialised on the host.
//!
//! Every volume becomes a host directory that is bind-mounted into the container's private
//! mount namespace: a persistent volume claim uses its PersistentVolume's directory (which
//! outlives the pod), ConfigMaps, Secrets, projected and downward-API volumes are written as
//! files into a per-pod directory, an emptyDir is a per-pod directory. Pure planning here;
//! the pod worker does the I/O.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{KeyToPath, ObjectFieldSelector, Pod};

/// How one volume is provided.
#[derive(Clone, Debug, PartialEq)]
pub enum VolumePlan {
    /// The directory of the PersistentVolume bound to this claim.
    Claim { claim_name: String },
    /// A per-pod directory that lives as long as the pod.
    EmptyDir,
    /// A directory of the host, used as it is.
    HostPath { path: PathBuf },
    /// Files written into a per-pod directory.
    Files { sources: Vec<FileSource> },
}

/// One source of files of a ConfigMap, Secret, projected or downwardAPI volume.
#[derive(Clone, Debug, PartialEq)]
pub enum FileSource {
    ConfigMap {
        name: String,
        items: Vec<KeyToPath>,
        optional: bool,
    },
    Secret {
        name: String,
        items: Vec<KeyToPath>,
        optional: bool,
    },
    /// A service account token for the pod's service account (and its kube-root-ca.crt).
    ServiceAccountToken {
        path: String,
        expiration_seconds: i64,
        audience: Option<String>,
    },
    DownwardApi {
        items: Vec<(String, ObjectFieldSelector)>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VolumeError {
    #[error("volume {name:?}: {kind} volumes are not supported by the node agent")]
    Unsupported { name: String, kind: String },
    #[error("key {key:?} not found in {source_name:?}")]
    MissingKey { source_name: String, key: String },
}

/// The plan of every volume of the pod, in spec order.
///
/// # Errors
/// A volume of a kind the node agent cannot provide (iSCSI, CSI, ...).
pub fn plan_volumes(pod: &Pod) -> Result<Vec<(String, VolumePlan)>, VolumeError> {
    let mut plans = Vec::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let plan = if let Some(c) = &v.persistent_volume_claim {
            VolumePlan::Claim {
                claim_name: c.claim_name.clone(),
            }
        } else if v.empty_dir.is_some() {
            VolumePlan::EmptyDir
        } else if let Some(h) = &v.host_path {
            VolumePlan::HostPath {
                path: PathBuf::from(&h.path),
            }
        } else if let Some(cm) = &v.config_map {
            VolumePlan::Files {
                sources: vec![FileSource::ConfigMap {
                    name: cm.name.clone(),
                    items: cm.items.clone().unwrap_or_default(),
                    optional: cm.optional.unwrap_or(false),
                }],
            }
        } else if let Some(s) = &v.secret {
            VolumePlan::Files {
                sources: vec![FileSource::Secret {
                    name: s.secret_name.clone().unwrap_or_default(),
                    items: s.items.clone().unwrap_or_default(),
                    optional: s.optional.unwrap_or(false),
                }],
            }
        } else if let Some(d) = &v.downward_api {
            VolumePlan::Files {
                sources: vec![downward(d.items.iter().flatten())],
            }
        } else if let Some(p) = &v.projected {
            let mut sources = Vec::new();
            for s in p.sources.iter().flatten() {
                if let Some(cm) = &s.config_map {
                    sources.push(FileSource::ConfigMap {
                        name: cm.name.clone(),
                        items: cm.items.clone().unwrap_or_default(),
                        optional: cm.optional.unwrap_or(false),
                    });
                } else if let Some(sec) = &s.secret {
                    sources.push(FileSource::Secret {
                        name: sec.name.clone(),
                        items: sec.items.clone().unwrap_or_default(),
                        optional: sec.optional.unwrap_or(false),
                    });
                } else if let Some(t) = &s.service_account_token {
                    sources.push(FileSource::ServiceAccountToken {
                        path: t.path.clone(),
                        expiration_seconds: t.expiration_seconds.unwrap_or(3607),
                        audience: t.audience.clone(),
                    });
                } else if let Some(d) = &s.downward_api {
                    sources.push(downward(d.items.iter().flatten()));
                } else {
                    return Err(VolumeError::Unsupported {
                        name: v.name.clone(),
                        kind: "this projected source of".into(),
                    });
                }
            }
            VolumePlan::Files { sources }
        } else {
            let kind = serde_json::to_value(v)
                .ok()
                .and_then(|j| {
                    j.as_object()
                        .and_then(|o| o.keys().find(|k| *k != "name").cloned())
                })
                .unwrap_or_else(|| "unknown".into());
            return Err(VolumeError::Unsupported {
                name: v.name.clone(),
                kind,
            });
        };
        plans.push((v.name.clone(), plan));
    }
    Ok(plans)
}

fn downward<'a>(
    items: impl Iterator<Item = &'a k8s_openapi::api::core::v1::DownwardAPIVolumeFile>,
) -> FileSource {
    FileSource::DownwardApi {
        items: items
            .filter_map(|i| i.field_ref.as_ref().map(|f| (i.path.clone(), f.clone())))
            .collect(),
    }
}

/// The files of a ConfigMap or Secret: every key, or only the listed items under their paths.
///
/// # Errors
/// A listed key that the data lacks (unless the item set is optional).
pub fn key_files(
    source_name: &str,
    data: &BTreeMap<String, String>,
    items: &[KeyToPath],
) -> Result<Vec<(String, String)>, VolumeError> {
    if items.is_empty() {
        return Ok(data.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    }
    items
        .iter()
        .map(|item| {
            data.get(&item.key)
                .map(|v| (item.path.clone(), v.clone()))
                .ok_or_else(|| VolumeError::MissingKey {
                    source_name: source_name.to_string(),
                    key: item.key.clone(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "volumes": volumes}}),
        )
        .unwrap()
    }

    #[test]
    fn claims_configmaps_and_empty_dirs_are_planned() {
        let p = pod(json!([
            {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
            {"name": "cfg", "configMap": {"name": "web-config", "items": [{"key": "a", "path": "b"}]}},
            {"name": "tmp", "emptyDir": {}}
        ]));
        let plans = plan_volumes(&p).unwrap();
        assert_eq!(
            plans[0],
            (
                "data".into(),
                VolumePlan::Claim {
                    claim_name: "data-web-0".into()
                }
            )
        );
        assert!(
            matches!(&plans[1].1, VolumePlan::Files { sources } if matches!(&sources[0],
            FileSource::ConfigMap { name, items, optional: false } if name == "web-config" && items.len() == 1))
        );
        assert_eq!(plans[2].1, VolumePlan::EmptyDir);
    }

    #[test]
    fn default_service_account_volume_is_projected_token_ca_and_namespace() {
        let p = pod(
            json!([{"name": "kube-api-access-x", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
            ]}}]),
        );
        let plans = plan_volumes(&p).unwrap();
        let VolumePlan::Files { sources } = &plans[0].1 else {
            panic!("not files")
        };
        assert_eq!(sources.len(), 3);
        assert!(
            matches!(&sources[0], FileSource::ServiceAccountToken { path, expiration_seconds: 3607, .. } if path == "token")
        );
    }

    #[test]
    fn unsupported_volume_kind_is_named() {
        let p = pod(json!([{"name": "x", "iscsi": {"targetPortal": "a", "iqn": "b", "lun": 0}}]));
        assert_eq!(
            plan_volumes(&p),
            Err(VolumeError::Unsupported {
                name: "x".into(),
                kind: "iscsi".into()
            })
        );
    }

    #[test]
    fn key_files_takes_all_keys_or_only_items() {
        let data = BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]);
        assert_eq!(key_files("cm", &data, &[]).unwrap().len(), 2);
        let items = vec![KeyToPath {
            key: "a".into(),
            path: "sub/a.conf".into(),
            ..Default::default()
        }];
        assert_eq!(
            key_files("cm", &data, &items).unwrap(),
            vec![("sub/a.conf".into(), "1".into())]
        );
        let missing = vec![KeyToPath {
            key: "z".into(),
            path: "z".into(),
            ..Default::default()
        }];
        assert!(key_files("cm", &data, &missing).is_err());
    }
}
