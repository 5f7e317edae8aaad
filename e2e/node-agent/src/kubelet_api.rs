//! The slice of the kubelet's HTTPS API that `kubectl logs` needs.
//!
//! The API server reaches a node's kubelet at `status.addresses[InternalIP]` and
//! `status.daemonEndpoints.kubeletEndpoint.port` for `GET /containerLogs/NS/POD/CONTAINER`
//! (with `follow`, `tailLines`, `limitBytes`). The agent serves that, `/healthz`, and 404 for
//! the rest (exec, attach and port-forward are not supported). Client certificates are not
//! checked: the server listens on loopback only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

const REQUEST_HEAD_MAX_BYTES: usize = 16 * 1024;

/// A parsed kubelet API request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Healthz,
    ContainerLogs {
        namespace: String,
        pod: String,
        container: String,
        follow: bool,
        tail_lines: Option<usize>,
        limit_bytes: Option<u64>,
    },
    Unsupported(String),
}

/// Parses the request line's target (`/containerLogs/ns/pod/c?follow=true`).
pub fn parse_target(target: &str) -> Request {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: BTreeMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["healthz"] => Request::Healthz,
        ["containerLogs", ns, pod, container] => Request::ContainerLogs {
            namespace: ns.to_string(),
            pod: pod.to_string(),
            container: container.to_string(),
            follow: params
                .get("follow")
                .is_some_and(|v| *v == "true" || *v == "1"),
            tail_lines: params.get("tailLines").and_then(|v| v.parse().ok()),
            limit_bytes: params.get("limitBytes").and_then(|v| v.parse().ok()),
        },
        _ => Request::Unsupported(path.to_string()),
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &[u8], n: usize) -> &[u8] {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut count = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return &text[i + 1..];
            }
        }
    }
    if n == 0 {
        &text[text.len()..]
    } else {
        text
    }
}

/// Loads the TLS identity and serves until the process ends.
///
/// # Errors
/// Unreadable certificate or key, or the port cannot be bound.
pub async fn serve(port: u16, cert: &Path, key: &Path, pods_dir: PathBuf) -> anyhow::Result<()> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
        anyhow::anyhow!(
            "kubelet API port 127.0.0.1:{port}: {e} (choose another with --kubelet-port)"
        )
    })?;
    info!(port, "kubelet API listening");
    loop {
        let (tcp, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let pods_dir = pods_dir.clone();
        tokio::spawn(async move {
            match acceptor.accept(tcp).await {
                Ok(tls) => match handle(tls, &pods_dir).await {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {} // client went away
                    Err(e) => warn!(error = %e, "kubelet API request failed"),
                    Ok(()) => {}
                },
                Err(e) => warn!(error = %e, "kubelet API TLS handshake failed"),
            }
        });
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    pods_dir: &Path,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 || head.len() > REQUEST_HEAD_MAX_BYTES {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    match parse_target(target) {
        Request::Healthz => respond(&mut s, 200, b"ok").await,
        Request::Unsupported(path) => {
            respond(
                &mut s,
                404,
                format!("{path} is not supported by the tokafka node agent\n").as_bytes(),
            )
            .await
        }
        Request::ContainerLogs {
            namespace,
            pod,
            container,
            follow,
            tail_lines,
            limit_bytes,
        } => {
            debug!(namespace = %namespace, pod = %pod, container = %container, follow, "container logs requested");
            let Some(file) = log_file(pods_dir, &namespace, &pod, &container) else {
                warn!(namespace = %namespace, pod = %pod, container = %container, "no log file for requested container logs");
                return respond(
                    &mut s,
                    404,
                    format!("no logs of container {container} in pod {namespace}/{pod}\n")
                        .as_bytes(),
                )
                .await;
            };
            let mut f = tokio::fs::File::open(&file).await?;
            let mut content = Vec::new();
            f.read_to_end(&mut content).await?;
            let mut body: &[u8] = &content;
            if let Some(n) = tail_lines {
                body = tail(body, n);
            }
            if let Some(limit) = limit_bytes {
                body = &body[..body.len().min(limit as usize)];
            }
            s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
            )
            .await?;
            s.write_all(body).await?;
            s.flush().await?;
            if follow {
                let mut pos = content.len() as u64;
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let len = tokio::fs::metadata(&file)
                        .await
                        .map(|m| m.len())
                        .unwrap_or(pos);
                    if len > pos {
                        f.seek(std::io::SeekFrom::Start(pos)).await?;
                        let mut more = vec![0u8; (len - pos) as usize];
                        f.read_exact(&mut more).await?;
                        s.write_all(&more).await?;
                        s.flush().await?;
                        pos = len;
                    } else if !file.exists() {
                        break;
                    }
                }
            }
            s.shutdown().await
        }
    }
}

async fn respond<S: AsyncWrite + Unpin>(s: &mut S, code: u16, body: &[u8]) -> std::io::Result<()> {
    let reason = if code == 200 { "OK" } else { "Not Found" };
    let head = format!("HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    s.shutdown().await
}

/// The log file of a container of the newest pod of that name.
fn log_file(pods_dir: &Path, ns: &str, pod: &str, container: &str) -> Option<PathBuf> {
    let prefix = format!("{ns}_{pod}_");
    let entries = match std::fs::read_dir(pods_dir) {
        Ok(e) => e,
        Err(e) => {
            warn!(path = %pods_dir.display(), error = %e, "cannot list pod directories");
            return None;
        }
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().join("logs").join(format!("{container}.log")))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_logs_target_is_parsed_with_options() {
        assert_eq!(
            parse_target("/containerLogs/ns/web-0/app?follow=true&tailLines=10"),
            Request::ContainerLogs {
                namespace: "ns".into(),
                pod: "web-0".into(),
                container: "app".into(),
                follow: true,
                tail_lines: Some(10),
                limit_bytes: None,
            }
        );
        assert_eq!(parse_target("/healthz"), Request::Healthz);
        assert_eq!(
            parse_target("/exec/ns/p/c?command=sh"),
            Request::Unsupported("/exec/ns/p/c".into())
        );
    }

    #[test]
    fn tail_takes_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail(b"a\n", 5), b"a\n");
        assert_eq!(tail(b"a\nb\n", 0), b"");
    }
}
