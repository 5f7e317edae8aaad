"""Record batches compressed by the clients (gzip, snappy, lz4, zstd) are stored as sent (the
batch attributes on the wire still name the codec) and every client reads them back intact."""

import pytest

from kclients import (
    CODEC_IDS,
    CODECS,
    assert_exactly,
    consume_confluent,
    consume_kafka_python,
    consume_kcat,
    create_topic,
    expected_counts,
    make_records,
    produce_confluent,
    produce_kafka_python,
    produce_kcat,
)
from kwire import Conn, batches

PARTITIONS = 3
RECORDS = 3_000


def assert_stored_as(bootstrap, topic, codec, records):
    """Every stored batch of `topic` carries `codec` in its attributes, read with a raw Fetch."""
    counts = stored_codecs(bootstrap, topic, PARTITIONS)
    assert counts == {CODEC_IDS[codec]: records}, f"records by stored codec id: {counts}"


def stored_codecs(bootstrap, topic, partitions):
    """Record counts by the compression codec of their stored batch."""
    conn = Conn(bootstrap)
    counts = {}
    try:
        for p in range(partitions):
            offset = 0
            while True:
                error, hw, records = conn.fetch(topic, p, offset)
                assert error == 0
                found = batches(records)
                if not found:
                    break
                for base_offset, attributes, n, _ in found:
                    counts[attributes & 0x7] = counts.get(attributes & 0x7, 0) + n
                    offset = base_offset + n
                if offset >= hw:
                    break
    finally:
        conn.close()
    return counts


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_kafka_compressed_batches_round_trip(shared_broker, codec):
    topic = f"compressed-confluent-{codec}"
    create_topic(shared_broker.bootstrap, topic, PARTITIONS)
    records = make_records(RECORDS, PARTITIONS, f"ck-{codec}", payload_bytes=200)
    produce_confluent(shared_broker.bootstrap, topic, records, compression_type=codec)
    assert_stored_as(shared_broker.bootstrap, topic, codec, RECORDS)
    counts = expected_counts(records)
    assert_exactly(records, consume_confluent(shared_broker.bootstrap, topic, counts), f"confluent-kafka {codec}")
    assert_exactly(records, consume_kafka_python(shared_broker.bootstrap, topic, counts), f"kafka-python {codec}")
    assert_exactly(records, consume_kcat(shared_broker.bootstrap, topic, counts), f"kcat {codec}")


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_compressed_batches_round_trip(shared_broker, codec):
    topic = f"compressed-kafka-python-{codec}"
    create_topic(shared_broker.bootstrap, topic, PARTITIONS)
    records = make_records(RECORDS, PARTITIONS, f"kp-{codec}", payload_bytes=200)
    produce_kafka_python(shared_broker.bootstrap, topic, records, compression_type=codec)
    assert_stored_as(shared_broker.bootstrap, topic, codec, RECORDS)
    counts = expected_counts(records)
    assert_exactly(records, consume_confluent(shared_broker.bootstrap, topic, counts), f"confluent-kafka {codec}")
    assert_exactly(records, consume_kafka_python(shared_broker.bootstrap, topic, counts), f"kafka-python {codec}")


def test_kcat_zstd_batches_round_trip(shared_broker):
    # Only zstd: kcat 1.7.1 (Debian) embeds librdkafka 2.0.2, which sends gzip, snappy and lz4
    # uncompressed ("Broker does not support compression type") to any broker that does not
    # advertise Produce v0 (and, for lz4, FindCoordinator), as Kafka 4 no longer does.
    codec = "zstd"
    topic = f"compressed-kcat-{codec}"
    create_topic(shared_broker.bootstrap, topic, PARTITIONS)
    records = [
        r.__class__(r.partition, r.key, r.value, (("src", b"kcat"),), None)
        for r in make_records(RECORDS, PARTITIONS, f"kc-{codec}", payload_bytes=200)
    ]
    produce_kcat(shared_broker.bootstrap, topic, records, compression=codec)
    assert_stored_as(shared_broker.bootstrap, topic, codec, RECORDS)
    got = consume_kafka_python(shared_broker.bootstrap, topic, expected_counts(records))
    assert_exactly(records, got, f"kcat {codec} -> kafka-python", check_timestamps=False)
