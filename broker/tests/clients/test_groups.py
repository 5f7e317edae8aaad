"""Consumer groups with real clients: confluent-kafka (librdkafka), kafka-python and kcat's
balanced consumer join, leave and are killed while records keep arriving, and the history they
leave behind is checked:

- at every moment each partition has at most one owner (assignment intervals from the rebalance
  callbacks; a killed member owns nothing after its kill);
- a member processes only records of partitions it owns;
- with a synchronous commit after processing, the union of processed records is exactly the
  acknowledged records, and a record is processed twice only when a member that processed it
  was killed before committing it;
- committed offsets survive a broker restart; a static member (`group.instance.id`) restarted
  within its session timeout gets its partitions back without disturbing the others;
- bad requests get Kafka's error codes.

Each member is a separate process (this file run as `python3 test_groups.py member ...`) so that
kill -9 is real. A member writes one JSON line per event to its own log file, flushed as it is
written, with `time.monotonic()` timestamps (CLOCK_MONOTONIC is one clock for every process of
the machine, so the logs of all members merge into one timeline).

Rebalance times (a join until every member has its partitions; a kill until the killed member's
partitions have new owners) are printed; run with `-s` to see them:

    python3 -m pytest broker/tests/clients/test_groups.py -s -k churn
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

# --------------------------------------------------------------------------------------------
# The member process. Kept free of pytest imports so that it starts quickly.


def member_main(argv):
    parser = argparse.ArgumentParser(prog="test_groups.py member")
    parser.add_argument("--client", choices=("confluent", "kafka-python"), required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--assignor", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=1000)
    parser.add_argument("--instance-id", default=None)
    args = parser.parse_args(argv)

    out = open(args.log, "a", buffering=1)
    lock = threading.Lock()

    def emit(ev, **fields):
        line = json.dumps(dict(t=time.monotonic(), ev=ev, **fields))
        with lock:
            out.write(line + "\n")  # line-buffered: in the kernel once written, kill -9 or not

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    emit("start", pid=os.getpid(), client=args.client, assignor=args.assignor,
         instance_id=args.instance_id)
    if args.client == "confluent":
        _member_confluent(args, emit, stopping)
    else:
        _member_kafka_python(args, emit, stopping)
    emit("closed")
    out.close()


def _member_confluent(args, emit, stopping):
    import confluent_kafka
    from confluent_kafka import KafkaException, TopicPartition

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "client.id": os.path.basename(args.log),
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": args.session_timeout_ms,
        "heartbeat.interval.ms": args.heartbeat_interval_ms,
        "max.poll.interval.ms": 30_000,
        "partition.assignment.strategy": args.assignor,
        "fetch.wait.max.ms": 100,
    }
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id
    consumer = confluent_kafka.Consumer(conf)
    # The callbacks run inside consume() and close(), on this thread; when they return without
    # calling (incremental_)assign, confluent-kafka applies the change itself.
    consumer.subscribe(
        [args.topic],
        on_assign=lambda c, ps: emit("assign", ps=sorted(p.partition for p in ps)),
        on_revoke=lambda c, ps: emit("revoke", ps=sorted(p.partition for p in ps)),
        on_lost=lambda c, ps: emit("lost", ps=sorted(p.partition for p in ps)),
    )
    while not stopping.is_set():
        msgs = consumer.consume(num_messages=500, timeout=0.2)
        batch = defaultdict(list)
        for m in msgs:
            if m.error():
                emit("error", err=str(m.error()))
                continue
            batch[m.partition()].append((m.offset(), m.value().decode()))
        if not batch:
            continue
        _process(emit, batch)
        offsets = {p: recs[-1][0] + 1 for p, recs in batch.items()}
        try:
            result = consumer.commit(
                offsets=[TopicPartition(args.topic, p, o) for p, o in offsets.items()],
                asynchronous=False,
            )
            failed = {tp.partition: str(tp.error) for tp in result if tp.error}
            emit("commit", ok=not failed, offs=_ok_offsets(offsets, failed), err=failed or None)
        except KafkaException as e:
            emit("commit", ok=False, offs={}, err=str(e))
    emit("closing")
    consumer.close()


def _member_kafka_python(args, emit, stopping):
    import kafka
    from kafka import ConsumerRebalanceListener, OffsetAndMetadata, TopicPartition
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    assignor = {
        "range": RangePartitionAssignor,
        "roundrobin": RoundRobinPartitionAssignor,
        "cooperative-sticky": CooperativeStickyAssignor,
    }[args.assignor]

    class Listener(ConsumerRebalanceListener):
        def on_partitions_assigned(self, assigned):
            emit("assign", ps=sorted(tp.partition for tp in assigned))

        def on_partitions_revoked(self, revoked):
            emit("revoke", ps=sorted(tp.partition for tp in revoked))

        def on_partitions_lost(self, lost):
            emit("lost", ps=sorted(tp.partition for tp in lost))

    conf = dict(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        client_id=os.path.basename(args.log),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        max_poll_interval_ms=30_000,
        partition_assignment_strategy=[assignor],
        fetch_max_wait_ms=100,
    )
    if args.instance_id:
        conf["group_instance_id"] = args.instance_id
    consumer = kafka.KafkaConsumer(**conf)
    consumer.subscribe([args.topic], listener=Listener())
    while not stopping.is_set():
        polled = consumer.poll(timeout_ms=200, max_records=500)
        batch = defaultdict(list)
        for tp, msgs in polled.items():
            for m in msgs:
                batch[tp.partition].append((m.offset, m.value.decode()))
        if not batch:
            continue
        _process(emit, batch)
        offsets = {p: recs[-1][0] + 1 for p, recs in batch.items()}
        try:
            consumer.commit(
                {TopicPartition(args.topic, p): OffsetAndMetadata(o, "", -1)
                 for p, o in offsets.items()}
            )
            emit("commit", ok=True, offs=_ok_offsets(offsets, {}), err=None)
        except kafka.errors.KafkaError as e:
            emit("commit", ok=False, offs={}, err=f"{type(e).__name__}: {e}")
    emit("closing")
    consumer.close()


def _process(emit, batch):
    """'Processing' a record is logging it: (partition, offset, value)."""
    for p, recs in sorted(batch.items()):
        emit("proc", p=p, o=[o for o, _ in recs], v=[v for _, v in recs])


def _ok_offsets(offsets, failed):
    return {str(p): o for p, o in offsets.items() if p not in failed}


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "member":
    member_main(sys.argv[2:])
    sys.exit(0)

# --------------------------------------------------------------------------------------------
# Everything below runs in the pytest process.

import confluent_kafka  # noqa: E402
import kafka  # noqa: E402
import pytest  # noqa: E402
from confluent_kafka import TopicPartition  # noqa: E402

import kwire  # noqa: E402
from conftest import wait_until  # noqa: E402
from kclients import create_topic  # noqa: E402
from kwire import Conn, array, i8, i16, i32, i64, nbytes, string  # noqa: E402

THIS_FILE = Path(__file__).resolve()
PARTITIONS = 12
SESSION_TIMEOUT_MS = 6000  # the broker's minimum, so kills are noticed fast
HEARTBEAT_INTERVAL_MS = 1000
SETTLE_DEADLINE_S = 40.0
GROUP_SETTINGS = {"group.initial.rebalance.delay.ms": 0}


@pytest.fixture
def group_broker(broker_factory):
    return broker_factory(settings=GROUP_SETTINGS)


# --------------------------------------------------------------------------------------------
# Member processes, seen from the test


@dataclass
class Event:
    t: float
    ev: str
    data: dict


class Member:
    """One consumer process and what its log says so far."""

    def __init__(self, name, client, assignor, group, topic, bootstrap, log_dir,
                 instance_id=None, session_timeout_ms=SESSION_TIMEOUT_MS):
        self.name = name
        self.client = client
        self.assignor = assignor
        self.cmd = [
            sys.executable, str(THIS_FILE), "member",
            "--client", client, "--bootstrap", bootstrap, "--topic", topic,
            "--group", group, "--assignor", assignor,
            "--log", str(log_dir / f"{name}.jsonl"),
            "--session-timeout-ms", str(session_timeout_ms),
            "--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
        ]
        if instance_id:
            self.cmd += ["--instance-id", instance_id]
        self.log_path = log_dir / f"{name}.jsonl"
        self.stderr_path = log_dir / f"{name}.stderr"
        self.proc = None
        self.events = []
        self._read_pos = 0
        self.started_at = None
        self.killed_at = None  # set by kill9()
        self.stopped_at = None  # set by leave()

    def start(self):
        self.started_at = time.monotonic()
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=self._stderr)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.killed_at = time.monotonic()
        self.refresh()

    def leave(self, deadline_s=30):
        """SIGTERM: the member finishes its batch, commits, closes (LeaveGroup) and exits."""
        self.stopped_at = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=deadline_s)
        assert code == 0, f"{self.name} exited with {code}:\n{self.stderr_tail()}"
        self.refresh()

    def stop(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=10)

    def refresh(self):
        """Reads the complete lines its log has gained."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._read_pos)
                data = f.read()
        except FileNotFoundError:
            return self
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            obj = json.loads(line)
            self.events.append(Event(obj.pop("t"), obj.pop("ev"), obj))
        self._read_pos += end
        return self

    def owned(self):
        """Partitions it owns now, by its callbacks (none once killed or stopped)."""
        if self.killed_at is not None or self.stopped_at is not None:
            return set()
        owned = set()
        for e in self.events:
            if e.ev == "assign":
                owned |= set(e.data["ps"])
            elif e.ev in ("revoke", "lost"):
                owned -= set(e.data["ps"])
        return owned

    def processed_since(self, t):
        return sum(len(e.data["o"]) for e in self.events if e.ev == "proc" and e.t > t)

    def last_ownership_change(self):
        times = [e.t for e in self.events if e.ev in ("assign", "revoke", "lost")]
        return max(times, default=None)

    def stderr_tail(self):
        try:
            return self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


