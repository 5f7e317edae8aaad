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
from collections import Counter, defaultdict
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
    parser.add_argument("--work-ms", type=int, default=0,
                        help="time each batch takes to process, between logging and committing")
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
        _process(emit, batch, args.work_ms)
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
        _process(emit, batch, args.work_ms)
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


def _process(emit, batch, work_ms):
    """'Processing' a record is logging it: (partition, offset, value); then the batch takes
    `work_ms` of work before its commit (a kill then is likely to land before the commit)."""
    for p, recs in sorted(batch.items()):
        emit("proc", p=p, o=[o for o, _ in recs], v=[v for _, v in recs])
    time.sleep(work_ms / 1000)


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

from conftest import wait_until  # noqa: E402
from kclients import create_topic  # noqa: E402
from kwire import Conn, array, i8, i16, i32, i64, nbytes, string  # noqa: E402

THIS_FILE = Path(__file__).resolve()
PARTITIONS = 12
SESSION_TIMEOUT_MS = 6000  # the broker's minimum, so kills are noticed fast
HEARTBEAT_INTERVAL_MS = 1000
WORK_MS = 100  # per batch, in the churn tests: kills mostly land between a batch and its commit
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
                 instance_id=None, session_timeout_ms=SESSION_TIMEOUT_MS, work_ms=0):
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
            "--work-ms", str(work_ms),
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
        return (max(last, since) - since,)  # truthy even when nothing had to move

    (seconds,) = wait_until(settled, deadline_s, f"group settled after {what}", interval_s=0.05)
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
        self.producer = None  # no reconnect attempts to a broker that is gone after the test
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
    # records processed again, by why the first processing was not committed:
    # "killed", or the error the broker refused the commit with
    duplicates: Counter = field(default_factory=Counter)

    def fail(self, msg):
        if len(self.violations) < 30:
            self.violations.append(msg)


def _commit_error_name(cause):
    """"killed", or the error name in a failed commit's message."""
    for name in ("ILLEGAL_GENERATION", "REBALANCE_IN_PROGRESS", "UNKNOWN_MEMBER_ID",
                 "IllegalGeneration", "RebalanceInProgress", "UnknownMemberId"):
        if name in cause:
            return name
    return cause


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
                # (kafka-python revokes again on close what a rebalance just revoked)
                for p in set(e.data["ps"]) & set(owned):
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

    # Every acknowledged record processed, with its value; nothing else processed. A record
    # may be processed again only if the member that processed it never had a commit covering
    # it succeed before it lost the partition: it was killed (the commit may not have happened)
    # or the broker refused the commit (the member was told).
    uncommitted = {}  # (member, partition, offset) -> why no commit covered it
    for m in all_members:
        pending = defaultdict(set)  # partition -> processed offsets no commit covers yet
        last_error = None

        def settle(p, cause, m=m, pending=pending):
            for o in pending.pop(p, ()):
                uncommitted[(m.name, p, o)] = cause

        for e in m.events:
            if e.ev == "proc":
                p = e.data["p"]
                pending[p].update(e.data["o"])
                for o, v in zip(e.data["o"], e.data["v"]):
                    verdict.processed += 1
                    want = acked.get((p, o))
                    if want is None:
                        verdict.fail(f"{m.name} processed ({p}, {o}) = {v!r}, never acknowledged")
                    elif want != v:
                        verdict.fail(f"{m.name} processed ({p}, {o}) = {v!r}, acknowledged {want!r}")
            elif e.ev == "commit":
                for p, n in e.data["offs"].items():
                    pending[int(p)] = {o for o in pending[int(p)] if o >= n}
                if not e.data["ok"]:
                    last_error = e.data["err"]
            elif e.ev in ("revoke", "lost"):
                for p in e.data["ps"]:
                    settle(p, f"commit failed: {last_error}")
        for p in list(pending):
            settle(p, "killed" if m.killed_at is not None else f"commit failed: {last_error}")

    occurrences = defaultdict(list)  # (partition, offset) -> [(member, cause or None)]
    for m in all_members:
        for e in m.events:
            if e.ev == "proc":
                p = e.data["p"]
                for o in e.data["o"]:
                    occurrences[(p, o)].append((m.name, uncommitted.get((m.name, p, o))))
    missing = sorted(set(acked) - set(occurrences))
    if missing:
        verdict.fail(f"{len(missing)} acknowledged records never processed, first {missing[:5]}")
    for key, occ in occurrences.items():
        kept = sum(1 for _, cause in occ if cause is None)
        if kept > 1:
            verdict.fail(f"record {key} processed {len(occ)} times by {[n for n, _ in occ]} "
                         f"after commits that covered it")
        if len(occ) > 1:
            for _, cause in occ:
                if cause is not None:
                    verdict.duplicates[_commit_error_name(cause)] += 1
    return verdict


