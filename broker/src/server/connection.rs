//! One client connection: the TLS handshake where the listener asks for it, then size-prefixed
//! frames in, responses out, in request order.
//!
//! A reader task reads frames ahead (at most `queued.max.requests`) while the connection task
//! handles them one at a time, in arrival order, and writes each response before the next
//! (as Kafka does, so that appends from one connection keep their order). Oversized or
//! malformed frames, failed authentications and idle connections are closed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::transport::{self, Reader};
use crate::broker::Broker;
use crate::protocol::dispatch::{handle_until, Outcome};
use crate::security::principal::Principal;
use crate::security::session::{ListenerContext, Session};
use crate::security::tls::certificate_subject;

/// Longest wait for a client to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the reader stopped.
#[derive(Debug)]
enum ReadEnd {
    Closed,
    Idle,
    TooLarge(i64),
    Shutdown,
    Io(std::io::Error),
}

/// Serves one connection until the peer closes it, it misbehaves, or shutdown is requested
/// (requests already read are still answered).
pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    listener: Arc<ListenerContext>,
    shutdown: CancellationToken,
) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    if let Err(e) = stream.set_nodelay(true) {
        debug!(peer, error = %e, "cannot set TCP_NODELAY");
    }
    let client_host = stream
        .peer_addr()
        .map(|a| format!("/{}", a.ip()))
        .unwrap_or_default();
    let (reader, mut writer, principal) = match &listener.tls {
        None => {
            let (r, w) = transport::plain(stream);
            (r, w, Principal::anonymous())
        }
        Some(tls) => {
            let accepted = tokio::time::timeout(
                TLS_HANDSHAKE_TIMEOUT,
                tls.acceptor(!listener.protocol.uses_sasl()).accept(stream),
            )
            .await;
            let stream = match accepted {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    warn!(peer, listener = listener.name, error = %e, "TLS handshake failed");
                    broker.metrics.connections_rejected.inc();
                    return;
                }
                Err(_) => {
                    warn!(peer, listener = listener.name, "TLS handshake timed out");
                    broker.metrics.connections_rejected.inc();
                    return;
                }
            };
            let subject = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| certificate_subject(cert));
            let principal = match subject {
                None => Principal::anonymous(),
                Some(subject) => {
                    match broker.config.security.principal_mapper.name_of(&subject) {
                        Some(name) => Principal::user(name),
                        None => {
                            warn!(peer, subject, "no ssl.principal.mapping.rules rule matches the client certificate");
                            broker.metrics.connections_rejected.inc();
                            return;
                        }
                    }
                }
            };
            let (r, w) = transport::tls(stream);
            (r, w, principal)
        }
    };
    let mut session = Session::new(listener, client_host, principal);
    let (frames_tx, mut frames_rx) = mpsc::channel::<Bytes>(broker.config.queued_max_requests);
    let reader = tokio::spawn(read_frames(
        reader,
        frames_tx,
        broker.config.socket_request_max_bytes,
        Duration::from_millis(broker.config.connections_max_idle_ms),
        shutdown.clone(),
        Arc::clone(&broker),
    ));
    while let Some(frame) = frames_rx.recv().await {
        match handle_until(&broker, frame, &mut session, &shutdown).await {
            Outcome::Respond(response) => {
                if let Err(e) = writer.write_response(&response).await {
                    debug!(peer, error = %e, "write failed; closing");
                    break;
                }
                broker.metrics.bytes_out.inc_by(response.wire_len());
            }
            Outcome::Silent => {}
            Outcome::RespondThenClose { response, delay } => {
                tokio::time::sleep(delay).await;
                let _ = writer.write_response(&response).await;
                broker.metrics.connections_rejected.inc();
                break;
            }
            Outcome::Close(reason) => {
                warn!(peer, reason, "closing connection");
                broker.metrics.connections_rejected.inc();
                break;
            }
        }
    }
    writer.shutdown().await;
    reader.abort();
    match reader.await {
        Ok(ReadEnd::TooLarge(size)) => {
            warn!(
                peer,
                size, "request larger than socket.request.max.bytes; connection closed"
            );
            broker.metrics.connections_rejected.inc();
        }
        Ok(ReadEnd::Idle) => info!(peer, "idle connection closed"),
        Ok(ReadEnd::Io(e)) => debug!(peer, error = %e, "read failed"),
        Ok(ReadEnd::Closed | ReadEnd::Shutdown) | Err(_) => {}
    }
}

async fn read_frames(
    mut reader: Reader,
    frames: mpsc::Sender<Bytes>,
    max_bytes: usize,
    idle: Duration,
    shutdown: CancellationToken,
    broker: Arc<Broker>,
) -> ReadEnd {
    loop {
        let mut size = [0u8; 4];
        let got = tokio::select! {
            r = tokio::time::timeout(idle, reader.read_exact_or_closed(&mut size)) => r,
            () = shutdown.cancelled() => return ReadEnd::Shutdown,
        };
        match got {
            Err(_) => return ReadEnd::Idle,
            Ok(Err(e)) => return ReadEnd::Io(e),
            Ok(Ok(false)) => return ReadEnd::Closed,
            Ok(Ok(true)) => {}
        }
        let size = i64::from(i32::from_be_bytes(size));
        if size < 0 || size as u64 > max_bytes as u64 {
            return ReadEnd::TooLarge(size);
        }
        let body = match reader.read_body(size as usize).await {
            Ok(body) => body,
            Err(e) => return ReadEnd::Io(e),
        };
        broker.metrics.bytes_in.inc_by(4 + size as u64);
        if frames.send(body.freeze()).await.is_err() {
            return ReadEnd::Closed;
        }
    }
}
