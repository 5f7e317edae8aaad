//! Compaction of `__consumer_offsets`: after a pass, and after a crash anywhere between the
//! snapshot append and the last segment deletion, replaying the log gives exactly the state
//! it gave before (every committed offset and every stable group's metadata).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tokafka_broker::group::membership::{GroupSnapshot, MemberSnapshot};
use tokafka_broker::group::offsets::{
    decode_key, decode_value, CommittedOffset, OffsetStore, RecordKey, OFFSETS_TOPIC,
};
use tokafka_broker::log::LogConfig;
use tokafka_broker::replica::Partition;
use tokafka_broker::testing::led_alone;

const OFFSETS_PARTITIONS: i32 = 2;
const GROUPS: u64 = 6;
const TOPIC_PARTITIONS: u64 = 4;

/// Everything a replay rebuilds: committed offsets per group, stable groups' metadata.
#[derive(Debug, PartialEq)]
struct State {
    offsets: BTreeMap<String, BTreeMap<(String, i32), CommittedOffset>>,
    groups: BTreeMap<String, GroupSnapshot>,
}

/// An offsets store over `dir` whose segments roll every few KiB, its partitions led by this
/// node alone (in a new epoch at every open) and loaded.
struct Broker {
    partitions: Vec<Arc<Partition>>,
    store: OffsetStore,
    /// The stable groups the loads replayed.
    replayed: std::collections::HashMap<String, GroupSnapshot>,
}

fn open(dir: &Path) -> Broker {
    let config = LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    };
    let store = OffsetStore::new(OFFSETS_PARTITIONS);
    let mut partitions = Vec::new();
    let mut replayed = std::collections::HashMap::new();
    for index in 0..OFFSETS_PARTITIONS {
        let dir = dir.join(format!("{OFFSETS_TOPIC}-{index}"));
        let partition = led_alone(OFFSETS_TOPIC, index, &dir, config.clone());
        let epoch = partition.leader_epoch(-1).expect("led");
        replayed.extend(store.load(Arc::clone(&partition), epoch).expect("load"));
        partitions.push(partition);
    }
    Broker {
        partitions,
        store,
        replayed,
    }
}

impl Broker {
    fn close(self) {
        for partition in &self.partitions {
            partition.close().expect("close");
        }
    }

    /// Consumes the store's replayed groups: call once, right after open.
    fn state(&mut self) -> State {
        let offsets = self
            .store
            .groups()
            .into_iter()
            .map(|g| {
                let offsets = self.store.group_offsets(&g);
                (g, offsets)
            })
            .collect();
        let groups = std::mem::take(&mut self.replayed).into_iter().collect();
        State { offsets, groups }
    }

    fn partition_log(&self, index: i32) -> Arc<Partition> {
        let slot = usize::try_from(index).expect("index");
        Arc::clone(&self.partitions[slot])
    }

    fn offsets_bytes(&self) -> u64 {
        (0..OFFSETS_PARTITIONS)
            .map(|i| self.partition_log(i).log.size_bytes())
            .sum()
    }
}

fn member(id: &str, generation: i32) -> MemberSnapshot {
    MemberSnapshot {
        id: id.into(),
        instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        rebalance_timeout_ms: 30_000,
        session_timeout_ms: 10_000,
        subscription: Bytes::from_static(b"sub"),
        assignment: Bytes::from(format!("gen-{generation}")),
    }
}

fn group_snapshot(generation: i32) -> GroupSnapshot {
    GroupSnapshot {
        protocol_type: "consumer".into(),
        generation,
        protocol: Some("range".into()),
        leader: Some("m-1".into()),
        members: vec![member("m-1", generation), member("m-2", generation)],
    }
}

/// A deterministic history of commits, offset deletions and group metadata (with
/// tombstones) over a few groups, starting at step `from`.
fn write_history(store: &OffsetStore, from: u64, steps: u64) {
    let mut rng = from.wrapping_mul(6_364_136_223_846_793_005) | 1;
    let mut next = || {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        rng >> 33
    };
    for step in from..from + steps {
        let group = format!("group-{}", next() % GROUPS);
        let partition = (next() % TOPIC_PARTITIONS) as i32;
        let seq = step + 1;
        match next() % 20 {
            0 => {
                store
                    .write(&group, &[(("orders".into(), partition), None)], step as i64)
                    .expect("delete offset");
            }
            1 => {
                let snapshot = (next() % 3 != 0).then(|| group_snapshot(step as i32));
                store
                    .write_group(&group, seq, snapshot.as_ref(), step as i64)
                    .expect("group metadata");
            }
            _ => {
                let committed = CommittedOffset {
                    offset: step as i64,
                    leader_epoch: 0,
                    metadata: format!("step {step}"),
                    commit_timestamp_ms: step as i64,
                };
                store
                    .write(
                        &group,
                        &[(("orders".into(), partition), Some(committed))],
                        step as i64,
                    )
                    .expect("commit");
            }
        }
    }
}

/// A store with a long history, closed; returns the state its replay gives.
fn history(dir: &Path) -> State {
    let broker = open(dir);
    write_history(&broker.store, 0, 3_000);
    broker.close();
    let mut broker = open(dir);
    let state = broker.state();
    assert!(state.offsets.len() > 1 && !state.groups.is_empty());
    broker.close();
    state
}

