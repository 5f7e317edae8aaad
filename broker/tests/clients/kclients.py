"""Real Kafka clients driven the way applications drive them: kcat (a subprocess),
confluent-kafka (librdkafka) and kafka-python, plus the checks that compare what was produced
with what was consumed.

Consumer groups are not served by the broker yet, so every consumer here is a simple one:
explicit partition assignment at explicit offsets, nothing committed.
"""

import json
import subprocess
import time
from dataclasses import dataclass, field

import confluent_kafka
import kafka
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import wait_until

CODECS = ("gzip", "snappy", "lz4", "zstd")
# Record batch attribute bits 0-2.
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


@dataclass(frozen=True)
class Rec:
    """A record as produced, or as consumed (then with its offset)."""

    partition: int
    key: bytes
    value: bytes
    headers: tuple = ()
    timestamp_ms: int = None
    offset: int = field(default=None, compare=False)

    def content(self):
        return (self.partition, self.key, self.value, self.headers, self.timestamp_ms)


def make_records(count, partitions, tag, start_ts_ms=None, payload_bytes=64):
    """`count` distinct records spread round-robin over `partitions`, each with a key, two
    headers (one key repeated, to check header order) and its own create timestamp."""
    start_ts_ms = start_ts_ms if start_ts_ms is not None else int(time.time() * 1000) - 3_600_000
    pad = "x" * payload_bytes
    records = []
    for i in range(count):
        p = i % partitions
        records.append(
            Rec(
                partition=p,
                key=f"{tag}-key-{i}".encode(),
                value=f"{tag}-p{p}-seq{i:07d}-{pad}".encode(),
                headers=(("seq", str(i).encode()), ("h", b"one"), ("h", b"two")),
                timestamp_ms=start_ts_ms + i,
            )
        )
    return records


def create_topic(bootstrap, topic, partitions, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=10,
    )
    futures[topic].result(timeout=15)
    md = admin.list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == partitions


# ---------------------------------------------------------------------------------------------
# Producers


class DeliveryLog:
    """Delivery reports of a confluent-kafka producer: acknowledged records with their offsets,
    and failures."""

    def __init__(self):
        self.acked = []  # Rec with offset
        self.failed = []  # (value, error)

    def callback(self, err, msg):
        if err is not None:
            self.failed.append((msg.value(), err))
            return
        ts_type, ts = msg.timestamp()
        self.acked.append(
            Rec(
                partition=msg.partition(),
                key=msg.key(),
                value=msg.value(),
                headers=tuple(msg.headers() or ()),
                timestamp_ms=ts,
                offset=msg.offset(),
            )
        )


def confluent_producer(bootstrap, conf=None, **props):
    """A confluent-kafka producer; `props` are librdkafka properties with `_` for `.`
    (compression_type=...), `conf` is passed as is (callbacks, dotted names)."""
    base = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 2000,
        "queue.buffering.max.messages": 200_000,
    }
    base.update({k.replace("_", "."): v for k, v in props.items()})
    base.update(conf or {})
    return confluent_kafka.Producer(base)


def confluent_send(producer, topic, rec, on_delivery):
    """Produces one record, serving delivery reports while the local queue is full."""
    while True:
        try:
            producer.produce(
                topic,
                value=rec.value,
                key=rec.key,
                partition=rec.partition,
                headers=list(rec.headers),
                timestamp=rec.timestamp_ms or 0,
                on_delivery=on_delivery,
            )
            break
        except BufferError:
            producer.poll(0.05)
    producer.poll(0)


def flush_all(producer, deadline_s):
    remaining = producer.flush(deadline_s)
    assert remaining == 0, f"{remaining} records still undelivered after {deadline_s}s"


def produce_confluent(bootstrap, topic, records, deadline_s=60, **conf):
    """Produces `records` with confluent-kafka; returns the delivery log (all must succeed)."""
    log = DeliveryLog()
    producer = confluent_producer(bootstrap, **conf)
    for rec in records:
        confluent_send(producer, topic, rec, log.callback)
    flush_all(producer, deadline_s)
    assert not log.failed, f"{len(log.failed)} deliveries failed, first: {log.failed[0]}"
    assert len(log.acked) == len(records)
    return log


