//! SaslHandshake and SaslAuthenticate: decode, step the connection's SASL state machine
//! ([`crate::security::sasl`]), encode. A failed authentication is answered after
//! `connection.failed.authentication.delay.ms` and closes the connection, as in Kafka.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::ResponseError;
use tracing::{info, warn};

use super::str_bytes;
use crate::broker::Broker;
use crate::protocol::dispatch::{respond, Answer, Outcome};
use crate::protocol::RequestFrame;
use crate::security::sasl::TokenOutcome;
use crate::security::scram::new_nonce;
use crate::security::session::Session;

fn encoded<T: kafka_protocol::protocol::Encodable>(frame: &RequestFrame, body: T) -> Outcome {
    match respond(frame, Answer::new(body)) {
        Ok(response) => Outcome::Respond(response),
        Err(e) => Outcome::Close(e.to_string()),
    }
}

fn then_close(outcome: Outcome, delay: Duration) -> Outcome {
    match outcome {
        Outcome::Respond(response) => Outcome::RespondThenClose { response, delay },
        other => other,
    }
}

pub fn handshake(broker: &Arc<Broker>, frame: &RequestFrame, session: &mut Session) -> Outcome {
    let request: SaslHandshakeRequest = match frame.decode() {
        Ok(r) => r,
        Err(e) => return Outcome::Close(e.to_string()),
    };
    let enabled = &broker.config.security.sasl_mechanisms;
    let mechanisms = enabled.iter().map(|m| str_bytes(m)).collect();
    let Some(sasl) = session.sasl.as_mut() else {
        // Kafka answers a SASL handshake on a listener without SASL by closing.
        return Outcome::Close(format!(
            "SaslHandshake on listener {} which does not use SASL",
            session.listener.name
        ));
    };
    let response = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
    match sasl.handshake(request.mechanism.as_str(), enabled) {
        Ok(()) => encoded(frame, response),
        Err(Some(())) => {
            warn!(client = session.client_host, mechanism = %request.mechanism.as_str(), "unsupported SASL mechanism");
            then_close(
                encoded(
                    frame,
                    response.with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
                ),
                Duration::ZERO,
            )
        }
        Err(None) => then_close(
            encoded(
                frame,
                response.with_error_code(ResponseError::IllegalSaslState.code()),
            ),
            Duration::ZERO,
        ),
    }
}

pub fn authenticate(broker: &Arc<Broker>, frame: &RequestFrame, session: &mut Session) -> Outcome {
    let request: SaslAuthenticateRequest = match frame.decode() {
        Ok(r) => r,
        Err(e) => return Outcome::Close(e.to_string()),
    };
    let security = &broker.config.security;
    let Some(sasl) = session.sasl.as_mut() else {
        return Outcome::Close(format!(
            "SaslAuthenticate on listener {} which does not use SASL",
            session.listener.name
        ));
    };
    let lifetime_ms = security.connections_max_reauth_ms.max(0);
    let expires = (lifetime_ms > 0)
        .then(|| Instant::now() + Duration::from_millis(lifetime_ms.unsigned_abs()));
    let metadata = broker.cluster.metadata();
    let lookup = |user: &str, mechanism| {
        metadata
            .scram_credentials
            .get(user)
            .and_then(|c| c.get(&mechanism))
            .cloned()
    };
    let outcome = sasl.token(&request.auth_bytes, &lookup, expires, &new_nonce());
    let response = SaslAuthenticateResponse::default();
    match outcome {
        TokenOutcome::Continue(bytes) => {
            encoded(frame, response.with_auth_bytes(Bytes::from(bytes)))
        }
        TokenOutcome::Authenticated {
            response: bytes,
            principal,
        } => {
            info!(client = session.client_host, listener = session.listener.name, %principal, "SASL authentication succeeded");
            session.authenticated_as(principal);
            encoded(
                frame,
                response
                    .with_auth_bytes(Bytes::from(bytes))
                    .with_session_lifetime_ms(lifetime_ms),
            )
        }
        TokenOutcome::Failed(message) => {
            warn!(
                client = session.client_host,
                listener = session.listener.name,
                reason = message,
                "SASL authentication failed"
            );
            broker.metrics.failed_authentications.inc();
            then_close(
                encoded(
                    frame,
                    response
                        .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                        .with_error_message(Some(str_bytes(&message))),
                ),
                Duration::from_millis(security.failed_authentication_delay_ms),
            )
        }
        TokenOutcome::IllegalState => then_close(
            encoded(
                frame,
                response
                    .with_error_code(ResponseError::IllegalSaslState.code())
                    .with_error_message(Some(str_bytes("SaslAuthenticate before SaslHandshake"))),
            ),
            Duration::ZERO,
        ),
    }
}
