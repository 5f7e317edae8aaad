"""100k records over 6 partitions, produced by confluent-kafka and read back by every client
library: each record exactly once, in order within its partition, key, headers and timestamp
intact. Smaller produce runs check the other clients' producers the same way."""

import confluent_kafka
import pytest

from kclients import (
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
    records_from,
)

RECORDS = 100_000
PARTITIONS = 6


@pytest.fixture(scope="module")
def big_topic(shared_broker):
    topic = "roundtrip-100k"
    create_topic(shared_broker.bootstrap, topic, PARTITIONS)
    records = make_records(RECORDS, PARTITIONS, "rt")
    log = produce_confluent(shared_broker.bootstrap, topic, records)
    # the acknowledged offsets are the produce order, from 0, in each partition
    acked = {}
    for r in log.acked:
        acked.setdefault(r.partition, []).append(r.offset)
    for p, offsets in acked.items():
        assert sorted(offsets) == list(range(len(offsets))), f"partition {p} offsets"
    return topic, records


def test_confluent_kafka_reads_every_record_once_in_order(shared_broker, big_topic):
    topic, records = big_topic
    got = consume_confluent(shared_broker.bootstrap, topic, expected_counts(records))
    assert_exactly(records, got, "confluent-kafka")


def test_kafka_python_reads_every_record_once_in_order(shared_broker, big_topic):
    topic, records = big_topic
    got = consume_kafka_python(shared_broker.bootstrap, topic, expected_counts(records))
    assert_exactly(records, got, "kafka-python")


def test_kcat_reads_every_record_once_in_order(shared_broker, big_topic):
    topic, records = big_topic
    got = consume_kcat(shared_broker.bootstrap, topic, expected_counts(records))
    assert_exactly(records, got, "kcat")


def test_consumers_start_at_a_given_offset(shared_broker, big_topic):
    topic, records = big_topic
    start = {p: 15_000 + 7 * p for p in range(PARTITIONS)}
    tail = records_from(records, start)
    counts = expected_counts(tail)
    for name, consume in (
        ("confluent-kafka", consume_confluent),
        ("kafka-python", consume_kafka_python),
        ("kcat", consume_kcat),
    ):
        got = consume(shared_broker.bootstrap, topic, counts, start=start)
        assert_exactly(tail, got, name, first_offsets=start)


def test_kafka_python_producer_round_trips(shared_broker):
    topic = "produced-by-kafka-python"
    create_topic(shared_broker.bootstrap, topic, 3)
    records = make_records(5_000, 3, "kp")
    acked = produce_kafka_python(shared_broker.bootstrap, topic, records)
    for p in range(3):
        assert [r.offset for r in acked if r.partition == p] == list(range(len(records) // 3 + (p < len(records) % 3)))
    got = consume_confluent(shared_broker.bootstrap, topic, expected_counts(records))
    assert_exactly(records, got, "kafka-python -> confluent-kafka")


def test_kcat_producer_round_trips(shared_broker):
    topic = "produced-by-kcat"
    create_topic(shared_broker.bootstrap, topic, 3)
    records = [
        r.__class__(r.partition, r.key, r.value, (("src", b"kcat"),), None)
        for r in make_records(3_000, 3, "kc")
    ]
    produce_kcat(shared_broker.bootstrap, topic, records)
    got = consume_kafka_python(shared_broker.bootstrap, topic, expected_counts(records))
    assert_exactly(records, got, "kcat -> kafka-python", check_timestamps=False)


def test_records_over_many_small_segments_read_back_from_any_offset_and_time(shared_broker):
    topic = "small-segments"
    create_topic(shared_broker.bootstrap, topic, 3, config={"segment.bytes": "65536", "index.interval.bytes": "1024"})
    records = make_records(20_000, 3, "seg")
    produce_confluent(shared_broker.bootstrap, topic, records)
    start = {0: 1234, 1: 4321, 2: 6000}  # inside segments, away from their first offsets
    tail = records_from(records, start)
    for name, consume in (
        ("confluent-kafka", consume_confluent),
        ("kafka-python", consume_kafka_python),
        ("kcat", consume_kcat),
    ):
        assert_exactly(records, consume(shared_broker.bootstrap, topic, expected_counts(records)), name)
        got = consume(shared_broker.bootstrap, topic, expected_counts(tail), start=start)
        assert_exactly(tail, got, f"{name} from mid-segment offsets", first_offsets=start)
    # ListOffsets by timestamp finds the first record at or after it, in any segment
    consumer = confluent_kafka.Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": "tokafka-client-tests"})
    try:
        for i in (0, 3_001, 16_665, 19_999):
            rec = records[i]
            [found] = consumer.offsets_for_times(
                [confluent_kafka.TopicPartition(topic, rec.partition, rec.timestamp_ms)], timeout=10
            )
            assert (found.error, found.offset) == (None, i // 3), f"record {i}"
        [past] = consumer.offsets_for_times(
            [confluent_kafka.TopicPartition(topic, 0, records[-1].timestamp_ms + 1)], timeout=10
        )
        assert past.offset == -1  # no record that late: Kafka answers offset -1
    finally:
        consumer.close()
