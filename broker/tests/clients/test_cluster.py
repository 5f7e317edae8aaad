"""A replicated cluster of three broker processes under faults, with a real idempotent
acks=all producer (librdkafka via confluent-kafka) writing all the time.

Each scenario kills -9 or freezes brokers, or restarts them by controlled shutdown, while the
producer runs. Afterwards a checker reads every partition to its end and compares it with
what the producer was told was acknowledged: acknowledged records lost, duplicated and
reordered must all be 0. It prints those figures with the time to a new leader and the
longest stretch without an acknowledgement.

Faults not covered here yet: cutting one broker off from the others (network partition).
"""

import random
import signal
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, free_port, wait_until

PARTITIONS = 3
SESSION_TIMEOUT_MS = 3000


@pytest.fixture
def cluster(tmp_path):
    """Three brokers, all controller voters, with a short session timeout."""
    ids = [1, 2, 3]
    voters = ",".join(f"{i}@127.0.0.1:{free_port()}" for i in ids)
    brokers = {
        i: Broker(
            tmp_path / f"broker{i}",
            settings={
                "node.id": i,
                "controller.quorum.voters": voters,
                "broker.session.timeout.ms": SESSION_TIMEOUT_MS,
                "broker.heartbeat.interval.ms": 500,
                "replica.lag.time.max.ms": 5000,
                "replica.fetch.wait.max.ms": 200,
                "default.replication.factor": 3,
                "min.insync.replicas": 2,
                "controlled.shutdown.max.wait.ms": 15000,
            },
        )
        for i in ids
    }
    for b in brokers.values():
        b.start()
    bootstrap = ",".join(b.bootstrap for b in brokers.values())
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wait_until(lambda: broker_count(admin) == 3, 30, "3 registered brokers")
    yield brokers, bootstrap, admin
    for b in brokers.values():
        b.stop()


def broker_count(admin):
    try:
        return len(admin.list_topics(timeout=5).brokers)
    except KafkaException:
        return 0


def partition_state(admin, topic):
    """{partition: (leader, isr)} from a fresh Metadata request; {} when the client gets no
    answer in time (brokers are being killed: the callers poll until a deadline)."""
    try:
        md = admin.list_topics(topic=topic, timeout=5)
    except KafkaException:
        return {}
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return {}
    return {p.id: (p.leader, sorted(p.isrs)) for p in t.partitions.values()}


def create(admin, topic):
    futures = admin.create_topics([NewTopic(topic, PARTITIONS, 3)])
    futures[topic].result(timeout=30)
    wait_until(
        lambda: (s := partition_state(admin, topic))
        and len(s) == PARTITIONS
        and all(leader >= 0 and len(isr) == 3 for leader, isr in s.values()),
        30,
        f"{topic}: every partition led with a full ISR",
    )


