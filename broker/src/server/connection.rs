//! One client connection: size-prefixed frames in, responses out, in request order.
//!
//! A reader task reads frames ahead (at most `queued.max.requests`) while the connection task
//! handles them one at a time, in arrival order, and writes each response before the next
//! (as Kafka does, so that appends from one connection keep their order). Oversized or
//! malformed frames and idle connections are closed.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::sendfile::send_region;
use crate::broker::Broker;
use crate::protocol::dispatch::{handle_until, Outcome};
use crate::protocol::{EncodedResponse, Part};

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
pub async fn serve(broker: Arc<Broker>, stream: TcpStream, shutdown: CancellationToken) {
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
    let stream = Arc::new(stream);
    let (frames_tx, mut frames_rx) = mpsc::channel::<Bytes>(broker.config.queued_max_requests);
    let reader = tokio::spawn(read_frames(
        Arc::clone(&stream),
        frames_tx,
        broker.config.socket_request_max_bytes,
        Duration::from_millis(broker.config.connections_max_idle_ms),
        shutdown.clone(),
        Arc::clone(&broker),
    ));
    while let Some(frame) = frames_rx.recv().await {
        match handle_until(&broker, frame, &client_host, &shutdown).await {
            Outcome::Respond(response) => {
                if let Err(e) = write_response(&stream, &response).await {
                    debug!(peer, error = %e, "write failed; closing");
                    break;
                }
                broker.metrics.bytes_out.inc_by(response.wire_len());
            }
            Outcome::Silent => {}
            Outcome::Close(reason) => {
                warn!(peer, reason, "closing connection");
                broker.metrics.connections_rejected.inc();
                break;
            }
        }
    }
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
    stream: Arc<TcpStream>,
    frames: mpsc::Sender<Bytes>,
    max_bytes: usize,
    idle: Duration,
    shutdown: CancellationToken,
    broker: Arc<Broker>,
) -> ReadEnd {
    loop {
        let mut size = [0u8; 4];
        let read_size = async {
            let mut filled = 0;
            while filled < 4 {
                stream.readable().await?;
                match stream.try_read(&mut size[filled..]) {
                    Ok(0) => return Ok(false),
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(true)
        };
        let got = tokio::select! {
            r = tokio::time::timeout(idle, read_size) => r,
            () = shutdown.cancelled() => return ReadEnd::Shutdown,
        };
        match got {
            Err(_) => return ReadEnd::Idle,
            Ok(Err(e)) => return ReadEnd::Io(e),
            Ok(Ok(false)) => return ReadEnd::Closed,
            Ok(Ok(true)) => {}
        }
        let size = i32::from_be_bytes(size) as i64;
        if size < 0 || size as u64 > max_bytes as u64 {
            return ReadEnd::TooLarge(size);
        }
        let body = match read_body(&stream, size as usize).await {
            Ok(body) => body,
            Err(e) => return ReadEnd::Io(e),
        };
        broker.metrics.bytes_in.inc_by(4 + size as u64);
        if frames.send(body.freeze()).await.is_err() {
            return ReadEnd::Closed;
        }
    }
}

/// Reads exactly `len` bytes into a fresh buffer (no zero-filling: the socket writes into the
/// spare capacity, limited so no byte of the next frame is taken).
async fn read_body(stream: &TcpStream, len: usize) -> std::io::Result<BytesMut> {
    use bytes::BufMut;
    let mut body = BytesMut::with_capacity(len);
    while body.len() < len {
        stream.readable().await?;
        let want = len - body.len();
        match stream.try_read_buf(&mut (&mut body).limit(want)) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(body)
}

/// Writes a response: memory parts with `write`, file regions with `sendfile`.
async fn write_response(stream: &TcpStream, response: &EncodedResponse) -> std::io::Result<()> {
    for part in &response.parts {
        match part {
            Part::Bytes(bytes) => write_all(stream, bytes).await?,
            Part::File(region) => send_region(stream, region).await?,
        }
    }
    Ok(())
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
