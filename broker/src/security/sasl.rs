//! SASL on one connection, as Kafka runs it (`SaslServerAuthenticator`): a SaslHandshake names
//! the mechanism, SaslAuthenticate requests carry its tokens, and only then may the client
//! send anything but ApiVersions. PLAIN checks the password against the user's SCRAM
//! credential; SCRAM-SHA-256/512 run the two-round exchange of [`super::scram`].
//!
//! Pure: the state machine takes the credential lookup, the clock and the nonce as inputs.
//! Re-authentication (KIP-368) restarts the exchange on an authenticated connection; it must
//! name the same principal.

use std::time::Instant;

use super::principal::Principal;
use super::scram::{self, AwaitingProof, Mechanism, ScramCredential};

/// A SASL mechanism the broker speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(Mechanism),
}

impl SaslMechanism {
    /// The mechanism of a SASL name.
    pub fn from_name(name: &str) -> Option<Self> {
        if name == "PLAIN" {
            return Some(Self::Plain);
        }
        Mechanism::from_sasl_name(name).map(Self::Scram)
    }
}

/// Where a connection is in its authentication.
#[derive(Debug, Clone)]
pub enum SaslState {
    /// Nothing but ApiVersions and SaslHandshake is served.
    AwaitingHandshake,
    /// The mechanism is chosen; the first token is next.
    AwaitingToken(SaslMechanism),
    /// A SCRAM exchange waits for the client's proof.
    AwaitingProof(Box<AwaitingProof>),
    /// Authenticated until `expires` (None: for the life of the connection).
    Authenticated {
        principal: Principal,
        expires: Option<Instant>,
    },
}

/// The answer to a SaslAuthenticate token.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenOutcome {
    /// Send these bytes; the exchange goes on.
    Continue(Vec<u8>),
    /// Send these bytes; the client is now `principal`.
    Authenticated {
        response: Vec<u8>,
        principal: Principal,
    },
    /// Refuse with SASL_AUTHENTICATION_FAILED and this message, then close the connection.
    Failed(String),
    /// The token came out of order: ILLEGAL_SASL_STATE, then close.
    IllegalState,
}

/// The message a client sees for bad credentials (the same for an unknown user, so that
/// user names cannot be probed).
pub const INVALID_CREDENTIALS: &str = "Authentication failed: Invalid username or password";

/// One connection's authentication.
#[derive(Debug, Clone)]
pub struct SaslSession {
    pub state: SaslState,
    /// The principal of the first authentication, which a re-authentication must keep.
    first_principal: Option<Principal>,
}

impl Default for SaslSession {
    fn default() -> Self {
        Self::new()
    }
}

impl SaslSession {
    pub fn new() -> Self {
        Self {
            state: SaslState::AwaitingHandshake,
            first_principal: None,
        }
    }

    /// The authenticated principal, if the session is authenticated and not expired.
    pub fn principal(&self, now: Instant) -> Option<&Principal> {
        match &self.state {
            SaslState::Authenticated { principal, expires } => {
                expires.is_none_or(|e| now < e).then_some(principal)
            }
            _ => None,
        }
    }

    /// Whether the session was authenticated and has expired without re-authentication
    /// (Kafka then closes the connection on its next request).
    pub fn expired(&self, now: Instant) -> bool {
        matches!(&self.state, SaslState::Authenticated { expires: Some(e), .. } if now >= *e)
    }

    /// A SaslHandshake for `mechanism` among `enabled`: `Ok` starts the exchange; `Err` is
    /// UNSUPPORTED_SASL_MECHANISM (`Some`) or ILLEGAL_SASL_STATE (`None`).
    ///
    /// # Errors
    /// As above; the state is then unchanged.
    pub fn handshake(&mut self, mechanism: &str, enabled: &[String]) -> Result<(), Option<()>> {
        match self.state {
            SaslState::AwaitingHandshake | SaslState::Authenticated { .. } => {}
            _ => return Err(None),
        }
        let chosen = enabled
            .iter()
            .any(|m| m == mechanism)
            .then(|| SaslMechanism::from_name(mechanism))
            .flatten()
            .ok_or(Some(()))?;
        if let SaslState::Authenticated { principal, .. } = &self.state {
            self.first_principal = Some(principal.clone());
        }
        self.state = SaslState::AwaitingToken(chosen);
        Ok(())
    }