def wait_caught_up(members, acked, deadline_s=60):
    """Waits until the group has processed every acknowledged record. On timeout it returns
    anyway: the checker then says what is missing."""

    def caught_up():
        members.refresh()
        seen = {(e.data["p"], o) for m in members.all for e in m.events if e.ev == "proc"
                for o in e.data["o"]}
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
                            bootstrap=group_broker.bootstrap, log_dir=tmp_path, work_ms=WORK_MS)

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
        + f" | {len(acked)} records, reprocessed: {dict(verdict.duplicates) or 0}"
        + f" (session.timeout.ms={SESSION_TIMEOUT_MS}, heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS})")
    assert not verdict.violations, "\n".join(verdict.violations)
    refused = {k: n for k, n in verdict.duplicates.items() if k != "killed"}
    if assignor == "cooperative-sticky":
        # Members keep consuming while they rejoin: a commit sent at the old generation just
        # after the join round moved the group on is refused, as Kafka refuses it, and the
        # member is told. Anything else is a broker bug.
        assert set(refused) <= {"ILLEGAL_GENERATION", "IllegalGeneration"}, refused
    else:
        # Eager members stop, commit and revoke before they rejoin: only kills reprocess.
        assert not refused, refused


# --------------------------------------------------------------------------------------------
# Static membership


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_static_members_restarted_within_the_session_keep_their_partitions_without_a_rebalance(
        group_broker, members, tmp_path, client):
    topic = f"static-{client}"
    create_topic(group_broker.bootstrap, topic, PARTITIONS)
    # a longer session than the churn tests: a restart (a new Python process) must fit in it
    session_ms = 10_000
    group = members(client=client, assignor="range", group=f"g-{topic}", topic=topic,
                    bootstrap=group_broker.bootstrap, log_dir=tmp_path,
                    session_timeout_ms=session_ms)
    producer = ContinuousProducer(group_broker.bootstrap, topic, rate=600).start()
    restart_times = []
    try:
        t0 = time.monotonic()
        for i in (1, 2, 3):
            group.start(f"s{i}", instance_id=f"static-{i}")
        wait_settled(group, t0, "3 static members started")
        wait_processing(group, t0, "start")
        settled_at = time.monotonic()
        before = {m.name: m.owned() for m in group.live()}

        # Restart every member in turn (so the leader is among them), each within its session.
        for i in (1, 2, 3):
            old = next(m for m in group.live() if m.name.startswith(f"s{i}"))
            old.kill9()
            t0 = time.monotonic()
            new = group.start(f"s{i}-restarted", instance_id=f"static-{i}")

            def back(new=new, old=old):
                group.refresh()
                return new.owned() == before[old.name[:2]] and time.monotonic() - t0
            restart_times.append(wait_until(back, session_ms / 1000, f"static-{i} back",
                                            interval_s=0.05))
            wait_processing(group, t0, f"static-{i} restarted")
        # Let the old incarnations' sessions run out while the group works on; nothing moves.
        last_kill = max(m.killed_at for m in group.all if m.killed_at)
        wait_until(lambda: group.refresh() or all(
            m.processed_since(last_kill + session_ms / 1000 + 1) for m in group.live()),
            session_ms / 1000 + 20, "processing past the old sessions' expiry", interval_s=0.1)
        # (kafka-python revokes an empty set when it first joins)
        moved = [(m.name, e.ev, e.data["ps"]) for m in group.all for e in m.events
                 if e.ev in ("assign", "revoke", "lost") and e.t > settled_at and e.data["ps"]
                 and not (m.name.endswith("restarted") and e.ev == "assign")]
        assert not moved, f"ownership changed after the static restarts: {moved}"

        # A static member that does not come back loses its partitions after its session.
        gone = group.live()[0]
        gone.kill9()
        expired = wait_settled(group, gone.killed_at, "a static member's session expired",
                               deadline_s=session_ms / 1000 + SETTLE_DEADLINE_S)
        assert expired >= session_ms / 1000 - 1, f"partitions moved after {expired:.2f}s"
    finally:
        acked = producer.stop()
    wait_caught_up(group, acked)
    for m in group.live():
        m.leave()
    verdict = check_history(group.all, acked)
    print(f"\n[static {client}] restart → own partitions again: "
          + ", ".join(f"{t:.2f}s" for t in restart_times)
          + f"; unreturned member's partitions moved after {expired:.2f}s"
          f" (session.timeout.ms={session_ms})")
    assert not verdict.violations, "\n".join(verdict.violations)


