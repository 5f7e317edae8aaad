"""A deliberately small Kafka wire client over a raw socket, for requests no real client will
send: malformed frames, hand-made record batches (bad CRC, sequence gaps), and reading the
stored batch attributes. Only non-flexible request versions are encoded here.

Request header v1: api_key int16, api_version int16, correlation_id int32, client_id string.
Response header v0: correlation_id int32.
"""

import socket
import struct
import time

API_PRODUCE = 0
API_FETCH = 1
API_LIST_OFFSETS = 2
API_METADATA = 3
API_API_VERSIONS = 18
API_INIT_PRODUCER_ID = 22

ERR_NONE = 0
ERR_CORRUPT_MESSAGE = 2
ERR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERR_NOT_LEADER_OR_FOLLOWER = 6
ERR_UNSUPPORTED_VERSION = 35
ERR_OUT_OF_ORDER_SEQUENCE = 45

# --- CRC32C (Castagnoli), as record batch v2 uses -------------------------------------------

_CRC32C_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # the standard check value

# --- primitive encoders -----------------------------------------------------------------------


def i8(v):
    return struct.pack(">b", v)


def i16(v):
    return struct.pack(">h", v)


def i32(v):
    return struct.pack(">i", v)


def i64(v):
    return struct.pack(">q", v)


def string(s):
    if s is None:
        return i16(-1)
    b = s.encode()
    return i16(len(b)) + b


def nbytes(b):
    if b is None:
        return i32(-1)
    return i32(len(b)) + b


def array(items):
    return i32(len(items)) + b"".join(items)


def varint(v):
    z = (v << 1) ^ (v >> 63)  # zigzag
    out = bytearray()
    while True:
        byte = z & 0x7F
        z >>= 7
        if z:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def vbytes(b):
    return varint(-1) if b is None else varint(len(b)) + b


# --- record batch v2 ------------------------------------------------------------------------


def record_batch(
    values,
    base_timestamp_ms=None,
    producer_id=-1,
    producer_epoch=-1,
    base_sequence=-1,
    attributes=0,
):
    """An uncompressed record batch (magic 2) of `values` (bytes each, no keys or headers)."""
    ts = int(time.time() * 1000) if base_timestamp_ms is None else base_timestamp_ms
    records = b""
    for i, value in enumerate(values):
        body = i8(0) + varint(0) + varint(i) + vbytes(None) + vbytes(value) + varint(0)
        records += varint(len(body)) + body
    after_crc = (
        i16(attributes)
        + i32(len(values) - 1)  # last offset delta
        + i64(ts)
        + i64(ts)  # max timestamp
        + i64(producer_id)
        + i16(producer_epoch)
        + i32(base_sequence)
        + i32(len(values))
        + records
    )
    partition_leader_epoch = i32(-1)
    magic = i8(2)
    crc = struct.pack(">I", crc32c(after_crc))
    batch_length = len(partition_leader_epoch) + len(magic) + len(crc) + len(after_crc)
    return i64(0) + i32(batch_length) + partition_leader_epoch + magic + crc + after_crc


CRC_POSITION = 8 + 4 + 4 + 1  # base offset, length, partition leader epoch, magic
ATTRIBUTES_POSITION = CRC_POSITION + 4


def batches(records):
    """Splits a records field into (base_offset, attributes, record_count, bytes) per batch."""
    out = []
    pos = 0
    while pos + 12 <= len(records):
        base_offset, length = struct.unpack_from(">qi", records, pos)
        end = pos + 12 + length
        if end > len(records):
            break  # a partial batch at the end of a fetch
        (attributes,) = struct.unpack_from(">h", records, pos + ATTRIBUTES_POSITION)
        (count,) = struct.unpack_from(">i", records, pos + 57)
        out.append((base_offset, attributes, count, records[pos:end]))
        pos = end
    return out


# --- a connection -----------------------------------------------------------------------------


class Closed(Exception):
    """The broker closed the connection."""


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, fmt):
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def i8(self):
        return self.take(">b")

    def i16(self):
        return self.take(">h")

    def i32(self):
        return self.take(">i")

    def i64(self):
        return self.take(">q")

    def string(self):
        n = self.i16()
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def bytes(self):
        n = self.i32()
        if n < 0:
            return None
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def array(self, item):
        n = self.i32()
        return [] if n < 0 else [item(self) for _ in range(n)]

    def done(self):
        return self.pos == len(self.data)


