//! What a connection knows about its client: the listener it came in on, its principal (a
//! client certificate's, a SASL user's, or anonymous) and where its SASL authentication is.

use std::sync::Arc;
use std::time::Instant;

use tokafka_contract::config::listeners::{SecurityProtocol, DEFAULT_LISTENER};

use super::principal::Principal;
use super::sasl::SaslSession;
use super::tls::ReloadingTls;

/// A bound Kafka listener.
#[derive(Debug)]
pub struct ListenerContext {
    /// The listener's name (`listeners`), which picks the addresses Metadata answers with.
    pub name: String,
    pub protocol: SecurityProtocol,
    /// Set when the protocol uses TLS.
    pub tls: Option<Arc<ReloadingTls>>,
}

/// Who sent a request: handed to every handler with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub listener: String,
    pub principal: Principal,
}

impl Identity {
    /// An anonymous client of the listener `PLAINTEXT` (in-process callers and tests).
    pub fn anonymous() -> Arc<Self> {
        Arc::new(Self {
            listener: DEFAULT_LISTENER.to_string(),
            principal: Principal::anonymous(),
        })
    }
}

/// One connection's security state.
#[derive(Debug)]
pub struct Session {
    pub listener: Arc<ListenerContext>,
    /// The client's address as Kafka reports it (`/IP`).
    pub client_host: String,
    /// Set on SASL listeners.
    pub sasl: Option<SaslSession>,
    identity: Arc<Identity>,
}

impl Session {
    /// A session for a client of `listener`, known as `principal` from its TLS certificate
    /// (or anonymous) until SASL says otherwise.
    pub fn new(listener: Arc<ListenerContext>, client_host: String, principal: Principal) -> Self {
        let sasl = listener.protocol.uses_sasl().then(SaslSession::new);
        let identity = Arc::new(Identity {
            listener: listener.name.clone(),
            principal,
        });
        Self {
            listener,
            client_host,
            sasl,
            identity,
        }
    }

    /// An anonymous client of a plaintext listener named `PLAINTEXT`.
    pub fn plaintext(client_host: &str) -> Self {
        let listener = Arc::new(ListenerContext {
            name: DEFAULT_LISTENER.to_string(),
            protocol: SecurityProtocol::Plaintext,
            tls: None,
        });
        Self::new(listener, client_host.to_string(), Principal::anonymous())
    }

    /// Who the client is now.
    pub fn identity(&self) -> Arc<Identity> {
        Arc::clone(&self.identity)
    }

    /// Records a successful SASL authentication.
    pub fn authenticated_as(&mut self, principal: Principal) {
        if self.identity.principal != principal {
            self.identity = Arc::new(Identity {
                listener: self.listener.name.clone(),
                principal,
            });
        }
    }

    /// Whether requests other than ApiVersions and SASL's may be served now.
    pub fn may_serve(&self, now: Instant) -> bool {
        self.sasl
            .as_ref()
            .is_none_or(|s| s.principal(now).is_some())
    }
}
