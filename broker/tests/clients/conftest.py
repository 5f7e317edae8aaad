"""Fixtures for the real-client compatibility tests.

Each test gets a `tokafka-broker` release binary (built beforehand by `scripts/test-all`; the
fixtures build nothing) running as a subprocess on free loopback ports with its own data
directory. The broker is ready when its /readyz answers 200; every wait polls a condition
until a deadline, and every broker is killed when its test ends. A broker may instead run in
a network namespace of a `netns.Network` (the `network` fixture), on that namespace's address.
"""

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from netns import Network

REPO = Path(__file__).resolve().parents[3]
BROKER_BIN = Path(os.environ.get("TOKAFKA_BROKER_BIN", REPO / "target/release/tokafka-broker"))

START_DEADLINE_S = 20.0
STOP_DEADLINE_S = 30.0


def _ephemeral_port_range():
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


# Listening ports come from below the kernel's ephemeral range. A port the kernel picks
# for `bind(0)` is also one it may hand to the next outgoing connection, and a broker
# started a moment later then fails with "Address already in use". Below that range
# only a listener can take a port, and this process never hands out the same one twice.
_PORT_FLOOR = 24000
_next_port = _PORT_FLOOR + (os.getpid() * 7919) % max(1, _ephemeral_port_range()[0] - _PORT_FLOOR)


def free_port():
    """A TCP port on 127.0.0.1, outside the ephemeral range, that nothing listens on now.

    Never the same port twice in one test run.
    """
    global _next_port
    ceiling = _ephemeral_port_range()[0]
    for _ in range(ceiling - _PORT_FLOOR):
        port = _next_port
        _next_port = _PORT_FLOOR + (_next_port + 1 - _PORT_FLOOR) % (ceiling - _PORT_FLOOR)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


def wait_until(condition, deadline_s, what, interval_s=0.02):
    """Polls `condition` until it returns a truthy value, or fails after `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(interval_s)


class Broker:
    """One tokafka-broker process. Restartable on the same data directory and ports.

    It listens (Kafka protocol and HTTP) on `host`; with `netns` it runs in that network
    namespace through `ip netns exec`, which execs the broker: the process this object
    signals is the broker itself, not a wrapper.
    """

    def __init__(self, data_dir, settings=None, advertised=None, netns=None, host="127.0.0.1"):
        self.data_dir = Path(data_dir)
        self.netns = netns
        self.host = host
        self.port = free_port()
        self.http_port = free_port()
        self.settings = dict(settings or {})
        self.advertised = advertised
        self.proc = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-broker.log"
        self._log = None

    @property
    def bootstrap(self):
        return f"{self.host}:{self.port}"

    def start(self, wait=True):
        """Starts the broker; with `wait`, returns once it serves (its /readyz answers 200,
        which a broker does only once the controller quorum has registered and unfenced it:
        the brokers of a new cluster are started with `wait=False` and waited for together,
        see `start_all`)."""
        assert BROKER_BIN.exists(), (
            f"{BROKER_BIN} is missing: build it with `cargo build --release -p tokafka-broker`"
        )
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = ["ip", "netns", "exec", self.netns] if self.netns else []
        cmd += [str(BROKER_BIN)]
        # `log.dirs` in the settings names every log directory itself (the first is the data
        # directory); `--data-dir` would replace the list with one.
        if "log.dirs" not in self.settings:
            cmd += ["--data-dir", str(self.data_dir)]
        # `listeners` in the settings names every listener itself (the test then knows its
        # ports); `--listen` would replace the list with one.
        if "listeners" not in self.settings:
            cmd += ["--listen", self.bootstrap]
        cmd += ["--http-listen", f"{self.host}:{self.http_port}"]
        if self.advertised:
            cmd += ["--advertised-listener", self.advertised]
        for key, value in self.settings.items():
            cmd += ["--set", f"{key}={value}"]
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n=== start {' '.join(cmd)}\n".encode())
        self._log.flush()
        env = dict(os.environ, RUST_BACKTRACE="0", NO_COLOR="1")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self):
        """Waits until the broker serves (its /readyz answers 200)."""
        wait_until(self._ready, START_DEADLINE_S, f"broker /readyz on {self.http_port}")
        comm = Path(f"/proc/{self.proc.pid}/comm").read_text().strip()
        assert comm == BROKER_BIN.name[:15], f"pid {self.proc.pid} is {comm!r}, not the broker"
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(
                f"broker exited with {self.proc.returncode} while starting:\n{self.log_tail()}"
            )
        try:
            with urllib.request.urlopen(
                f"http://{self.host}:{self.http_port}/readyz", timeout=1
            ) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        assert self.alive(), "broker is not running"
        self.proc.send_signal(sig)

    def kill9(self):
        """SIGKILL: no flush, no clean close."""
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_DEADLINE_S)
        self._close_log()

    def terminate(self):
        """SIGTERM and wait for a clean exit; returns the exit code."""
        self.signal(signal.SIGTERM)
        code = self.proc.wait(timeout=STOP_DEADLINE_S)
        self._close_log()
        return code

    def restart(self):
        assert not self.alive()
        return self.start()

    def log_tail(self, lines=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def metrics(self):
        with urllib.request.urlopen(
            f"http://{self.host}:{self.http_port}/metrics", timeout=5
        ) as response:
            return response.read().decode()

    def metric(self, name):
        """The sum of a Prometheus metric's samples (all label sets)."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self):
        """Kills the broker if it still runs (test teardown)."""
        if self.alive():
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.proc.kill()
            self.proc.wait(timeout=STOP_DEADLINE_S)
        self._close_log()

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None


def start_all(brokers):
    """Starts the brokers of a new cluster together and waits until each serves: none can
    serve before a majority of the controller voters runs."""
    for b in brokers:
        b.start(wait=False)
    for b in brokers:
        b.wait_ready()


@pytest.fixture
def broker_factory(tmp_path):
    """Creates brokers for one test (on request) and kills them all at its end."""
    brokers = []

    def make(name="broker", settings=None, advertised=None, start=True):
        b = Broker(tmp_path / name, settings=settings, advertised=advertised)
        brokers.append(b)
        return b.start() if start else b

    yield make
    for b in brokers:
        b.stop()


@pytest.fixture
def broker(broker_factory):
    """A fresh single broker for one test."""
    return broker_factory()


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory):
    """One broker shared by the tests of a module (they use distinct topics)."""
    b = Broker(tmp_path_factory.mktemp("shared") / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def network():
    """A `netns.Network` of 3 hosts, deleted at the end of the test whatever its outcome.
    Skips the test only where this process may not create network namespaces."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CAP_NET_ADMIN)")
    try:
        net = Network(3)
    except RuntimeError as e:
        if "Operation not permitted" not in str(e):
            raise
        pytest.skip(f"network namespaces are not permitted here: {e}")
    try:
        yield net
    finally:
        net.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tail of every broker log the test used."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for name, value in item.funcargs.items():
        if isinstance(value, Broker):
            report.sections.append((f"{name} log", value.log_tail(80)))
        elif isinstance(value, tuple) and value and isinstance(value[0], dict):
            # a cluster fixture: ({node id: Broker}, ...)
            for node_id, b in value[0].items():
                if isinstance(b, Broker):
                    report.sections.append((f"{name} broker {node_id} log", b.log_tail(80)))