class Members:
    """The members of one test; every process is killed at the end."""

    def __init__(self, **defaults):
        self.defaults = defaults
        self.all = []

    def start(self, name, **overrides):
        m = Member(name, **{**self.defaults, **overrides}).start()
        self.all.append(m)
        return m

    def live(self):
        return [m for m in self.all if m.killed_at is None and m.stopped_at is None]

    def refresh(self):
        for m in self.all:
            m.refresh()
            if m.killed_at is None and m.stopped_at is None and not m.alive():
                raise AssertionError(f"{m.name} died on its own:\n{m.stderr_tail()}")

    def stop_all(self):
        for m in self.all:
            m.stop()


@pytest.fixture
def members():
    group = []

    def make(**defaults):
        g = Members(**defaults)
        group.append(g)
        return g

    yield make
    for g in group:
        g.stop_all()


def wait_settled(members, since, what, deadline_s=SETTLE_DEADLINE_S):
    """Waits until the live members own every partition exactly once between them, each owning
    at least one; returns the seconds from `since` to the last ownership change that led there."""

    def settled():
        members.refresh()
        live = members.live()
        owners = defaultdict(list)
        for m in live:
            for p in m.owned():
                owners[p].append(m.name)
        if set(owners) != set(range(PARTITIONS)) or any(len(o) > 1 for o in owners.values()):
            return None
        if len(live) <= PARTITIONS and any(not m.owned() for m in live):
            return None
        last = max((m.last_ownership_change() or since) for m in live)
        return max(last, since) - since

    seconds = wait_until(settled, deadline_s, f"group settled after {what}", interval_s=0.05)
    return seconds


