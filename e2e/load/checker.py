#!/usr/bin/env python3
"""Continuous produce-and-verify load for e2e scenarios, with a real Kafka client.

    checker.py produce --bootstrap HOST:PORT --topic T --out FILE
        Produces numbered records (acks=all, idempotent) round-robin over the topic's
        partitions until SIGTERM, then writes to FILE, as JSON, the acknowledged records
        (partition, offset, number) and every delivery error the application saw.

        With --partitions N, first creates the topic with N partitions (and the cluster's
        default replication factor) unless it exists.

    checker.py consume --bootstrap HOST:PORT --topic T --group G --out FILE
        A consumer group member: consumes the topic, committing what it has processed, until
        SIGTERM; then reads on up to the end of every partition (the producer has stopped by
        then), commits, leaves the group and writes to FILE, as JSON, what it received per
        partition, its errors and how many times its assignment changed. Several may run in
        one group.

    checker.py count --bootstrap HOST:PORT --topic T
        Prints how many records the topic holds (the sum of its partitions' high watermarks).

    checker.py verify --bootstrap HOST:PORT --topic T --acked FILE [--consumed FILE ...]
        Reads the topic from the beginning and prints, and checks, the figures the day-2
        scenarios report: acknowledged records lost, duplicated and reordered, errors seen by
        the application (producer and group consumers), records acknowledged; with
        --consumed, acknowledged records the group never delivered and records it delivered
        more than once (at-least-once redelivery after a rebalance, reported, allowed), and
        the client's own transport errors that it retried by itself (reported, allowed: a
        broker removed by a scale-down stops resolving). Every delivery error of the producer
        counts as an application error.
        Exits 1 unless lost, duplicated, reordered, errors and undelivered are all 0.
"""

import argparse
import json
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap, topic, partitions):
    """Creates the topic with the cluster's default replication factor; an existing one is
    kept."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions)],
                                  request_timeout=30)
    try:
        futures[topic].result(60)
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


# librdkafka's own transport errors: it reports them and retries by itself (a broker pod
# removed by a scale-down stops resolving, with Apache Kafka as here). Counted apart.
CLIENT_TRANSIENT = {KafkaError._RESOLVE, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                    KafkaError._TIMED_OUT}


def application_error(err):
    """Whether a client error reached the application as a failure: fatal, or an error the
    client does not retry (an answer from a broker it cannot act on, say)."""
    if err.code() == KafkaError._PARTITION_EOF or err.code() in CLIENT_TRANSIENT:
        return False
    return err.fatal() or not err.retriable()


def produce(args):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    if args.partitions:
        create_topic(args.bootstrap, args.topic, args.partitions)
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 120000,
    })
    partitions = len(producer.list_topics(args.topic, timeout=30).topics[args.topic].partitions)
    acked, errors = [], []

    def delivered(err, msg):
        number = int(msg.value())
        if err is not None:
            errors.append({"number": number, "error": str(err)})
        else:
            acked.append([msg.partition(), msg.offset(), number])

    number = 0
    started = time.monotonic()
    while not stop:
        try:
            producer.produce(args.topic, str(number).encode(), partition=number % partitions,
                             on_delivery=delivered)
            number += 1
        except BufferError:
            producer.poll(0.05)
        producer.poll(0)
        time.sleep(0.002)
    remaining = producer.flush(150)
    with open(args.out, "w") as out:
        json.dump({"acked": acked, "errors": errors, "produced": number,
                   "unflushed": remaining, "seconds": time.monotonic() - started}, out)


def consume(args):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    errors, transient, received = [], [], {}
    assignments = []

    def error_seen(err):
        if application_error(err):
            errors.append(str(err))
        elif err.code() in CLIENT_TRANSIENT:
            transient.append(str(err))

    def client_error(err):
        # Client-level errors (a broker disconnecting, say) are the client's to recover
        # from; only a fatal one reaches the application.
        if err.fatal():
            errors.append(str(err))

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "error_cb": client_error,
    })
    consumer.subscribe([args.topic],
                       on_assign=lambda _, parts: assignments.append(len(parts)))

    def take(msg):
        if msg.error():
            error_seen(msg.error())
            return
        received.setdefault(msg.partition(), []).append(int(msg.value()))

    def commit():
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as e:
            # No offsets to commit yet, or a rebalance in progress: the next commit covers it.
            if e.args[0].code() not in (KafkaError._NO_OFFSET, KafkaError.REBALANCE_IN_PROGRESS,
                                        KafkaError.ILLEGAL_GENERATION,
                                        KafkaError.UNKNOWN_MEMBER_ID,
                                        KafkaError._ASSIGNMENT_LOST):
                error_seen(e.args[0])

    started = time.monotonic()
    while not stop:
        for msg in consumer.consume(500, 0.5):
            take(msg)
        commit()
    # The producer stopped first: read on to the end of what this member is assigned (a
    # member left without partitions waits a little for a rebalance to hand it some).
    stopped = time.monotonic()
    while time.monotonic() < stopped + 120:
        positions = consumer.position(consumer.assignment())
        behind = False
        for tp in positions:
            high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
            behind = behind or tp.offset < high
        if not behind and (positions or time.monotonic() > stopped + 15):
            break
        for msg in consumer.consume(500, 0.5):
            take(msg)
        commit()
    consumer.close()
    with open(args.out, "w") as out:
        json.dump({"received": received, "errors": errors, "transient": transient,
                   "assignments": len(assignments),
                   "seconds": time.monotonic() - started}, out)


def count(args):
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "checker-count"})
    metadata = consumer.list_topics(args.topic, timeout=30).topics[args.topic]
    if metadata.error is not None:
        sys.exit(f"topic {args.topic}: {metadata.error}")
    total = sum(consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10)[1]
                for p in metadata.partitions)
    consumer.close()
    print(total)


def group_figures(consumed_files, acked_numbers):
    """Undelivered and redelivered acknowledged records, and errors, over a group's members."""
    delivered, errors, assignments, transient = {}, 0, 0, 0
    for path in consumed_files:
        with open(path) as f:
            report = json.load(f)
        errors += len(report["errors"])
        transient += len(report.get("transient", []))
        assignments += report["assignments"]
        for e in report["errors"][:5]:
            print(f"  consumer error: {e}", file=sys.stderr)
        for values in report["received"].values():
            for v in values:
                delivered[v] = delivered.get(v, 0) + 1
    undelivered = sum(1 for n in acked_numbers if n not in delivered)
    redelivered = sum(c - 1 for c in delivered.values() if c > 1)
    return {"group_undelivered": undelivered, "group_redelivered": redelivered,
            "group_assignments": assignments, "group_transient_errors": transient}, errors


