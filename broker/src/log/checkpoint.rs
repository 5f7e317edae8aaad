//! The recovery-point checkpoint of a partition: how far the active segment is known durable.
//!
//! Layout (big-endian): magic `TKRP` (4), version (2), segment base offset (8), flushed
//! position (8), offset of the batch at that position (8), CRC32C of the preceding bytes (4).
//! The file is rewritten in place; a torn or foreign file fails its CRC and is ignored, which
//! only makes the next recovery scan more of the active segment, never less.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::RECOVERY_POINT_FILE;
use super::LogError;

const MAGIC: &[u8; 4] = b"TKRP";
const VERSION: u16 = 1;
const BODY_SIZE: usize = 4 + 2 + 8 + 8 + 8;
const FILE_SIZE: usize = BODY_SIZE + 4;

/// Everything in segment `segment_base_offset` below `position` is durable, and the batch at
/// `position` (if any) starts at `next_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPoint {
    pub segment_base_offset: i64,
    pub position: u64,
    pub next_offset: i64,
}

impl RecoveryPoint {
    pub fn encode(&self) -> [u8; FILE_SIZE] {
        let mut out = [0u8; FILE_SIZE];
        out[0..4].copy_from_slice(MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_be_bytes());
        out[6..14].copy_from_slice(&self.segment_base_offset.to_be_bytes());
        out[14..22].copy_from_slice(&self.position.to_be_bytes());
        out[22..30].copy_from_slice(&self.next_offset.to_be_bytes());
        let crc = crc32c::crc32c(&out[..BODY_SIZE]);
        out[BODY_SIZE..].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a checkpoint; `None` when the bytes are not a whole, intact checkpoint.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
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
        Some(Self {
            segment_base_offset: i64::from_be_bytes(bytes[6..14].try_into().ok()?),
            position: u64::from_be_bytes(bytes[14..22].try_into().ok()?),
            next_offset: i64::from_be_bytes(bytes[22..30].try_into().ok()?),
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

    /// The stored checkpoint, if intact.
    ///
    /// # Errors
    /// I/O errors reading the file.
    pub fn read(&self) -> Result<Option<RecoveryPoint>, LogError> {
        let mut bytes = Vec::with_capacity(FILE_SIZE);
        let mut buf = [0u8; FILE_SIZE + 1];
        let n = self
            .file
            .read_at(&mut buf, 0)
            .map_err(|e| LogError::io("read recovery point", &self.path, e))?;
        bytes.extend_from_slice(&buf[..n]);
        Ok(RecoveryPoint::decode(&bytes))
    }

    /// Writes the checkpoint; durable only once `sync` is true or a later fsync runs.
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

    #[test]
    fn checkpoint_round_trips_and_rejects_damage() {
        let point = RecoveryPoint {
            segment_base_offset: 500,
            position: 12_345,
            next_offset: 777,
        };
        let bytes = point.encode();
        assert_eq!(RecoveryPoint::decode(&bytes), Some(point));
        for i in 0..bytes.len() {
            let mut damaged = bytes;
            damaged[i] ^= 0x01;
            assert_eq!(RecoveryPoint::decode(&damaged), None, "flip at byte {i}");
        }
        assert_eq!(RecoveryPoint::decode(&bytes[..10]), None);
    }

    #[test]
    fn checkpoint_file_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let point = RecoveryPoint {
            segment_base_offset: 0,
            position: 9,
            next_offset: 3,
        };
        RecoveryPointFile::open(dir.path())
            .and_then(|f| f.write(point, true))
            .expect("write");
        let read = RecoveryPointFile::open(dir.path())
            .and_then(|f| f.read())
            .expect("read");
        assert_eq!(read, Some(point));
    }
}
