"""A data directory written by the standalone broker of 0.1.0 (the fixture, made by that
release's binary: see broker/tests/fixtures/make_standalone_datadir.py) starts under today's
broker, a one-voter quorum, with nothing lost: topics with their ids, partition counts and
configs; every record; the committed offsets of a consumer group; the producer state that
dedupes a retried idempotent batch; producer ids above every one handed out; the cluster id
clients saw. A second start changes nothing more.
"""

import json
import tarfile
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

import kwire
from conftest import Broker

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "standalone-0.1.0.tar.gz"


@pytest.fixture
def migrated(tmp_path):
    """The fixture's data directory, unpacked, its manifest, and a broker on it."""
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    broker = Broker(tmp_path / "data")
    yield broker, manifest
    broker.stop()


def records_of(bootstrap, topic, partition, end):
    """The values of `topic`-`partition` from offset 0 up to `end`, in order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "migration-reader",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, partition, 0)])
    values = []
    try:
        while len(values) < end:
            batch = consumer.consume(num_messages=500, timeout=10)
            assert batch, f"{topic}-{partition}: stuck at {len(values)} of {end} records"
            for message in batch:
                assert message.error() is None, message.error()
                assert message.offset() == len(values), "offsets are dense and in order"
                values.append(message.value())
    finally:
        consumer.close()
    return values


def test_a_standalone_data_directory_is_migrated_with_nothing_lost(migrated):
    broker, manifest = migrated
    broker.start()
    bootstrap = broker.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=10)
    assert metadata.cluster_id == manifest["cluster_id"], "clients see the same cluster"

    # Topics, partition counts and configs.
    for name, topic in manifest["topics"].items():
        assert name in metadata.topics, f"{name} is missing"
        assert len(metadata.topics[name].partitions) == topic["partitions"]
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        described = admin.describe_configs([resource])[resource].result(10)
        for key, value in topic["configs"].items():
            assert described[key].value == value, f"{name} {key}"

    # Every record, at its offset.
    wire = kwire.Conn(bootstrap)
    for key, high_watermark in manifest["high_watermarks"].items():
        topic, partition = key.rsplit("-", 1)
        assert wire.latest_offset(topic, int(partition)) == high_watermark, key
    orders_0 = records_of(bootstrap, "orders", 0, manifest["high_watermarks"]["orders-0"])
    assert orders_0 == [f"v{i}".encode() for i in range(0, 300, 3)]

    # The producer state: the raw idempotent batch sent again is a duplicate.
    raw = manifest["raw_batch"]
    retry = kwire.record_batch(
        [v.encode() for v in raw["values"]],
        base_timestamp_ms=raw["base_timestamp_ms"],
        producer_id=raw["producer_id"],
        producer_epoch=raw["producer_epoch"],
        base_sequence=0,
    )
    error, base_offset = wire.produce(raw["topic"], raw["partition"], retry)
    assert (error, base_offset) == (0, raw["base_offset"]), "answered with the original offset"
    assert wire.latest_offset(raw["topic"], raw["partition"]) == manifest["high_watermarks"][
        f"{raw['topic']}-{raw['partition']}"
    ], "nothing was written twice"

    # Producer ids handed out before are never handed out again.
    producer_id, _ = wire.init_producer_id()
    assert producer_id >= manifest["producer_id_reserved_below"]
    wire.close()

    # The group's committed offsets.
    group = manifest["group"]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group["id"],
                         "enable.auto.commit": False})
    wanted = [TopicPartition("orders", int(k[-1])) for k in group["committed"]]
    committed = consumer.committed(wanted, timeout=30)
    consumer.close()
    assert {f"orders-{tp.partition}": tp.offset for tp in committed} == group["committed"]

    # A restart of the migrated directory imports nothing again and keeps it all.
    assert broker.terminate() == 0
    meta = json.loads((broker.data_dir / "__tokafka" / "meta.json").read_text())
    assert meta["format"] == 2
    broker.restart()
    again = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert again.cluster_id == manifest["cluster_id"]
    assert kwire.Conn(broker.bootstrap).latest_offset("orders", 1) == manifest["high_watermarks"]["orders-1"]
    assert "imported a standalone data directory" not in broker.log_text().split("=== start")[-1]
