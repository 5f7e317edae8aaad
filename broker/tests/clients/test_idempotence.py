"""Idempotent producers: a batch the broker appended but whose answer the client never saw is
retried by the client, and the broker must answer the retry without writing it twice.

The faults are real: the broker's answers are lost in a proxy, or the broker is frozen with
SIGSTOP until the client's requests time out. The client (librdkafka, via confluent-kafka) is
watched through its statistics until it has timed out requests, so every test proves that
retries of already-appended batches happened, then checks the topic holds each record once.
"""

import json
import signal
import threading

import kafka

import kwire
from conftest import wait_until
from faultproxy import FaultProxy
from kclients import (
    DeliveryLog,
    assert_exactly,
    confluent_producer,
    confluent_send,
    consume_confluent,
    create_topic,
    expected_counts,
    flush_all,
    make_records,
)

PARTITIONS = 6
RECORDS = 30_000


class ClientStats:
    """librdkafka statistics: request timeouts, summed over brokers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.req_timeouts = 0

    def callback(self, stats_json):
        stats = json.loads(stats_json)
        brokers = stats.get("brokers", {}).values()
        with self.lock:
            self.req_timeouts = sum(b.get("req_timeouts", 0) for b in brokers)


def idempotent_producer(bootstrap, stats):
    return confluent_producer(
        bootstrap,
        {
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 5,
            # answers that do not come within a second are retried
            "request.timeout.ms": 1000,
            "socket.timeout.ms": 1000,
            "retry.backoff.ms": 50,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 200,
            # but no record gives up: every record must be delivered in the end
            "message.timeout.ms": 120_000,
            "linger.ms": 2,
            "batch.num.messages": 500,
            "statistics.interval.ms": 100,
            "stats_cb": stats.callback,
        },
    )


def produce_through_fault(bootstrap, topic, records, inject, heal, stats):
    """Produces `records`; after a third are acknowledged, `inject()` a fault, keep producing
    until the client has timed out requests, `heal()`, and produce the rest."""
    log = DeliveryLog()
    producer = idempotent_producer(bootstrap, stats)
    third = len(records) // 3
    for rec in records[:third]:
        confluent_send(producer, topic, rec, log.callback)
    wait_until(lambda: producer.poll(0.05) is not None and len(log.acked) >= third // 2, 30,
               "first acknowledgements")
    inject()
    sent = third
    # keep requests flowing into the fault until the client has given up waiting on some
    def timed_out():
        nonlocal sent
        if sent < 2 * third:
            confluent_send(producer, topic, records[sent], log.callback)
            sent += 1
        producer.poll(0.01)
        return stats.req_timeouts > 0
    wait_until(timed_out, 60, "client request timeouts", interval_s=0)
    heal()
    for rec in records[sent:]:
        confluent_send(producer, topic, rec, log.callback)
    flush_all(producer, 90)
    assert not log.failed, f"{len(log.failed)} deliveries failed, first: {log.failed[0]}"
    assert len(log.acked) == len(records)
    return log


def assert_acks_match_log(log, consumed):
    """The offset each delivery report gave is where the record is."""
    by_offset = {(r.partition, r.offset): r.value for rs in consumed.values() for r in rs}
    for r in log.acked:
        assert by_offset.get((r.partition, r.offset)) == r.value, f"ack {r.partition}/{r.offset}"


def test_retries_after_lost_answers_write_each_record_once(broker_factory):
    broker = broker_factory(start=False)
    proxy = FaultProxy(broker.port)
    try:
        broker.advertised = proxy.address
        broker.start()
        topic = "idempotent-lost-answers"
        create_topic(proxy.address, topic, PARTITIONS)
        records = make_records(RECORDS, PARTITIONS, "lost")
        stats = ClientStats()
        log = produce_through_fault(
            proxy.address, topic, records,
            inject=proxy.blackhole, heal=proxy.cut, stats=stats,
        )
        # requests were executed by the broker and their answers lost: their retries are
        # exactly the duplicates the broker must recognise
        assert proxy.produce_answers_lost > 0
        got = consume_confluent(proxy.address, topic, expected_counts(records))
        assert_exactly(records, got, "after lost answers")
        assert_acks_match_log(log, got)
    finally:
        proxy.close()


def test_kafka_python_retries_after_lost_answers_write_each_record_once(broker_factory):
    broker = broker_factory(start=False)
    proxy = FaultProxy(broker.port)
    try:
        broker.advertised = proxy.address
        broker.start()
        topic = "idempotent-kafka-python"
        create_topic(proxy.address, topic, PARTITIONS)
        records = make_records(6_000, PARTITIONS, "kp-lost")
        producer = kafka.KafkaProducer(
            bootstrap_servers=proxy.address,
            acks="all",
            enable_idempotence=True,
            max_in_flight_requests_per_connection=5,
            request_timeout_ms=1000,
            retries=1_000,
            delivery_timeout_ms=120_000,
            linger_ms=2,
        )
        try:
            def send(recs):
                return [
                    producer.send(topic, value=r.value, key=r.key, partition=r.partition,
                                  headers=list(r.headers), timestamp_ms=r.timestamp_ms)
                    for r in recs
                ]
            futures = send(records[:2_000])
            producer.flush(timeout=30)
            connections = proxy.accepted
            proxy.blackhole()
            futures += send(records[2_000:4_000])
            # the broker answered a produce the client never heard of, and the client gave up
            # on that connection and opened another
            wait_until(lambda: proxy.produce_answers_lost > 0 and proxy.accepted > connections,
                       60, "a lost answer and a reconnect")
            proxy.cut()
            futures += send(records[4_000:])
            producer.flush(timeout=90)
            failed = [f.exception for f in futures if f.failed()]
            assert not failed, f"{len(failed)} sends failed, first: {failed[0]}"
        finally:
            producer.close(timeout=10)
        got = consume_confluent(proxy.address, topic, expected_counts(records))
        assert_exactly(records, got, "kafka-python after lost answers")
    finally:
        proxy.close()


def test_retries_after_a_frozen_broker_write_each_record_once(broker):
    topic = "idempotent-sigstop"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    records = make_records(RECORDS, PARTITIONS, "frozen")
    stats = ClientStats()
    try:
        log = produce_through_fault(
            broker.bootstrap, topic, records,
            inject=lambda: broker.signal(signal.SIGSTOP),
            heal=lambda: broker.signal(signal.SIGCONT),
            stats=stats,
        )
    finally:
        broker.signal(signal.SIGCONT)
    got = consume_confluent(broker.bootstrap, topic, expected_counts(records))
    assert_exactly(records, got, "after SIGSTOP/SIGCONT")
    assert_acks_match_log(log, got)


def test_sequence_gaps_are_refused_and_retries_answered_with_the_first_offsets(shared_broker):
    topic = "idempotent-raw"
    create_topic(shared_broker.bootstrap, topic, 1)
    conn = kwire.Conn(shared_broker.bootstrap)
    pid, epoch = conn.init_producer_id()
    assert pid >= 0 and epoch >= 0

    def batch(seq, n):
        return kwire.record_batch(
            [f"seq{seq + i}".encode() for i in range(n)],
            producer_id=pid, producer_epoch=epoch, base_sequence=seq,
        )

    assert conn.produce(topic, 0, batch(0, 3)) == (kwire.ERR_NONE, 0)
    assert conn.produce(topic, 0, batch(3, 2)) == (kwire.ERR_NONE, 3)
    # a gap: sequence 5 is next, 7 is not
    error, _ = conn.produce(topic, 0, batch(7, 2))
    assert error == kwire.ERR_OUT_OF_ORDER_SEQUENCE
    assert conn.latest_offset(topic, 0) == 5
    # a retry of an appended batch: its original offset, nothing written
    assert conn.produce(topic, 0, batch(0, 3)) == (kwire.ERR_NONE, 0)
    assert conn.produce(topic, 0, batch(3, 2)) == (kwire.ERR_NONE, 3)
    assert conn.latest_offset(topic, 0) == 5
    # the producer goes on where it was
    assert conn.produce(topic, 0, batch(5, 1)) == (kwire.ERR_NONE, 5)
    # a new producer must start at sequence 0
    other_pid, other_epoch = conn.init_producer_id()
    assert other_pid != pid
    error, _ = conn.produce(
        topic, 0,
        kwire.record_batch([b"x"], producer_id=other_pid, producer_epoch=other_epoch, base_sequence=4),
    )
    assert error == kwire.ERR_OUT_OF_ORDER_SEQUENCE
    assert conn.latest_offset(topic, 0) == 6
    conn.close()