def verify(args):
    with open(args.acked) as f:
        report = json.load(f)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"checker-{time.time_ns()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    metadata = consumer.list_topics(args.topic, timeout=30).topics[args.topic]
    assignment = [TopicPartition(args.topic, p, 0) for p in metadata.partitions]
    ends = {p: consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=30)[1]
            for p in metadata.partitions}
    consumer.assign(assignment)
    seen = {p: [] for p in metadata.partitions}
    deadline = time.monotonic() + 120
    while any(len(seen[p]) < ends[p] for p in seen) and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                print(f"consume error: {msg.error()}", file=sys.stderr)
            continue
        seen[msg.partition()].append(int(msg.value()))
    consumer.close()
    present = {}
    for values in seen.values():
        for v in values:
            present[v] = present.get(v, 0) + 1
    acked_numbers = [a[2] for a in report["acked"]]
    lost = sum(1 for n in acked_numbers if n not in present)
    duplicated = sum(c - 1 for c in present.values() if c > 1)
    reordered = sum(1 for values in seen.values()
                    for a, b in zip(values, values[1:]) if b <= a)
    errors = len(report["errors"]) + report.get("unflushed", 0)
    figures = {"acknowledged": len(acked_numbers), "lost": lost, "duplicated": duplicated,
               "reordered": reordered}
    group, group_errors = group_figures(args.consumed, acked_numbers)
    errors += group_errors
    figures.update({"application_errors": errors, **(group if args.consumed else {}),
                    "produce_seconds": round(report["seconds"], 1)})
    print("checker: " + " ".join(f"{k}={v}" for k, v in figures.items()))
    for e in report["errors"][:5]:
        print(f"  error: {e}", file=sys.stderr)
    ok = lost == 0 and duplicated == 0 and reordered == 0 and errors == 0
    ok = ok and group["group_undelivered"] == 0
    ok = ok and len(acked_numbers) > 0
    sys.exit(0 if ok else 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--partitions", type=int, default=0)
    c = sub.add_parser("consume")
    c.add_argument("--bootstrap", required=True)
    c.add_argument("--topic", required=True)
    c.add_argument("--group", required=True)
    c.add_argument("--out", required=True)
    n = sub.add_parser("count")
    n.add_argument("--bootstrap", required=True)
    n.add_argument("--topic", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--bootstrap", required=True)
    v.add_argument("--topic", required=True)
    v.add_argument("--acked", required=True)
    v.add_argument("--consumed", action="append", default=[])
    args = parser.parse_args()
    {"produce": produce, "consume": consume, "count": count, "verify": verify}[args.command](args)


if __name__ == "__main__":
    main()
