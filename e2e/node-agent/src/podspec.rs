//! Turns a pod's container spec into the local process that stands for it.
//!
//! Pure: the caller fetches what the pod refers to (ConfigMaps, Secrets, volume directories)
//! and passes it in; this module decides program, arguments, environment and mounts the way
//! the kubelet would (`$(VAR)` expansion, `envFrom` before `env`, field references).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, EnvVar, ObjectFieldSelector, Pod};

use crate::images::ImageMap;

/// What to run for one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    pub mounts: Vec<Mount>,
    /// Who the process runs as; None: as the agent (root).
    pub user: Option<User>,
}

/// User and groups of a process, from the pod's and container's security contexts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: `fsGroup` and `supplementalGroups`.
    pub groups: Vec<u32>,
}

/// The uid that stands for an image's non-root USER, which the agent cannot know.
pub const NON_ROOT_UID: u32 = 65534;

/// A bind mount of a host path at the container's mount path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Data of a ConfigMap or Secret by key (Secret values decoded, lossily, as UTF-8).
pub type KeyData = BTreeMap<String, String>;

/// Everything a pod refers to, fetched by the caller.
#[derive(Clone, Debug, Default)]
pub struct PodContext {
    pub pod_ip: String,
    pub host_ip: String,
    pub config_maps: BTreeMap<String, KeyData>,
    pub secrets: BTreeMap<String, KeyData>,
    /// Host directory of each pod volume, by volume name.
    pub volume_dirs: BTreeMap<String, PathBuf>,
    /// Environment every container starts with (PATH, HOSTNAME, KUBERNETES_SERVICE_*...).
    pub base_env: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("image {image:?} is not mapped to a local program (start the node agent with --image {image}=PATH)")]
    ImageNotMapped { image: String },
    #[error("configmap {name:?} not found")]
    MissingConfigMap { name: String },
    #[error("secret {name:?} not found")]
    MissingSecret { name: String },
    #[error("couldn't find key {key} in {kind} {name:?}")]
    MissingKey {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("field path {0:?} is not supported by the node agent")]
    UnsupportedFieldPath(String),
    #[error("volume mount {0:?} names no volume of the pod")]
    UnknownVolume(String),
    #[error("resource quantity {0:?} cannot be evaluated")]
    BadQuantity(String),
    #[error("container {0:?} has no image")]
    NoImage(String),
}

/// Decides the process of `container` in `pod`.
///
/// # Errors
/// An unmapped image, a reference to a missing ConfigMap/Secret/key that is not optional,
/// an unsupported field path or a mount of an unknown volume.
pub fn process_spec(
    pod: &Pod,
    container: &Container,
    images: &ImageMap,
    ctx: &PodContext,
) -> Result<ProcessSpec, SpecError> {
    let image = container
        .image
        .as_deref()
        .ok_or_else(|| SpecError::NoImage(container.name.clone()))?;
    let image_program = images
        .resolve(image)
        .ok_or_else(|| SpecError::ImageNotMapped {
            image: image.to_string(),
        })?;

    let env = container_env(pod, container, ctx)?;
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter().flatten().map(|s| expand(s, &env)).collect()
    };
    let command = expand_all(&container.command);
    let args = expand_all(&container.args);
    let (program, mut argv) = match command.split_first() {
        None => (image_program.to_path_buf(), Vec::new()),
        Some((first, rest)) => (entrypoint(first, image_program), rest.to_vec()),
    };
    argv.extend(args);

    let mut mounts = Vec::new();
    for vm in container.volume_mounts.iter().flatten() {
        let dir = ctx
            .volume_dirs
            .get(&vm.name)
            .ok_or_else(|| SpecError::UnknownVolume(vm.name.clone()))?;
        let source = match vm.sub_path.as_deref() {
            Some(sub) if !sub.is_empty() => dir.join(sub),
            _ => dir.clone(),
        };
        mounts.push(Mount {
            source,
            target: PathBuf::from(&vm.mount_path),
            read_only: vm.read_only.unwrap_or(false),
        });
    }

    let user = user(pod, container);
    let mut env = env;
    if !env.iter().any(|(n, _)| n == "HOME") {
        // As a runtime does for an image user without a passwd entry: root's home, else "/".
        let home = if user.as_ref().is_some_and(|u| u.uid != 0) {
            "/"
        } else {
            "/root"
        };
        env.insert(0, ("HOME".to_string(), home.to_string()));
    }
    Ok(ProcessSpec {
        program,
        args: argv,
        env,
        working_dir: container.working_dir.as_ref().map(PathBuf::from),
        mounts,
        user,
    })
}