def wait_processing(members, since, what, deadline_s=20.0):
    """Waits until every live member has processed records after `since`."""

    def progressed():
        members.refresh()
        return all(m.processed_since(since) > 0 for m in members.live())

    wait_until(progressed, deadline_s, f"every member processing after {what}", interval_s=0.05)


# --------------------------------------------------------------------------------------------
# A producer that keeps producing while the group changes


class ContinuousProducer:
    """Produces to every partition from a thread, at about `rate` records a second, until
    stopped; keeps what the broker acknowledged: (partition, offset) -> value."""

    def __init__(self, bootstrap, topic, rate=1500):
        self.topic = topic
        self.rate = rate
        self.acked = {}
        self.failed = []
        self.producer = confluent_kafka.Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
        })
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._seq = 0

    def _on_delivery(self, err, msg):
        if err is not None:
            self.failed.append((msg.value(), str(err)))
        else:
            self.acked[(msg.partition(), msg.offset())] = msg.value().decode()

    def _run(self):
        tick_s = 0.02
        per_tick = max(1, int(self.rate * tick_s))
        next_tick = time.monotonic()
        while not self._stop.is_set():
            for _ in range(per_tick):
                p = self._seq % PARTITIONS
                self.producer.produce(self.topic, value=f"p{p}-s{self._seq}".encode(), partition=p,
                                      on_delivery=self._on_delivery)
                self._seq += 1
            self.producer.poll(0)
            next_tick += tick_s
            pause = next_tick - time.monotonic()
            if pause > 0:
                self._stop.wait(pause)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)
        remaining = self.producer.flush(30)
        assert remaining == 0, f"{remaining} records undelivered"
        assert not self.failed, f"{len(self.failed)} deliveries failed, first {self.failed[0]}"
        assert len(self.acked) == self._seq
        return self.acked


