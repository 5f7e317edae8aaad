//! Writing file regions to a socket with `sendfile(2)`: the bytes go from the page cache to
//! the socket without passing through user space.

use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::log::FileRegion;

/// Sends all of `region` to `stream`.
///
/// # Errors
/// I/O errors, and `UnexpectedEof` when the file is shorter than the region (it was
/// truncated after the region was taken): the response is then incomplete and the connection
/// must be closed.
///
/// # Cancel safety
/// Not cancel safe: a cancelled call may have sent part of the region.
pub async fn send_region(stream: &TcpStream, region: &FileRegion) -> std::io::Result<()> {
    let mut offset = region.position as libc::off_t;
    let end = region.position + region.len;
    let in_fd = region.file.as_raw_fd();
    let out_fd = stream.as_raw_fd();
    while (offset as u64) < end {
        let remaining = (end - offset as u64).min(1 << 30) as usize;
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the duration of the call (the region and
            // the stream are borrowed), and `offset` is a valid pointer to an off_t.
            let n = unsafe { libc::sendfile(out_fd, in_fd, &mut offset, remaining) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file region shorter than announced",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
