//! Readiness, liveness and startup probes.
//!
//! [`ProbeSpec::from_probe`] resolves a probe of the pod spec (named ports, defaults) and
//! [`ProbeTracker`] applies the success/failure thresholds; both are pure. [`run`] performs one
//! probe against the pod's address: HTTP GET (2xx/3xx is success), TCP connect, or a command.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeAction {
    Http {
        host: String,
        port: u16,
        path: String,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("probe port {0:?} names no port of the container")]
    UnknownPort(String),
    #[error("probe port {0} is out of range")]
    BadPort(i32),
    #[error("the probe has no handler the node agent supports (httpGet, tcpSocket, exec)")]
    NoHandler,
    #[error("https probes are not supported by the node agent")]
    Https,
}

impl ProbeSpec {
    /// Resolves `probe` of `container` against the pod's address.
    ///
    /// # Errors
    /// A named port the container lacks, a port out of range, an HTTPS or gRPC probe.
    pub fn from_probe(
        probe: &Probe,
        container: &Container,
        pod_ip: &str,
    ) -> Result<Self, ProbeError> {
        let port = |p: &IntOrString| -> Result<u16, ProbeError> {
            match p {
                IntOrString::Int(n) => u16::try_from(*n).map_err(|_| ProbeError::BadPort(*n)),
                IntOrString::String(name) => container
                    .ports
                    .iter()
                    .flatten()
                    .find(|cp| cp.name.as_deref() == Some(name))
                    .and_then(|cp| u16::try_from(cp.container_port).ok())
                    .ok_or_else(|| ProbeError::UnknownPort(name.clone())),
            }
        };
        let action = if let Some(h) = &probe.http_get {
            if h.scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("https"))
            {
                return Err(ProbeError::Https);
            }
            ProbeAction::Http {
                host: h.host.clone().unwrap_or_else(|| pod_ip.to_string()),
                port: port(&h.port)?,
                path: h.path.clone().unwrap_or_else(|| "/".into()),
            }
        } else if let Some(t) = &probe.tcp_socket {
            ProbeAction::Tcp {
                host: t.host.clone().unwrap_or_else(|| pod_ip.to_string()),
                port: port(&t.port)?,
            }
        } else if let Some(e) = &probe.exec {
            ProbeAction::Exec {
                command: e.command.clone().unwrap_or_default(),
            }
        } else {
            return Err(ProbeError::NoHandler);
        };
        let secs =
            |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
        Ok(ProbeSpec {
            action,
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        })
    }
}

/// The thresholded result of a probe: flips after `success_threshold` successes in a row
/// or `failure_threshold` failures in a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTracker {
    pub healthy: bool,
    successes: u32,
    failures: u32,
}

impl ProbeTracker {
    pub fn new(initially_healthy: bool) -> Self {
        ProbeTracker {
            healthy: initially_healthy,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one probe result; returns the new result when it flipped.
    pub fn record(&mut self, ok: bool, spec: &ProbeSpec) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if !self.healthy && self.successes >= spec.success_threshold {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.healthy && self.failures >= spec.failure_threshold {
                self.healthy = false;
                return Some(false);
            }
            // A startup or readiness probe that never succeeded fails after the threshold too.
            if !self.healthy && self.failures == spec.failure_threshold {
                return Some(false);
            }
        }
        None
    }
}

/// Whether an HTTP status line reports success (200–399).
pub fn http_success(status_line: &str) -> bool {
    let mut parts = status_line.split_whitespace();
    let _version = parts.next();
    matches!(
        parts.next().and_then(|c| c.parse::<u16>().ok()),
        Some(200..=399)
    )
}

/// Runs the probe once, bounded by its timeout.
pub async fn run(spec: &ProbeSpec, env: &[(String, String)]) -> bool {
    tokio::time::timeout(spec.timeout, run_unbounded(&spec.action, env))
        .await
        .unwrap_or(false)
}

async fn run_unbounded(action: &ProbeAction, env: &[(String, String)]) -> bool {
    match action {
        ProbeAction::Tcp { host, port } => tokio::net::TcpStream::connect((host.as_str(), *port))
            .await
            .is_ok(),
        ProbeAction::Http { host, port, path } => {
            let Ok(mut s) = tokio::net::TcpStream::connect((host.as_str(), *port)).await else {
                return false;
            };
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.37\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            );
            if s.write_all(req.as_bytes()).await.is_err() {
                return false;
            }
            let mut buf = vec![0u8; 256];
            let mut n = 0;
            while n < buf.len() {
                match s.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
                if buf[..n].contains(&b'\n') {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            http_success(head.lines().next().unwrap_or(""))
        }
        ProbeAction::Exec { command } => {
            let Some((program, args)) = command.split_first() else {
                return false;
            };
            tokio::process::Command::new(program)
                .args(args)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map(|s| s.success())
                .unwrap_or(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container() -> Container {
        serde_json::from_value(
            json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .unwrap()
    }

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn http_probe_resolves_named_port_and_pod_address() {
        let p = probe(json!({"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 2}));
        let s = ProbeSpec::from_probe(&p, &container(), "127.1.0.9").unwrap();
        assert_eq!(
            s.action,
            ProbeAction::Http {
                host: "127.1.0.9".into(),
                port: 8080,
                path: "/ready".into()
            }
        );
        assert_eq!(s.period, Duration::from_secs(2));
        assert_eq!(s.failure_threshold, 3);
    }

    #[test]
    fn unknown_named_port_is_an_error() {
        let p = probe(json!({"tcpSocket": {"port": "kafka"}}));
        assert_eq!(
            ProbeSpec::from_probe(&p, &container(), "x"),
            Err(ProbeError::UnknownPort("kafka".into()))
        );
    }

    #[test]
    fn liveness_fails_after_threshold_failures_in_a_row() {
        let p = probe(json!({"tcpSocket": {"port": 1}, "failureThreshold": 2}));
        let s = ProbeSpec::from_probe(&p, &container(), "x").unwrap();
        let mut t = ProbeTracker::new(true);
        assert_eq!(t.record(false, &s), None);
        assert_eq!(t.record(true, &s), None);
        assert_eq!(t.record(false, &s), None);
        assert_eq!(t.record(false, &s), Some(false));
        assert!(!t.healthy);
    }

    #[test]
    fn readiness_turns_true_after_success_threshold() {
        let p = probe(json!({"tcpSocket": {"port": 1}, "successThreshold": 2}));
        let s = ProbeSpec::from_probe(&p, &container(), "x").unwrap();
        let mut t = ProbeTracker::new(false);
        assert_eq!(t.record(true, &s), None);
        assert_eq!(t.record(true, &s), Some(true));
        assert!(t.healthy);
    }

    #[test]
    fn http_status_classes() {
        assert!(http_success("HTTP/1.1 200 OK"));
        assert!(http_success("HTTP/1.0 302 Found"));
        assert!(!http_success("HTTP/1.1 503 Service Unavailable"));
        assert!(!http_success("garbage"));
    }
}
