"""A TCP proxy between the clients and the broker that can lose the broker's answers.

The broker advertises the proxy's address (--advertised-listener), so every client connection
goes through it. `blackhole()` turns the connections open at that moment into one-way pipes:
requests still reach the broker (and are executed) but its answers are thrown away, so the
client's requests time out and it retries, on a new connection, what the broker has already
done. `cut()` then closes the blackholed connections, as a network failure would. Connections
opened later are served normally.
"""

import collections
import socket
import struct
import threading

from conftest import free_port

API_PRODUCE = 0


class FaultProxy:
    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        # produce requests the broker answered but whose answer the client never got
        self.produce_answers_lost = 0
        self.accepted = 0  # connections accepted so far
        self.lock = threading.Lock()
        self.conns = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            conn = _Conn(client, upstream)
            with self.lock:
                self.conns.append(conn)
                self.accepted += 1
            threading.Thread(target=self._client_to_broker, args=(conn,), daemon=True).start()
            threading.Thread(target=self._broker_to_client, args=(conn,), daemon=True).start()

    def _client_to_broker(self, conn):
        """Forwards whole request frames, noting their API keys in order."""
        src, dst = conn.client, conn.upstream
        try:
            while True:
                head = _read_exact(src, 4)
                if head is None:
                    break
                (size,) = struct.unpack(">i", head)
                body = _read_exact(src, size)
                if body is None:
                    break
                (api_key,) = struct.unpack_from(">h", body)
                with self.lock:
                    conn.pending.append(api_key)
                dst.sendall(head + body)
        except OSError:
            pass
        _close(src, dst)

    def _broker_to_client(self, conn):
        """Forwards whole response frames (answers come in request order), or drops them."""
        src, dst = conn.upstream, conn.client
        try:
            while True:
                head = _read_exact(src, 4)
                if head is None:
                    break
                (size,) = struct.unpack(">i", head)
                body = _read_exact(src, size)
                if body is None:
                    break
                with self.lock:
                    api_key = conn.pending.popleft() if conn.pending else None
                    if conn.blackholed and api_key == API_PRODUCE:
                        self.produce_answers_lost += 1
                if not conn.blackholed:
                    dst.sendall(head + body)
        except OSError:
            pass
        _close(src, dst)

    def blackhole(self):
        """From now on, the connections open now lose every answer of the broker."""
        with self.lock:
            for conn in self.conns:
                conn.blackholed = True
            return len(self.conns)

    def cut(self, only_blackholed=True):
        """Closes the blackholed connections (or all); clients reconnect through the proxy."""
        with self.lock:
            doomed = [c for c in self.conns if c.blackholed or not only_blackholed]
            self.conns = [c for c in self.conns if c not in doomed]
        for conn in doomed:
            _close(conn.client, conn.upstream)

    def close(self):
        self.closed = True
        self.listener.close()
        self.cut(only_blackholed=False)


class _Conn:
    def __init__(self, client, upstream):
        self.client = client
        self.upstream = upstream
        self.blackholed = False
        self.pending = collections.deque()  # API keys of requests not answered yet


def _read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _close(*socks):
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass
