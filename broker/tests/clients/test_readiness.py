"""A broker opens its Kafka port only once it can serve, as Kafka's brokers do.

A client that connects the moment the port opens must get full answers: Metadata listing the
broker (a client given zero brokers waits for its next metadata refresh, and an admin request
then hangs for a minute), and a topic created at once.
"""

import socket
import subprocess
import time

from confluent_kafka.admin import AdminClient, NewTopic

import kwire
from conftest import BROKER_BIN, Broker, wait_until


def connect_the_moment_it_opens(address, deadline_s=20):
    """A connection to `address`, retried every millisecond until it is accepted."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return socket.create_connection((host, int(port)), timeout=5)
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.001)


def metadata_brokers(sock):
    """(broker ids, controller id) of a Metadata v1 request for no topic, on `sock`."""
    conn = kwire.Conn.__new__(kwire.Conn)
    conn.sock, conn.correlation_id = sock, 0
    _, r = conn.request(kwire.API_METADATA, 1, kwire.i32(0))  # an empty topic list
    brokers = r.array(lambda r: (r.i32(), r.string(), r.i32(), r.string()))
    controller = r.i32()
    return [b[0] for b in brokers], controller


def test_the_first_connection_to_a_new_single_node_gets_full_metadata(tmp_path):
    broker = Broker(tmp_path / "broker")
    try:
        broker.start(wait=False)
        sock = connect_the_moment_it_opens(broker.bootstrap)
        try:
            brokers, controller = metadata_brokers(sock)
        finally:
            sock.close()
        assert brokers == [1], "the first answer lists the broker"
        assert controller == 1
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        started = time.monotonic()
        admin.create_topics([NewTopic("at-once", 3, 1)])["at-once"].result(10)
        print(f"\ntopic created {time.monotonic() - started:.3f}s after the port opened")
    finally:
        broker.stop()


def test_dev_cluster_announces_itself_only_when_a_topic_can_be_created_at_once(tmp_path):
    """The user's path: start `dev-cluster`, and the moment it prints its bootstrap line,
    create a replicated topic with confluent-kafka's AdminClient."""
    d = tmp_path / "dev"
    proc = subprocess.Popen(
        [str(BROKER_BIN), "dev-cluster", "--brokers", "3", "--dir", str(d)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "bootstrap servers" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "dev-cluster exited before serving"
        bootstrap = line.split()[-1]
        assert bootstrap.count(",") == 2, line
        admin = AdminClient({"bootstrap.servers": bootstrap})
        started = time.monotonic()
        admin.create_topics([NewTopic("first", 3, 3)])["first"].result(10)
        elapsed = time.monotonic() - started
        print(f"\nreplicated topic created {elapsed:.3f}s after the bootstrap line")
        md = wait_until(
            lambda: (m := admin.list_topics(topic="first", timeout=5)).topics["first"].error is None
            and m,
            10,
            "the new topic in Metadata",
        )
        assert len(md.brokers) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=60)