# --------------------------------------------------------------------------------------------
# The coordinator restarts under a live group


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_a_group_rides_through_a_coordinator_kill_and_restart(broker_factory, members, tmp_path,
                                                                client):
    """The coordinator restores stable groups from __consumer_offsets (as Kafka does): after a
    kill -9 and restart its members carry on at their generation with their partitions, with
    no rebalance and so no moment where two members process one partition."""
    broker = broker_factory(settings=GROUP_SETTINGS)
    topic = f"coordinator-restart-{client}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    group = members(client=client, assignor="range", group=f"g-{topic}", topic=topic,
                    bootstrap=broker.bootstrap, log_dir=tmp_path, work_ms=WORK_MS)
    producer = ContinuousProducer(broker.bootstrap, topic, rate=600).start()
    try:
        t0 = time.monotonic()
        for i in range(3):
            group.start(f"r{i + 1}")
        wait_settled(group, t0, "3 members started")
        wait_processing(group, t0, "start")
        before = {m.name: m.owned() for m in group.live()}
        killed_at = time.monotonic()
        broker.kill9()
        broker.restart()
        restarted_at = time.monotonic()
        # past a session timeout after the restart, so that a member the restarted coordinator
        # had forgotten would have been expired and its partitions moved by now
        wait_processing(group, restarted_at + SESSION_TIMEOUT_MS / 1000 + 1,
                        "a session timeout after the restart", deadline_s=40)
    finally:
        acked = producer.stop()
    wait_caught_up(group, acked)
    after = {m.name: m.owned() for m in group.live()}
    for m in group.live():
        m.leave()
    verdict = check_history(group.all, acked)
    moved = [(m.name, e.ev, e.data["ps"]) for m in group.all for e in m.events
             if e.ev in ("assign", "revoke", "lost") and e.data["ps"] and killed_at < e.t
             and e.t < restarted_at + SESSION_TIMEOUT_MS / 1000 + 1]
    print(f"\n[coordinator restart {client}] broker down {restarted_at - killed_at:.2f}s;"
          f" ownership changes: {len(moved)}; reprocessed: {dict(verdict.duplicates) or 0}")
    assert not verdict.violations, "\n".join(verdict.violations)
    assert not moved, moved
    assert after == before


# --------------------------------------------------------------------------------------------
# Committed offsets across broker restarts


def commit_with_confluent(bootstrap, group, topic, offsets):
    """Joins `group`, commits `offsets` ({partition: offset}) and leaves."""
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
    })
    try:
        consumer.subscribe([topic])
        wait_until(lambda: consumer.poll(0.1) is not None or consumer.assignment(), 30,
                   f"{group} assigned")
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                        asynchronous=False)
    finally:
        consumer.close()


def committed_confluent(bootstrap, group, topic, partitions):
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        consumer.close()


def committed_kafka_python(bootstrap, group, topic, partitions):
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                   enable_auto_commit=False)
    try:
        return {p: consumer.committed(kafka.TopicPartition(topic, p)) for p in partitions}
    finally:
        consumer.close()


