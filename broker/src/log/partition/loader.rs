//! Loading a partition log at open (Kafka's `LogLoader`): from the files found in its
//! directory, the segments to serve, recovered after a crash.
//!
//! What a load does, in order:
//! - lists the segments by their `.log` files and removes index files left without one;
//! - opens the sealed segments (flushed and trimmed at roll): their indexes are checked and
//!   rebuilt if damaged, at no fsync unless a rebuild happened;
//! - after a clean shutdown (the [`CLEAN_SHUTDOWN_FILE`] marker written by
//!   [`PartitionLog::close`](super::PartitionLog::close)) trusts the active segment; after a
//!   crash validates it from its recovery point and cuts its torn tail (a damaged or stale
//!   recovery point means from its start: more work, never less data);
//! - starts an empty directory at offset 0, or at the offset its recovery point names (a reset
//!   cut short by a crash);
//! - checkpoints the active segment as durable, then removes the marker, so that a crash from
//!   here on is recovered again;
//! - loads the leader-epoch cache (rebuilt from the batch headers when its checkpoint is
//!   missing or damaged) and fits it to the log.
//!
//! Loading happens once, before the log serves anything, so none of this takes the writer
//! lock; [`PartitionLog`](super::PartitionLog) serves what it returns and never comes back
//! here.

use std::path::Path;
use std::sync::Arc;

use tracing::{debug, info, warn};

use crate::log::epochs::{self, EpochCache};
use crate::log::format::{self, CLEAN_SHUTDOWN_FILE, LOG_SUFFIX};
use crate::log::recovery_point::{RecoveryPoint, RecoveryPointFile};
use crate::log::segment::{Segment, SegmentLimits};
use crate::log::{durable, LogConfig, LogError};

/// A log directory, loaded and ready to serve.
pub(super) struct Loaded {
    /// Oldest first, never empty; the last one is the active segment, unsealed.
    pub segments: Vec<Arc<Segment>>,
    /// The open recovery-point checkpoint, naming the active segment's end.
    pub checkpoint: RecoveryPointFile,
    pub log_start: i64,
    pub log_end: i64,
    /// Covering exactly `[log_start, log_end)`.
    pub epochs: EpochCache,
}

/// Loads the partition log in `dir` (created when absent) for `config`, which is valid.
///
/// Durable when this returns: the active segment and its recovery point are flushed, and a
/// crash from here on is recovered like any other.
///
/// # Errors
/// I/O errors. Damaged data is not an error: it is recovered.
pub(super) fn load(dir: &Path, config: &LogConfig) -> Result<Loaded, LogError> {
    std::fs::create_dir_all(dir).map_err(|e| LogError::io("create log directory", dir, e))?;
    let marker = dir.join(CLEAN_SHUTDOWN_FILE);
    let clean = marker.exists();
    let limits = SegmentLimits::for_reading(config);

    let bases = list_segment_bases(dir)?;
    let checkpoint = RecoveryPointFile::open(dir)?;
    let mut segments = Vec::with_capacity(bases.len().max(1));
    for (i, base) in bases.iter().enumerate() {
        let is_active = i + 1 == bases.len();
        let segment = Segment::open(dir, *base, limits, is_active)?;
        if !is_active {
            // Sealed at roll, so flushed and trimmed already: loading it costs no fsync
            // unless its indexes had to be rebuilt (or its seal was cut short).
            segment.load_tail(false)?;
            if segment.indexes_untrimmed() {
                segment.seal()?;
            }
        } else if clean {
            segment.load_tail(true)?;
        } else {
            let point = checkpoint
                .read()?
                .filter(|p| p.segment_base_offset == *base && p.position <= segment.size_bytes());
            let (position, next_offset) = point.map_or((0, *base), |p| (p.position, p.next_offset));
            info!(dir = %dir.display(), segment = base, position, "recovering after unclean shutdown");
            segment.recover_from(position, next_offset)?;
        }
        segments.push(Arc::new(segment));
    }
    if segments.is_empty() {
        // A new log starts at 0; one whose reset was cut short by a crash at the offset
        // its checkpoint names.
        let base = checkpoint
            .read()?
            .map_or(0, |p| p.segment_base_offset.max(0));
        segments.push(Arc::new(Segment::create(dir, base, limits)?));
        durable::sync_dir(dir)?;
    }
    let active = segments.last().map(Arc::clone).ok_or(LogError::Closed)?;
    active.unseal()?;
    active.flush()?;
    checkpoint.write(
        RecoveryPoint {
            segment_base_offset: active.base_offset(),
            position: active.size_bytes(),
            next_offset: active.next_offset(),
        },
        true,
    )?;
    if clean {
        std::fs::remove_file(&marker)
            .map_err(|e| LogError::io("remove clean marker", &marker, e))?;
        durable::sync_dir(dir)?;
    }
    let log_start = segments.first().map_or(0, |s| s.base_offset());
    let log_end = active.next_offset();
    let epochs = load_epochs(dir, &segments, log_start, log_end)?;
    debug!(dir = %dir.display(), log_start, log_end, segments = segments.len(), clean, "loaded partition log");
    Ok(Loaded {
        segments,
        checkpoint,
        log_start,
        log_end,
        epochs,
    })
}

