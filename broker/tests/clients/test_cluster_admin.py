"""Cluster administration under load, with real clients as the oracle: partition
reassignment (kafka-python's AlterPartitionReassignments and ListPartitionReassignments),
preferred and unclean leader election (ElectLeaders), DescribeCluster, the HTTP admin API's
decommission of a broker, and the automatic preferred-leader rebalance.

Every scenario runs with the idempotent acks=all producer of test_cluster.py writing all the
time, and ends with its checker: acknowledged records lost, duplicated and reordered must be 0.
"""

import contextlib
import json
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import TopicPartition as KTopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import (
    ElectionNotNeededError,
    InvalidReplicationAssignmentError,
    NoReassignmentInProgressError,
)

import kwire
from conftest import wait_until
from test_cluster import NODE_IDS, PARTITIONS, Load, check, running_cluster


@contextlib.contextmanager
def admin_cluster(tmp_path, **extra):
    """The three brokers of test_cluster.py with `extra` settings (no automatic rebalance
    unless asked for); yields (brokers by id, bootstrap, confluent admin, kafka-python
    admin)."""
    settings = {"min.insync.replicas": 1, "auto.leader.rebalance.enable": "false", **extra}
    with running_cluster(tmp_path, settings=settings) as (brokers, bootstrap, admin):
        kadmin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
        try:
            yield brokers, bootstrap, admin, kadmin
        finally:
            kadmin.close()


def layout(admin, topic):
    """{partition: (leader, replicas, isr)} from a fresh Metadata request ({} on no answer)."""
    try:
        md = admin.list_topics(topic=topic, timeout=5)
    except Exception:  # noqa: BLE001 - brokers come and go; callers poll
        return {}
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return {}
    return {p.id: (p.leader, list(p.replicas), sorted(p.isrs)) for p in t.partitions.values()}


def create_topic(admin, topic, replication_factor, partitions=PARTITIONS):
    admin.create_topics([NewTopic(topic, partitions, replication_factor)])[topic].result(30)
    wait_until(
        lambda: (s := layout(admin, topic))
        and len(s) == partitions
        and all(leader >= 0 and len(isr) == len(r) for leader, r, isr in s.values()),
        30,
        f"{topic}: every partition led with a full ISR",
    )


