#!/usr/bin/env python3
"""Continuous produce-and-verify load for e2e scenarios, with a real Kafka client.

    checker.py produce --bootstrap HOST:PORT --topic T --out FILE
        Produces numbered records (acks=all, idempotent) round-robin over the topic's
        partitions until SIGTERM, then writes to FILE, as JSON, the acknowledged records
        (partition, offset, number) and every delivery error the application saw.

    checker.py verify --bootstrap HOST:PORT --topic T --acked FILE
        Reads the topic from the beginning and prints, and checks, the figures the day-2
        scenarios report: acknowledged records lost, duplicated and reordered, errors seen by
        the application, records acknowledged. Exits 1 unless lost, duplicated, reordered and
        errors are all 0.
"""

import argparse
import json
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


def produce(args):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
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
               "reordered": reordered, "application_errors": errors,
               "produce_seconds": round(report["seconds"], 1)}
    print("checker: " + " ".join(f"{k}={v}" for k, v in figures.items()))
    for e in report["errors"][:5]:
        print(f"  error: {e}", file=sys.stderr)
    ok = lost == 0 and duplicated == 0 and reordered == 0 and errors == 0
    ok = ok and len(acked_numbers) > 0
    sys.exit(0 if ok else 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--out", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--bootstrap", required=True)
    v.add_argument("--topic", required=True)
    v.add_argument("--acked", required=True)
    args = parser.parse_args()
    {"produce": produce, "verify": verify}[args.command](args)


if __name__ == "__main__":
    main()