def produce_kafka_python(bootstrap, topic, records, deadline_s=60, **conf):
    """Produces `records` with kafka-python; returns the acknowledged records with offsets."""
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **conf)
    try:
        futures = [
            (
                rec,
                producer.send(
                    topic,
                    value=rec.value,
                    key=rec.key,
                    partition=rec.partition,
                    headers=[(k, v) for k, v in rec.headers],
                    timestamp_ms=rec.timestamp_ms,
                ),
            )
            for rec in records
        ]
        producer.flush(timeout=deadline_s)
        acked = []
        for rec, future in futures:
            meta = future.get(timeout=deadline_s)
            assert meta.partition == rec.partition
            acked.append(
                Rec(rec.partition, rec.key, rec.value, rec.headers, rec.timestamp_ms, meta.offset)
            )
        return acked
    finally:
        producer.close(timeout=10)


def kcat_options(conf):
    """`-X key=value` for each librdkafka property of `conf`."""
    options = []
    for key, value in (conf or {}).items():
        options += ["-X", f"{key}={value}"]
    return options


def produce_kcat(bootstrap, topic, records, compression=None, deadline_s=60, conf=None):
    """Produces `records` with `kcat -P`, one process per partition (kcat sends every line to
    its `-p` partition). kcat cannot set per-message headers or timestamps from its input, so
    the records must all carry the same headers and no timestamp."""
    by_partition = {}
    for rec in records:
        assert b":" not in rec.key and b"\n" not in rec.value
        by_partition.setdefault(rec.partition, []).append(rec)
    for partition, recs in by_partition.items():
        cmd = ["kcat", "-P", "-b", bootstrap, "-t", topic, "-p", str(partition), "-K", ":",
               "-X", "acks=all"] + kcat_options(conf)
        for k, v in recs[0].headers:
            cmd += ["-H", f"{k}={v.decode()}"]
        if compression:
            cmd += ["-z", compression]
        data = b"".join(r.key + b":" + r.value + b"\n" for r in recs)
        result = subprocess.run(cmd, input=data, capture_output=True, timeout=deadline_s)
        assert result.returncode == 0, result.stderr.decode()


# ---------------------------------------------------------------------------------------------
# Consumers: each returns the records of the given partitions from `start` offsets until it has
# `expected` records per partition (dict partition -> count), or fails at its deadline.


def consume_confluent(bootstrap, topic, expected, start=None, deadline_s=60, **conf):
    start = start or {}
    base = {
        "bootstrap.servers": bootstrap,
        # confluent-kafka refuses to create a consumer without a group.id; with assign() and no
        # commits, librdkafka never needs the group coordinator.
        "group.id": "tokafka-client-tests",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "error",
        "fetch.wait.max.ms": 100,
    }
    base.update(conf)
    consumer = confluent_kafka.Consumer(base)
    try:
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, start.get(p, confluent_kafka.OFFSET_BEGINNING))
                for p in expected
            ]
        )
        got = {p: [] for p in expected}
        deadline = time.monotonic() + deadline_s
        while any(len(got[p]) < n for p, n in expected.items()):
            assert time.monotonic() < deadline, _progress("confluent-kafka", got, expected)
            for msg in consumer.consume(num_messages=10_000, timeout=0.2):
                if msg.error():
                    raise AssertionError(f"confluent-kafka consumer error: {msg.error()}")
                ts_type, ts = msg.timestamp()
                got[msg.partition()].append(
                    Rec(
                        msg.partition(),
                        msg.key(),
                        msg.value(),
                        tuple(msg.headers() or ()),
                        ts,
                        msg.offset(),
                    )
                )
        return got
    finally:
        consumer.close()


