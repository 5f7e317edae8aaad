"""A private test network of Linux network namespaces, to cut one broker off from the others.

`Network(n)` builds a bridge in the root namespace (the test's clients stay there) and one
namespace per broker, joined to the bridge by a veth pair:

    root namespace: bridge <prefix>br, 10.213.S.1/24
      <prefix>h1 (bridge port) ==veth== <prefix>p1 in namespace <prefix>n1, 10.213.S.11/24
      <prefix>h2 (bridge port) ==veth== <prefix>p2 in namespace <prefix>n2, 10.213.S.12/24
      ...

`cut(i)` takes the bridge side of host i's veth down: its packets, to and from every other
host and the root namespace alike, are dropped without a reset, as a pulled cable would drop
them. `heal(i)` puts it back. Names carry the pid and the subnet S is one no interface uses
yet, so two test runs on one machine do not collide. `close()` deletes what was built; the
`network` fixture of conftest.py calls it whatever the test's outcome. Needs root
(CAP_NET_ADMIN) and iproute2's `ip`.
"""

import ipaddress
import os
import subprocess

ADDRESS_PREFIX = "10.213"
IP_DEADLINE_S = 10.0


def ip(*args):
    """Runs `ip ARGS`; raises with its stderr on failure."""
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_DEADLINE_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def free_subnet():
    """The first 10.213.S.0/24, from S = pid % 256 on, that no address of the root namespace
    is in."""
    used = [
        ipaddress.ip_interface(word)
        for line in ip("-4", "-o", "addr", "show").splitlines()
        for word in line.split()[3:4]
    ]
    start = os.getpid() % 256
    for k in range(256):
        subnet = ipaddress.ip_network(f"{ADDRESS_PREFIX}.{(start + k) % 256}.0/24")
        if not any(a.ip in subnet for a in used):
            return subnet
    raise RuntimeError(f"no free {ADDRESS_PREFIX}.S.0/24 subnet")


class Network:
    """A bridge and `size` namespaces numbered 1..size; see the module doc."""

    def __init__(self, size):
        assert 1 <= size <= 9, "addresses .11 to .19"
        self.size = size
        self.prefix = f"tk{os.getpid() % 1_000_000}"  # + "br"/"h9"/"n9": at most 10 chars
        self.subnet = free_subnet()
        self.bridge = f"{self.prefix}br"
        self._created = []  # (kind, name), in creation order: close() undoes them in reverse
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self):
        base = self.subnet.network_address
        ip("link", "add", self.bridge, "type", "bridge")
        self._created.append(("link", self.bridge))
        ip("addr", "add", f"{base + 1}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i in range(1, self.size + 1):
            ns, host_side, peer = self.netns(i), f"{self.prefix}h{i}", f"{self.prefix}p{i}"
            ip("netns", "add", ns)
            self._created.append(("netns", ns))
            ip("link", "add", host_side, "type", "veth", "peer", "name", peer)
            self._created.append(("link", host_side))  # deleting one end deletes the pair
            ip("link", "set", host_side, "master", self.bridge, "up")
            ip("link", "set", peer, "netns", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", peer)
            ip("-n", ns, "link", "set", peer, "up")

    def netns(self, i):
        """Name of host i's namespace (for `ip netns exec`)."""
        return f"{self.prefix}n{i}"

    def address(self, i):
        """Host i's address, reachable from the root namespace and from the other hosts."""
        return str(self.subnet.network_address + 10 + i)

    def cut(self, i):
        """Drops every packet to and from host i from now on."""
        ip("link", "set", f"{self.prefix}h{i}", "down")

    def heal(self, i):
        """Undoes `cut(i)`."""
        ip("link", "set", f"{self.prefix}h{i}", "up")

    def close(self):
        """Deletes the veth pairs, namespaces and bridge; raises after trying them all if any
        deletion failed."""
        failures = []
        while self._created:
            kind, name = self._created.pop()
            try:
                ip(kind, "del", name)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                failures.append(str(e))
        if failures:
            raise RuntimeError("test network left behind: " + "; ".join(failures))

