"""Bad input from a raw socket: each is refused the way Kafka refuses it (an error response, or
the connection closed), nothing is written, and afterwards the broker still serves a normal
client, including one whose connection was open all along."""

import random
import struct

import pytest

import kwire
from kclients import consume_confluent, create_topic, make_records, produce_confluent
from kwire import Conn, i16, i32, string

TOPIC = "bad-input"


@pytest.fixture(scope="module")
def topic(shared_broker):
    create_topic(shared_broker.bootstrap, TOPIC, 1)
    return TOPIC


@pytest.fixture
def bystander(shared_broker, topic):
    """A well-behaved raw connection opened before the bad input and used after it."""
    conn = Conn(shared_broker.bootstrap)
    error, _ = conn.api_versions()
    assert error == kwire.ERR_NONE
    yield conn
    conn.close()


def assert_still_serves(broker, bystander):
    assert broker.alive(), f"broker died:\n{broker.log_tail()}"
    # the connection opened before the bad input still works
    before = bystander.latest_offset(TOPIC, 0)
    # and a real client can produce and consume
    records = make_records(3, 1, "after-bad-input")
    log = produce_confluent(broker.bootstrap, TOPIC, records)
    assert [r.offset for r in log.acked] == [before, before + 1, before + 2]
    got = consume_confluent(broker.bootstrap, TOPIC, {0: 3}, start={0: before})
    assert [r.value for r in got[0]] == [r.value for r in records]


def test_api_versions_v99_is_answered_with_unsupported_version_and_the_ranges(shared_broker, bystander):
    conn = Conn(shared_broker.bootstrap)
    # a v3+ request would carry a flexible header; the broker must answer from the first 8 bytes
    _, r = conn.request(kwire.API_API_VERSIONS, 99, b"\x00")
    # the answer is an ApiVersions v0 body (so any client can read it)
    error = r.i16()
    ranges = r.array(lambda r: (r.i16(), r.i16(), r.i16()))
    assert r.done(), "trailing bytes: not a v0 body"
    assert error == kwire.ERR_UNSUPPORTED_VERSION
    by_key = {k: (lo, hi) for k, lo, hi in ranges}
    assert kwire.API_API_VERSIONS in by_key
    lo, hi = by_key[kwire.API_API_VERSIONS]
    assert 0 <= lo <= hi < 99
    # the connection stays usable: the client retries with a version the broker knows
    error, ranges = conn.api_versions(version=0)
    assert error == kwire.ERR_NONE and kwire.API_PRODUCE in ranges
    conn.close()
    assert_still_serves(shared_broker, bystander)


@pytest.mark.parametrize(
    "api_key, version",
    [
        (999, 0),  # no such API
        (-1, 0),
        (kwire.API_METADATA, 99),  # a served API at a version it does not speak
        (kwire.API_PRODUCE, 0),  # below the supported range (no v0/v1 message sets)
    ],
    ids=["unknown-key-999", "negative-key", "metadata-v99", "produce-v0"],
)
def test_unknown_api_or_unsupported_version_closes_the_connection(shared_broker, bystander, api_key, version):
    conn = Conn(shared_broker.bootstrap)
    conn.send_frame(i16(api_key) + i16(version) + i32(7) + string("kwire") + b"\x00" * 16)
    assert conn.closed_by_peer(), "connection still open"
    conn.close()
    assert_still_serves(shared_broker, bystander)


def test_oversized_size_prefix_closes_the_connection(shared_broker, bystander):
    # socket.request.max.bytes defaults to 104857600; the broker must not try to buffer more
    conn = Conn(shared_broker.bootstrap)
    conn.send_raw(i32(104857600 + 1) + b"\x00" * 64)
    assert conn.closed_by_peer()
    conn.close()
    conn = Conn(shared_broker.bootstrap)
    conn.send_raw(i32(-5))
    assert conn.closed_by_peer()
    conn.close()
    assert_still_serves(shared_broker, bystander)


def test_size_limit_is_the_configured_socket_request_max_bytes(broker_factory):
    broker = broker_factory(settings={"socket.request.max.bytes": 4096})
    conn = Conn(broker.bootstrap)
    conn.send_raw(i32(4097) + b"\x00" * 64)
    assert conn.closed_by_peer()
    conn.close()
    # a frame of exactly the limit is read and answered
    conn = Conn(broker.bootstrap)
    def produce_frame(value_bytes):
        batch = kwire.record_batch([b"v" * value_bytes])
        body = string(None) + i16(1) + i32(1000) + kwire.array(
            [string("no-such-topic") + kwire.array([i32(0) + kwire.nbytes(batch)])]
        )
        return i16(kwire.API_PRODUCE) + i16(3) + i32(1) + string("kwire") + body
    overhead = len(produce_frame(0))
    # the varint lengths grow with the value: find the value size that fills the frame
    frame = next(f for n in range(4096 - overhead - 8, 4096) if len(f := produce_frame(n)) == 4096)
    conn.send_frame(frame)
    r = conn.read_response(1)
    [(_, [(index, error, _)])] = r.array(lambda r: (r.string(), r.array(lambda r: kwire._produce_partition(r, 3))))
    assert (index, error) == (0, 3)  # UNKNOWN_TOPIC_OR_PARTITION: read, decoded, answered
    conn.close()