def http(broker, method, path):
    """(status, JSON body) of a request to `broker`'s HTTP admin API."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{broker.http_port}{path}", method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def summary_of(broker, broker_id):
    _, body = http(broker, "GET", "/v1/cluster")
    return next(b for b in body["brokers"] if b["id"] == broker_id)


def test_a_reassignment_under_load_moves_a_replica_and_loses_nothing(tmp_path):
    with admin_cluster(tmp_path) as (brokers, bootstrap, admin, kadmin):
        topic = "moving"
        create_topic(admin, topic, replication_factor=2)
        load = Load(bootstrap, topic).start()
        load.wait_for_progress(2000, 60, "records acknowledged before the move")
        leader, replicas, _ = layout(admin, topic)[0]
        leaving = next(r for r in replicas if r != leader)
        arriving = next(b for b in NODE_IDS if b not in replicas)
        target = [arriving, leader]
        tp = KTopicPartition(topic, 0)

        refused = kadmin.alter_partition_reassignments({tp: [arriving, 99]})
        assert refused[tp] is InvalidReplicationAssignmentError, refused
        not_moving = kadmin.alter_partition_reassignments({KTopicPartition(topic, 1): None})
        assert not_moving[KTopicPartition(topic, 1)] is NoReassignmentInProgressError
        assert layout(admin, topic)[0][1] == replicas, "refused requests change nothing"

        started = time.monotonic()
        accepted = kadmin.alter_partition_reassignments({tp: target})
        assert accepted[tp] is None, accepted
        wait_until(
            lambda: layout(admin, topic).get(0, (0, [], []))[1] == target
            and not kadmin.list_partition_reassignments(),
            60,
            f"{topic}-0 moved to {target}",
            interval_s=0.1,
        )
        moved_in = time.monotonic() - started
        wait_until(
            lambda: not (brokers[leaving].data_dir / f"{topic}-0").exists(),
            30,
            f"broker {leaving} drops its replica of {topic}-0",
        )
        assert (brokers[arriving].data_dir / f"{topic}-0").is_dir()

        # The arriving replica leads once elected: the checker then reads from it.
        kadmin.elect_leaders(0, {topic: [0]})
        wait_until(
            lambda: layout(admin, topic).get(0, (0,))[0] == arriving,
            30,
            f"broker {arriving} leads {topic}-0",
        )
        again = kadmin.elect_leaders(0, {topic: [0]}, raise_errors=False)
        codes = [p[1] for t in again.replica_election_results for p in t[1]]
        assert codes == [ElectionNotNeededError.errno], again
        load.wait_for_progress(1000, 60, "records acknowledged after the move")
        load.finish()
        lost, duplicated, reordered = check(bootstrap, topic, load)
        print(
            f"\nreassignment: {replicas} -> {target} in {moved_in:.2f}s under load; "
            f"acknowledged {load.acked_count()}, lost {lost}, duplicated {duplicated}, "
            f"reordered {reordered}; delivery errors {len(load.errors)}"
        )
        assert (lost, duplicated, reordered) == (0, 0, 0)
        assert load.errors == []


def test_decommission_drains_a_broker_under_load_or_refuses_with_nothing_changed(tmp_path):
    with admin_cluster(tmp_path) as (brokers, bootstrap, admin, kadmin):
        create_topic(admin, "wide", replication_factor=3)
        topic = "draining"
        create_topic(admin, topic, replication_factor=2)
        load = Load(bootstrap, topic).start()
        load.wait_for_progress(2000, 60, "records acknowledged before the drain")
        gone = 3
        via = brokers[1]

        status, body = http(via, "POST", f"/v1/brokers/{gone}/decommission")
        assert status == 400 and "cannot drain broker 3" in body["error"], (status, body)
        assert not summary_of(via, gone)["decommissioning"]
        assert all(gone in r for _, r, _ in layout(admin, "wide").values())

        admin.delete_topics(["wide"])["wide"].result(30)
        # (Asking for all topics: a Metadata request naming "wide" would auto-create it.)
        wait_until(
            lambda: "wide" not in admin.list_topics(timeout=5).topics, 30, "topic wide deleted"
        )
        held_before = summary_of(via, gone)["replicas"]
        assert held_before > 0
        started = time.monotonic()
        status, body = http(via, "POST", f"/v1/brokers/{gone}/decommission")
        assert status == 200, body
        wait_until(
            lambda: summary_of(via, gone)["drained"], 90, f"broker {gone} drained",
            interval_s=0.1,
        )
        drained_in = time.monotonic() - started
        assert all(gone not in r for _, r, _ in layout(admin, topic).values())
        wait_until(
            lambda: not any(brokers[gone].data_dir.glob(f"{topic}-*")),
            30,
            f"broker {gone} drops its replicas",
        )
        # New topics avoid a draining broker.
        create_topic(admin, "after", replication_factor=2, partitions=4)
        assert all(gone not in r for _, r, _ in layout(admin, "after").values())

        load.wait_for_progress(1000, 60, "records acknowledged after the drain")
        # A drained broker is stopped (its pod removed), then forgotten.
        brokers[gone].stop()
        status, body = http(via, "DELETE", f"/v1/brokers/{gone}")
        assert status == 200, body
        wait_until(
            lambda: sorted(b["id"] for b in http(via, "GET", "/v1/cluster")[1]["brokers"])
            == [1, 2],
            30,
            "broker 3 unregistered",
        )
        remaining = AdminClient({"bootstrap.servers": f"{brokers[1].bootstrap},{brokers[2].bootstrap}"})
        described = remaining.describe_cluster(request_timeout=10).result()
        assert sorted(n.id for n in described.nodes) == [1, 2], described
        load.wait_for_progress(1000, 60, "records acknowledged without broker 3")
        load.finish()
        lost, duplicated, reordered = check(bootstrap, topic, load)
        print(
            f"\ndecommission: {held_before} replicas drained from broker {gone} in "
            f"{drained_in:.2f}s under load; acknowledged {load.acked_count()}, lost {lost}, "
            f"duplicated {duplicated}, reordered {reordered}; delivery errors "
            f"{len(load.errors)}"
        )
        assert (lost, duplicated, reordered) == (0, 0, 0)
        assert load.errors == []


def test_a_drain_cancelled_and_started_again_and_again_loses_nothing(tmp_path):
    """Each cancel drops the replicas a drain was adding and the next drain adds them again,
    from an empty log: none of them may count as in sync (let alone lead) before it has
    fetched again, or an idempotent producer meets a leader without its sequence state."""
    with admin_cluster(tmp_path) as (brokers, bootstrap, admin, kadmin):
        topic = "flapping"
        create_topic(admin, topic, replication_factor=2)
        load = Load(bootstrap, topic).start()
        load.wait_for_progress(2000, 60, "records acknowledged before the drains")
        gone, via = 3, brokers[1]
        for round_ in range(12):
            status, body = http(via, "POST", f"/v1/brokers/{gone}/decommission")
            assert status == 200, (round_, body)
            status, body = http(via, "DELETE", f"/v1/brokers/{gone}/decommission")
            assert status == 200, (round_, body)
        wait_until(
            lambda: http(via, "GET", "/v1/cluster")[1]["reassigning_partitions"] == 0
            and not summary_of(via, gone)["decommissioning"],
            60,
            "no reassignment left",
        )
        load.wait_for_progress(2000, 60, "records acknowledged after the drains")
        load.finish()
        lost, duplicated, reordered = check(bootstrap, topic, load)
        print(
            f"\n12 drains started and cancelled under load: acknowledged {load.acked_count()}, "
            f"lost {lost}, duplicated {duplicated}, reordered {reordered}; delivery errors "
            f"{len(load.errors)}"
        )
        assert (lost, duplicated, reordered) == (0, 0, 0)
        assert load.errors == []


def test_only_the_leader_answers_and_other_brokers_send_clients_to_it(tmp_path):
    """ListOffsets and Produce to a follower, or to a broker without the partition, are
    answered NOT_LEADER_OR_FOLLOWER (clients refresh their metadata and retry, as with Kafka);
    only a partition the cluster does not have is UNKNOWN_TOPIC_OR_PARTITION."""
    with admin_cluster(tmp_path) as (brokers, bootstrap, admin, kadmin):
        create_topic(admin, "narrow", replication_factor=1, partitions=1)
        create_topic(admin, "pair", replication_factor=2, partitions=1)
        leader, replicas, _ = layout(admin, "narrow")[0]
        elsewhere = next(i for i in NODE_IDS if i not in replicas)
        pair_leader, pair_replicas, _ = layout(admin, "pair")[0]
        follower = next(i for i in pair_replicas if i != pair_leader)
        for broker_id, topic, what in (
            (elsewhere, "narrow", "a broker without the partition"),
            (follower, "pair", "a follower"),
        ):
            conn = kwire.Conn(brokers[broker_id].bootstrap)
            try:
                assert conn.list_offsets_error(topic, 0) == kwire.ERR_NOT_LEADER_OR_FOLLOWER, what
                error, _ = conn.produce(topic, 0, kwire.record_batch([b"x"]), acks=1)
                assert error == kwire.ERR_NOT_LEADER_OR_FOLLOWER, what
                assert conn.list_offsets_error(topic, 7) == kwire.ERR_UNKNOWN_TOPIC_OR_PARTITION
            finally:
                conn.close()
        conn = kwire.Conn(brokers[leader].bootstrap)
        try:
            assert conn.list_offsets_error("narrow", 0) == kwire.ERR_NONE
        finally:
            conn.close()


def test_leadership_returns_to_preferred_replicas_automatically(tmp_path):
    with admin_cluster(
        tmp_path,
        **{
            "auto.leader.rebalance.enable": "true",
            "leader.imbalance.check.interval.seconds": 1,
            "leader.imbalance.per.broker.percentage": 10,
        },
    ) as (brokers, bootstrap, admin, _):
        topic = "balanced"
        create_topic(admin, topic, replication_factor=3)
        preferred = {p: r[0] for p, (_, r, _) in layout(admin, topic).items()}
        assert sorted(preferred.values()) == [1, 2, 3], preferred
        load = Load(bootstrap, topic).start()
        load.wait_for_progress(1000, 60, "records acknowledged before the restart")
        restarted = preferred[0]
        brokers[restarted].terminate()
        wait_until(
            lambda: (s := layout(admin, topic)) and s[0][0] not in (-1, restarted),
            30,
            f"{topic}-0 led elsewhere while broker {restarted} is down",
        )
        started = time.monotonic()
        brokers[restarted].start()
        wait_until(
            lambda: (s := layout(admin, topic))
            and all(s[p][0] == preferred[p] for p in preferred),
            60,
            "every partition led by its preferred replica again",
            interval_s=0.1,
        )
        returned_in = time.monotonic() - started
        load.wait_for_progress(1000, 60, "records acknowledged after the rebalance")
        load.finish()
        lost, duplicated, reordered = check(bootstrap, topic, load)
        print(
            f"\nauto rebalance: leadership back on broker {restarted} {returned_in:.2f}s after "
            f"its restart; acknowledged {load.acked_count()}, lost {lost}, duplicated "
            f"{duplicated}, reordered {reordered}"
        )
        assert (lost, duplicated, reordered) == (0, 0, 0)
        assert load.errors == []


@pytest.mark.parametrize("election_type", [0, 1])
def test_a_single_node_has_no_election_to_make_and_nowhere_to_drain(broker_factory, election_type):
    broker = broker_factory()
    kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("solo", 1, 1)])["solo"].result(30)
        answer = kadmin.elect_leaders(election_type, {"solo": [0, 5]}, raise_errors=False)
        codes = sorted(p[1] for t in answer.replica_election_results for p in t[1])
        assert codes == [3, ElectionNotNeededError.errno], answer
        # A single node is a cluster of one: its replicas have nowhere to go, and the drain
        # is refused with nothing changed.
        status, body = http(broker, "POST", "/v1/brokers/1/decommission")
        assert status == 400 and "cannot drain broker 1" in body["error"], body
        status, summary = http(broker, "GET", "/v1/cluster")
        assert status == 200
        assert [(b["id"], b["decommissioning"]) for b in summary["brokers"]] == [(1, False)]
    finally:
        kadmin.close()