def first_offsets_in_group(bootstrap, group, topic, partitions):
    """Subscribes in `group` and returns the first offset it is given in each partition."""
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": SESSION_TIMEOUT_MS,
    })
    first = {}
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(first) < len(partitions):
            assert time.monotonic() < deadline, f"first offsets so far: {first}"
            for m in consumer.consume(100, timeout=0.2):
                assert not m.error(), m.error()
                first.setdefault(m.partition(), m.offset())
        return first
    finally:
        consumer.close()


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
def test_committed_offsets_survive_a_broker_restart(broker_factory, stop):
    broker = broker_factory(settings=GROUP_SETTINGS)
    bs = broker.bootstrap
    topic = "restart-offsets"
    partitions = range(4)
    create_topic(bs, topic, len(partitions))
    producer = confluent_kafka.Producer({"bootstrap.servers": bs, "acks": "all"})
    for i in range(400):
        producer.produce(topic, value=f"v{i}".encode(), partition=i % 4)
    assert producer.flush(30) == 0

    kept = {p: 10 * (p + 1) for p in partitions}
    commit_with_confluent(bs, "kept", topic, kept)
    commit_with_confluent(bs, "rewound", topic, {p: 90 for p in partitions})
    commit_with_confluent(bs, "rewound", topic, {p: 5 for p in partitions})  # the latest wins
    commit_with_confluent(bs, "dropped", topic, {p: 50 for p in partitions})
    commit_with_confluent(bs, "partly", topic, {p: 60 for p in partitions})
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": bs})
    admin.delete_consumer_groups(["dropped"], request_timeout=10)["dropped"].result()
    # OffsetDelete of partitions 0 and 1 of an empty group
    conn = Conn(bs)
    error, parts = offset_delete(conn, "partly", {topic: [0, 1]})
    conn.close()
    assert (error, parts) == (0, {(topic, 0): 0, (topic, 1): 0})

    if stop == "sigterm":
        assert broker.terminate() == 0
    else:
        broker.kill9()
    broker.restart()

    assert committed_confluent(bs, "kept", topic, partitions) == kept
    assert committed_kafka_python(bs, "kept", topic, partitions) == kept
    assert committed_confluent(bs, "rewound", topic, partitions) == {p: 5 for p in partitions}
    assert committed_confluent(bs, "dropped", topic, partitions) == {p: -1001 for p in partitions}
    assert committed_confluent(bs, "partly", topic, partitions) == {0: -1001, 1: -1001, 2: 60, 3: 60}
    listed = {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result().valid}
    assert {"kept", "rewound", "partly"} <= listed and "dropped" not in listed
    # a consumer of the group resumes exactly where the group committed
    assert first_offsets_in_group(bs, "kept", topic, partitions) == kept


# --------------------------------------------------------------------------------------------
# Bad input, from raw requests (non-flexible versions, encoded here with kwire's primitives)

API_OFFSET_COMMIT = 8
API_OFFSET_FETCH = 9
API_FIND_COORDINATOR = 10
API_JOIN_GROUP = 11
API_HEARTBEAT = 12
API_LEAVE_GROUP = 13
API_SYNC_GROUP = 14
API_DESCRIBE_GROUPS = 15
API_DELETE_GROUPS = 42
API_OFFSET_DELETE = 47

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
COORDINATOR_NOT_AVAILABLE = 15
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
FENCED_INSTANCE_ID = 82
GROUP_SUBSCRIBED_TO_TOPIC = 86


def consumer_subscription(topics):
    """ConsumerProtocolSubscription v0: what a consumer puts in its JoinGroup metadata."""
    return i16(0) + array([string(t) for t in topics]) + nbytes(b"")


def consumer_assignment(topic, partitions):
    return i16(0) + array([string(topic) + array([i32(p) for p in partitions])]) + nbytes(b"")


@dataclass
class Joined:
    error: int
    generation: int
    protocol: str
    leader: str
    member_id: str
    members: list


def join_group(conn, group, member_id="", instance_id=None, version=5, session_ms=10_000,
               protocols=(("range", None),), topics=("t",)):
    """JoinGroup v1-v5."""
    body = string(group) + i32(session_ms) + i32(30_000) + string(member_id)
    if version >= 5:
        body += string(instance_id)
    body += string("consumer") + array([
        string(name) + nbytes(meta if meta is not None else consumer_subscription(topics))
        for name, meta in protocols
    ])
    _, r = conn.request(API_JOIN_GROUP, version, body)
    if version >= 2:
        r.i32()
    error, generation, protocol, leader, mid = r.i16(), r.i32(), r.string(), r.string(), r.string()
    members = r.array(lambda r: (r.string(), r.string() if version >= 5 else None, r.bytes()))
    return Joined(error, generation, protocol, leader, mid, members)


