"""The broker stopped mid-stream, by kill -9 or by SIGTERM, and restarted on the same data
directory and ports: every record a delivery report confirmed is still there at its offset, the
idempotent producer that lived through the restart finishes without a duplicate, and consumers
resume from their positions (the one that stayed connected, and new ones assigned at the
offsets it had reached)."""

import signal
import time

import pytest

import kwire

from conftest import wait_until
from kclients import (
    DeliveryLog,
    Rec,
    assert_exactly,
    confluent_producer,
    confluent_send,
    consume_confluent,
    consume_kafka_python,
    consume_kcat,
    create_topic,
    expected_counts,
    flush_all,
    make_records,
    records_from,
)

import confluent_kafka

PARTITIONS = 6
RECORDS = 30_000


def producer_that_outlives_the_broker(bootstrap):
    return confluent_producer(
        bootstrap,
        {
            "enable.idempotence": True,
            "linger.ms": 2,
            "batch.num.messages": 500,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 200,
            # records wait for the broker to come back instead of failing
            "message.timeout.ms": 120_000,
        },
    )


class Follower:
    """A confluent-kafka consumer with assigned partitions that reads as records arrive and
    keeps reading through the broker's restart."""

    def __init__(self, bootstrap, topic):
        self.consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "tokafka-client-tests",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "error",
                "fetch.wait.max.ms": 50,
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 200,
            }
        )
        self.consumer.assign(
            [confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in range(PARTITIONS)]
        )
        self.got = {p: [] for p in range(PARTITIONS)}

    def poll(self, timeout_s=0.0):
        for msg in self.consumer.consume(num_messages=5_000, timeout=timeout_s):
            if msg.error():
                # transport errors while the broker is down are reported, then retried
                assert msg.error().retriable() or msg.error().code() in (
                    confluent_kafka.KafkaError._TRANSPORT,
                    confluent_kafka.KafkaError._ALL_BROKERS_DOWN,
                ), f"consumer error: {msg.error()}"
                continue
            _, ts = msg.timestamp()
            self.got[msg.partition()].append(
                Rec(msg.partition(), msg.key(), msg.value(), tuple(msg.headers() or ()), ts, msg.offset())
            )
        return sum(len(v) for v in self.got.values())

    def positions(self):
        """Next offset to read in each partition."""
        return {p: (recs[-1].offset + 1 if recs else 0) for p, recs in self.got.items()}

    def close(self):
        self.consumer.close()


def stop_mid_stream_and_restart(broker, stop):
    topic = f"restart-{stop}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    records = make_records(RECORDS, PARTITIONS, stop)
    log = DeliveryLog()
    producer = producer_that_outlives_the_broker(broker.bootstrap)
    follower = Follower(broker.bootstrap, topic)
    try:
        # produce until a third is acknowledged and the follower has read some, then stop the
        # broker while records are still in flight
        sent = 0

        def produce_and_follow():
            nonlocal sent
            for rec in records[sent:sent + 200]:
                confluent_send(producer, topic, rec, log.callback)
            sent = min(sent + 200, len(records))
            producer.poll(0)
            follower.poll(0)
            return len(log.acked) >= RECORDS // 3 and follower.poll(0) > 0

        wait_until(produce_and_follow, 60, "a third of the records acknowledged", interval_s=0)
        positions = follower.positions()
        for rec in records[sent:sent + 1_000]:
            confluent_send(producer, topic, rec, log.callback)
        sent += 1_000
        in_flight = sent - len(log.acked)
        assert in_flight > 0, "the stop must come while records are unacknowledged"
        if stop == "kill9":
            broker.kill9()
        else:
            code = broker.terminate()
            assert code == 0, f"SIGTERM exit code {code}:\n{broker.log_tail()}"
            assert "broker stopped cleanly" in broker.log_text()
        acked_before_stop = list(log.acked)

        # the clients keep going while the broker is down: records queue up
        for rec in records[sent:sent + 2_000]:
            confluent_send(producer, topic, rec, log.callback)
        sent = min(sent + 2_000, len(records))
        producer.poll(0)
        follower.poll(0)

        broker.restart()
        if stop == "sigterm":
            assert "recovering after unclean shutdown" not in broker.log_text().split("=== start")[-1]
        for rec in records[sent:]:
            confluent_send(producer, topic, rec, log.callback)
        flush_all(producer, 90)
        assert not log.failed, f"{len(log.failed)} deliveries failed, first: {log.failed[0]}"

        wait_until(lambda: follower.poll(0.1) >= RECORDS, 60, "the follower to read everything")
        assert_exactly(records, follower.got, f"follower through {stop}")
        by_offset = {(r.partition, r.offset): r.value for rs in follower.got.values() for r in rs}
        lost = [r for r in acked_before_stop if by_offset.get((r.partition, r.offset)) != r.value]
        assert not lost, f"{len(lost)} records acknowledged before the {stop} are missing, first {lost[0]}"
        assert len(log.acked) == RECORDS
        return topic, records, positions
    finally:
        follower.close()


@pytest.mark.parametrize("stop", ["kill9", "sigterm"])
def test_acknowledged_records_survive_a_stop_mid_stream(broker, stop):
    topic, records, positions = stop_mid_stream_and_restart(broker, stop)
    # consumers started after the restart resume at the positions reached before the stop
    tail = records_from(records, positions)
    counts = {p: n for p, n in expected_counts(tail).items()}
    for name, consume in (
        ("confluent-kafka", consume_confluent),
        ("kafka-python", consume_kafka_python),
        ("kcat", consume_kcat),
    ):
        got = consume(broker.bootstrap, topic, counts, start=positions)
        assert_exactly(tail, got, f"{name} resumed after {stop}", first_offsets=positions)


def test_a_second_kill_right_after_restart_loses_nothing(broker):
    topic, records, _ = stop_mid_stream_and_restart(broker, "kill9")
    broker.kill9()
    broker.restart()
    got = consume_confluent(broker.bootstrap, topic, expected_counts(records))
    assert_exactly(records, got, "after a second kill -9")


def test_sigterm_answers_long_polling_fetches_at_once(broker):
    # a consumer waiting up to 60 s for records must not hold a clean stop back
    create_topic(broker.bootstrap, "restart-long-poll", 1)
    conn = kwire.Conn(broker.bootstrap, timeout_s=30)
    received = broker.metric("tokafka_bytes_in_total")
    correlation_id = conn.fetch("restart-long-poll", 0, 0, max_wait_ms=60_000, min_bytes=1, send_only=True)
    # stop once the broker has read the fetch (from then on it is answered, as requests already
    # read are, and it waits for records that do not come)
    wait_until(lambda: broker.metric("tokafka_bytes_in_total") > received, 10, "the fetch to be read")
    started = time.monotonic()
    broker.signal(signal.SIGTERM)
    error, high_watermark, records = conn.read_fetch(correlation_id, 0)
    assert (error, high_watermark, records) == (kwire.ERR_NONE, 0, b"")
    assert broker.proc.wait(timeout=30) == 0
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"clean stop took {elapsed:.1f}s with a long poll in flight"
    conn.close()

