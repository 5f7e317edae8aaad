//! The two ends of a connection, plain or TLS. A plain connection writes file regions with
//! `sendfile(2)` (zero-copy); a TLS connection must encrypt them, so it reads each region
//! into memory first.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::sendfile::send_region;
use crate::protocol::{EncodedResponse, Part};

/// Where request bytes come from.
pub enum Reader {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// Where response bytes go.
pub enum Writer {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

/// Splits a plain connection.
pub fn plain(stream: TcpStream) -> (Reader, Writer) {
    let (read, write) = stream.into_split();
    (Reader::Plain(read), Writer::Plain(write))
}

/// Splits a TLS connection.
pub fn tls(stream: TlsStream<TcpStream>) -> (Reader, Writer) {
    let (read, write) = tokio::io::split(stream);
    (Reader::Tls(read), Writer::Tls(write))
}

impl Reader {
    fn as_async_read(&mut self) -> &mut (dyn AsyncRead + Unpin + Send) {
        match self {
            Reader::Plain(r) => r,
            Reader::Tls(r) => r,
        }
    }

    /// Fills `buf` entirely; `Ok(false)` when the peer closed before the first byte.
    ///
    /// # Errors
    /// I/O errors, and `UnexpectedEof` when the peer closed mid-way.
    pub async fn read_exact_or_closed(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        let reader = self.as_async_read();
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]).await? {
                0 if filled == 0 => return Ok(false),
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => filled += n,
            }
        }
        Ok(true)
    }

    /// Reads exactly `len` bytes into a fresh buffer (no zero-filling: the socket writes into
    /// the spare capacity, limited so no byte of the next frame is taken).
    ///
    /// # Errors
    /// I/O errors, and `UnexpectedEof` when the peer closed mid-way.
    pub async fn read_body(&mut self, len: usize) -> std::io::Result<bytes::BytesMut> {
        use bytes::BufMut;
        let reader = self.as_async_read();
        let mut body = bytes::BytesMut::with_capacity(len);
        while body.len() < len {
            let want = len - body.len();
            let n = reader.read_buf(&mut (&mut body).limit(want)).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(body)
    }
}

impl Writer {
    /// Writes a response: memory parts as they are, file regions with `sendfile` on a plain
    /// connection and through memory on a TLS one.
    ///
    /// # Errors
    /// I/O errors; the connection must then be closed.
    pub async fn write_response(&mut self, response: &EncodedResponse) -> std::io::Result<()> {
        match self {
            Writer::Plain(write) => {
                let stream: &TcpStream = write.as_ref();
                for part in &response.parts {
                    match part {
                        Part::Bytes(bytes) => write_all_plain(stream, bytes).await?,
                        Part::File(region) => send_region(stream, region).await?,
                    }
                }
                Ok(())
            }
            Writer::Tls(write) => {
                for part in &response.parts {
                    match part {
                        Part::Bytes(bytes) => write.write_all(bytes).await?,
                        Part::File(region) => {
                            // Page-cache reads of at most a fetch response: brief enough to do inline.
                            let bytes = region.to_vec()?;
                            write.write_all(&bytes).await?;
                        }
                    }
                }
                write.flush().await
            }
        }
    }

    /// Closes the sending side (a TLS close_notify, or a FIN).
    pub async fn shutdown(&mut self) {
        let _ = match self {
            Writer::Plain(w) => w.shutdown().await,
            Writer::Tls(w) => w.shutdown().await,
        };
    }
}

async fn write_all_plain(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
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