def join_new_member(conn, group, **kw):
    """JoinGroup v4+ as clients do it: the first answer hands out the member id."""
    first = join_group(conn, group, **kw)
    assert first.error == MEMBER_ID_REQUIRED, first
    return join_group(conn, group, member_id=first.member_id, **kw)


def sync_group(conn, group, generation, member_id, assignments=(), instance_id=None):
    """SyncGroup v3; returns (error, assignment)."""
    body = (string(group) + i32(generation) + string(member_id) + string(instance_id)
            + array([string(m) + nbytes(a) for m, a in assignments]))
    _, r = conn.request(API_SYNC_GROUP, 3, body)
    r.i32()
    return r.i16(), r.bytes()


def heartbeat(conn, group, generation, member_id, instance_id=None):
    """Heartbeat v3; returns the error code."""
    _, r = conn.request(API_HEARTBEAT, 3,
                        string(group) + i32(generation) + string(member_id) + string(instance_id))
    r.i32()
    return r.i16()


def leave_group(conn, group, member_ids):
    """LeaveGroup v3; returns (error, [member error])."""
    _, r = conn.request(API_LEAVE_GROUP, 3,
                        string(group) + array([string(m) + string(None) for m in member_ids]))
    r.i32()
    return r.i16(), r.array(lambda r: (r.string(), r.string(), r.i16())[2])


def offset_commit(conn, group, generation, member_id, offsets, instance_id=None):
    """OffsetCommit v7 of {(topic, partition): offset}; returns {(topic, partition): error}."""
    by_topic = defaultdict(list)
    for (t, p), o in offsets.items():
        by_topic[t].append((p, o))
    body = string(group) + i32(generation) + string(member_id) + string(instance_id) + array([
        string(t) + array([i32(p) + i64(o) + i32(-1) + string(None) for p, o in ps])
        for t, ps in by_topic.items()
    ])
    _, r = conn.request(API_OFFSET_COMMIT, 7, body)
    r.i32()
    out = {}
    for t, parts in r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16())))):
        for p, e in parts:
            out[(t, p)] = e
    return out


def offset_fetch(conn, group, topic, partitions):
    """OffsetFetch v5; returns (error, {partition: (offset, error)})."""
    _, r = conn.request(API_OFFSET_FETCH, 5,
                        string(group) + array([string(topic) + array([i32(p) for p in partitions])]))
    r.i32()
    topics = r.array(lambda r: (r.string(), r.array(
        lambda r: (r.i32(), r.i64(), r.i32(), r.string(), r.i16()))))
    error = r.i16()
    return error, {p: (o, e) for _, parts in topics for p, o, _, _, e in parts}


def offset_delete(conn, group, topics):
    """OffsetDelete v0 of {topic: [partition]}; returns (error, {(topic, partition): error})."""
    body = string(group) + array([string(t) + array([i32(p) for p in ps])
                                  for t, ps in topics.items()])
    _, r = conn.request(API_OFFSET_DELETE, 0, body)
    error = r.i16()
    r.i32()
    parts = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16()))))
    return error, {(t, p): e for t, ps in parts for p, e in ps}


def delete_groups(conn, groups):
    _, r = conn.request(API_DELETE_GROUPS, 1, array([string(g) for g in groups]))
    r.i32()
    return dict(r.array(lambda r: (r.string(), r.i16())))


def find_coordinator(conn, key, key_type=0):
    """FindCoordinator v1; returns (error, node, host, port)."""
    _, r = conn.request(API_FIND_COORDINATOR, 1, string(key) + i8(key_type))
    r.i32()
    error = r.i16()
    r.string()  # error message
    return error, r.i32(), r.string(), r.i32()


@pytest.fixture(scope="module")
def wire_broker(tmp_path_factory):
    from conftest import Broker
    b = Broker(tmp_path_factory.mktemp("groups-wire") / "broker", settings=GROUP_SETTINGS).start()
    create_topic(b.bootstrap, "t", 2)
    yield b
    b.stop()


@pytest.fixture
def conn(wire_broker):
    c = Conn(wire_broker.bootstrap)
    yield c
    c.close()


