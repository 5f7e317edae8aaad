"""A log directory whose disk fails goes offline alone, as in Kafka.

The failing disk is real: a small tmpfs mounted on the directory, then filled, so that the
broker's next write there (an append, a flush, a checkpoint) fails with ENOSPC. Mounting
needs root (CAP_SYS_ADMIN); elsewhere these tests are skipped.

- In a cluster of three, broker 1 keeps its second log directory on such a disk. When the
  disk fills, the partitions there lose broker 1 (leadership and ISR move to the other
  replicas) while it keeps serving the partitions in its first directory; an idempotent
  acks=all producer writing throughout loses, duplicates and reorders nothing. Restarted on a
  working disk, broker 1 catches up and rejoins every ISR.
- A single node whose only directory fills stops (its metadata lives there), with a non-zero
  exit status.
"""

import contextlib
import errno
import subprocess
import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

import kwire
from conftest import wait_until
from test_cluster import (
    PARTITIONS,
    Load,
    back_in_sync,
    check,
    partition_state,
    running_cluster,
)

# No offset index entries on the small disk: the index is memory-mapped, and a store into a
# page the full tmpfs cannot back would be a SIGBUS rather than an I/O error (see the note in
# ARCHITECTURE.md).
TOPIC_CONFIG = {"index.interval.bytes": "1000000000"}


@contextlib.contextmanager
def small_disk(path, size="4m"):
    """A tmpfs of `size` mounted at `path` (created), unmounted at the end."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path):
    """Writes a file in `path` until its file system is full (big writes, then small ones
    for what is left)."""
    with open(path / "filler", "wb", buffering=0) as f:
        for chunk in (b"\0" * 65536, b"\0" * 512):
            try:
                while True:
                    f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e


def acked_per_partition(load):
    with load.lock:
        return {p: len(v) for p, v in load.acked.items()}


def test_a_full_log_directory_goes_offline_and_the_broker_serves_the_rest(tmp_path):
    disk = tmp_path / "broker1-disk2"
    with small_disk(disk), running_cluster(
        tmp_path,
        broker_settings={1: {"log.dirs": f"{tmp_path / 'broker1'},{disk}"}},
    ) as (brokers, bootstrap, admin):
        topic = "dirs"
        admin.create_topics([NewTopic(topic, PARTITIONS, 3, config=TOPIC_CONFIG)])[topic].result(30)
        back_in_sync(admin, topic, f"{topic}: every partition led with a full ISR")
        on_disk = [p for p in range(PARTITIONS) if (disk / f"{topic}-{p}").is_dir()]
        in_first = [p for p in range(PARTITIONS) if (tmp_path / "broker1" / f"{topic}-{p}").is_dir()]
        assert on_disk and in_first, f"broker 1 spreads its replicas: {on_disk} / {in_first}"
        assert sorted(on_disk + in_first) == list(range(PARTITIONS))

        load = Load(bootstrap, topic).start()
        load.wait_for_progress(1000, 60, "records acknowledged before the disk fills")
        fill(disk)

        def disk_partitions_moved():
            state = partition_state(admin, topic)
            return state and all(
                state[p][0] not in (-1, 1) and 1 not in state[p][1] for p in on_disk
            )

        wait_until(disk_partitions_moved, 60, "broker 1 out of the full disk's partitions", 0.1)
        assert "log directory offline" in brokers[1].log_text()
        assert brokers[1].alive(), "broker 1 keeps serving its other directory"
        state = partition_state(admin, topic)
        for p in in_first:
            assert 1 in state[p][1], f"{topic}-{p} in the working directory keeps broker 1: {state}"

        before = acked_per_partition(load)
        wait_until(
            lambda: all(n >= before[p] + 200 for p, n in acked_per_partition(load).items()),
            60,
            "every partition acknowledges records after the failure",
            0.1,
        )
        load.finish()
        lost, duplicated, reordered = check(bootstrap, topic, load)
        print(f"\nlog dir failure: {load.acked_count()} acknowledged, lost {lost}, "
              f"duplicated {duplicated}, reordered {reordered}")
        assert (lost, duplicated, reordered) == (0, 0, 0)
        assert load.errors == []

        # A restart on a working disk (the tmpfs goes; the directory beneath is empty) brings
        # broker 1 back into every ISR.
        assert brokers[1].terminate() == 0
        subprocess.run(["umount", "-l", str(disk)], check=True)
        brokers[1].restart()
        back_in_sync(admin, topic, "broker 1 back in every ISR after its restart")


def test_a_single_node_stops_when_its_only_log_directory_fails(tmp_path, broker_factory):
    data_dir = tmp_path / "broker"
    with small_disk(data_dir, size="16m"):
        broker = broker_factory()
        topic = "only-dir"
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(topic, 1, 1, config=TOPIC_CONFIG)])[topic].result(30)
        conn = kwire.Conn(broker.bootstrap)
        wait_until(
            lambda: conn.produce(topic, 0, kwire.record_batch([b"before"]))[0] == kwire.ERR_NONE,
            20,
            "a first record stored",
        )
        conn.close()
        fill(data_dir)

        # Records keep coming: each moves the high watermark, whose next checkpoint (if no
        # append fails first) needs a block the disk no longer has.
        def stopped_while_producing():
            with contextlib.suppress(OSError, kwire.Closed):
                conn = kwire.Conn(broker.bootstrap, timeout_s=5)
                try:
                    conn.produce(topic, 0, kwire.record_batch([b"after"]))
                finally:
                    conn.close()
            return not broker.alive()

        wait_until(stopped_while_producing, 30, "the broker to stop", 0.2)
        assert broker.proc.returncode != 0
        assert "log directory offline" in broker.log_text()