/// The epoch cache of a log with `segments` spanning `[log_start, log_end)`: from its
/// checkpoint or, when that is missing or damaged, rebuilt from the batch headers; cut to the
/// log (entries at or past the end go, history below the start is folded into the start, an
/// empty log has none) and checkpointed again when that changed it.
fn load_epochs(
    dir: &Path,
    segments: &[Arc<Segment>],
    log_start: i64,
    log_end: i64,
) -> Result<EpochCache, LogError> {
    let (mut cache, mut changed) = match epochs::read_checkpoint(dir)? {
        Some(cache) => (cache, false),
        None => {
            if log_end > log_start {
                warn!(dir = %dir.display(), "no usable leader-epoch checkpoint; rebuilding it from the batch headers");
            }
            (scan_epochs(dir, segments)?, true)
        }
    };
    changed |= cache.truncate_from_end(log_end);
    changed |= if log_end == log_start {
        cache.clear()
    } else {
        cache.truncate_from_start(log_start)
    };
    if changed {
        epochs::write_checkpoint(dir, &cache)?;
    }
    Ok(cache)
}

/// The epochs of the batches in `segments`, read from their headers only. A header that
/// cannot be read ends the walk of its segment (with a warning): the epochs after it in that
/// segment are missed, never invented.
fn scan_epochs(dir: &Path, segments: &[Arc<Segment>]) -> Result<EpochCache, LogError> {
    let mut cache = EpochCache::default();
    for segment in segments {
        let end = segment.size_bytes();
        let mut position = 0u64;
        // Each header moves the position forward by at least a header's size.
        while let Some(header) = segment.header_at(position, end)? {
            cache.observe_batch(header.partition_leader_epoch, header.base_offset);
            position += header.size_bytes() as u64;
        }
        if position < end {
            warn!(dir = %dir.display(), segment = segment.base_offset(), position, "unreadable batch header while rebuilding leader epochs");
        }
    }
    Ok(cache)
}

/// Base offsets of the segments in `dir`, sorted. Index files without a log file are
/// removed; files that are not segment files are left alone.
fn list_segment_bases(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut bases = Vec::new();
    let mut orphans = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| LogError::io("list log directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("list log directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((base, suffix)) = format::parse_segment_file_name(name) else {
            continue;
        };
        if suffix == LOG_SUFFIX {
            bases.push(base);
        } else {
            orphans.push((base, entry.path()));
        }
    }
    bases.sort_unstable();
    for (base, path) in orphans {
        if bases.binary_search(&base).is_err() {
            warn!(path = %path.display(), "removing index file without a segment");
            std::fs::remove_file(&path)
                .map_err(|e| LogError::io("remove orphan index", &path, e))?;
        }
    }
    Ok(bases)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{log_of, small_segments};
    use super::*;
    use crate::log::format::{segment_path, INDEX_SUFFIX, RECOVERY_POINT_FILE};

    /// Stops `log` as a crash would: what was flushed stays, no clean-shutdown marker.
    fn crash(log: crate::log::PartitionLog) {
        log.flush().expect("flush");
        drop(log);
    }

    #[test]
    fn a_clean_shutdown_marker_is_trusted_then_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let end = {
            let log = log_of(dir.path(), 10);
            log.close().expect("close");
            log.log_end_offset()
        };
        assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        let loaded = load(dir.path(), &small_segments()).expect("load");
        assert_eq!(loaded.log_end, end);
        assert!(
            !dir.path().join(CLEAN_SHUTDOWN_FILE).exists(),
            "the next crash must be recovered"
        );
    }

    #[test]
    fn a_damaged_recovery_point_recovers_the_active_segment_from_its_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log_of(dir.path(), 10);
        let end = log.log_end_offset();
        crash(log);
        let path = dir.path().join(RECOVERY_POINT_FILE);
        let mut bytes = std::fs::read(&path).expect("recovery point");
        bytes[8] ^= 0xff;
        std::fs::write(&path, &bytes).expect("damage");
        let loaded = load(dir.path(), &small_segments()).expect("load");
        assert_eq!(loaded.log_end, end, "every flushed batch is kept");
        let written = RecoveryPointFile::open(dir.path())
            .and_then(|f| f.read())
            .expect("read");
        assert_eq!(
            written.map(|p| p.next_offset),
            Some(end),
            "the recovery point is rewritten"
        );
    }

    #[test]
    fn a_torn_tail_after_a_crash_is_cut_at_the_last_whole_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log_of(dir.path(), 3);
        let end = log.log_end_offset();
        let active = *log.segment_base_offsets().last().expect("active");
        crash(log);
        let path = segment_path(dir.path(), active, LOG_SUFFIX);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("segment");
        std::io::Write::write_all(&mut file, &[0xab; 40]).expect("torn bytes");
        let loaded = load(dir.path(), &small_segments()).expect("load");
        assert_eq!(loaded.log_end, end);
        let active = loaded.segments.last().expect("active");
        assert_eq!(
            std::fs::metadata(&path).expect("segment").len(),
            active.size_bytes(),
            "the torn bytes are cut"
        );
    }

    #[test]
    fn an_index_without_its_segment_is_removed_and_other_files_are_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let orphan = segment_path(dir.path(), 500, INDEX_SUFFIX);
        std::fs::write(&orphan, [0; 16]).expect("orphan index");
        let unrelated = dir.path().join("notes.txt");
        std::fs::write(&unrelated, b"kept").expect("unrelated");
        let loaded = load(dir.path(), &small_segments()).expect("load");
        assert_eq!((loaded.log_start, loaded.log_end), (0, 0));
        assert!(!orphan.exists());
        assert!(unrelated.exists());
    }

    #[test]
    fn a_directory_without_segments_starts_where_its_recovery_point_says() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A reset to 700 cut short by a crash: its checkpoint was written, no segment yet.
        RecoveryPointFile::open(dir.path())
            .and_then(|f| {
                f.write(
                    RecoveryPoint {
                        segment_base_offset: 700,
                        position: 0,
                        next_offset: 700,
                    },
                    true,
                )
            })
            .expect("checkpoint");
        let loaded = load(dir.path(), &small_segments()).expect("load");
        assert_eq!((loaded.log_start, loaded.log_end), (700, 700));
        assert!(loaded.epochs.is_empty());
    }
}