    /// A SaslAuthenticate token. `credential` finds a user's stored credential; `expires` is
    /// when a new authentication lapses; `nonce` is the server's SCRAM nonce.
    pub fn token(
        &mut self,
        token: &[u8],
        credential: &dyn Fn(&str, Mechanism) -> Option<ScramCredential>,
        expires: Option<Instant>,
        nonce: &str,
    ) -> TokenOutcome {
        let state = std::mem::replace(&mut self.state, SaslState::AwaitingHandshake);
        let outcome = match state {
            SaslState::AwaitingToken(SaslMechanism::Plain) => plain(token, credential),
            SaslState::AwaitingToken(SaslMechanism::Scram(mechanism)) => {
                let first = match scram::parse_client_first(token) {
                    Ok(first) => first,
                    Err(e) => return TokenOutcome::Failed(format!("Authentication failed: {e}")),
                };
                let Some(stored) = credential(&first.username, mechanism) else {
                    return TokenOutcome::Failed(INVALID_CREDENTIALS.into());
                };
                let (exchange, response) = scram::server_first(mechanism, first, stored, nonce);
                self.state = SaslState::AwaitingProof(Box::new(exchange));
                return TokenOutcome::Continue(response);
            }
            SaslState::AwaitingProof(exchange) => {
                match scram::verify_client_final(&exchange, token) {
                    Ok(response) => TokenOutcome::Authenticated {
                        response,
                        principal: Principal::user(exchange.username()),
                    },
                    Err(scram::ScramError::InvalidProof) => {
                        TokenOutcome::Failed(INVALID_CREDENTIALS.into())
                    }
                    Err(e) => TokenOutcome::Failed(format!("Authentication failed: {e}")),
                }
            }
            SaslState::AwaitingHandshake | SaslState::Authenticated { .. } => {
                return TokenOutcome::IllegalState
            }
        };
        if let TokenOutcome::Authenticated { principal, .. } = &outcome {
            if self
                .first_principal
                .as_ref()
                .is_some_and(|first| first != principal)
            {
                return TokenOutcome::Failed(format!(
                    "Cannot change principals during re-authentication from {}: {principal}",
                    self.first_principal
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ));
            }
            self.first_principal = Some(principal.clone());
            self.state = SaslState::Authenticated {
                principal: principal.clone(),
                expires,
            };
        }
        outcome
    }
}

/// PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`, checked against the user's SCRAM
/// credential (SHA-512 first).
fn plain(
    token: &[u8],
    credential: &dyn Fn(&str, Mechanism) -> Option<ScramCredential>,
) -> TokenOutcome {
    let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
    let [authzid, user, password] = parts.as_slice() else {
        return TokenOutcome::Failed("Authentication failed: malformed PLAIN message".into());
    };
    let (Ok(user), Ok(authzid)) = (std::str::from_utf8(user), std::str::from_utf8(authzid)) else {
        return TokenOutcome::Failed("Authentication failed: malformed PLAIN message".into());
    };
    if user.is_empty() || (!authzid.is_empty() && authzid != user) {
        return TokenOutcome::Failed(
            "Authentication failed: the authorization id must be the user".into(),
        );
    }
    for mechanism in [Mechanism::Sha512, Mechanism::Sha256] {
        if let Some(stored) = credential(user, mechanism) {
            if stored.matches_password(mechanism, password) {
                return TokenOutcome::Authenticated {
                    response: Vec::new(),
                    principal: Principal::user(user),
                };
            }
            return TokenOutcome::Failed(INVALID_CREDENTIALS.into());
        }
    }
    TokenOutcome::Failed(INVALID_CREDENTIALS.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> Vec<String> {
        vec!["PLAIN".into(), "SCRAM-SHA-512".into()]
    }

    fn alice(user: &str, mechanism: Mechanism) -> Option<ScramCredential> {
        (user == "alice").then(|| {
            ScramCredential::from_password(mechanism, b"wonderland", b"salt".to_vec(), 4096)
        })
    }

    #[test]
    fn only_enabled_mechanisms_are_accepted() {
        let mut session = SaslSession::new();
        assert_eq!(
            session.handshake("SCRAM-SHA-256", &enabled()),
            Err(Some(()))
        );
        assert_eq!(session.handshake("GSSAPI", &enabled()), Err(Some(())));
        assert!(session.handshake("PLAIN", &enabled()).is_ok());
        assert_eq!(session.handshake("PLAIN", &enabled()), Err(None));
    }

    #[test]
    fn plain_authenticates_against_the_scram_credential() {
        let now = Instant::now();
        for (token, ok) in [
            (&b"\0alice\0wonderland"[..], true),
            (b"alice\0alice\0wonderland", true),
            (b"\0alice\0looking-glass", false),
            (b"\0bob\0wonderland", false),
            (b"root\0alice\0wonderland", false),
            (b"garbage", false),
        ] {
            let mut session = SaslSession::new();
            session.handshake("PLAIN", &enabled()).expect("handshake");
            let outcome = session.token(token, &alice, None, "n");
            if ok {
                assert!(
                    matches!(outcome, TokenOutcome::Authenticated { .. }),
                    "{token:?}"
                );
                assert_eq!(session.principal(now), Some(&Principal::user("alice")));
            } else {
                assert!(matches!(outcome, TokenOutcome::Failed(_)), "{token:?}");
                assert_eq!(session.principal(now), None);
            }
        }
    }

    #[test]
    fn an_unknown_user_fails_like_a_wrong_password() {
        let mut session = SaslSession::new();
        session
            .handshake("SCRAM-SHA-512", &enabled())
            .expect("handshake");
        assert_eq!(
            session.token(b"n,,n=mallory,r=abc", &alice, None, "xyz"),
            TokenOutcome::Failed(INVALID_CREDENTIALS.into())
        );
    }

    #[test]
    fn a_token_before_the_handshake_is_out_of_order() {
        let mut session = SaslSession::new();
        assert_eq!(
            session.token(b"\0alice\0wonderland", &alice, None, "n"),
            TokenOutcome::IllegalState
        );
    }

    #[test]
    fn sessions_expire_and_reauthentication_keeps_the_principal() {
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(10);
        let mut session = SaslSession::new();
        session.handshake("PLAIN", &enabled()).expect("handshake");
        let outcome = session.token(b"\0alice\0wonderland", &alice, Some(later), "n");
        assert!(matches!(outcome, TokenOutcome::Authenticated { .. }));
        assert!(!session.expired(now));
        assert!(session.expired(later));
        assert_eq!(session.principal(later), None);
        // Re-authenticating as someone else is refused.
        let both = |user: &str, m: Mechanism| {
            alice("alice", m).filter(|_| user == "alice" || user == "bob")
        };
        session
            .handshake("PLAIN", &enabled())
            .expect("re-handshake");
        assert!(matches!(
            session.token(b"\0bob\0wonderland", &both, None, "n"),
            TokenOutcome::Failed(m) if m.contains("Cannot change principals")
        ));
        let mut session2 = SaslSession::new();
        session2.handshake("PLAIN", &enabled()).expect("handshake");
        session2.token(b"\0alice\0wonderland", &alice, Some(later), "n");
        session2
            .handshake("PLAIN", &enabled())
            .expect("re-handshake");
        let renewed = later + std::time::Duration::from_secs(10);
        assert!(matches!(
            session2.token(b"\0alice\0wonderland", &alice, Some(renewed), "n"),
            TokenOutcome::Authenticated { .. }
        ));
        assert!(!session2.expired(later));
    }
}
