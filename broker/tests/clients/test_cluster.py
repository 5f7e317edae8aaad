"""A replicated cluster of three broker processes under faults, with a real idempotent
acks=all producer (librdkafka via confluent-kafka) writing all the time.

Each scenario takes brokers out while the producer runs: kill -9, freeze (SIGSTOP), restart
by controlled shutdown, or cut one broker off from the others (network partition: each broker
runs in its own network namespace, see netns.py). Afterwards a checker reads every partition
to its end and compares it with what the producer was told was acknowledged: acknowledged
records lost, duplicated and reordered must all be 0. It prints those figures with the time
to a new leader and the longest stretch without an acknowledgement.
"""

import contextlib
import json
import random
import signal
import statistics
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import kwire
from conftest import Broker, free_port, start_all, wait_until

PARTITIONS = 3
SESSION_TIMEOUT_MS = 3000
NODE_IDS = (1, 2, 3)


@contextlib.contextmanager
def running_cluster(tmp_path, network=None, settings=None, broker_settings=None, listeners=None):
    """Three brokers, all controller voters, with a short session timeout (and `settings` on
    top, then `broker_settings[i]` for broker i, then `listeners(broker)`'s settings, which
    know the broker's port); on 127.0.0.1, or each in its namespace of `network` (broker i on
    host i). Yields (brokers by node id, bootstrap, admin client) and kills the brokers
    however the block ends."""

    def place(i):
        return (network.netns(i), network.address(i)) if network else (None, "127.0.0.1")

    voters = ",".join(f"{i}@{place(i)[1]}:{free_port()}" for i in NODE_IDS)
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
                **(settings or {}),
                **(broker_settings or {}).get(i, {}),
            },
            netns=place(i)[0],
            host=place(i)[1],
        )
        for i in NODE_IDS
    }
    for b in brokers.values():
        b.settings.update(listeners(b) if listeners else {})
    try:
        start_all(brokers.values())
        bootstrap = ",".join(b.bootstrap for b in brokers.values())
        admin = AdminClient({"bootstrap.servers": bootstrap})
        wait_until(lambda: broker_count(admin) == 3, 30, "3 registered brokers")
        yield brokers, bootstrap, admin
    finally:
        for b in brokers.values():
            b.stop()


@pytest.fixture
def cluster(tmp_path):
    """Three brokers on 127.0.0.1: yields (brokers by node id, bootstrap, admin)."""
    with running_cluster(tmp_path) as c:
        yield c


@pytest.fixture
def partitionable_cluster(tmp_path, network):
    """Three brokers, broker i in namespace i of `network` (the clients stay in the root
    namespace): yields (brokers by node id, bootstrap, admin, network)."""
    with running_cluster(tmp_path, network) as c:
        yield (*c, network)


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