class Conn:
    def __init__(self, bootstrap, timeout_s=10.0):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.correlation_id = 0

    def close(self):
        self.sock.close()

    def half_close(self):
        """Stops sending (the broker sees end of stream), unless it already closed."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, payload):
        self.send_raw(i32(len(payload)) + payload)

    def request(self, api_key, version, body, client_id="kwire"):
        """Sends a request; returns (correlation_id, response body after the header)."""
        self.correlation_id += 1
        cid = self.correlation_id
        self.send_frame(i16(api_key) + i16(version) + i32(cid) + string(client_id) + body)
        return cid, self.read_response(cid)

    def read_response(self, correlation_id):
        frame = self.read_frame()
        got = struct.unpack_from(">i", frame)[0]
        assert got == correlation_id, f"correlation id {got}, want {correlation_id}"
        return Reader(frame[4:])

    def read_frame(self):
        size = struct.unpack(">i", self._read_exact(4))[0]
        return self._read_exact(size)

    def _read_exact(self, n):
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError as e:
                raise Closed("reset") from e
            if not chunk:
                raise Closed("eof")
            buf += chunk
        return buf

    def closed_by_peer(self, deadline_s=5.0):
        """True once the broker has closed the connection (EOF or reset) within the deadline;
        False if the connection is still open after it. Any bytes received mean an answer."""
        self.sock.settimeout(deadline_s)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        if data:
            raise AssertionError(f"expected the connection to close, got {len(data)} bytes: {data[:64]!r}")
        return True

    # --- requests ---

    def api_versions(self, version=0):
        _, r = self.request(API_API_VERSIONS, version, b"")
        error = r.i16()
        keys = r.array(lambda r: (r.i16(), r.i16(), r.i16()))
        return error, {k: (lo, hi) for k, lo, hi in keys}

    def produce(self, topic, partition, records, acks=-1, version=3):
        """Produce v3-v8 (non-flexible) of one records field; returns (error, base_offset)."""
        body = string(None) + i16(acks) + i32(10_000)
        body += array([string(topic) + array([i32(partition) + nbytes(records)])])
        _, r = self.request(API_PRODUCE, version, body)
        topics = r.array(
            lambda r: (
                r.string(),
                r.array(lambda r: _produce_partition(r, version)),
            )
        )
        (_, [(index, error, base_offset)]) = topics[0]
        assert index == partition
        return error, base_offset

    def latest_offset(self, topic, partition):
        """ListOffsets v1 for LATEST: the log end (high watermark)."""
        body = i32(-1) + array([string(topic) + array([i32(partition) + i64(-1)])])
        _, r = self.request(API_LIST_OFFSETS, 1, body)
        topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16(), r.i64(), r.i64()))))
        (_, [(_, error, _, offset)]) = topics[0]
        assert error == ERR_NONE, f"ListOffsets error {error}"
        return offset

    def list_offsets_error(self, topic, partition):
        """The error code of ListOffsets v1 (LATEST) for one partition."""
        body = i32(-1) + array([string(topic) + array([i32(partition) + i64(-1)])])
        _, r = self.request(API_LIST_OFFSETS, 1, body)
        topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16(), r.i64(), r.i64()))))
        (_, [(_, error, _, _)]) = topics[0]
        return error

    def init_producer_id(self):
        _, r = self.request(API_INIT_PRODUCER_ID, 0, string(None) + i32(60_000))
        r.i32()  # throttle
        error, producer_id, epoch = r.i16(), r.i64(), r.i16()
        assert error == ERR_NONE, f"InitProducerId error {error}"
        return producer_id, epoch

    def fetch(self, topic, partition, offset, max_bytes=1 << 20, max_wait_ms=0, min_bytes=0, send_only=False):
        """Fetch v11 of one partition; returns (error, high_watermark, records bytes), or the
        correlation id with `send_only` (read the answer with `read_fetch`)."""
        body = (
            i32(-1) + i32(max_wait_ms) + i32(min_bytes) + i32(max_bytes) + i8(0)  # replica, wait, min, max, isolation
            + i32(0) + i32(-1)  # no fetch session
            + array([string(topic) + array([
                i32(partition) + i32(-1) + i64(offset) + i64(-1) + i32(max_bytes)
            ])])
            + array([])  # forgotten topics
            + string("")  # rack
        )
        if send_only:
            self.correlation_id += 1
            self.send_frame(i16(API_FETCH) + i16(11) + i32(self.correlation_id) + string("kwire") + body)
            return self.correlation_id
        _, r = self.request(API_FETCH, 11, body)
        return self._fetch_answer(r, partition)

    def read_fetch(self, correlation_id, partition):
        return self._fetch_answer(self.read_response(correlation_id), partition)

    def _fetch_answer(self, r, partition):
        r.i32()  # throttle
        assert r.i16() == ERR_NONE
        r.i32()  # session
        topics = r.array(lambda r: (r.string(), r.array(_fetch_partition)))
        (_, [(index, error, hw, records)]) = topics[0]
        assert index == partition
        return error, hw, records or b""


def _produce_partition(r, version):
    index, error, base_offset = r.i32(), r.i16(), r.i64()
    r.i64()  # log append time
    if version >= 5:
        r.i64()  # log start offset
    if version >= 8:
        r.array(lambda r: (r.i32(), r.string()))  # record errors
        r.string()  # error message
    return index, error, base_offset


def _fetch_partition(r):
    index, error, hw = r.i32(), r.i16(), r.i64()
    r.i64()  # last stable offset
    r.i64()  # log start offset
    r.array(lambda r: (r.i64(), r.i64()))  # aborted transactions
    r.i32()  # preferred read replica
    return index, error, hw, r.bytes()