@pytest.fixture
def stable_group(conn, request):
    """A group of one member at generation 1 with partitions 0 and 1 of `t`."""
    group = f"wire-{request.node.name}"
    joined = join_new_member(conn, group)
    assert (joined.error, joined.generation, joined.leader) == (NONE, 1, joined.member_id)
    assignment = consumer_assignment("t", [0, 1])
    assert sync_group(conn, group, 1, joined.member_id, [(joined.member_id, assignment)]) == (
        NONE, assignment)
    return group, joined.member_id


def test_find_coordinator_names_this_broker_for_groups_only(wire_broker, conn):
    # a single broker leads every __consumer_offsets partition, so it coordinates every group
    error, node, host, port = find_coordinator(conn, "any-group")
    assert (error, host, port) == (NONE, "127.0.0.1", wire_broker.port)
    brokers = confluent_kafka.admin.AdminClient(
        {"bootstrap.servers": wire_broker.bootstrap}).list_topics("t", timeout=10).brokers
    assert list(brokers) == [node]
    assert find_coordinator(conn, "txn", key_type=1)[0] == COORDINATOR_NOT_AVAILABLE


@pytest.mark.parametrize("version", [1, 3, 5])
def test_join_with_a_member_id_the_group_never_gave_is_unknown_member(conn, stable_group, version):
    group, _ = stable_group
    assert join_group(conn, group, member_id="made-up", version=version).error == UNKNOWN_MEMBER_ID
    # also for a group that does not exist
    assert join_group(conn, "no-such-group", member_id="made-up",
                      version=version).error == UNKNOWN_MEMBER_ID


def test_join_refuses_bad_session_timeouts_and_foreign_protocols(conn, stable_group):
    group, _ = stable_group
    assert join_group(conn, group, session_ms=1000).error == INVALID_SESSION_TIMEOUT
    assert join_group(conn, group, session_ms=10**9).error == INVALID_SESSION_TIMEOUT
    assert join_group(conn, group, protocols=(("roundrobin", None),)).error == \
        INCONSISTENT_GROUP_PROTOCOL


def test_unknown_members_get_unknown_member_id(conn, stable_group):
    group, member = stable_group
    assert heartbeat(conn, group, 1, "made-up") == UNKNOWN_MEMBER_ID
    assert heartbeat(conn, "no-such-group", 1, "made-up") == UNKNOWN_MEMBER_ID
    assert sync_group(conn, group, 1, "made-up")[0] == UNKNOWN_MEMBER_ID
    assert offset_commit(conn, group, 1, "made-up", {("t", 0): 1}) == {("t", 0): UNKNOWN_MEMBER_ID}
    # a "simple" commit (no member, no generation) into a group with members
    assert offset_commit(conn, group, -1, "", {("t", 0): 1}) == {("t", 0): UNKNOWN_MEMBER_ID}
    assert leave_group(conn, group, ["made-up"]) == (NONE, [UNKNOWN_MEMBER_ID])
    assert heartbeat(conn, group, 1, member) == NONE


def test_stale_generations_get_illegal_generation(wire_broker, conn, stable_group):
    group, member = stable_group
    assert heartbeat(conn, group, 0, member) == ILLEGAL_GENERATION
    assert sync_group(conn, group, 7, member)[0] == ILLEGAL_GENERATION
    assert offset_commit(conn, group, 0, member, {("t", 0): 1}) == {("t", 0): ILLEGAL_GENERATION}
    # a commit with a generation for a group the coordinator does not know
    assert offset_commit(conn, "no-such-group", 3, "m", {("t", 0): 1}) == {
        ("t", 0): ILLEGAL_GENERATION}

    # A second member starts a rebalance: the first still commits at its generation (so that it
    # can commit what it processed before it rejoins) and learns of the rebalance by heartbeat.
    other = Conn(wire_broker.bootstrap)
    try:
        first = join_group(other, group)
        assert first.error == MEMBER_ID_REQUIRED
        other.send_frame(_join_frame(other, group, first.member_id))  # parked until we rejoin
        wait_until(lambda: heartbeat(conn, group, 1, member) == REBALANCE_IN_PROGRESS, 10,
                   "the rebalance to start")
        assert offset_commit(conn, group, 1, member, {("t", 0): 7}) == {("t", 0): NONE}
        rejoined = join_group(conn, group, member_id=member)
        assert (rejoined.error, rejoined.generation) == (NONE, 2)
        # joined but not synced: commits wait for the assignment
        assert offset_commit(conn, group, 2, member, {("t", 0): 8}) == {
            ("t", 0): REBALANCE_IN_PROGRESS}
        # generation 1 is now stale everywhere
        assert heartbeat(conn, group, 1, member) == ILLEGAL_GENERATION
        assert offset_commit(conn, group, 1, member, {("t", 0): 9}) == {
            ("t", 0): ILLEGAL_GENERATION}
        assert sync_group(conn, group, 1, member)[0] == ILLEGAL_GENERATION
    finally:
        other.close()
    error, got = offset_fetch(conn, group, "t", [0])
    assert (error, got) == (NONE, {0: (7, NONE)})