#[test]
fn a_compacted_log_replays_to_the_state_before_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = history(dir.path());
    let broker = open(dir.path());
    let bytes_before = broker.offsets_bytes();
    let mut deleted = 0;
    for index in 0..OFFSETS_PARTITIONS {
        let done = broker
            .store
            .compact(index)
            .expect("compact")
            .expect("worth compacting");
        assert!(done.snapshot_records as u64 * 10 < done.sealed_records);
        assert_eq!(
            broker.partition_log(index).log.log_start_offset(),
            done.superseded_below
        );
        deleted += done.segments_deleted;
    }
    assert!(deleted > 10, "{deleted} segments deleted");
    let bytes_after = broker.offsets_bytes();
    assert!(
        bytes_after * 5 < bytes_before,
        "{bytes_before} bytes before, {bytes_after} after"
    );
    broker.close();
    let mut broker = open(dir.path());
    assert_eq!(broker.state(), before);
    // Nothing sealed is left to compact.
    assert_eq!(broker.store.compact(0).expect("compact"), None);
    broker.close();
}

#[test]
fn a_crash_after_the_snapshot_before_any_deletion_replays_to_the_same_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = history(dir.path());
    let broker = open(dir.path());
    let log = &broker.partition_log(0).log;
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    let done = broker
        .store
        .write_snapshot(0)
        .expect("snapshot")
        .expect("worth compacting");
    assert!(done.snapshot_records > 0);
    // The snapshot was appended and nothing was deleted.
    let log = &broker.partition_log(0).log;
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.log_end_offset(), end + done.snapshot_records as i64);
    assert_eq!(done.snapshot_end, log.log_end_offset());
    drop(broker); // no clean close: as a crash after the flushed snapshot
    let mut broker = open(dir.path());
    assert_eq!(broker.state(), before);
    broker.close();
}

#[test]
fn a_crash_after_deleting_only_the_oldest_segments_replays_to_the_same_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = history(dir.path());
    let broker = open(dir.path());
    let done = broker
        .store
        .write_snapshot(1)
        .expect("snapshot")
        .expect("worth compacting");
    let log = &broker.partition_log(1).log;
    let bases = log.segment_base_offsets();
    // Half of the superseded segments go, as if the deletion stopped there.
    let superseded = bases.iter().filter(|b| **b < done.superseded_below).count();
    assert!(superseded >= 4, "{bases:?}");
    let cut = bases[superseded / 2];
    assert_eq!(
        log.delete_segments_below(cut).expect("delete"),
        superseded / 2
    );
    drop(broker);
    let mut broker = open(dir.path());
    assert_eq!(broker.state(), before);
    // And a full pass over what is left keeps it.
    assert!(broker.store.compact(1).expect("compact").is_some());
    broker.close();
    let mut broker = open(dir.path());
    assert_eq!(broker.state(), before);
    broker.close();
}

#[test]
fn commits_racing_compaction_replay_as_they_were_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path());
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut passes = 0;
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let store = &broker.store;
                scope.spawn(move || write_history(store, w * 1_000_000, 2_000))
            })
            .collect();
        let compactor = scope.spawn(|| {
            let mut passes = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                for index in 0..OFFSETS_PARTITIONS {
                    passes += usize::from(broker.store.compact(index).expect("compact").is_some());
                }
                std::thread::yield_now();
            }
            passes
        });
        for writer in writers {
            writer.join().expect("writer");
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        passes = compactor.join().expect("compactor");
    });
    assert!(passes > 0, "compaction ran while commits were made");
    let offsets: BTreeMap<String, _> = broker
        .store
        .groups()
        .into_iter()
        .map(|g| {
            let offsets = broker.store.group_offsets(&g);
            (g, offsets)
        })
        .collect();
    broker.close();
    let mut broker = open(dir.path());
    let replayed = broker.state();
    assert_eq!(replayed.offsets, offsets);
    broker.close();
}

/// Every committed offset value in the log, per key, in log order.
fn values_in_log(broker: &Broker, index: i32) -> BTreeMap<Vec<u8>, Vec<i64>> {
    use kafka_protocol::records::RecordBatchDecoder;
    let log = &broker.partition_log(index).log;
    let mut values: BTreeMap<Vec<u8>, Vec<i64>> = BTreeMap::new();
    for batch in log.batches(log.log_start_offset(), log.log_end_offset()) {
        let mut batch = batch.expect("batch");
        for record in RecordBatchDecoder::decode(&mut batch)
            .expect("decode")
            .records
        {
            let (Some(key), Some(value)) = (record.key, record.value) else {
                continue;
            };
            let is_offset_key = matches!(decode_key(key.clone()), Some(RecordKey::Offset(..)));
            if let Some(committed) = decode_value(value).filter(|_| is_offset_key) {
                values
                    .entry(key.to_vec())
                    .or_default()
                    .push(committed.offset);
            }
        }
    }
    values
}

#[test]
fn compaction_racing_commits_never_puts_an_older_value_after_a_newer_one() {
    // One writer commits ever larger offsets, so in a correct log each key's values never
    // decrease; a snapshot that carried a key written after the snapshot point would.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path());
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut passes = 0;
    std::thread::scope(|scope| {
        let store = &broker.store;
        let writer = scope.spawn(move || write_history(store, 0, 4_000));
        let compactor = scope.spawn(|| {
            let mut passes = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                for index in 0..OFFSETS_PARTITIONS {
                    passes += usize::from(broker.store.compact(index).expect("compact").is_some());
                }
                std::thread::yield_now();
            }
            passes
        });
        writer.join().expect("writer");
        done.store(true, std::sync::atomic::Ordering::Release);
        passes = compactor.join().expect("compactor");
    });
    assert!(passes > 0, "compaction ran while commits were made");
    for index in 0..OFFSETS_PARTITIONS {
        for (key, values) in values_in_log(&broker, index) {
            assert!(
                values.windows(2).all(|w| w[0] <= w[1]),
                "partition {index}, key {key:?}: {values:?}"
            );
        }
    }
    broker.close();
}