# --------------------------------------------------------------------------------------------
# The checker


@dataclass
class Verdict:
    violations: list = field(default_factory=list)
    processed: int = 0
    duplicates: int = 0  # extra processings, each explained by a kill
    lost_work: int = 0  # records processed by killed members and never committed

    def fail(self, msg):
        if len(self.violations) < 30:
            self.violations.append(msg)


def check_history(all_members, acked):
    """Checks the merged logs of `all_members` against the acknowledged records."""
    verdict = Verdict()
    end_of_time = float("inf")

    # Ownership intervals, and: a member processes only partitions it owns.
    intervals = defaultdict(list)  # partition -> [(start, end, member)]
    for m in all_members:
        owned = {}  # partition -> since
        for e in m.events:
            if e.ev == "assign":
                for p in e.data["ps"]:
                    if p in owned:
                        verdict.fail(f"{m.name} assigned {p} it already owns (t={e.t:.3f})")
                    owned[p] = e.t
            elif e.ev in ("revoke", "lost"):
                for p in e.data["ps"]:
                    if p not in owned:
                        verdict.fail(f"{m.name} revoked {p} it does not own (t={e.t:.3f})")
                        continue
                    intervals[p].append((owned.pop(p), e.t, m.name))
            elif e.ev == "proc" and e.data["p"] not in owned:
                verdict.fail(f"{m.name} processed partition {e.data['p']} it does not own "
                             f"(offsets {e.data['o'][0]}..{e.data['o'][-1]}, t={e.t:.3f})")
        # What it still owned ends with it: a kill, or its last event.
        end = m.killed_at if m.killed_at is not None else (
            m.events[-1].t if m.events and m.events[-1].ev == "closed" else end_of_time)
        for p, since in owned.items():
            intervals[p].append((since, end, m.name))
    for p, spans in intervals.items():
        spans.sort()
        for (s1, e1, m1), (s2, e2, m2) in zip(spans, spans[1:]):
            if s2 < e1 and m1 != m2:
                verdict.fail(f"partition {p} owned by {m1} [{s1:.3f}, {e1:.3f}) and "
                             f"{m2} [{s2:.3f}, {e2:.3f}) at once")

    # Every acknowledged record processed, with its value; nothing else processed.
    occurrences = defaultdict(list)  # (partition, offset) -> [(member, uncommitted_at_death)]
    for m in all_members:
        committed = {}  # partition -> next offset, by its successful commits
        processed = []  # (partition, offset) in order
        for e in m.events:
            if e.ev == "proc":
                p = e.data["p"]
                for o, v in zip(e.data["o"], e.data["v"]):
                    processed.append((p, o))
                    verdict.processed += 1
                    want = acked.get((p, o))
                    if want is None:
                        verdict.fail(f"{m.name} processed ({p}, {o}) = {v!r}, never acknowledged")
                    elif want != v:
                        verdict.fail(f"{m.name} processed ({p}, {o}) = {v!r}, acknowledged {want!r}")
            elif e.ev == "commit":
                for p, o in e.data["offs"].items():
                    committed[int(p)] = max(committed.get(int(p), 0), o)
        for p, o in processed:
            lost = m.killed_at is not None and o >= committed.get(p, 0)
            occurrences[(p, o)].append((m.name, lost))
    missing = sorted(set(acked) - set(occurrences))
    if missing:
        verdict.fail(f"{len(missing)} acknowledged records never processed, first {missing[:5]}")
    for key, occ in occurrences.items():
        lost = sum(1 for _, lost in occ if lost)
        kept = len(occ) - lost
        verdict.lost_work += lost
        verdict.duplicates += len(occ) - 1
        if kept > 1:
            verdict.fail(f"record {key} processed {len(occ)} times by {[n for n, _ in occ]}, "
                         f"not explained by a kill before its commit")
        elif kept == 0:
            verdict.fail(f"record {key} processed only by killed {[n for n, _ in occ]} before "
                         f"its commit, and never again")
    return verdict