/// The user of a container: `runAsUser`/`runAsGroup` (container over pod), plus `fsGroup` and
/// `supplementalGroups`. `runAsNonRoot` without a uid runs as [`NON_ROOT_UID`], since the
/// image's USER is unknown here. None when nothing asks for a user (the process runs as root).
pub fn user(pod: &Pod, container: &Container) -> Option<User> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group));
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or(pod_sc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    let mut groups: Vec<u32> = pod_sc
        .into_iter()
        .flat_map(|s| {
            s.fs_group
                .into_iter()
                .chain(s.supplemental_groups.iter().flatten().copied())
        })
        .filter_map(|g| u32::try_from(g).ok())
        .collect();
    groups.dedup();
    let uid = match uid {
        Some(u) => u32::try_from(u).ok()?,
        None if non_root => NON_ROOT_UID,
        None if gid.is_none() && groups.is_empty() => return None,
        None => 0,
    };
    let gid = gid
        .and_then(|g| u32::try_from(g).ok())
        .unwrap_or(if uid == 0 { 0 } else { uid });
    Some(User { uid, gid, groups })
}

/// `command[0]` naming the image's own program (by path or file name) runs the mapped build;
/// anything else (`sh`, `/bin/sleep`) runs from the host, which stands in for the image's filesystem.
fn entrypoint(first: &str, image_program: &Path) -> PathBuf {
    let first_path = Path::new(first);
    if first_path == image_program || first_path.file_name() == image_program.file_name() {
        image_program.to_path_buf()
    } else {
        first_path.to_path_buf()
    }
}