def test_frames_truncated_by_a_closing_peer_are_dropped(shared_broker, bystander):
    # size prefix cut short
    conn = Conn(shared_broker.bootstrap)
    conn.send_raw(b"\x00\x00")
    conn.half_close()
    assert conn.closed_by_peer()
    conn.close()
    # frame body cut short
    conn = Conn(shared_broker.bootstrap)
    conn.send_raw(i32(100) + i16(kwire.API_METADATA) + i16(1) + i32(1))
    conn.half_close()
    assert conn.closed_by_peer()
    conn.close()
    assert_still_serves(shared_broker, bystander)


def test_frames_too_short_for_their_request_close_the_connection(shared_broker, bystander):
    # shorter than a request header
    conn = Conn(shared_broker.bootstrap)
    conn.send_frame(i16(kwire.API_METADATA) + i16(1))
    assert conn.closed_by_peer()
    conn.close()
    # a complete frame whose Metadata v1 body ends inside its topic array
    conn = Conn(shared_broker.bootstrap)
    conn.send_frame(i16(kwire.API_METADATA) + i16(1) + i32(1) + string("kwire") + i32(5) + string("abc"))
    assert conn.closed_by_peer()
    conn.close()
    # a produce whose records length points past the end of the frame
    conn = Conn(shared_broker.bootstrap)
    body = string(None) + i16(1) + i32(1000) + i32(1) + string(TOPIC) + i32(1) + i32(0) + i32(500) + b"\x01" * 10
    conn.send_frame(i16(kwire.API_PRODUCE) + i16(3) + i32(1) + string("kwire") + body)
    assert conn.closed_by_peer()
    conn.close()
    assert_still_serves(shared_broker, bystander)


def test_a_huge_array_count_in_a_tiny_frame_closes_only_that_connection(broker):
    # a 19-byte Metadata v1 request whose topics array claims i32::MAX entries
    conn = Conn(broker.bootstrap)
    conn.send_frame(i16(kwire.API_METADATA) + i16(1) + i32(1) + string("kwire") + i32(0x7FFFFFFF))
    assert conn.closed_by_peer()
    conn.close()
    assert broker.alive(), f"broker died:\n{broker.log_tail(5)}"
    conn = Conn(broker.bootstrap)
    assert conn.api_versions()[0] == kwire.ERR_NONE
    conn.close()


@pytest.mark.parametrize("seed", range(8))
def test_garbage_is_refused(shared_broker, bystander, seed):
    rng = random.Random(seed)
    garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    # framed garbage: a correct size prefix around random bytes
    conn = Conn(shared_broker.bootstrap)
    conn.send_frame(garbage)
    assert conn.closed_by_peer()
    conn.close()
    # raw garbage, then the peer stops sending
    conn = Conn(shared_broker.bootstrap)
    conn.send_raw(garbage)
    conn.half_close()
    assert conn.closed_by_peer()
    conn.close()
    assert_still_serves(shared_broker, bystander)


@pytest.mark.parametrize("damage", ["crc-field", "record-bytes", "batch-length"])
def test_produce_with_a_corrupt_batch_is_refused_and_writes_nothing(shared_broker, bystander, damage):
    conn = Conn(shared_broker.bootstrap)
    before = conn.latest_offset(TOPIC, 0)
    batch = bytearray(kwire.record_batch([b"one", b"two", b"three"]))
    if damage == "crc-field":
        batch[kwire.CRC_POSITION] ^= 0xFF
    elif damage == "record-bytes":
        batch[-2] ^= 0x01
    else:
        length = struct.unpack_from(">i", batch, 8)[0]
        struct.pack_into(">i", batch, 8, length + 7)
    error, base_offset = conn.produce(TOPIC, 0, bytes(batch))
    assert error == kwire.ERR_CORRUPT_MESSAGE, f"error code {error}"
    assert base_offset == -1
    # the connection stays open (an error response, not a close) and the offsets did not move
    assert conn.latest_offset(TOPIC, 0) == before
    # the same batch undamaged is accepted on the same connection
    error, base_offset = conn.produce(TOPIC, 0, kwire.record_batch([b"one", b"two", b"three"]))
    assert (error, base_offset) == (kwire.ERR_NONE, before)
    assert conn.latest_offset(TOPIC, 0) == before + 3
    conn.close()
    assert_still_serves(shared_broker, bystander)


def test_a_corrupt_batch_in_a_multi_partition_produce_fails_only_its_partition(shared_broker):
    topic = "bad-input-two-partitions"
    create_topic(shared_broker.bootstrap, topic, 2)
    conn = Conn(shared_broker.bootstrap)
    good = kwire.record_batch([b"good"])
    bad = bytearray(kwire.record_batch([b"bad"]))
    bad[kwire.CRC_POSITION] ^= 0xFF
    body = string(None) + i16(-1) + i32(10_000) + kwire.array([
        string(topic) + kwire.array([i32(0) + kwire.nbytes(good), i32(1) + kwire.nbytes(bytes(bad))])
    ])
    _, r = conn.request(kwire.API_PRODUCE, 3, body)
    [(_, partitions)] = r.array(lambda r: (r.string(), r.array(lambda r: kwire._produce_partition(r, 3))))
    assert sorted(partitions) == [(0, kwire.ERR_NONE, 0), (1, kwire.ERR_CORRUPT_MESSAGE, -1)]
    assert conn.latest_offset(topic, 0) == 1
    assert conn.latest_offset(topic, 1) == 0
    conn.close()