def durably_processed(m):
    """(partition, offset) of the records `m` processed that count: all of them, unless it was
    killed, then only those its commits cover (the rest will be processed again)."""
    committed = {}
    out = set()
    for e in m.events:
        if e.ev == "commit":
            for p, o in e.data["offs"].items():
                committed[int(p)] = max(committed.get(int(p), 0), o)
    for e in m.events:
        if e.ev == "proc":
            p = e.data["p"]
            out.update((p, o) for o in e.data["o"]
                       if m.killed_at is None or o < committed.get(p, 0))
    return out


def wait_caught_up(members, acked, deadline_s=60):
    """Waits until the group has processed every acknowledged record. On timeout it returns
    anyway: the checker then says what is missing."""

    def caught_up():
        members.refresh()
        seen = set()
        for m in members.all:
            seen |= durably_processed(m)
        return seen >= set(acked)

    try:
        wait_until(caught_up, deadline_s, "every acknowledged record processed", interval_s=0.1)
    except AssertionError:
        pass


# --------------------------------------------------------------------------------------------
# Scenarios


CHURN_CASES = [
    ("confluent", "range"),
    ("confluent", "roundrobin"),
    ("confluent", "cooperative-sticky"),
    ("kafka-python", "range"),
    ("kafka-python", "roundrobin"),
    ("kafka-python", "cooperative-sticky"),
    ("mixed", "range"),
]


@pytest.mark.parametrize("client,assignor", CHURN_CASES, ids=[f"{c}-{a}" for c, a in CHURN_CASES])
def test_churn_under_load_keeps_one_owner_per_partition_and_loses_nothing(
        group_broker, members, tmp_path, client, assignor):
    topic = f"churn-{client}-{assignor}"
    group = f"g-{topic}"
    create_topic(group_broker.bootstrap, topic, PARTITIONS)
    clients = ["confluent", "kafka-python"] if client == "mixed" else [client]
    group_members = members(assignor=assignor, group=group, topic=topic,
                            bootstrap=group_broker.bootstrap, log_dir=tmp_path)

    def start(name):
        return group_members.start(name, client=clients[len(group_members.all) % len(clients)])

    producer = ContinuousProducer(group_broker.bootstrap, topic).start()
    times = {}
    try:
        t0 = time.monotonic()
        for i in range(3):
            start(f"m{i + 1}")
        times["3 start"] = wait_settled(group_members, t0, "3 members started")
        wait_processing(group_members, t0, "start")

        for name in ("m4", "m5"):
            t0 = time.monotonic()
            start(name)
            times[f"join {name}"] = wait_settled(group_members, t0, f"{name} joined")
            wait_processing(group_members, t0, f"{name} joined")

        t0 = time.monotonic()
        group_members.all[1].leave()
        times["leave m2"] = wait_settled(group_members, t0, "m2 left")
        wait_processing(group_members, t0, "m2 left")

        victim = group_members.all[2]
        t0 = time.monotonic()
        victim.kill9()
        times["kill m3"] = wait_settled(group_members, t0, "m3 killed")
        wait_processing(group_members, t0, "m3 killed")

        t0 = time.monotonic()
        start("m6")
        times["join m6"] = wait_settled(group_members, t0, "m6 joined")
        wait_processing(group_members, t0, "m6 joined")
    finally:
        acked = producer.stop()

    wait_caught_up(group_members, acked)
    for m in group_members.live():
        m.leave()
    group_members.refresh()

    verdict = check_history(group_members.all, acked)
    print(f"\n[rebalance {client}/{assignor}] " + ", ".join(
        f"{k}: {v:.2f}s" for k, v in times.items())
        + f" | {len(acked)} records, {verdict.duplicates} reprocessed after kill"
        + f" (session.timeout.ms={SESSION_TIMEOUT_MS}, heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS})")
    assert not verdict.violations, "\n".join(verdict.violations)
    assert verdict.duplicates <= verdict.lost_work
