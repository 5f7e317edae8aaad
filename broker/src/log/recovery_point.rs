//! The recovery point of a partition: how far the active segment is known durable, so that
//! recovery after a crash validates only the bytes after it.
//!
//! Framed as every checkpoint is ([`checkpoint`](super::checkpoint)), with a body of segment
//! base offset, flushed position and the offset of the batch at that position. Unlike the
//! other checkpoints it is rewritten in place, not replaced atomically: it is written on every
//! flush, and a torn or damaged one fails its checks and is ignored, which only makes the next
//! recovery scan more of the active segment, never less.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::checkpoint::{
    self, Body, Checkpoint, Corruption, CRC_SIZE, HEADER_SIZE, RECOVERY_POINT_BODY_SIZE,
    RECOVERY_POINT_FILE,
};
use super::LogError;

/// Bytes of the file in the current version; a legacy one is shorter.
const FILE_SIZE: usize = HEADER_SIZE + RECOVERY_POINT_BODY_SIZE + CRC_SIZE;

/// Everything in segment `segment_base_offset` below `position` is durable, and the batch at
/// `position` (if any) starts at `next_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPoint {
    pub segment_base_offset: i64,
    pub position: u64,
    pub next_offset: i64,
}

impl RecoveryPoint {
    /// The checkpoint file's bytes, in the current version.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(RECOVERY_POINT_BODY_SIZE);
        body.extend_from_slice(&self.segment_base_offset.to_be_bytes());
        body.extend_from_slice(&self.position.to_be_bytes());
        body.extend_from_slice(&self.next_offset.to_be_bytes());
        checkpoint::encode(Checkpoint::RecoveryPoint, &body)
    }

    /// Decodes a checkpoint file's bytes (current or legacy version).
    ///
    /// # Errors
    /// The [`Corruption`] found: a frame check, or a body that is not three fields.
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        checkpoint::decode(Checkpoint::RecoveryPoint, bytes, Self::read_body)
    }

    fn read_body(body: &mut Body<'_>) -> Result<Self, Corruption> {
        Ok(Self {
            segment_base_offset: body.i64()?,
            position: body.u64()?,
            next_offset: body.i64()?,
        })
    }
}

/// The open checkpoint file of one partition.
pub struct RecoveryPointFile {
    path: PathBuf,
    file: File,
}

impl RecoveryPointFile {
    /// Opens (creating if needed) the checkpoint file in `dir`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        let path = dir.join(RECOVERY_POINT_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LogError::io("open recovery point", &path, e))?;
        Ok(Self { path, file })
    }

    /// The stored checkpoint; `None` when the file is empty (never written) or damaged.
    ///
    /// Contract on damage (logged): the caller recovers the active segment from its start, as
    /// if no byte of it were known durable. That costs time, never data.
    ///
    /// # Errors
    /// I/O errors reading the file.
    pub fn read(&self) -> Result<Option<RecoveryPoint>, LogError> {
        // One byte more than a whole checkpoint, so that a longer file reads as damaged.
        let mut buf = [0u8; FILE_SIZE + 1];
        let mut len = 0;
        while len < buf.len() {
            let n = self
                .file
                .read_at(&mut buf[len..], len as u64)
                .map_err(|e| LogError::io("read recovery point", &self.path, e))?;
            if n == 0 {
                break;
            }
            len += n;
        }
        if len == 0 {
            return Ok(None);
        }
        match RecoveryPoint::decode(&buf[..len]) {
            Ok(point) => Ok(Some(point)),
            Err(corruption) => {
                warn!(path = %self.path.display(), %corruption, "damaged recovery point; recovery scans the active segment from its start");
                Ok(None)
            }
        }
    }

    /// Writes the checkpoint in place, in the current version; durable only once `sync` is
    /// true or a later fsync runs. A crash midway leaves a damaged file (see [`read`](Self::read)).
    ///
    /// # Errors
    /// I/O errors of the write or the fsync.
    pub fn write(&self, point: RecoveryPoint, sync: bool) -> Result<(), LogError> {
        self.file
            .write_all_at(&point.encode(), 0)
            .map_err(|e| LogError::io("write recovery point", &self.path, e))?;
        if sync {
            self.file
                .sync_data()
                .map_err(|e| LogError::io("fsync recovery point", &self.path, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::checkpoint::{assert_damage_detected, encode_legacy};

    const POINT: RecoveryPoint = RecoveryPoint {
        segment_base_offset: 500,
        position: 12_345,
        next_offset: 777,
    };

    #[test]
    fn checkpoint_round_trips_and_every_cut_or_flip_is_detected() {
        let bytes = POINT.encode();
        assert_eq!(bytes.len(), FILE_SIZE);
        assert_eq!(RecoveryPoint::decode(&bytes), Ok(POINT));
        assert_damage_detected(&bytes, RecoveryPoint::decode);
    }

    #[test]
    fn a_checkpoint_written_by_0_1_0_is_read() {
        // orders-0/recovery-point of broker/tests/fixtures/standalone-0.1.0.tar.gz.
        let legacy = [
            0x54, 0x4b, 0x52, 0x50, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0xf1, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x64, 0x18, 0x48, 0xd3, 0x05,
        ];
        let point = RecoveryPoint {
            segment_base_offset: 0,
            position: 1521,
            next_offset: 100,
        };
        assert_eq!(RecoveryPoint::decode(&legacy), Ok(point));
        let mut body = Vec::new();
        for field in [0i64, 1521, 100] {
            body.extend_from_slice(&field.to_be_bytes());
        }
        assert_eq!(encode_legacy(Checkpoint::RecoveryPoint, &body), legacy);
        assert_damage_detected(&legacy, RecoveryPoint::decode);
    }

    #[test]
    fn a_legacy_file_is_rewritten_in_the_current_version_and_damage_reads_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(RECOVERY_POINT_FILE);
        let file = RecoveryPointFile::open(dir.path()).expect("open");
        assert_eq!(file.read().expect("read"), None, "a new file is empty");
        let mut body = Vec::new();
        for field in [500i64, 12_345, 777] {
            body.extend_from_slice(&field.to_be_bytes());
        }
        std::fs::write(&path, encode_legacy(Checkpoint::RecoveryPoint, &body)).expect("legacy");
        assert_eq!(file.read().expect("read"), Some(POINT));
        file.write(POINT, true).expect("write");
        assert_eq!(std::fs::read(&path).expect("bytes"), POINT.encode());
        let reopened = RecoveryPointFile::open(dir.path()).expect("reopen");
        assert_eq!(reopened.read().expect("read"), Some(POINT));
        let mut damaged = POINT.encode();
        damaged[HEADER_SIZE + 3] ^= 0x10;
        std::fs::write(&path, &damaged).expect("damage");
        assert_eq!(reopened.read().expect("read"), None);
        std::fs::write(&path, [POINT.encode(), vec![0]].concat()).expect("longer");
        assert_eq!(reopened.read().expect("read"), None);
    }
}