/// The container's environment: base, then `envFrom` in order, then `env` in order, with
/// `$(VAR)` in values expanded against what is defined before.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    ctx: &PodContext,
) -> Result<Vec<(String, String)>, SpecError> {
    let mut env: Vec<(String, String)> = ctx.base_env.clone();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (data, optional) = if let Some(r) = &from.config_map_ref {
            (
                lookup(&ctx.config_maps, &r.name, "configmap"),
                r.optional.unwrap_or(false),
            )
        } else if let Some(r) = &from.secret_ref {
            (
                lookup(&ctx.secrets, &r.name, "secret"),
                r.optional.unwrap_or(false),
            )
        } else {
            continue;
        };
        match data {
            Ok(data) => {
                for (k, v) in data {
                    set(&mut env, format!("{prefix}{k}"), v.clone());
                }
            }
            Err(_) if optional => {}
            Err(e) => return Err(e),
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(pod, container, var, &env, ctx)? {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

fn env_value(
    pod: &Pod,
    container: &Container,
    var: &EnvVar,
    env: &[(String, String)],
    ctx: &PodContext,
) -> Result<Option<String>, SpecError> {
    let Some(from) = &var.value_from else {
        return Ok(Some(expand(var.value.as_deref().unwrap_or(""), env)));
    };
    if let Some(f) = &from.field_ref {
        return field_value(pod, f, ctx).map(Some);
    }
    if let Some(r) = &from.config_map_key_ref {
        return key_value(
            &ctx.config_maps,
            "configmap",
            &r.name,
            &r.key,
            r.optional.unwrap_or(false),
        );
    }
    if let Some(r) = &from.secret_key_ref {
        return key_value(
            &ctx.secrets,
            "secret",
            &r.name,
            &r.key,
            r.optional.unwrap_or(false),
        );
    }
    if let Some(r) = &from.resource_field_ref {
        // What the container asked for; without a limit the kubelet reports node capacity.
        let (kind, res) = r
            .resource
            .split_once('.')
            .unwrap_or(("limits", r.resource.as_str()));
        let resources = container.resources.as_ref();
        let asked = match kind {
            "requests" => resources.and_then(|r| r.requests.as_ref()),
            _ => resources.and_then(|r| r.limits.as_ref()),
        }
        .and_then(|m| m.get(res))
        .map(|q| q.0.clone());
        let value = asked.unwrap_or_else(|| {
            if res == "cpu" {
                NODE_CPU.into()
            } else {
                NODE_MEMORY.into()
            }
        });
        let divisor = r.divisor.as_ref().map_or("1", |d| d.0.as_str());
        return resource_value(&value, divisor)
            .map(Some)
            .ok_or_else(|| SpecError::BadQuantity(format!("{value} / {divisor}")));
    }
    Ok(None)
}

fn lookup<'a>(
    all: &'a BTreeMap<String, KeyData>,
    name: &str,
    kind: &'static str,
) -> Result<&'a KeyData, SpecError> {
    all.get(name).ok_or_else(|| match kind {
        "secret" => SpecError::MissingSecret {
            name: name.to_string(),
        },
        _ => SpecError::MissingConfigMap {
            name: name.to_string(),
        },
    })
}

fn key_value(
    all: &BTreeMap<String, KeyData>,
    kind: &'static str,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, SpecError> {
    match lookup(all, name, kind).and_then(|d| {
        d.get(key).cloned().ok_or_else(|| SpecError::MissingKey {
            kind,
            name: name.to_string(),
            key: key.to_string(),
        })
    }) {
        Ok(v) => Ok(Some(v)),
        Err(_) if optional => Ok(None),
        Err(e) => Err(e),
    }
}

/// The value of a downward-API field path (env `fieldRef` and downwardAPI volume items).
pub fn field_value(
    pod: &Pod,
    f: &ObjectFieldSelector,
    ctx: &PodContext,
) -> Result<String, SpecError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let path = f.field_path.as_str();
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(
            map.as_ref()
                .and_then(|m| m.get(key))
                .cloned()
                .unwrap_or_default(),
        )
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.clone(),
        "metadata.labels" => render_map(&meta.labels),
        "metadata.annotations" => render_map(&meta.annotations),
        _ => keyed("metadata.labels['", &meta.labels)
            .or_else(|| keyed("metadata.annotations['", &meta.annotations))
            .ok_or_else(|| SpecError::UnsupportedFieldPath(path.to_string()))?,
    };
    Ok(value)
}

/// `key="value"` lines, the downward API's rendering of labels and annotations.
fn render_map(map: &Option<BTreeMap<String, String>>) -> String {
    map.iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
    match env.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    }
}

/// Node capacity reported when a container sets no limit (the agent's node has no real limits).
const NODE_CPU: &str = "2";
const NODE_MEMORY: &str = "16Gi";

/// A resource quantity (`500m`, `1Gi`, `2e3`) as a number, in millis of its unit.
fn quantity_millis(q: &str) -> Option<u128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    // Work in units of 10^-9 to keep fractions like 0.5 and suffixes like "n" exact.
    let nanos_of = |digits: &str, scale: u32| -> Option<u128> {
        let mut v: u128 = 0;
        for (i, c) in digits.chars().take(scale as usize).enumerate() {
            v += u128::from(c.to_digit(10)?) * 10u128.pow(scale - 1 - i as u32);
        }
        Some(v)
    };
    let whole: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let nanos = whole * 1_000_000_000 + nanos_of(frac, 9)?;
    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        s if s.starts_with(['e', 'E']) => (10u128.checked_pow(s[1..].parse().ok()?)?, 1),
        _ => return None,
    };
    // nanos * mul / div is in 10^-9 units; millis = that / 10^6.
    Some(nanos.checked_mul(mul)? / div / 1_000_000)
}

/// `value / divisor`, rounded up, as the kubelet renders a `resourceFieldRef`.
pub fn resource_value(value: &str, divisor: &str) -> Option<String> {
    let v = quantity_millis(value)?;
    let d = quantity_millis(divisor).filter(|d| *d > 0)?;
    Some(v.div_ceil(d).to_string())
}

