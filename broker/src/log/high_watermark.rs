//! The high-watermark checkpoint of a replicated partition: the last committed offset the
//! broker knew, so that a restarted replica does not expose uncommitted records to consumers
//! nor forget what was committed (Kafka's `replication-offset-checkpoint`, one per partition).
//!
//! Framed as every checkpoint is ([`checkpoint`](super::checkpoint)), with the high watermark
//! (i64) as its body; replaced atomically.

use std::path::Path;

use super::checkpoint::{self, Body, Checkpoint, Corruption, HIGH_WATERMARK_BODY_SIZE};
use super::LogError;

/// File name of the checkpoint in a partition directory.
pub use super::checkpoint::HIGH_WATERMARK_FILE;

/// The checkpoint file's bytes holding `high_watermark`, in the current version.
pub fn encode(high_watermark: i64) -> Vec<u8> {
    checkpoint::encode(Checkpoint::HighWatermark, &body(high_watermark))
}

fn body(high_watermark: i64) -> [u8; HIGH_WATERMARK_BODY_SIZE] {
    high_watermark.to_be_bytes()
}

fn read_body(body: &mut Body<'_>) -> Result<i64, Corruption> {
    body.i64()
}

/// Decodes a checkpoint file's bytes (current or legacy version).
///
/// # Errors
/// The [`Corruption`] found.
pub fn decode(bytes: &[u8]) -> Result<i64, Corruption> {
    checkpoint::decode(Checkpoint::HighWatermark, bytes, read_body)
}

/// The high watermark checkpointed in `dir`; `None` when there is none or it is damaged.
///
/// Contract on `None`: the caller starts the high watermark at the log start offset, as a
/// replica that knows nothing committed; replication moves it up again. A damaged file is
/// logged, never an error.
///
/// # Errors
/// I/O errors other than "not found".
pub fn read(dir: &Path) -> Result<Option<i64>, LogError> {
    checkpoint::read(
        dir,
        Checkpoint::HighWatermark,
        "the high watermark starts from the log start",
        read_body,
    )
}

/// Replaces the checkpoint in `dir`, atomically and durably.
///
/// # Errors
/// I/O errors of the write, fsync or rename.
pub fn write(dir: &Path, high_watermark: i64) -> Result<(), LogError> {
    checkpoint::write(dir, Checkpoint::HighWatermark, &body(high_watermark))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::checkpoint::assert_damage_detected;

    #[test]
    fn checkpoint_round_trips_and_every_cut_or_flip_is_detected() {
        let bytes = encode(1 << 40);
        assert_eq!(decode(&bytes), Ok(1 << 40));
        assert_damage_detected(&bytes, decode);
    }

    #[test]
    fn a_checkpoint_in_the_0_1_0_format_is_read() {
        // TKHW, version 1, 105, CRC32C: the layout tokafka 0.1.0 wrote.
        let legacy = [
            0x54, 0x4b, 0x48, 0x57, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x69,
            0x21, 0x7a, 0xbd, 0x21,
        ];
        assert_eq!(decode(&legacy), Ok(105));
        assert_damage_detected(&legacy, decode);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(HIGH_WATERMARK_FILE), legacy).expect("legacy file");
        assert_eq!(read(dir.path()).expect("read"), Some(105));
        write(dir.path(), 106).expect("rewrite");
        let rewritten = std::fs::read(dir.path().join(HIGH_WATERMARK_FILE)).expect("bytes");
        assert_eq!(rewritten, encode(106), "written in the current version");
    }

    #[test]
    fn checkpoint_file_persists_is_replaced_and_a_damaged_one_reads_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()).expect("read"), None);
        write(dir.path(), 7).expect("write");
        write(dir.path(), 9).expect("rewrite");
        assert_eq!(read(dir.path()).expect("read"), Some(9));
        let path = dir.path().join(HIGH_WATERMARK_FILE);
        let bytes = encode(9);
        for len in 0..bytes.len() {
            std::fs::write(&path, &bytes[..len]).expect("cut");
            assert_eq!(read(dir.path()).expect("read"), None, "cut at {len}");
        }
    }
}
