"""Compaction of `__consumer_offsets` with real clients: thousands of offset commits (simple
consumers and a subscribed member, whose group metadata is written too) into an offsets topic
with 16 KiB segments; the broker's periodic compaction must shrink the topic to about one
record per live key, and after a kill -9 and restart every group's committed offsets are the
last ones committed (a deleted group stays deleted).

Sizes before and after are printed; run with `-s` to see them:

    python3 -m pytest broker/tests/clients/test_offsets_compaction.py -s
"""

import time

import confluent_kafka
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import wait_until
from kclients import create_topic

SEGMENT_BYTES = 16384
SETTINGS = {
    "group.initial.rebalance.delay.ms": 0,
    "offsets.topic.num.partitions": 1,
    "offsets.topic.segment.bytes": SEGMENT_BYTES,
    "log.retention.check.interval.ms": 200,
}
TOPIC = "compacted-offsets"
PARTITIONS = range(4)
SIMPLE_GROUPS = ["simple-a", "simple-b", "simple-c"]
COMMITS_PER_GROUP = 700
NO_OFFSET = -1001


def offsets_partition_files(broker):
    """(segment count, bytes) of the only `__consumer_offsets` partition on disk."""
    sizes = []
    for f in (broker.data_dir / "__consumer_offsets-0").glob("*.log"):
        try:
            sizes.append(f.stat().st_size)
        except FileNotFoundError:  # deleted by a compaction since the listing
            pass
    return len(sizes), sum(sizes)


def simple_consumer(bootstrap, group):
    """A consumer that commits without joining (a "simple" commit: generation -1)."""
    return confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
    })


def commit(consumer, offsets):
    consumer.commit(offsets=[TopicPartition(TOPIC, p, o) for p, o in offsets.items()],
                    asynchronous=False)


def committed(bootstrap, group):
    consumer = simple_consumer(bootstrap, group)
    try:
        got = consumer.committed([TopicPartition(TOPIC, p) for p in PARTITIONS], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        consumer.close()


def test_compaction_shrinks_the_offsets_topic_and_keeps_the_last_commits(broker_factory):
    broker = broker_factory(settings=SETTINGS)
    bs = broker.bootstrap
    create_topic(bs, TOPIC, len(PARTITIONS))

    # A subscribed member: its group's metadata goes to the offsets topic along its commits.
    member = confluent_kafka.Consumer({
        "bootstrap.servers": bs, "group.id": "member", "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    })
    member.subscribe([TOPIC])
    wait_until(lambda: member.poll(0.1) is not None or member.assignment(), 30, "member assigned")

    # A group committed to heavily and then deleted: its tombstones must win after compaction.
    dropped = simple_consumer(bs, "dropped")
    for i in range(200):
        commit(dropped, {p: i for p in PARTITIONS})
    dropped.close()
    admin = AdminClient({"bootstrap.servers": bs})
    admin.delete_consumer_groups(["dropped"], request_timeout=10)["dropped"].result()

    consumers = {g: simple_consumer(bs, g) for g in SIMPLE_GROUPS}
    expected = {}
    largest = (0, 0)
    started = time.monotonic()
    for i in range(COMMITS_PER_GROUP):
        for n, (group, consumer) in enumerate(consumers.items()):
            offsets = {p: i * 10 + n + p for p in PARTITIONS}
            commit(consumer, offsets)
            expected[group] = offsets
        if i % 5 == 0:
            offsets = {tp.partition: i + tp.partition for tp in member.assignment()}
            commit(member, offsets)
            expected["member"] = offsets
        largest = max(largest, offsets_partition_files(broker), key=lambda f: f[1])
    elapsed = time.monotonic() - started
    for consumer in consumers.values():
        consumer.close()
    commits = COMMITS_PER_GROUP * len(SIMPLE_GROUPS) + 200 + COMMITS_PER_GROUP // 5
    assert len(expected["member"]) == len(PARTITIONS)

    # Once the commits stop, the next passes leave about one record per live key: at most
    # the active segment and one that the last snapshot may have rolled into.
    wait_until(lambda: offsets_partition_files(broker)[0] <= 2, 30,
               "the offsets partition to shrink to two segments at most")
    after = offsets_partition_files(broker)
    # The records ever written are the log end offset; the compacted-away ones lie below the
    # log start (ListOffsets earliest), which must have moved.
    low, high = member.get_watermark_offsets(TopicPartition("__consumer_offsets", 0), timeout=10)
    print(f"\n{commits} commits in {elapsed:.1f}s; __consumer_offsets-0: {high} records "
          f"written, log start now {low}; at most {largest[0]} segments / {largest[1]} bytes "
          f"while committing, {after[0]} segments / {after[1]} bytes after compaction")
    assert low > 0
    assert after[1] <= 2 * SEGMENT_BYTES
    assert "compacted offsets partition" in broker.log_text()
    member.close()

    broker.kill9()
    broker.restart()
    for group, offsets in expected.items():
        assert committed(bs, group) == offsets, group
    assert committed(bs, "dropped") == {p: NO_OFFSET for p in PARTITIONS}
    listed = {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result().valid}
    assert set(expected) <= listed and "dropped" not in listed
