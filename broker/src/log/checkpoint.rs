//! The checkpoint files of a partition log and their one framing: file names, magics,
//! versions and sizes, and the [`Corruption`] a damaged file reads as.
//!
//! Three small files record what a log knows beyond its segments:
//!
//! | file                             | magic  | body (big-endian)                                  |
//! |----------------------------------|--------|----------------------------------------------------|
//! | [`RECOVERY_POINT_FILE`]          | `TKRP` | segment base offset i64, flushed position u64, offset of the batch there i64 |
//! | [`HIGH_WATERMARK_FILE`]          | `TKHW` | high watermark i64                                 |
//! | [`LEADER_EPOCH_CHECKPOINT_FILE`] | `TKLE` | entry count u32, then per entry: epoch i32, start offset i64 |
//!
//! Each is framed the same way (big-endian), version [`VERSION`]:
//!
//! ```text
//! magic (4) | version (2) | body length (4) | body | CRC32C (4) of every byte before it
//! ```
//!
//! tokafka 0.1.0 wrote version [`LEGACY_VERSION`]: the same without the body length (the body
//! runs up to the CRC). Such files are read, never written: the next write of a file replaces
//! it with the current version. (0.1.0 reads a current file as damaged, which every owner
//! below survives, so a downgrade loses nothing either.)
//!
//! A cut, flipped or foreign file fails a check and reads as a [`Corruption`] naming the file,
//! the byte and what is wrong there. What a reader does then is its own contract, stated where
//! it reads; none of them loses a record:
//! - recovery point: recovery scans the whole active segment
//!   ([`RecoveryPointFile::read`](super::recovery_point::RecoveryPointFile::read));
//! - high watermark: it starts from the log start ([`high_watermark::read`](super::high_watermark::read));
//! - leader epochs: the cache is rebuilt from the batch headers
//!   ([`epochs::read_checkpoint`](super::epochs::read_checkpoint)).
//!
//! This module knows the frame only; each owner encodes and checks its body through [`Body`],
//! so that all the bytes of a checkpoint are read with the same bounds checks.

use std::path::Path;

use tracing::warn;

use super::{durable, LogError};

/// The flushed position of the active segment (rewritten in place on every flush).
pub const RECOVERY_POINT_FILE: &str = "recovery-point";
/// The last high watermark a replicated partition knew (Kafka's
/// `replication-offset-checkpoint`, one per partition).
pub const HIGH_WATERMARK_FILE: &str = "high-watermark";
/// The leader epochs of the log and where each starts (Kafka's `leader-epoch-checkpoint`).
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// The version written.
pub const VERSION: u16 = 2;
/// The version of tokafka 0.1.0, without a body length: read, never written.
pub const LEGACY_VERSION: u16 = 1;

pub const MAGIC_SIZE: usize = 4;
pub const VERSION_SIZE: usize = 2;
pub const LENGTH_SIZE: usize = 4;
pub const CRC_SIZE: usize = 4;
/// Bytes before the body: magic, version, body length.
pub const HEADER_SIZE: usize = MAGIC_SIZE + VERSION_SIZE + LENGTH_SIZE;
/// Bytes before the body in a [`LEGACY_VERSION`] file: magic, version.
pub const LEGACY_HEADER_SIZE: usize = MAGIC_SIZE + VERSION_SIZE;

/// Body of the recovery point: segment base offset, position, next offset.
pub const RECOVERY_POINT_BODY_SIZE: usize = 8 + 8 + 8;
/// Body of the high-watermark checkpoint.
pub const HIGH_WATERMARK_BODY_SIZE: usize = 8;
/// The entry count that opens the body of the leader-epoch checkpoint.
pub const EPOCH_COUNT_SIZE: usize = 4;
/// One leader-epoch entry: epoch (i32) and start offset (i64).
pub const EPOCH_ENTRY_SIZE: usize = 4 + 8;
/// Entries a leader-epoch checkpoint may hold; far above any real history (one per leader
/// change that wrote records), it bounds what a damaged count could make a reader allocate.
pub const EPOCH_ENTRIES_MAX: usize = 1 << 20;
/// The largest body of any checkpoint.
pub const BODY_SIZE_MAX: usize = EPOCH_COUNT_SIZE + EPOCH_ENTRIES_MAX * EPOCH_ENTRY_SIZE;