class Load:
    """Produces sequence numbers round-robin over the partitions until stopped, keeping every
    acknowledgement and every delivery error."""

    def __init__(self, bootstrap, topic):
        self.topic = topic
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 120000,
                "retry.backoff.ms": 100,
                "reconnect.backoff.max.ms": 500,
                "topic.metadata.refresh.interval.ms": 1000,
            }
        )
        self.lock = threading.Lock()
        self.acked = {p: [] for p in range(PARTITIONS)}  # (offset, seq)
        self.errors = []
        self.ack_times = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _deliver(self, err, msg):
        with self.lock:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.acked[msg.partition()].append((msg.offset(), int(msg.value())))
                self.ack_times.append(time.monotonic())

    def _run(self):
        seq = 0
        while not self.stop_flag.is_set():
            try:
                self.producer.produce(
                    self.topic, value=str(seq).encode(), partition=seq % PARTITIONS,
                    on_delivery=self._deliver,
                )
                seq += 1
            except BufferError:
                pass
            self.producer.poll(0.001 if seq % 50 else 0.01)
        self.producer.flush(120)

    def start(self):
        self.thread.start()
        return self

    def acked_count(self):
        with self.lock:
            return sum(len(v) for v in self.acked.values())

    def wait_for_progress(self, more, deadline_s, what):
        target = self.acked_count() + more
        wait_until(lambda: self.acked_count() >= target, deadline_s, what, interval_s=0.05)

    def finish(self):
        self.stop_flag.set()
        self.thread.join(150)
        assert not self.thread.is_alive(), "producer did not finish"

    def longest_gap_s(self, since):
        with self.lock:
            times = [since] + sorted(t for t in self.ack_times if t >= since)
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def read_partition(bootstrap, topic, partition):
    """Every (offset, seq) of a partition, from the start to its high watermark."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"check-{time.time_ns()}",
         "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    )
    try:
        tp = TopicPartition(topic, partition)
        _, high = consumer.get_watermark_offsets(tp, timeout=10)
        consumer.assign([TopicPartition(topic, partition, 0)])
        out = []
        deadline = time.monotonic() + 60
        while (not out or out[-1][0] < high - 1) and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=1):
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        raise AssertionError(f"consume error: {msg.error()}")
                    continue
                out.append((msg.offset(), int(msg.value())))
        return out
    finally:
        consumer.close()


def check(bootstrap, topic, load):
    """Lost, duplicated and reordered acknowledged records (printed and returned)."""
    lost = duplicated = reordered = 0
    for p in range(PARTITIONS):
        stored = read_partition(bootstrap, topic, p)
        seqs = [s for _, s in stored]
        positions = {}
        for i, s in enumerate(seqs):
            positions.setdefault(s, []).append(i)
        duplicated += sum(len(v) - 1 for v in positions.values())
        acked = sorted(load.acked[p])
        acked_positions = []
        for offset, s in acked:
            if s not in positions:
                lost += 1
            else:
                acked_positions.append(positions[s][0])
        reordered += sum(1 for a, b in zip(acked_positions, acked_positions[1:]) if b < a)
    return lost, duplicated, reordered


def new_leader_time(admin, topic, partition, old_leader, started):
    wait_until(
        lambda: (s := partition_state(admin, topic)).get(partition, (-1, []))[0] not in (-1, old_leader),
        60,
        f"a new leader for {topic}-{partition}",
        interval_s=0.05,
    )
    return time.monotonic() - started


def back_in_sync(admin, topic, what):
    wait_until(
        lambda: (s := partition_state(admin, topic))
        and all(len(isr) == 3 for _, isr in s.values()),
        60,
        what,
        interval_s=0.1,
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_no_acknowledged_record_is_lost_through_kills_and_freezes(cluster, seed):
    brokers, bootstrap, admin = cluster
    rng = random.Random(seed)
    topic = f"faults-{seed}"
    create(admin, topic)
    load = Load(bootstrap, topic).start()
    started = time.monotonic()
    load.wait_for_progress(2000, 60, "records acknowledged before the faults")
    leader_times = []
    # kill -9 the leader of a random partition, then bring it back.
    partition = rng.randrange(PARTITIONS)
    victim = partition_state(admin, topic)[partition][0]
    killed_at = time.monotonic()
    brokers[victim].kill9()
    leader_times.append(new_leader_time(admin, topic, partition, victim, killed_at))
    load.wait_for_progress(1000, 60, "records acknowledged after the leader died")
    brokers[victim].restart()
    back_in_sync(admin, topic, f"broker {victim} back in every ISR")
    # Freeze a follower past the session timeout, then thaw it.
    state = partition_state(admin, topic)
    follower = next(r for r in brokers if r != state[partition][0])
    brokers[follower].signal(signal.SIGSTOP)
    load.wait_for_progress(1000, 60, "records acknowledged while a follower is frozen")
    brokers[follower].signal(signal.SIGCONT)
    back_in_sync(admin, topic, f"broker {follower} back in every ISR after the freeze")
    # Kill the leader again, this time of another partition.
    partition = (partition + 1) % PARTITIONS
    victim = partition_state(admin, topic)[partition][0]
    killed_at = time.monotonic()
    brokers[victim].kill9()
    leader_times.append(new_leader_time(admin, topic, partition, victim, killed_at))
    load.wait_for_progress(1000, 60, "records acknowledged after the second kill")
    brokers[victim].restart()
    back_in_sync(admin, topic, f"broker {victim} back after the second kill")
    load.finish()
    lost, duplicated, reordered = check(bootstrap, topic, load)
    gap = load.longest_gap_s(started)
    leader_times.sort()
    print(
        f"\nseed {seed}: acknowledged {load.acked_count()}, lost {lost}, duplicated {duplicated}, "
        f"reordered {reordered}; time to new leader p50 {leader_times[len(leader_times) // 2]:.2f}s "
        f"max {leader_times[-1]:.2f}s; longest unavailability {gap:.2f}s; "
        f"delivery errors {len(load.errors)}"
    )
    assert (lost, duplicated, reordered) == (0, 0, 0)
    assert load.errors == []


def test_rolling_restart_by_controlled_shutdown_loses_nothing(cluster):
    brokers, bootstrap, admin = cluster
    topic = "rolling"
    create(admin, topic)
    load = Load(bootstrap, topic).start()
    started = time.monotonic()
    load.wait_for_progress(2000, 60, "records acknowledged before the roll")
    for broker_id, b in brokers.items():
        assert b.terminate() == 0, f"broker {broker_id} stopped uncleanly:\n{b.log_tail()}"
        state = partition_state(admin, topic)
        assert all(leader != broker_id for leader, _ in state.values()), (
            f"broker {broker_id} still leads after its controlled shutdown: {state}"
        )
        load.wait_for_progress(500, 60, f"records acknowledged while broker {broker_id} is down")
        b.restart()
        back_in_sync(admin, topic, f"broker {broker_id} back in every ISR")
    load.finish()
    lost, duplicated, reordered = check(bootstrap, topic, load)
    print(
        f"\nrolling restart: acknowledged {load.acked_count()}, lost {lost}, "
        f"duplicated {duplicated}, reordered {reordered}, longest unavailability "
        f"{load.longest_gap_s(started):.2f}s, delivery errors {len(load.errors)}"
    )
    assert (lost, duplicated, reordered) == (0, 0, 0)
    assert load.errors == [], "the application saw non-retriable errors"


def test_min_insync_replicas_is_enforced_for_acks_all(cluster):
    brokers, bootstrap, admin = cluster
    topic = "guarded"
    futures = admin.create_topics(
        [NewTopic(topic, 1, 3, config={"min.insync.replicas": "3"})]
    )
    futures[topic].result(timeout=30)
    wait_until(
        lambda: (s := partition_state(admin, topic)) and len(s.get(0, (-1, []))[1]) == 3,
        30,
        "a full ISR",
    )
    ok = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 10000})
    p.produce(topic, value=b"ok", partition=0, on_delivery=lambda err, msg: ok.append(err))
    p.flush(15)
    assert ok == [None], "acks=all succeeds with the full ISR"
    # One follower down (the quorum keeps its majority): the ISR shrinks to 2 < 3.
    leader = partition_state(admin, topic)[0][0]
    follower = next(i for i in brokers if i != leader)
    brokers[follower].kill9()
    wait_until(
        lambda: len(partition_state(admin, topic).get(0, (-1, [1, 2, 3]))[1]) == 2,
        30,
        "the ISR shrinks without the dead follower",
    )
    errors = []
    p = Producer({"bootstrap.servers": brokers[leader].bootstrap, "acks": "all",
                  "message.timeout.ms": 3000, "retries": 0})
    p.produce(topic, value=b"x", partition=0, on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    assert len(errors) == 1 and errors[0] is not None, errors
    assert errors[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, errors[0]
    brokers[follower].restart()
    back_in_sync(admin, topic, "the follower back in the ISR")


def test_dev_cluster_starts_three_brokers_and_stops_them_on_sigterm(tmp_path):
    """`tokafka-broker dev-cluster` on its documented ports (19092-19094)."""
    import os
    import subprocess

    from conftest import BROKER_BIN

    d = tmp_path / "dev"
    proc = subprocess.Popen(
        [str(BROKER_BIN), "dev-cluster", "--brokers", "3", "--dir", str(d)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        announced = ""
        for _ in range(20):
            line = proc.stdout.readline()
            if "bootstrap servers" in line:
                announced = line
                break
        assert "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094" in announced, announced
        pids = wait_until(
            lambda: all((d / str(i) / "pid").exists() for i in (1, 2, 3))
            and [int((d / str(i) / "pid").read_text()) for i in (1, 2, 3)],
            20,
            "pid files",
        )
        admin = AdminClient({"bootstrap.servers": "127.0.0.1:19092"})
        wait_until(lambda: broker_count(admin) == 3, 30, "3 brokers")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0

        def gone(pid):
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                return True

        assert all(gone(pid) for pid in pids), "every broker stopped with the launcher"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
