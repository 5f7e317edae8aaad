//! TLS for the Kafka listeners with rustls: the server configuration built from PEM files
//! (`ssl.keystore.location`, `ssl.truststore.location`, `ssl.client.auth`,
//! `ssl.enabled.protocols`), re-read when the files change, and the principal of a client
//! certificate.
//!
//! Invariant: a connection is accepted with the configuration current when it arrives; a
//! reload never touches open connections, and a reload that fails (a half-written file)
//! keeps the previous configuration and logs why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Whether clients present certificates (`ssl.client.auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

impl ClientAuth {
    /// The value of `ssl.client.auth` (the contract allows only these words).
    pub fn parse(value: &str) -> Self {
        match value {
            "required" => Self::Required,
            "requested" => Self::Requested,
            _ => Self::None,
        }
    }
}

/// Where the TLS material is and what is offered.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// PEM with the private key and the certificate chain.
    pub keystore: PathBuf,
    /// PEM with the CA certificates of clients.
    pub truststore: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub tls12: bool,
    pub tls13: bool,
    pub reload_interval: Duration,
}

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds a rustls server configuration from the files as they are now; with
/// `ask_client_certificates` false it never asks for one (SASL_SSL listeners, as Kafka's
/// broker-wide `ssl.client.auth` does not apply to them).
///
/// # Errors
/// A missing or unreadable file, a file without a key or certificate, a key that does not
/// match the certificate, or a truststore without a CA.
pub fn server_config(
    settings: &TlsSettings,
    ask_client_certificates: bool,
) -> Result<ServerConfig, TlsError> {
    let keystore = read(&settings.keystore)?;
    let pem_error = |reason: String| TlsError::Pem {
        path: settings.keystore.clone(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&keystore)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&keystore)
        .map_err(|e| pem_error(format!("no unencrypted private key ({e})")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if settings.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if settings.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)?;
    let client_auth = if ask_client_certificates {
        settings.client_auth
    } else {
        ClientAuth::None
    };
    let builder = match (client_auth, &settings.truststore) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(truststore)) => {
            let pem = read(truststore)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| TlsError::Pem {
                    path: truststore.clone(),
                    reason: e.to_string(),
                })?;
                roots.add(cert).map_err(|e| TlsError::Pem {
                    path: truststore.clone(),
                    reason: e.to_string(),
                })?;
            }
            if roots.is_empty() {
                return Err(TlsError::Pem {
                    path: truststore.clone(),
                    reason: "no CA certificate".into(),
                });
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(builder.with_single_cert(certs, key)?)
}

/// The current TLS configurations (with and without client certificates), swapped when the
/// files change.
pub struct ReloadingTls {
    settings: TlsSettings,
    current: ArcSwap<ServerConfig>,
    current_without_client_auth: ArcSwap<ServerConfig>,
    /// The files' contents the current configuration was built from.
    fingerprint: parking_lot::Mutex<Vec<u8>>,
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ReloadingTls {
    /// Loads the files once.
    ///
    /// # Errors
    /// As [`server_config`]: a broker does not start with unusable TLS material.
    pub fn load(settings: TlsSettings) -> Result<Arc<Self>, TlsError> {
        let fingerprint = Self::fingerprint_of(&settings);
        let config = server_config(&settings, true)?;
        let without = server_config(&settings, false)?;
        Ok(Arc::new(Self {
            settings,
            current: ArcSwap::from_pointee(config),
            current_without_client_auth: ArcSwap::from_pointee(without),
            fingerprint: parking_lot::Mutex::new(fingerprint),
        }))
    }

    fn fingerprint_of(settings: &TlsSettings) -> Vec<u8> {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        for path in std::iter::once(&settings.keystore).chain(settings.truststore.as_ref()) {
            hash.update(std::fs::read(path).unwrap_or_default());
            hash.update([0]);
        }
        hash.finalize().to_vec()
    }

    /// The configuration for a connection accepted now; `client_auth` false for listeners
    /// that never ask for client certificates.
    pub fn acceptor(&self, client_auth: bool) -> tokio_rustls::TlsAcceptor {
        if client_auth {
            tokio_rustls::TlsAcceptor::from(self.current.load_full())
        } else {
            tokio_rustls::TlsAcceptor::from(self.current_without_client_auth.load_full())
        }
    }

    /// Rebuilds the configuration if the files changed; returns whether it was swapped.
    pub fn reload_if_changed(&self) -> bool {
        let fingerprint = Self::fingerprint_of(&self.settings);
        let mut last = self.fingerprint.lock();
        if *last == fingerprint {
            return false;
        }
        let both = server_config(&self.settings, true)
            .and_then(|with| Ok((with, server_config(&self.settings, false)?)));
        match both {
            Ok((config, without)) => {
                self.current.store(Arc::new(config));
                self.current_without_client_auth.store(Arc::new(without));
                *last = fingerprint;
                info!(keystore = %self.settings.keystore.display(), "TLS key, certificates or CA reloaded");
                true
            }
            Err(e) => {
                // Keep serving with the previous files; try again at the next change.
                *last = fingerprint;
                warn!(error = %e, "TLS files changed but cannot be used; keeping the previous ones");
                false
            }
        }
    }

    /// Checks the files every `ssl.reload.interval.ms` until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => { self.reload_if_changed(); }
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// The subject of a DER certificate as Kafka prints it (RFC 2253), or `None` if it does not
/// parse (rustls already verified it, so this does not happen with a verified chain).
pub fn certificate_subject(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut attributes = Vec::new();
    for rdn in cert.subject().iter() {
        for attribute in rdn.iter() {
            let oid = attribute.attr_type().to_id_string();
            let key = match oid.as_str() {
                "2.5.4.3" => "CN".to_string(),
                "2.5.4.6" => "C".to_string(),
                "2.5.4.7" => "L".to_string(),
                "2.5.4.8" => "ST".to_string(),
                "2.5.4.9" => "STREET".to_string(),
                "2.5.4.10" => "O".to_string(),
                "2.5.4.11" => "OU".to_string(),
                "0.9.2342.19200300.100.1.25" => "DC".to_string(),
                "0.9.2342.19200300.100.1.1" => "UID".to_string(),
                _ => oid,
            };
            let value = attribute.as_str().ok()?.to_string();
            attributes.push((key, value));
        }
    }
    Some(super::principal::rfc2253_subject(&attributes))
}