/// One of the checkpoint files of a partition directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    RecoveryPoint,
    HighWatermark,
    LeaderEpochs,
}

impl Checkpoint {
    pub const fn file_name(self) -> &'static str {
        match self {
            Self::RecoveryPoint => RECOVERY_POINT_FILE,
            Self::HighWatermark => HIGH_WATERMARK_FILE,
            Self::LeaderEpochs => LEADER_EPOCH_CHECKPOINT_FILE,
        }
    }

    pub const fn magic(self) -> [u8; MAGIC_SIZE] {
        match self {
            Self::RecoveryPoint => *b"TKRP",
            Self::HighWatermark => *b"TKHW",
            Self::LeaderEpochs => *b"TKLE",
        }
    }
}

/// A checkpoint that failed a check: which file, at which byte, what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {problem} (at byte {position})")]
pub struct Corruption {
    pub file: &'static str,
    pub position: usize,
    pub problem: Problem,
}

/// What is wrong with a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the file ends early: {len} bytes, {needed} needed")]
    Short { len: usize, needed: usize },
    #[error("magic {found:02x?}, expected {expected:02x?}")]
    Magic {
        found: [u8; MAGIC_SIZE],
        expected: [u8; MAGIC_SIZE],
    },
    #[error("unknown version {0}")]
    Version(u16),
    #[error("a body of {declared} bytes is declared, {present} are present")]
    Length { declared: usize, present: usize },
    #[error("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    /// The frame is intact but its body is not what its owner wrote.
    #[error("{0}")]
    Body(String),
}