def _join_frame(conn, group, member_id):
    """A JoinGroup v5 frame sent without waiting for its (parked) answer."""
    conn.correlation_id += 1
    body = (string(group) + i32(10_000) + i32(30_000) + string(member_id) + string(None)
            + string("consumer") + array([string("range") + nbytes(consumer_subscription(["t"]))]))
    return i16(API_JOIN_GROUP) + i16(5) + i32(conn.correlation_id) + string("kwire") + body


def test_commits_to_unknown_topics_or_partitions_get_unknown_topic_or_partition(conn, stable_group):
    group, member = stable_group
    result = offset_commit(conn, group, 1, member,
                           {("t", 0): 5, ("t", 99): 5, ("no-such-topic", 0): 5})
    assert result == {("t", 0): NONE, ("t", 99): UNKNOWN_TOPIC_OR_PARTITION,
                      ("no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION}
    # also ahead of the group's own verdict, and for simple commits
    assert offset_commit(conn, group, 0, member, {("no-such-topic", 0): 5}) == {
        ("no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION}
    assert offset_commit(conn, "simple", -1, "", {("no-such-topic", 0): 5, ("t", 1): 3}) == {
        ("no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION, ("t", 1): NONE}
    error, got = offset_fetch(conn, group, "t", [0, 1, 99])
    assert (error, got) == (NONE, {0: (5, NONE), 1: (-1, NONE), 99: (-1, NONE)})


def test_static_member_fencing(wire_broker, conn):
    group = "wire-static"
    joined = join_group(conn, group, instance_id="host-a")  # static members skip MEMBER_ID_REQUIRED
    assert joined.error == NONE
    assert sync_group(conn, group, joined.generation, joined.member_id, [],
                      instance_id="host-a")[0] == NONE
    # the same instance rejoins (a restart): a new member id, same generation, no rebalance
    again = join_group(conn, group, instance_id="host-a")
    assert (again.error, again.generation) == (NONE, joined.generation)
    assert again.member_id != joined.member_id
    # it led before its restart; below JoinGroup v9 it is told that its old incarnation leads
    # (so it does not compute an assignment the stable group would ignore)
    assert (again.leader, again.members) == (joined.member_id, [])
    # the old incarnation is fenced
    assert heartbeat(conn, group, joined.generation, joined.member_id, "host-a") == FENCED_INSTANCE_ID
    assert offset_commit(conn, group, joined.generation, joined.member_id, {("t", 0): 1},
                         instance_id="host-a") == {("t", 0): FENCED_INSTANCE_ID}
    assert join_group(conn, group, member_id=joined.member_id,
                      instance_id="host-a").error == FENCED_INSTANCE_ID
    assert heartbeat(conn, group, again.generation, again.member_id, "host-a") == NONE


def test_delete_groups_and_offsets_refuse_what_is_in_use(conn, stable_group):
    group, member = stable_group
    assert offset_commit(conn, group, 1, member, {("t", 0): 3, ("t", 1): 4}) == {
        ("t", 0): NONE, ("t", 1): NONE}
    assert delete_groups(conn, [group, "no-such-group"]) == {
        group: NON_EMPTY_GROUP, "no-such-group": GROUP_ID_NOT_FOUND}
    # the members subscribe to t: its offsets cannot be deleted
    assert offset_delete(conn, group, {"t": [0]}) == (NONE, {("t", 0): GROUP_SUBSCRIBED_TO_TOPIC})
    assert offset_delete(conn, "no-such-group", {"t": [0]})[0] == GROUP_ID_NOT_FOUND
    assert leave_group(conn, group, [member]) == (NONE, [NONE])
    assert offset_delete(conn, group, {"t": [0], "no-such-topic": [0]}) == (
        NONE, {("t", 0): NONE, ("no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION})
    assert offset_fetch(conn, group, "t", [0, 1]) == (NONE, {0: (-1, NONE), 1: (4, NONE)})
    assert delete_groups(conn, [group]) == {group: NONE}
    assert offset_fetch(conn, group, "t", [1]) == (NONE, {1: (-1, NONE)})
    assert delete_groups(conn, [group]) == {group: GROUP_ID_NOT_FOUND}


# --------------------------------------------------------------------------------------------
# Admin clients and kcat


def test_admin_clients_list_and_describe_a_live_group(group_broker, members, tmp_path):
    bs = group_broker.bootstrap
    topic = "admin-view"
    create_topic(bs, topic, PARTITIONS)
    group = members(client="confluent", assignor="roundrobin", group="g-admin", topic=topic,
                    bootstrap=bs, log_dir=tmp_path)
    t0 = time.monotonic()
    for i in range(3):
        group.start(f"a{i}")
    wait_settled(group, t0, "3 members")
    owned = {m.name: m.owned() for m in group.live()}

    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": bs})
    listed = admin.list_consumer_groups(request_timeout=10).result()
    states = {g.group_id: g.state for g in listed.valid}
    assert states.get("g-admin") == confluent_kafka.ConsumerGroupState.STABLE, states
    desc = admin.describe_consumer_groups(["g-admin"], request_timeout=10)["g-admin"].result()
    assert desc.state == confluent_kafka.ConsumerGroupState.STABLE
    assert desc.partition_assignor == "roundrobin"
    described = {m.client_id: {tp.partition for tp in m.assignment.topic_partitions}
                 for m in desc.members}
    assert described == {f"{n}.jsonl": ps for n, ps in owned.items()}

    py_admin = kafka.KafkaAdminClient(bootstrap_servers=bs)
    try:
        py_listed = {g["group_id"]: g for g in py_admin.list_groups(states_filter=["Stable"])}
        assert py_listed["g-admin"]["protocol_type"] == "consumer"
        py_desc = py_admin.describe_groups(["g-admin"])["g-admin"]
        assert (py_desc["error"], py_desc["group_state"], py_desc["protocol_data"]) == (
            None, "Stable", "roundrobin")
        py_owned = {m["client_id"]: {p for t in m["member_assignment"]["assigned_partitions"]
                                     for p in t["partitions"]}
                    for m in py_desc["members"]}
        assert py_owned == described
    finally:
        py_admin.close()


def test_kcat_balanced_consumer_reads_everything_once_and_resumes_from_its_commits(group_broker):
    bs = group_broker.bootstrap
    topic = "kcat-group"
    create_topic(bs, topic, 4)

    def produce(start, count):
        producer = confluent_kafka.Producer({"bootstrap.servers": bs, "acks": "all"})
        for i in range(start, start + count):
            producer.produce(topic, value=f"r{i}".encode(), partition=i % 4)
        assert producer.flush(30) == 0

    def kcat_group(count):
        """kcat -G reads `count` records, commits them (auto commit, and on close) and exits."""
        cmd = ["kcat", "-b", bs, "-G", "kcat-g", topic, "-c", str(count),
               "-f", "%p %o %s\\n", "-q", "-X", "session.timeout.ms=6000", "-X", "auto.offset.reset=earliest",
               "-X", "enable.auto.commit=true", "-X", "auto.commit.interval.ms=200"]
        result = subprocess.run(cmd, capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr.decode()
        return [line.split() for line in result.stdout.decode().splitlines()]

    produce(0, 400)
    first = kcat_group(400)
    assert sorted(v for _, _, v in first) == sorted(f"r{i}" for i in range(400))
    assert committed_confluent(bs, "kcat-g", topic, range(4)) == {p: 100 for p in range(4)}
    produce(400, 200)
    second = kcat_group(200)
    assert sorted(v for _, _, v in second) == sorted(f"r{i}" for i in range(400, 600))