def partition_state_at(broker, topic):
    """{partition: (leader, isr)} as `broker` itself answers Metadata v1 (on a raw
    connection: a client library asks whichever broker it likes, and a broker back from an
    outage may answer from metadata older than its outage); {} when it does not answer."""
    try:
        conn = kwire.Conn(broker.bootstrap, timeout_s=5)
    except OSError:
        return {}
    try:
        _, r = conn.request(kwire.API_METADATA, 1, kwire.array([kwire.string(topic)]))
        r.array(lambda r: (r.i32(), r.string(), r.i32(), r.string()))  # brokers
        r.i32()  # controller id
        topics = r.array(
            lambda r: (
                r.i16(), r.string(), r.i8(),  # error, name, internal
                r.array(lambda r: (
                    r.i16(), r.i32(), r.i32(),  # error, partition, leader
                    r.array(kwire.Reader.i32), r.array(kwire.Reader.i32),  # replicas, isr
                )),
            )
        )
    except (OSError, kwire.Closed):
        return {}
    finally:
        conn.close()
    return {
        index: (leader, sorted(isr))
        for error, name, _, partitions in topics
        if error == 0 and name == topic
        for _, index, leader, _, isr in partitions
    }


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

    def __init__(self, bootstrap, topic, conf=None):
        self.topic = topic
        self.producer = Producer(
            {
                **(conf or {}),
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
        # (offset, seq); the offset is None for a record librdkafka acknowledged implicitly
        # (the broker took a later batch of the same idempotent producer in sequence, which
        # proves the earlier one persisted, before the answer for the earlier one arrived).
        self.acked = {p: [] for p in range(PARTITIONS)}
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


def read_partition(bootstrap, topic, partition, conf=None):
    """Every (offset, seq) of a partition, from the start to its high watermark."""
    consumer = Consumer(
        {**(conf or {}), "bootstrap.servers": bootstrap, "group.id": f"check-{time.time_ns()}",
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


def check(bootstrap, topic, load, conf=None):
    """Lost, duplicated and reordered acknowledged records (printed and returned)."""
    lost = duplicated = reordered = 0
    for p in range(PARTITIONS):
        stored = read_partition(bootstrap, topic, p, conf)
        seqs = [s for _, s in stored]
        positions = {}
        for i, s in enumerate(seqs):
            positions.setdefault(s, []).append(i)
        duplicated += sum(len(v) - 1 for v in positions.values())
        # In the order the producer sent them (its sequence): where they are stored must be
        # in the same order.
        acked = sorted(load.acked[p], key=lambda a: a[1])
        acked_positions = []
        for _, s in acked:
            if s not in positions:
                lost += 1
            else:
                acked_positions.append(positions[s][0])
        reordered += sum(1 for a, b in zip(acked_positions, acked_positions[1:]) if b < a)
    return lost, duplicated, reordered


def agreed_state(brokers, topic, leaving_out=None):
    """{partition: (leader, isr)} when every broker but `leaving_out` answers the same, else
    {} (one does not answer, or one still answers from older metadata)."""
    views = [partition_state_at(b, topic) for i, b in brokers.items() if i != leaving_out]
    return views[0] if all(v and v == views[0] for v in views) else {}


def full_isr(state):
    return bool(state) and all(len(isr) == 3 for _, isr in state.values())


def back_in_sync(admin, topic, what, brokers=None):
    """Waits until every partition of `topic` has a full ISR: in the admin client's Metadata
    answer, or, given `brokers` (by node id), in the same answer of each of them."""
    if brokers is None:
        wait_until(lambda: full_isr(partition_state(admin, topic)), 60, what, interval_s=0.1)
    else:
        wait_until(lambda: full_isr(agreed_state(brokers, topic)), 60, what, interval_s=0.1)


def leader_of(brokers, topic, partition):
    """The leader of `topic`-`partition` every broker agrees on, once there is one."""

    def leader():
        node_id = agreed_state(brokers, topic).get(partition, (-1, []))[0]
        return node_id if node_id >= 0 else None

    return wait_until(leader, 30, f"a leader of {topic}-{partition}")


@dataclass
class Fault:
    """Takes broker `i` out with `down(i)` and brings it back with `up(i)`; `what` says what
    it is meanwhile."""

    what: str
    down: Callable[[int], None]
    up: Callable[[int], None]


def killed(brokers):
    return Fault("killed", lambda i: brokers[i].kill9(), lambda i: brokers[i].restart())


def frozen(brokers):
    return Fault(
        "frozen",
        lambda i: brokers[i].signal(signal.SIGSTOP),
        lambda i: brokers[i].signal(signal.SIGCONT),
    )


def cut_off(network):
    return Fault("cut off", network.cut, network.heal)


def outage(brokers, topic, load, victim, fault):
    """Takes broker `victim` out with `fault` while `load` runs and requires, each within a
    deadline and as the other brokers all answer: every partition it led has another leader,
    it is in no ISR, and more records are acknowledged without it. Then brings it back and
    waits until every broker answers that it is in every ISR again.

    Returns the seconds from the fault until it led no partition, or None when it led none.
    """
    state = wait_until(lambda: agreed_state(brokers, topic), 30, f"{topic} metadata")
    led = [p for p, (leader, _) in state.items() if leader == victim]
    started = time.monotonic()
    fault.down(victim)
    wait_until(
        lambda: (s := agreed_state(brokers, topic, leaving_out=victim))
        and all(s[p][0] not in (-1, victim) for p in led),
        60,
        f"new leaders of partitions {led} broker {victim} led before it was {fault.what}",
        interval_s=0.05,
    )
    leader_time_s = time.monotonic() - started if led else None
    wait_until(
        lambda: (s := agreed_state(brokers, topic, leaving_out=victim))
        and all(victim not in isr for _, isr in s.values()),
        60,
        f"broker {victim} out of every ISR while it is {fault.what}",
        interval_s=0.05,
    )
    load.wait_for_progress(1000, 60, f"records acknowledged while broker {victim} is {fault.what}")
    fault.up(victim)
    wait_until(
        lambda: full_isr(agreed_state(brokers, topic)),
        60,
        f"broker {victim} back in every ISR after it was {fault.what}",
        interval_s=0.1,
    )
    return leader_time_s


def report(name, load, started, leader_times_s, lost, duplicated, reordered):
    """Prints the scenario's figures on one line."""
    leader = (
        f"time to new leader p50 {statistics.median(leader_times_s):.2f}s "
        f"max {max(leader_times_s):.2f}s; "
        if leader_times_s
        else ""
    )
    print(
        f"\n{name}: acknowledged {load.acked_count()}, lost {lost}, duplicated {duplicated}, "
        f"reordered {reordered}; {leader}longest unavailability "
        f"{load.longest_gap_s(started):.2f}s; delivery errors {len(load.errors)}"
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
    partition = rng.randrange(PARTITIONS)
    # kill -9 the leader of a random partition, then bring it back.
    victim = leader_of(brokers, topic, partition)
    times = [outage(brokers, topic, load, victim, killed(brokers))]
    # Freeze a follower of that partition past the session timeout, then thaw it.
    leader = leader_of(brokers, topic, partition)
    follower = next(i for i in brokers if i != leader)
    times.append(outage(brokers, topic, load, follower, frozen(brokers)))
    # Kill the leader again, this time of another partition.
    partition = (partition + 1) % PARTITIONS
    victim = leader_of(brokers, topic, partition)
    times.append(outage(brokers, topic, load, victim, killed(brokers)))
    load.finish()
    lost, duplicated, reordered = check(bootstrap, topic, load)
    times = [t for t in times if t is not None]
    report(f"seed {seed}", load, started, times, lost, duplicated, reordered)
    assert (lost, duplicated, reordered) == (0, 0, 0)
    assert load.errors == []


def quorum_leader(brokers):
    """The node id of the controller quorum's leader, or None if no voter says it leads.

    There is no client API for it, so each voter's controller listener is sent a heartbeat
    of a broker id no broker has (-1): the leader records it (harmlessly) and answers
    `Recorded`, the others answer `NotLeader`. Only the leader's own answer counts: another
    voter may name a leader that has since lost its term.
    """
    any_broker = next(iter(brokers.values()))
    voters = dict(v.split("@") for v in any_broker.settings["controller.quorum.voters"].split(","))
    for node_id in brokers:
        request = urllib.request.Request(
            f"http://{voters[str(node_id)]}/controller/heartbeat",
            data=json.dumps({"broker_id": -1, "incarnation": 0}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if "Recorded" in json.loads(response.read()):
                    return node_id
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            continue
    return None


@pytest.mark.parametrize("seed", [1, 7])  # their first cut: the leader of partition 0, of 1
def test_no_acknowledged_record_is_lost_when_a_broker_is_cut_off(partitionable_cluster, seed):
    """Cuts one broker off from the others, and from the clients too (they run in the root
    namespace, behind the same bridge): its connections neither close nor answer until the
    cut heals. First the leader of a random partition, then the controller quorum's leader."""
    brokers, bootstrap, admin, network = partitionable_cluster
    rng = random.Random(seed)
    topic = f"partitioned-{seed}"
    create(admin, topic)
    load = Load(bootstrap, topic).start()
    started = time.monotonic()
    load.wait_for_progress(2000, 60, "records acknowledged before the faults")
    partition = rng.randrange(PARTITIONS)
    victim = leader_of(brokers, topic, partition)
    times = [outage(brokers, topic, load, victim, cut_off(network))]
    controller = wait_until(lambda: quorum_leader(brokers), 30, "the controller quorum leader")
    times.append(outage(brokers, topic, load, controller, cut_off(network)))
    load.finish()
    lost, duplicated, reordered = check(bootstrap, topic, load)
    times = [t for t in times if t is not None]
    report(
        f"cut off, seed {seed} (partition leader {victim}, then controller {controller})",
        load, started, times, lost, duplicated, reordered,
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
        back_in_sync(admin, topic, f"broker {broker_id} back in every ISR", brokers)
    load.finish()
    lost, duplicated, reordered = check(bootstrap, topic, load)
    report("rolling restart", load, started, [], lost, duplicated, reordered)
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
    back_in_sync(admin, topic, "the follower back in the ISR", brokers)


def test_producers_through_different_brokers_get_distinct_ids_and_one_cluster_id(cluster):
    """Producer ids come from blocks the quorum hands out: two idempotent producers that
    bootstrap through different brokers must not be taken for one (the second one's records
    would be dropped as duplicates while acknowledged). Every broker names the same cluster."""
    brokers, bootstrap, admin = cluster
    topic = "two-producers"
    admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(timeout=30)
    wait_until(
        lambda: (s := partition_state(admin, topic)) and s.get(0, (-1,))[0] >= 0,
        30,
        f"{topic} has a leader",
    )
    acked = []
    for i in (1, 2):
        p = Producer({"bootstrap.servers": brokers[i].bootstrap, "enable.idempotence": True,
                      "acks": "all"})
        for n in range(5):
            p.produce(topic, value=f"{i}-{n}".encode(), partition=0,
                      on_delivery=lambda err, msg: acked.append((err, msg.value())))
        assert p.flush(30) == 0
    assert [err for err, _ in acked] == [None] * 10
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "two-producers",
                         "auto.offset.reset": "earliest", "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        stored = []
        deadline = time.monotonic() + 30
        while len(stored) < 10 and time.monotonic() < deadline:
            stored += [m.value() for m in consumer.consume(20, timeout=1) if not m.error()]
    finally:
        consumer.close()
    assert sorted(stored) == sorted(v for _, v in acked), stored
    ids = set()
    for b in brokers.values():
        conn = kwire.Conn(b.bootstrap, timeout_s=5)
        try:
            _, r = conn.request(kwire.API_METADATA, 2, kwire.array([]))
            r.array(lambda r: (r.i32(), r.string(), r.i32(), r.string()))  # brokers
            ids.add(r.string())  # cluster id
        finally:
            conn.close()
    assert len(ids) == 1 and None not in ids, ids


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


def java_hash(s):
    """Java's String.hashCode (what maps a group to its __consumer_offsets partition)."""
    h = 0
    for unit in s.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def coordinator_of(admin, group):
    """The leader of `group`'s __consumer_offsets partition (-1 while there is none)."""
    try:
        topics = admin.list_topics(timeout=5).topics  # all topics: naming one may create it
    except KafkaException:
        return -1
    offsets = topics.get("__consumer_offsets")
    if offsets is None or not offsets.partitions:
        return -1
    index = (java_hash(group) & 0x7FFFFFFF) % len(offsets.partitions)
    return offsets.partitions[index].leader


def test_a_consumer_group_keeps_its_offsets_when_its_coordinator_dies(cluster):
    """Group offsets ride on replication: every broker names the same coordinator (the leader
    of the group's __consumer_offsets partition), members that bootstrap through different
    brokers form one group, and after the coordinator is killed the next leader of that
    partition serves the offsets committed before."""
    brokers, bootstrap, admin = cluster
    topic, group = "consumed", "survivors"
    create(admin, topic)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for n in range(3000):
        producer.produce(topic, value=str(n).encode(), partition=n % PARTITIONS)
    assert producer.flush(30) == 0

    def member(via):
        return Consumer({"bootstrap.servers": brokers[via].bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})

    # Two members through different brokers share the partitions: one group, one coordinator.
    first, second = member(1), member(2)
    try:
        first.subscribe([topic])
        second.subscribe([topic])
        wait_until(
            lambda: (first.consume(10, timeout=0.2) is not None)
            and (second.consume(10, timeout=0.2) is not None)
            and len(first.assignment()) + len(second.assignment()) == PARTITIONS
            and not {p.partition for p in first.assignment()}
            & {p.partition for p in second.assignment()},
            60,
            "the two members split the partitions",
        )
    finally:
        second.close()
    # The remaining member commits a position in every partition.
    wait_until(
        lambda: first.consume(50, timeout=0.2) is not None
        and len(first.assignment()) == PARTITIONS,
        60,
        "the first member owns every partition",
    )
    committed = [TopicPartition(topic, p, 100 + 10 * p) for p in range(PARTITIONS)]
    first.commit(offsets=committed, asynchronous=False)
    first.close()
    victim = wait_until(lambda: (c := coordinator_of(admin, group)) > 0 and c, 30,
                        "the group's coordinator")
    killed_at = time.monotonic()
    brokers[victim].kill9()
    survivor = next(i for i in brokers if i != victim)
    after = member(survivor)

    def committed_now():
        try:
            c = after.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=5)
        except KafkaException:  # the old coordinator is gone: ask again
            return None
        return c if all(tp.offset >= 0 for tp in c) else None

    try:
        got = wait_until(
            committed_now,
            60,
            "committed offsets from the new coordinator",
            interval_s=0.2,
        )
    finally:
        after.close()
    moved_in = time.monotonic() - killed_at
    new_coordinator = coordinator_of(admin, group)
    print(f"\ngroup coordinator {victim} killed; offsets served by {new_coordinator} after "
          f"{moved_in:.2f}s")
    assert new_coordinator not in (-1, victim)
    assert [(tp.partition, tp.offset) for tp in got] == [
        (tp.partition, tp.offset) for tp in committed
    ]


def test_replicated_offsets_are_compacted_on_every_replica_and_survive_failover(tmp_path):
    """A cluster compacts __consumer_offsets too: the leader snapshots the live keys and,
    once the snapshot is committed, deletes the superseded segments; followers drop them as
    the leader's log start passes. After thousands of commits every replica holds a few
    segments, and the coordinator's successor serves the last committed offsets."""
    settings = {
        "offsets.topic.num.partitions": 1,
        "offsets.topic.segment.bytes": 16384,
        "log.retention.check.interval.ms": 200,
    }
    with running_cluster(tmp_path, settings=settings) as (brokers, bootstrap, admin):
        topic, group = "committed-often", "busy"
        create(admin, topic)
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                             "enable.auto.commit": False})
        last = None
        started = time.monotonic()
        try:
            for n in range(2000):
                last = [TopicPartition(topic, p, n * 10 + p) for p in range(PARTITIONS)]
                consumer.commit(offsets=last, asynchronous=False)
        finally:
            consumer.close()
        committed_in = time.monotonic() - started

        def files(i):
            sizes = []
            for f in (brokers[i].data_dir / "__consumer_offsets-0").glob("*.log"):
                try:
                    sizes.append(f.stat().st_size)
                except FileNotFoundError:  # deleted since the listing
                    pass
            return len(sizes), sum(sizes)

        peak = {i: files(i) for i in brokers}
        wait_until(
            lambda: all(files(i)[0] <= 3 for i in brokers),
            60,
            "every replica of __consumer_offsets-0 compacted to a few segments",
            interval_s=0.2,
        )
        after = {i: files(i) for i in brokers}
        victim = coordinator_of(admin, group)
        assert victim > 0
        brokers[victim].kill9()
        survivor = next(i for i in brokers if i != victim)
        reader = Consumer({"bootstrap.servers": brokers[survivor].bootstrap, "group.id": group,
                           "enable.auto.commit": False})

        def committed_now():
            try:
                c = reader.committed([TopicPartition(topic, p) for p in range(PARTITIONS)],
                                     timeout=5)
            except KafkaException:
                return None
            return c if all(tp.offset >= 0 for tp in c) else None

        try:
            got = wait_until(committed_now, 60, "offsets from the next coordinator",
                             interval_s=0.2)
        finally:
            reader.close()
        print(f"\nreplicated offsets compaction: 2000 commits in {committed_in:.1f}s; "
              f"(segments, bytes) per broker at the end of the commits {peak}, "
              f"after compaction {after}")
        assert [(tp.partition, tp.offset) for tp in got] == [
            (tp.partition, tp.offset) for tp in last
        ]
