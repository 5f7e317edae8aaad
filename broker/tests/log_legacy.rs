//! Partition logs written by tokafka 0.1.0 open with this log: the fixture data directory
//! (`fixtures/standalone-0.1.0.tar.gz`) holds checkpoints in the 0.1.0 format, which are read
//! and, once written again, written in the current one.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokafka_broker::log::format::{BatchHeader, CLEAN_SHUTDOWN_FILE, RECOVERY_POINT_FILE};
use tokafka_broker::log::{LogConfig, PartitionLog};

/// The fixture unpacked into a fresh directory; its `data/` holds the partition directories.
fn unpack_fixture() -> tempfile::TempDir {
    let archive =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/standalone-0.1.0.tar.gz");
    let root = tempfile::tempdir().expect("tempdir");
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(root.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "unpack {}", archive.display());
    root
}

/// The log end offset of each partition of the fixture, from its manifest (a standalone
/// broker's high watermark is its log end).
fn expected_ends(root: &Path) -> Vec<(PathBuf, i64)> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).expect("manifest"))
            .expect("manifest JSON");
    let ends = manifest["high_watermarks"]
        .as_object()
        .expect("high_watermarks");
    assert!(!ends.is_empty());
    ends.iter()
        .map(|(partition, end)| {
            (
                root.join("data").join(partition),
                end.as_i64().expect("an offset"),
            )
        })
        .collect()
}

/// The version field of the checkpoint in `dir` named `file`.
fn checkpoint_version(dir: &Path, file: &str) -> u16 {
    let bytes = std::fs::read(dir.join(file)).expect("checkpoint");
    u16::from_be_bytes([bytes[4], bytes[5]])
}

#[test]
fn partition_logs_of_0_1_0_open_with_every_record_and_rewrite_their_checkpoints() {
    let root = unpack_fixture();
    for (i, (dir, end)) in expected_ends(root.path()).into_iter().enumerate() {
        let name = dir.display().to_string();
        assert_eq!(checkpoint_version(&dir, RECOVERY_POINT_FILE), 1, "{name}");
        if i % 2 == 1 {
            // As after a crash: recovery starts from the 0.1.0 recovery point.
            std::fs::remove_file(dir.join(CLEAN_SHUTDOWN_FILE)).expect("remove marker");
        }
        let log = PartitionLog::open(&dir, LogConfig::default()).expect("open");
        assert_eq!(log.log_end_offset(), end, "{name}");
        let epochs: Vec<i32> = log.epoch_entries().iter().map(|e| e.epoch).collect();
        assert_eq!(
            epochs,
            vec![0],
            "{name}: the 0.1.0 epoch checkpoint is read"
        );
        let mut next = log.log_start_offset();
        for batch in log.batches(next, end) {
            let header = BatchHeader::parse(&batch.expect("batch")).expect("header");
            assert!(header.base_offset >= next, "{name}: offsets increase");
            next = header.next_offset();
        }
        assert_eq!(next, end, "{name}: every batch up to the end reads back");
        log.close().expect("close");
        assert_eq!(
            checkpoint_version(&dir, RECOVERY_POINT_FILE),
            2,
            "{name}: written in the current version"
        );
        let reopened = PartitionLog::open(&dir, LogConfig::default()).expect("reopen");
        assert_eq!(reopened.log_end_offset(), end, "{name}");
    }
}
