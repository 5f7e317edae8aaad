//! The high-watermark checkpoint of a replicated partition: the last committed offset the
//! broker knew, so that a restarted replica does not expose uncommitted records to consumers
//! nor forget what was committed (Kafka's `replication-offset-checkpoint`, one per partition).
//!
//! Layout (big-endian): magic `TKHW` (4), version (2), high watermark (8), CRC32C of the
//! preceding bytes (4). The file is replaced atomically; a damaged one reads as absent.

use std::path::Path;

use tracing::warn;

use super::{durable, LogError};

/// File name of the checkpoint in a partition directory.
pub const HIGH_WATERMARK_FILE: &str = "high-watermark";

const MAGIC: &[u8; 4] = b"TKHW";
const VERSION: u16 = 1;
const BODY_SIZE: usize = 4 + 2 + 8;
const FILE_SIZE: usize = BODY_SIZE + 4;

/// The checkpoint bytes of `high_watermark`.
pub fn encode(high_watermark: i64) -> [u8; FILE_SIZE] {
    let mut out = [0u8; FILE_SIZE];
    out[0..4].copy_from_slice(MAGIC);
    out[4..6].copy_from_slice(&VERSION.to_be_bytes());
    out[6..14].copy_from_slice(&high_watermark.to_be_bytes());
    let crc = crc32c::crc32c(&out[..BODY_SIZE]);
    out[BODY_SIZE..].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Decodes a checkpoint; `None` when the bytes are not a whole, intact checkpoint.
pub fn decode(bytes: &[u8]) -> Option<i64> {
    if bytes.len() != FILE_SIZE || &bytes[0..4] != MAGIC {
        return None;
    }
    let crc = u32::from_be_bytes(bytes[BODY_SIZE..].try_into().ok()?);
    if crc != crc32c::crc32c(&bytes[..BODY_SIZE]) {
        return None;
    }
    if u16::from_be_bytes(bytes[4..6].try_into().ok()?) != VERSION {
        return None;
    }
    Some(i64::from_be_bytes(bytes[6..14].try_into().ok()?))
}

/// The high watermark checkpointed in `dir`; `None` when there is none or it is damaged
/// (logged).
///
/// # Errors
/// I/O errors other than "not found".
pub fn read(dir: &Path) -> Result<Option<i64>, LogError> {
    let path = dir.join(HIGH_WATERMARK_FILE);
    let Some(bytes) = durable::read(&path)? else {
        return Ok(None);
    };
    let decoded = decode(&bytes);
    if decoded.is_none() {
        warn!(path = %path.display(), "high-watermark checkpoint is damaged; ignoring it");
    }
    Ok(decoded)
}

/// Replaces the checkpoint in `dir`, atomically and durably.
///
/// # Errors
/// I/O errors of the write, fsync or rename.
pub fn write(dir: &Path, high_watermark: i64) -> Result<(), LogError> {
    Ok(durable::write_atomically(
        &dir.join(HIGH_WATERMARK_FILE),
        &encode(high_watermark),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_rejects_damage() {
        let bytes = encode(1 << 40);
        assert_eq!(decode(&bytes), Some(1 << 40));
        for i in 0..bytes.len() {
            let mut damaged = bytes;
            damaged[i] ^= 0x01;
            assert_eq!(decode(&damaged), None, "flip at byte {i}");
        }
        assert_eq!(decode(&bytes[..FILE_SIZE - 1]), None);
    }

    #[test]
    fn checkpoint_file_persists_and_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()).expect("read"), None);
        write(dir.path(), 7).expect("write");
        write(dir.path(), 9).expect("rewrite");
        assert_eq!(read(dir.path()).expect("read"), Some(9));
    }
}