/// Kubernetes' `$(VAR)` expansion: a defined `$(VAR)` is replaced, an undefined one is kept,
/// `$$` is a literal `$`.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.iter().rev().find(|(n, _)| n == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMapKeySelector, EnvVarSource, PodSpec, VolumeMount};
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "node-a", "containers": []}
        }))
        .unwrap()
    }

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    fn images() -> ImageMap {
        ImageMap::new(vec!["app:dev=/build/app".parse().unwrap()])
    }

    fn ctx() -> PodContext {
        PodContext {
            pod_ip: "127.1.0.7".into(),
            host_ip: "127.0.0.1".into(),
            config_maps: BTreeMap::from([(
                "cfg".into(),
                BTreeMap::from([("mode".into(), "fast".into())]),
            )]),
            volume_dirs: BTreeMap::from([("data".into(), PathBuf::from("/pv/1"))]),
            base_env: vec![("PATH".into(), "/bin".into())],
            ..Default::default()
        }
    }

    #[test]
    fn image_without_command_runs_the_mapped_program_with_args() {
        let c = container(json!({"name": "c", "image": "app:dev", "args": ["--x", "1"]}));
        let spec = process_spec(&pod(), &c, &images(), &ctx()).unwrap();
        assert_eq!(spec.program, PathBuf::from("/build/app"));
        assert_eq!(spec.args, vec!["--x", "1"]);
    }

    #[test]
    fn command_naming_the_image_program_runs_the_build() {
        let c = container(
            json!({"name": "c", "image": "app:dev", "command": ["/usr/bin/app", "serve"], "args": ["-v"]}),
        );
        let spec = process_spec(&pod(), &c, &images(), &ctx()).unwrap();
        assert_eq!(spec.program, PathBuf::from("/build/app"));
        assert_eq!(spec.args, vec!["serve", "-v"]);
    }

    #[test]
    fn command_naming_a_host_program_runs_it() {
        let c = container(
            json!({"name": "c", "image": "app:dev", "command": ["sh", "-c", "echo $(POD)"],
            "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}),
        );
        let spec = process_spec(&pod(), &c, &images(), &ctx()).unwrap();
        assert_eq!(spec.program, PathBuf::from("sh"));
        assert_eq!(spec.args, vec!["-c", "echo web-0"]);
    }

    #[test]
    fn unmapped_image_is_an_error_that_says_how_to_map_it() {
        let c = container(json!({"name": "c", "image": "other:1"}));
        let err = process_spec(&pod(), &c, &images(), &ctx()).unwrap_err();
        assert_eq!(
            err,
            SpecError::ImageNotMapped {
                image: "other:1".into()
            }
        );
        assert!(err.to_string().contains("--image other:1=PATH"));
    }

    #[test]
    fn env_resolves_field_refs_configmap_keys_and_expansion() {
        let c = container(json!({"name": "c", "image": "app:dev", "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "ADDR", "value": "$(POD_IP):9092 $(UNDEFINED) $$(POD_IP)"}
        ]}));
        let env = container_env(&pod(), &c, &ctx()).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/bin"));
        assert_eq!(get("POD_IP"), Some("127.1.0.7"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("MODE"), Some("fast"));
        assert_eq!(get("ADDR"), Some("127.1.0.7:9092 $(UNDEFINED) $(POD_IP)"));
    }

    #[test]
    fn missing_configmap_key_fails_unless_optional() {
        let mut c = Container {
            name: "c".into(),
            image: Some("app:dev".into()),
            ..Default::default()
        };
        let var = |optional| EnvVar {
            name: "X".into(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "cfg".into(),
                    key: "nope".into(),
                    optional,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        c.env = Some(vec![var(None)]);
        assert!(matches!(
            container_env(&pod(), &c, &ctx()),
            Err(SpecError::MissingKey { .. })
        ));
        c.env = Some(vec![var(Some(true))]);
        let env = container_env(&pod(), &c, &ctx()).unwrap();
        assert!(!env.iter().any(|(n, _)| n == "X"));
    }

    #[test]
    fn env_from_configmap_applies_prefix_and_env_overrides_it() {
        let c = container(json!({"name": "c", "image": "app:dev",
            "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "cfg"}}],
            "env": [{"name": "CFG_mode", "value": "slow"}]}));
        let env = container_env(&pod(), &c, &ctx()).unwrap();
        assert_eq!(env.iter().filter(|(n, _)| n == "CFG_mode").count(), 1);
        assert!(env.contains(&("CFG_mode".into(), "slow".into())));
    }

    #[test]
    fn volume_mounts_map_to_volume_dirs_with_sub_path() {
        let mut c = Container {
            name: "c".into(),
            image: Some("app:dev".into()),
            ..Default::default()
        };
        c.volume_mounts = Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: "/var/lib/app".into(),
            sub_path: Some("logs".into()),
            read_only: Some(true),
            ..Default::default()
        }]);
        let spec = process_spec(&pod(), &c, &images(), &ctx()).unwrap();
        assert_eq!(
            spec.mounts,
            vec![Mount {
                source: "/pv/1/logs".into(),
                target: "/var/lib/app".into(),
                read_only: true
            }]
        );
        c.volume_mounts.as_mut().unwrap()[0].name = "missing".into();
        assert_eq!(
            process_spec(&pod(), &c, &images(), &ctx()),
            Err(SpecError::UnknownVolume("missing".into()))
        );
    }

    #[test]
    fn resource_field_refs_are_rounded_up_by_their_divisor() {
        assert_eq!(resource_value("500m", "1").as_deref(), Some("1"));
        assert_eq!(resource_value("2", "1m").as_deref(), Some("2000"));
        assert_eq!(resource_value("1Gi", "1").as_deref(), Some("1073741824"));
        assert_eq!(resource_value("1Gi", "1Mi").as_deref(), Some("1024"));
        assert_eq!(resource_value("1.5G", "1M").as_deref(), Some("1500"));
        assert_eq!(resource_value("1e3", "1").as_deref(), Some("1000"));
        assert_eq!(resource_value("lots", "1"), None);
        assert_eq!(resource_value("1", "0"), None);
    }

    #[test]
    fn resource_field_ref_reads_the_containers_limit() {
        let c = container(json!({"name": "c", "image": "app:dev",
        "resources": {"limits": {"memory": "512Mi"}},
        "env": [
            {"name": "MEM_MB", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}
        ]}));
        let env = container_env(&pod(), &c, &ctx()).unwrap();
        assert!(env.contains(&("MEM_MB".into(), "512".into())));
        assert!(env.contains(&("CPUS".into(), "2".into())));
    }

    #[test]
    fn security_context_sets_user_and_groups_container_over_pod() {
        let mut p = pod();
        p.spec.as_mut().unwrap().security_context = Some(
            serde_json::from_value(json!({"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000}))
                .unwrap(),
        );
        let c = container(json!({"name": "c", "securityContext": {"runAsUser": 1001}}));
        assert_eq!(
            user(&p, &c),
            Some(User {
                uid: 1001,
                gid: 3000,
                groups: vec![2000]
            })
        );
    }

    #[test]
    fn no_security_context_runs_as_the_agent_and_non_root_without_uid_runs_as_nobody() {
        let c = container(json!({"name": "c"}));
        assert_eq!(user(&pod(), &c), None);
        let c = container(json!({"name": "c", "securityContext": {"runAsNonRoot": true}}));
        assert_eq!(
            user(&pod(), &c),
            Some(User {
                uid: NON_ROOT_UID,
                gid: NON_ROOT_UID,
                groups: vec![]
            })
        );
    }

    #[test]
    fn expansion_handles_edge_cases() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("$(A)$(A)", &env), "11");
        assert_eq!(expand("cost $5", &env), "cost $5");
        assert_eq!(expand("open $(A", &env), "open $(A");
        assert_eq!(expand("", &env), "");
        let _ = PodSpec::default();
    }
}