/// The bytes of checkpoint `kind` holding `body`, in the current version.
///
/// # Panics
/// When `body` is larger than [`BODY_SIZE_MAX`] (no owner writes one).
pub fn encode(kind: Checkpoint, body: &[u8]) -> Vec<u8> {
    assert!(
        body.len() <= BODY_SIZE_MAX,
        "a {} body of {} bytes",
        kind.file_name(),
        body.len()
    );
    let length = u32::try_from(body.len()).expect("bounded by BODY_SIZE_MAX");
    let mut out = Vec::with_capacity(HEADER_SIZE + body.len() + CRC_SIZE);
    out.extend_from_slice(&kind.magic());
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Checks the frame of checkpoint `kind` (current or legacy version) and reads its body with
/// `read_body`, which must consume all of it.
///
/// # Errors
/// The first check that failed: size, magic, version, body length, CRC32C, then whatever
/// `read_body` finds wrong, and bytes it left unread.
pub fn decode<T>(
    kind: Checkpoint,
    bytes: &[u8],
    read_body: impl FnOnce(&mut Body<'_>) -> Result<T, Corruption>,
) -> Result<T, Corruption> {
    let file = kind.file_name();
    let corruption = |position, problem| Corruption {
        file,
        position,
        problem,
    };
    let short = |needed| {
        corruption(
            bytes.len(),
            Problem::Short {
                len: bytes.len(),
                needed,
            },
        )
    };
    if bytes.len() < LEGACY_HEADER_SIZE {
        return Err(short(LEGACY_HEADER_SIZE));
    }
    let magic: [u8; MAGIC_SIZE] = bytes[..MAGIC_SIZE].try_into().expect("checked size");
    if magic != kind.magic() {
        let expected = kind.magic();
        return Err(corruption(
            0,
            Problem::Magic {
                found: magic,
                expected,
            },
        ));
    }
    let version = u16::from_be_bytes([bytes[MAGIC_SIZE], bytes[MAGIC_SIZE + 1]]);
    let body_start = match version {
        VERSION => HEADER_SIZE,
        LEGACY_VERSION => LEGACY_HEADER_SIZE,
        other => return Err(corruption(MAGIC_SIZE, Problem::Version(other))),
    };
    if bytes.len() < body_start + CRC_SIZE {
        return Err(short(body_start + CRC_SIZE));
    }
    let crc_at = bytes.len() - CRC_SIZE;
    if version == VERSION {
        let field = &bytes[LEGACY_HEADER_SIZE..HEADER_SIZE];
        let declared = u32::from_be_bytes(field.try_into().expect("checked size")) as usize;
        let present = crc_at - body_start;
        if declared != present {
            return Err(corruption(
                LEGACY_HEADER_SIZE,
                Problem::Length { declared, present },
            ));
        }
    }
    let stored = u32::from_be_bytes(bytes[crc_at..].try_into().expect("checked size"));
    let computed = crc32c::crc32c(&bytes[..crc_at]);
    if stored != computed {
        return Err(corruption(crc_at, Problem::Crc { stored, computed }));
    }
    let mut body = Body {
        file,
        bytes: &bytes[body_start..crc_at],
        start: body_start,
        read: 0,
    };
    let value = read_body(&mut body)?;
    body.end()?;
    Ok(value)
}

/// The body of a checkpoint being read: big-endian fields in order, each checked against the
/// bytes left, every error a [`Corruption`] at the byte it concerns.
#[derive(Debug)]
pub struct Body<'a> {
    file: &'static str,
    bytes: &'a [u8],
    /// Position of the body in the file.
    start: usize,
    /// Bytes of the body read so far.
    read: usize,
}

impl Body<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Corruption> {
        let field = self
            .bytes
            .get(self.read..self.read + N)
            .ok_or_else(|| self.invalid(format!("the body ends within a {N}-byte field")))?;
        self.read += N;
        Ok(field.try_into().expect("N bytes"))
    }

    pub fn i32(&mut self) -> Result<i32, Corruption> {
        self.take().map(i32::from_be_bytes)
    }

    pub fn u32(&mut self) -> Result<u32, Corruption> {
        self.take().map(u32::from_be_bytes)
    }

    pub fn i64(&mut self) -> Result<i64, Corruption> {
        self.take().map(i64::from_be_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, Corruption> {
        self.take().map(u64::from_be_bytes)
    }

    /// Bytes of the body not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.read
    }

    /// A [`Problem::Body`] at the next byte to read.
    pub fn invalid(&self, detail: String) -> Corruption {
        Corruption {
            file: self.file,
            position: self.start + self.read,
            problem: Problem::Body(detail),
        }
    }

    fn end(&self) -> Result<(), Corruption> {
        match self.remaining() {
            0 => Ok(()),
            left => Err(self.invalid(format!("{left} bytes after the last field"))),
        }
    }
}

/// Reads checkpoint `kind` in `dir` with `read_body` (see [`decode`]). `Ok(None)` when the
/// file does not exist, or is damaged: then a warning names the file, what is wrong and
/// where, and `fallback`, what the caller does instead.
///
/// # Errors
/// I/O errors other than "not found".
pub fn read<T>(
    dir: &Path,
    kind: Checkpoint,
    fallback: &'static str,
    read_body: impl FnOnce(&mut Body<'_>) -> Result<T, Corruption>,
) -> Result<Option<T>, LogError> {
    let path = dir.join(kind.file_name());
    let Some(bytes) = durable::read(&path)? else {
        return Ok(None);
    };
    match decode(kind, &bytes, read_body) {
        Ok(value) => Ok(Some(value)),
        Err(corruption) => {
            warn!(path = %path.display(), %corruption, fallback, "damaged checkpoint");
            Ok(None)
        }
    }
}

/// Replaces checkpoint `kind` in `dir` with `body`, in the current version, atomically and
/// durably ([`durable::write_atomically`]).
///
/// # Errors
/// I/O errors of the write, fsync or rename.
pub fn write(dir: &Path, kind: Checkpoint, body: &[u8]) -> Result<(), LogError> {
    Ok(durable::write_atomically(
        &dir.join(kind.file_name()),
        &encode(kind, body),
    )?)
}

/// The bytes of checkpoint `kind` holding `body` in the legacy version, as 0.1.0 wrote them.
#[cfg(test)]
pub(crate) fn encode_legacy(kind: Checkpoint, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&kind.magic());
    out.extend_from_slice(&LEGACY_VERSION.to_be_bytes());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Asserts that every cut of `bytes` and every single-bit flip in them fails `decode`.
#[cfg(test)]
pub(crate) fn assert_damage_detected<T: std::fmt::Debug>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, Corruption>,
) {
    for len in 0..bytes.len() {
        assert!(decode(&bytes[..len]).is_err(), "cut at byte {len}");
    }
    for at in 0..bytes.len() {
        for bit in 0..8 {
            let mut flipped = bytes.to_vec();
            flipped[at] ^= 1 << bit;
            assert!(decode(&flipped).is_err(), "bit {bit} of byte {at} flipped");
        }
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(decode(&longer).is_err(), "a byte appended");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of two fields, as an owner would read it.
    fn pair(body: &mut Body<'_>) -> Result<(i64, u32), Corruption> {
        Ok((body.i64()?, body.u32()?))
    }

    fn pair_body(a: i64, b: u32) -> Vec<u8> {
        let mut body = a.to_be_bytes().to_vec();
        body.extend_from_slice(&b.to_be_bytes());
        body
    }

    #[test]
    fn a_frame_round_trips_in_both_versions() {
        let body = pair_body(-7, 42);
        for kind in [
            Checkpoint::RecoveryPoint,
            Checkpoint::HighWatermark,
            Checkpoint::LeaderEpochs,
        ] {
            let current = encode(kind, &body);
            assert_eq!(current.len(), HEADER_SIZE + body.len() + CRC_SIZE);
            assert_eq!(decode(kind, &current, pair), Ok((-7, 42)));
            let legacy = encode_legacy(kind, &body);
            assert_eq!(decode(kind, &legacy, pair), Ok((-7, 42)));
        }
    }

    #[test]
    fn every_cut_and_bit_flip_of_a_frame_is_detected() {
        let body = pair_body(1 << 40, 9);
        let kind = Checkpoint::HighWatermark;
        assert_damage_detected(&encode(kind, &body), |b| decode(kind, b, pair));
        assert_damage_detected(&encode_legacy(kind, &body), |b| decode(kind, b, pair));
        assert_damage_detected(&encode(kind, &[]), |b| decode(kind, b, |_| Ok(())));
    }

    #[test]
    fn corruption_says_what_and_where() {
        let kind = Checkpoint::RecoveryPoint;
        let bytes = encode(kind, &pair_body(3, 4));
        let problem_at = |bytes: &[u8]| {
            decode(kind, bytes, pair)
                .map(|_| ())
                .map_err(|c| (c.position, c.problem))
        };
        assert_eq!(
            problem_at(&bytes[..3]),
            Err((3, Problem::Short { len: 3, needed: 6 }))
        );
        let mut foreign = bytes.clone();
        foreign[..4].copy_from_slice(b"TKHW");
        assert!(matches!(
            problem_at(&foreign),
            Err((0, Problem::Magic { .. }))
        ));
        let mut newer = bytes.clone();
        newer[5] = 3;
        assert_eq!(problem_at(&newer), Err((4, Problem::Version(3))));
        let crc_at = bytes.len() - CRC_SIZE;
        assert!(matches!(
            problem_at(&bytes[..crc_at]),
            Err((
                6,
                Problem::Length {
                    declared: 12,
                    present: 8
                }
            ))
        ));
        let mut flipped = bytes.clone();
        flipped[HEADER_SIZE] ^= 0x80;
        assert!(matches!(problem_at(&flipped), Err((at, Problem::Crc { .. })) if at == crc_at));
        // An intact frame whose body is shorter or longer than its owner reads.
        let short = encode(kind, &[0; 10]);
        assert!(matches!(
            problem_at(&short),
            Err((at, Problem::Body(_))) if at == HEADER_SIZE + 8
        ));
        let long = encode(kind, &[0; 13]);
        let error = decode(kind, &long, pair).expect_err("a byte left over");
        assert_eq!(error.position, HEADER_SIZE + 12);
        assert_eq!(
            error.to_string(),
            "recovery-point: 1 bytes after the last field (at byte 22)"
        );
    }

    #[test]
    fn a_missing_file_reads_as_none_and_a_damaged_one_as_none_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kind = Checkpoint::HighWatermark;
        assert_eq!(read(dir.path(), kind, "test", pair).expect("read"), None);
        write(dir.path(), kind, &pair_body(5, 6)).expect("write");
        assert_eq!(
            read(dir.path(), kind, "test", pair).expect("read"),
            Some((5, 6))
        );
        std::fs::write(dir.path().join(HIGH_WATERMARK_FILE), b"TKHW\0\x02junk").expect("damage");
        assert_eq!(read(dir.path(), kind, "test", pair).expect("read"), None);
    }
}