def consume_kafka_python(bootstrap, topic, expected, start=None, deadline_s=60, **conf):
    start = start or {}
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
        fetch_max_wait_ms=100,
        **conf,
    )
    try:
        tps = [kafka.TopicPartition(topic, p) for p in expected]
        consumer.assign(tps)
        for tp in tps:
            if tp.partition in start:
                consumer.seek(tp, start[tp.partition])
            else:
                consumer.seek_to_beginning(tp)
        got = {p: [] for p in expected}
        deadline = time.monotonic() + deadline_s
        while any(len(got[p]) < n for p, n in expected.items()):
            assert time.monotonic() < deadline, _progress("kafka-python", got, expected)
            for tp, msgs in consumer.poll(timeout_ms=200, max_records=50_000).items():
                for m in msgs:
                    got[tp.partition].append(
                        Rec(m.partition, m.key, m.value, tuple(m.headers or ()), m.timestamp, m.offset)
                    )
        return got
    finally:
        consumer.close()


def consume_kcat(bootstrap, topic, expected, start=None, deadline_s=60, conf=None):
    """`kcat -C -p P -o OFFSET -c COUNT -J` per partition (no group: a simple consumer)."""
    start = start or {}
    got = {}
    for p, n in expected.items():
        offset = start.get(p, "beginning")
        cmd = ["kcat", "-C", "-b", bootstrap, "-t", topic, "-p", str(p), "-o", str(offset),
               "-c", str(n), "-J", "-q"] + kcat_options(conf)
        result = subprocess.run(cmd, capture_output=True, timeout=deadline_s)
        assert result.returncode == 0, f"{cmd}: {result.stderr.decode()}"
        got[p] = [kcat_record(json.loads(line)) for line in result.stdout.splitlines()]
    return got


def kcat_record(obj):
    flat = obj.get("headers") or []
    headers = tuple((flat[i], flat[i + 1].encode()) for i in range(0, len(flat), 2))
    return Rec(
        obj["partition"],
        None if obj.get("key") is None else obj["key"].encode(),
        None if obj.get("payload") is None else obj["payload"].encode(),
        headers,
        obj["ts"],
        obj["offset"],
    )


def _progress(client, got, expected):
    return f"{client}: got {{partition: count}} {{{', '.join(f'{p}: {len(got[p])}/{n}' for p, n in expected.items())}}}"


# ---------------------------------------------------------------------------------------------
# Checks


def expected_counts(records):
    counts = {}
    for r in records:
        counts[r.partition] = counts.get(r.partition, 0) + 1
    return counts


def records_from(records, positions):
    """The records at or after `positions` in each partition, for records produced in order to
    partitions that were empty (the n-th record of a partition is at offset n)."""
    seen = {p: 0 for p in positions}
    tail = []
    for r in records:
        if r.partition in positions and seen[r.partition] >= positions[r.partition]:
            tail.append(r)
        seen[r.partition] = seen.get(r.partition, 0) + 1
    return tail


def assert_exactly(produced, consumed, client, check_timestamps=True, first_offsets=None):
    """Every produced record arrives exactly once, in produce order within its partition, with
    key, headers and (optionally) timestamp intact, at consecutive offsets."""
    by_partition = {}
    for r in produced:
        by_partition.setdefault(r.partition, []).append(r)
    assert set(consumed) == set(by_partition), f"{client}: partitions differ"
    for p, want in by_partition.items():
        got = consumed[p]
        assert len(got) == len(want), f"{client}: partition {p}: {len(got)} records, want {len(want)}"
        for i, (w, g) in enumerate(zip(want, got)):
            if check_timestamps:
                same = w.content() == g.content()
            else:
                same = w.content()[:4] == g.content()[:4]
            assert same, f"{client}: partition {p} record {i}:\n want {w}\n got  {g}"
        offsets = [g.offset for g in got]
        first = offsets[0] if first_offsets is None else first_offsets.get(p, 0)
        assert offsets == list(range(first, first + len(got))), (
            f"{client}: partition {p}: offsets not consecutive from {first}"
        )


def wait_for(condition, deadline_s, what):
    return wait_until(condition, deadline_s, what)
