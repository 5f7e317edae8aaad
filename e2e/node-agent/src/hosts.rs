//! Stable DNS names through a marked block of /etc/hosts that the node agent owns.
//!
//! There is no cluster DNS: the agent writes the names CoreDNS would serve, between `# BEGIN tokafka-node-agent NODE` and
//! `# END tokafka-node-agent NODE`:
//! - `pod.subdomain.namespace.svc.cluster.local` for a pod with a hostname whose subdomain names
//!   a headless Service selecting it, once the pod is ready (at once with
//!   `publishNotReadyAddresses`), as for StatefulSet pods;
//! - `service.namespace.svc.cluster.local` for every Service with a selector, resolving to the
//!   addresses of its ready pods (all of them with `publishNotReadyAddresses`): there are no
//!   ClusterIPs, so clients reach the pods directly.
//!
//! Nothing outside that block is touched, and the block is
//! removed when the agent stops. Pure rendering here; the agent writes the file.

use std::collections::{BTreeMap, BTreeSet};

pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// What naming needs of a pod the agent runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodName {
    pub ip: String,
    pub namespace: String,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
}

/// What naming needs of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceName {
    pub name: String,
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    pub publish_not_ready: bool,
    /// `clusterIP: None`: only headless Services give pods their hostname records.
    pub headless: bool,
}

/// The names of each address, sorted, so the file only changes when a name changes.
pub fn entries(pods: &[PodName], services: &[ServiceName]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in services.iter().filter(|s| !s.selector.is_empty()) {
        for p in pods.iter().filter(|p| p.namespace == s.namespace) {
            let selected = s.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v));
            if !selected || !(p.ready || s.publish_not_ready) {
                continue;
            }
            let names = out.entry(p.ip.clone()).or_default();
            names.insert(format!("{}.{}.svc.{CLUSTER_DOMAIN}", s.name, s.namespace));
            names.insert(format!("{}.{}.svc", s.name, s.namespace));
            if let (true, Some(h), Some(sub)) = (s.headless, &p.hostname, &p.subdomain) {
                if *sub == s.name {
                    let base = format!("{h}.{sub}.{}", p.namespace);
                    names.insert(format!("{base}.svc.{CLUSTER_DOMAIN}"));
                    names.insert(format!("{base}.svc"));
                }
            }
        }
    }
    out
}

fn markers(owner: &str) -> (String, String) {
    (
        format!("# BEGIN tokafka-node-agent {owner}"),
        format!("# END tokafka-node-agent {owner}"),
    )
}

/// `existing` with the owner's block replaced by `entries` (or removed when `entries` is None).
pub fn splice(
    existing: &str,
    owner: &str,
    entries: Option<&BTreeMap<String, BTreeSet<String>>>,
) -> String {
    let (begin, end) = markers(owner);
    let mut out = String::with_capacity(existing.len());
    let mut inside = false;
    for line in existing.lines() {
        if line == begin {
            inside = true;
        } else if inside && line == end {
            inside = false;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some(entries) = entries {
        out.push_str(&begin);
        out.push('\n');
        for (ip, names) in entries {
            out.push_str(ip);
            for n in names {
                out.push(' ');
                out.push_str(n);
            }
            out.push('\n');
        }
        out.push_str(&end);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ip: &str, host: &str, ready: bool) -> PodName {
        PodName {
            ip: ip.into(),
            namespace: "ns".into(),
            hostname: Some(host.into()),
            subdomain: Some("web".into()),
            labels: BTreeMap::from([("app".into(), "web".into())]),
            ready,
        }
    }

    fn service(name: &str, publish_not_ready: bool) -> ServiceName {
        ServiceName {
            name: name.into(),
            namespace: "ns".into(),
            selector: BTreeMap::from([("app".into(), "web".into())]),
            publish_not_ready,
            headless: true,
        }
    }

    #[test]
    fn pods_get_stable_names_under_their_headless_service() {
        let e = entries(&[pod("127.1.0.2", "web-0", true)], &[service("web", false)]);
        let names: Vec<_> = e["127.1.0.2"].iter().cloned().collect();
        assert_eq!(
            names,
            vec![
                "web-0.web.ns.svc",
                "web-0.web.ns.svc.cluster.local",
                "web.ns.svc",
                "web.ns.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn not_ready_pods_get_names_only_with_publish_not_ready_addresses() {
        let pods = [pod("127.1.0.2", "web-0", false)];
        assert!(entries(&pods, &[service("web", false)]).is_empty());
        assert!(entries(&pods, &[service("web", true)])["127.1.0.2"]
            .contains("web-0.web.ns.svc.cluster.local"));
    }

    #[test]
    fn no_hostname_records_without_a_matching_headless_service() {
        let pods = [pod("127.1.0.2", "web-0", true)];
        assert!(entries(&pods, &[]).is_empty());
        let mut clusterip = service("web", false);
        clusterip.headless = false;
        assert!(
            !entries(&pods, &[clusterip])["127.1.0.2"].contains("web-0.web.ns.svc.cluster.local")
        );
        assert!(!entries(&pods, &[service("other", false)])["127.1.0.2"]
            .contains("web-0.web.ns.svc.cluster.local"));
    }

    #[test]
    fn services_resolve_to_ready_pods_unless_not_ready_are_published() {
        let pods = [
            pod("127.1.0.2", "web-0", true),
            pod("127.1.0.3", "web-1", false),
        ];
        let e = entries(&pods, &[service("client", false)]);
        assert!(e["127.1.0.2"].contains("client.ns.svc.cluster.local"));
        assert!(!e.contains_key("127.1.0.3"));
        let e = entries(&pods, &[service("web", true)]);
        assert!(e["127.1.0.3"].contains("web.ns.svc.cluster.local"));
    }

    #[test]
    fn splice_replaces_only_the_owned_block() {
        let original = "127.0.0.1 localhost\n::1 ip6-localhost\n";
        let e = entries(&[pod("127.1.0.2", "web-0", true)], &[service("web", false)]);
        let with = splice(original, "node-a", Some(&e));
        assert!(with.starts_with(original));
        assert!(with.contains(
            "# BEGIN tokafka-node-agent node-a\n127.1.0.2 web-0.web.ns.svc web-0.web.ns.svc.cluster.local web.ns.svc web.ns.svc.cluster.local\n# END"
        ));
        let again = splice(&with, "node-a", Some(&e));
        assert_eq!(again, with);
        assert_eq!(splice(&with, "node-a", None), original);
        assert_eq!(splice(&with, "node-b", None), with);
    }
}
