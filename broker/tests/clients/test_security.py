"""Security on the Kafka listeners, driven by real clients: named listeners, TLS (rustls) with
and without client certificates, SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) with SCRAM
credentials kept in the metadata quorum and managed with AlterUserScramCredentials.

One broker serves four listeners:
  ADMIN           PLAINTEXT       where the test creates users (as an operator would on an
                                  internal listener)
  SASL_SSL        SASL_SSL        SCRAM or PLAIN inside TLS; no client certificate asked
  SSL             SSL             mutual TLS: ssl.client.auth=required
  SASL_PLAINTEXT  SASL_PLAINTEXT
"""

import socket
import ssl
import struct
import subprocess
import time

import confluent_kafka
import kafka
import pytest
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

import kclients as kc
import kwire
from conftest import Broker, free_port, wait_until
from tlsfiles import Authority

PASSWORD = "wonder-land-0"
TOPIC = "secured"


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    """The broker with its four listeners, a CA, client certificates, and user `alice`."""
    root = tmp_path_factory.mktemp("security")
    ca = Authority(root / "ca")
    foreign = Authority(root / "foreign", name="somebody else's CA")
    files = {
        "ca": ca.ca_path,
        "broker": ca.issue("broker", "broker-1", server=True),
        "alice": ca.issue("alice", "alice"),
        "expired": ca.issue("expired", "old-alice", expired=True),
        "foreign": foreign.issue("mallory", "mallory"),
    }
    ports = {name: free_port() for name in ("ADMIN", "SASL_SSL", "SSL", "SASL_PLAINTEXT")}
    settings = {
        "listeners": ",".join(f"{n}://127.0.0.1:{p}" for n, p in ports.items()),
        "listener.security.protocol.map": "ADMIN:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "inter.broker.listener.name": "ADMIN",
        "ssl.keystore.location": str(files["broker"]),
        "ssl.truststore.location": str(files["ca"]),
        "ssl.client.auth": "required",
        "ssl.reload.interval.ms": "200",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "connection.failed.authentication.delay.ms": "50",
    }
    broker = Broker(root / "data", settings=settings).start()
    addresses = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    admin = AdminClient({"bootstrap.servers": addresses["ADMIN"]})
    upsert = [
        UserScramCredentialUpsertion("alice", ScramCredentialInfo(mechanism, 8192), PASSWORD.encode())
        for mechanism in (ScramMechanism.SCRAM_SHA_512,)
    ] + [
        UserScramCredentialUpsertion("bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"bob-secret")
    ]
    for future in admin.alter_user_scram_credentials(upsert).values():
        future.result(timeout=15)
    kc.create_topic(addresses["ADMIN"], TOPIC, 2)
    yield {"broker": broker, "addr": addresses, "files": files, "ca": ca, "admin": admin}
    broker.stop()


def sasl_conf(secure, mechanism="SCRAM-SHA-512", user="alice", password=PASSWORD, tls=True):
    conf = {
        "security.protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }
    if tls:
        conf["ssl.ca.location"] = str(secure["files"]["ca"])
    return conf


def mtls_conf(secure, who="alice"):
    files = secure["files"]
    return {
        "security.protocol": "SSL",
        "ssl.ca.location": str(files["ca"]),
        "ssl.certificate.location": str(files[who].with_suffix(".crt")),
        "ssl.key.location": str(files[who].with_suffix(".key")),
    }


def end_offsets(secure):
    """The log end offset of each partition of TOPIC, read on the ADMIN listener."""
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": secure["addr"]["ADMIN"], "group.id": "offsets-probe"}
    )
    try:
        return [
            consumer.get_watermark_offsets(confluent_kafka.TopicPartition(TOPIC, p), timeout=10)[1]
            for p in range(2)
        ]
    finally:
        consumer.close()


def roundtrip_confluent(secure, bootstrap, conf, tag):
    records = kc.make_records(200, 2, tag)
    before = end_offsets(secure)
    kc.produce_confluent(bootstrap, TOPIC, records, deadline_s=30, conf=conf)
    got = kc.consume_confluent(
        bootstrap, TOPIC, kc.expected_counts(records), start=dict(enumerate(before)), deadline_s=30, **conf
    )
    kc.assert_exactly(records, got, "confluent-kafka")


def test_scram_sha_512_over_tls_with_confluent_kafka(secure):
    roundtrip_confluent(secure, secure["addr"]["SASL_SSL"], sasl_conf(secure), "scram512-tls")


def test_scram_sha_256_and_plain_over_sasl_plaintext(secure):
    bootstrap = secure["addr"]["SASL_PLAINTEXT"]
    roundtrip_confluent(
        secure, bootstrap, sasl_conf(secure, "SCRAM-SHA-256", "bob", "bob-secret", tls=False), "scram256"
    )
    # PLAIN checks the password against the SCRAM credential.
    roundtrip_confluent(secure, bootstrap, sasl_conf(secure, "PLAIN", tls=False), "plain")


def test_kafka_python_over_sasl_ssl(secure):
    bootstrap = secure["addr"]["SASL_SSL"]
    conf = dict(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="alice",
        sasl_plain_password=PASSWORD,
        ssl_cafile=str(secure["files"]["ca"]),
        ssl_check_hostname=True,
    )
    records = kc.make_records(100, 2, "kafka-python")
    before = end_offsets(secure)
    kc.produce_kafka_python(bootstrap, TOPIC, records, deadline_s=30, **conf)
    got = kc.consume_kafka_python(
        bootstrap, TOPIC, kc.expected_counts(records), start=dict(enumerate(before)), deadline_s=30, **conf
    )
    kc.assert_exactly(records, got, "kafka-python")


def test_kcat_over_sasl_ssl_and_mutual_tls(secure):
    for bootstrap, conf, tag in (
        (secure["addr"]["SASL_SSL"], sasl_conf(secure), "kcat-sasl"),
        (secure["addr"]["SSL"], mtls_conf(secure), "kcat-mtls"),
    ):
        records = [r for r in kc.make_records(50, 2, tag)]
        records = [kc.Rec(r.partition, r.key, r.value) for r in records]
        before = end_offsets(secure)
        kc.produce_kcat(bootstrap, TOPIC, records, conf=conf)
        got = kc.consume_kcat(bootstrap, TOPIC, kc.expected_counts(records), start=dict(enumerate(before)), conf=conf)
        kc.assert_exactly(records, got, "kcat", check_timestamps=False)


def test_mutual_tls_with_confluent_kafka(secure):
    roundtrip_confluent(secure, secure["addr"]["SSL"], mtls_conf(secure), "mtls")


def test_metadata_answers_with_the_listener_the_client_came_in_on(secure):
    for name in ("ADMIN", "SASL_SSL"):
        conf = {"bootstrap.servers": secure["addr"][name]}
        if name == "SASL_SSL":
            conf.update(sasl_conf(secure))
        brokers = AdminClient(conf).list_topics(timeout=10).brokers
        assert [f"{b.host}:{b.port}" for b in brokers.values()] == [secure["addr"][name]]


def refused_produce(secure, bootstrap, conf):
    """Produces one record with `conf`; asserts it is refused and nothing is written."""
    before = end_offsets(secure)
    errors = []
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "message.timeout.ms": 5000,
            "error_cb": lambda e: errors.append(e),
            **conf,
        }
    )
    delivered = []
    producer.produce(TOPIC, b"must-not-land", partition=0, on_delivery=lambda e, m: delivered.append(e))
    deadline = time.monotonic() + 15
    while not delivered and time.monotonic() < deadline:
        producer.poll(0.1)
    assert delivered and delivered[0] is not None, "the record was acknowledged"
    assert end_offsets(secure) == before, "a refused client wrote records"
    return errors


@pytest.mark.parametrize(
    "case",
    ["wrong-password", "unknown-user", "mechanism-without-credential", "disabled-mechanism"],
)
def test_bad_credentials_are_refused_and_write_nothing(secure, case):
    conf = {
        "wrong-password": sasl_conf(secure, password="nope"),
        "unknown-user": sasl_conf(secure, user="mallory"),
        # alice has only a SCRAM-SHA-512 credential.
        "mechanism-without-credential": sasl_conf(secure, "SCRAM-SHA-256"),
        "disabled-mechanism": sasl_conf(secure, "OAUTHBEARER"),
    }[case]
    if case == "disabled-mechanism":
        conf["sasl.oauthbearer.config"] = "principal=alice"
        conf["enable.sasl.oauthbearer.unsecure.jwt"] = True
    errors = refused_produce(secure, secure["addr"]["SASL_SSL"], conf)
    if case != "disabled-mechanism":
        text = " ".join(str(e) for e in errors)
        assert "Authentication failed" in text or "SASL authentication error" in text, text
    assert secure["broker"].metric("tokafka_failed_authentications_total") >= 1 or case == "disabled-mechanism"


@pytest.mark.parametrize("who", ["no-certificate", "expired", "foreign"])
def test_mutual_tls_refuses_missing_expired_and_foreign_certificates(secure, who):
    conf = mtls_conf(secure, "alice")
    if who == "no-certificate":
        del conf["ssl.certificate.location"], conf["ssl.key.location"]
    else:
        conf = mtls_conf(secure, who)
    refused_produce(secure, secure["addr"]["SSL"], conf)


def test_plaintext_on_a_tls_listener_is_refused_and_the_listener_keeps_serving(secure):
    refused_produce(secure, secure["addr"]["SSL"], {})
    # A truncated handshake: half a ClientHello, then silence and close.
    with socket.create_connection(("127.0.0.1", int(secure["addr"]["SASL_SSL"].split(":")[1]))) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20)
    roundtrip_confluent(secure, secure["addr"]["SASL_SSL"], sasl_conf(secure), "after-garbage")


def sasl_handshake(conn, mechanism):
    _, r = conn.request(17, 1, kwire.string(mechanism))
    error = r.i16()
    mechanisms = r.array(lambda r: r.string())
    return error, mechanisms


def sasl_authenticate(conn, token):
    _, r = conn.request(36, 1, kwire.nbytes(token))
    return r.i16(), r.string()


def test_malformed_sasl_exchanges_get_kafkas_errors_and_a_closed_connection(secure):
    bootstrap = secure["addr"]["SASL_PLAINTEXT"]
    # Anything but ApiVersions and SASL before authentication closes the connection.
    conn = kwire.Conn(bootstrap)
    error, versions = conn.api_versions()
    assert error == 0 and 17 in versions and 36 in versions
    conn.send_frame(kwire.i16(3) + kwire.i16(1) + kwire.i32(9) + kwire.string("x") + kwire.i32(-1))
    assert conn.closed_by_peer()
    # An unknown mechanism: UNSUPPORTED_SASL_MECHANISM (33) with the enabled ones.
    conn = kwire.Conn(bootstrap)
    error, mechanisms = sasl_handshake(conn, "GSSAPI")
    assert error == 33 and set(mechanisms) == {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
    assert conn.closed_by_peer()
    # A token before the handshake: ILLEGAL_SASL_STATE (34).
    conn = kwire.Conn(bootstrap)
    error, _ = sasl_authenticate(conn, b"\0alice\0" + PASSWORD.encode())
    assert error == 34
    assert conn.closed_by_peer()
    # Garbage SCRAM messages: SASL_AUTHENTICATION_FAILED (58), then closed.
    for token in (b"", b"\xff\xfe\x00", b"n,,n=alice", b"p=tls-unique,,n=alice,r=x", b"n,,n=a=ZZ,r=x"):
        conn = kwire.Conn(bootstrap)
        assert sasl_handshake(conn, "SCRAM-SHA-512")[0] == 0
        error, message = sasl_authenticate(conn, token)
        assert error == 58 and message, token
        assert conn.closed_by_peer()
    # A wrong final proof after a good first message.
    conn = kwire.Conn(bootstrap)
    assert sasl_handshake(conn, "SCRAM-SHA-512")[0] == 0
    _, r = conn.request(36, 1, kwire.nbytes(b"n,,n=alice,r=abc"))
    assert r.i16() == 0
    r.string()
    server_first = r.bytes().decode()
    nonce = server_first.split(",")[0][2:]
    error, _ = sasl_authenticate(conn, f"c=biws,r={nonce},p=AAAA".encode())
    assert error == 58
    assert conn.closed_by_peer()
    # And the broker still serves.
    roundtrip_confluent(secure, bootstrap, sasl_conf(secure, "PLAIN", tls=False), "after-bad-sasl")


def test_scram_credentials_are_described_and_deleted(secure):
    admin = secure["admin"]
    described = admin.describe_user_scram_credentials(["alice", "bob"])
    if hasattr(described, "result"):
        described = described.result(timeout=10)
    else:
        described = {u: f.result(timeout=10) for u, f in described.items()}
    alice = described["alice"].scram_credential_infos
    assert [(c.mechanism, c.iterations) for c in alice] == [(ScramMechanism.SCRAM_SHA_512, 8192)]
    # A temporary user: created, used, deleted, then refused.
    tmp = [UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"carol-pw")]
    for f in admin.alter_user_scram_credentials(tmp).values():
        f.result(timeout=15)
    roundtrip_confluent(secure, secure["addr"]["SASL_SSL"], sasl_conf(secure, user="carol", password="carol-pw"), "carol")
    for f in admin.alter_user_scram_credentials([UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_512)]).values():
        f.result(timeout=15)
    refused_produce(secure, secure["addr"]["SASL_SSL"], sasl_conf(secure, user="carol", password="carol-pw"))
    # Deleting again: RESOURCE_NOT_FOUND; too few iterations: UNACCEPTABLE_CREDENTIAL.
    with pytest.raises(confluent_kafka.KafkaException) as missing:
        for f in admin.alter_user_scram_credentials([UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_512)]).values():
            f.result(timeout=15)
    assert missing.value.args[0].code() == confluent_kafka.KafkaError.RESOURCE_NOT_FOUND
    weak = [UserScramCredentialUpsertion("dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 1000), b"pw")]
    with pytest.raises(confluent_kafka.KafkaException) as too_few:
        for f in admin.alter_user_scram_credentials(weak).values():
            f.result(timeout=15)
    assert too_few.value.args[0].code() == confluent_kafka.KafkaError.UNACCEPTABLE_CREDENTIAL


def peer_certificate_serial(address):
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=None)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number


def test_a_renewed_certificate_is_served_without_restart_or_dropped_connections(secure):
    from cryptography import x509

    address = secure["addr"]["SASL_SSL"]
    old_serial = peer_certificate_serial(address)
    producer = confluent_kafka.Producer({"bootstrap.servers": address, "acks": "all", **sasl_conf(secure)})
    delivered, failed = [], []

    def on_delivery(err, msg):
        (failed if err else delivered).append(err)

    for i in range(100):
        producer.produce(TOPIC, f"before-{i}".encode(), partition=0, on_delivery=on_delivery)
    producer.flush(15)
    pid = secure["broker"].proc.pid
    secure["ca"].issue("broker", "broker-1-renewed", server=True)
    new_serial = x509.load_pem_x509_certificate(
        secure["files"]["broker"].with_suffix(".crt").read_bytes()
    ).serial_number
    wait_until(lambda: peer_certificate_serial(address) == new_serial, 10, "the renewed certificate served")
    assert new_serial != old_serial
    # The connection opened before the renewal goes on working.
    for i in range(100):
        producer.produce(TOPIC, f"after-{i}".encode(), partition=0, on_delivery=on_delivery)
    assert producer.flush(15) == 0
    assert len(delivered) == 200 and not failed
    assert secure["broker"].proc.pid == pid and secure["broker"].alive()
    roundtrip_confluent(secure, address, sasl_conf(secure), "after-renewal")


def test_a_broker_with_unusable_tls_files_refuses_to_start(tmp_path):
    port = free_port()
    broker = Broker(
        tmp_path / "data",
        settings={
            "listeners": f"SSL://127.0.0.1:{port}",
            "ssl.keystore.location": str(tmp_path / "missing.pem"),
        },
    )
    broker.start(wait=False)
    try:
        wait_until(lambda: broker.proc.poll() is not None, 15, "the broker to exit")
        assert broker.proc.returncode != 0
        assert "missing.pem" in broker.log_text()
    finally:
        broker.stop()


def test_invalid_listener_settings_are_refused_with_the_key(tmp_path):
    for settings, key in (
        ({"listeners": "A://127.0.0.1:1,A://127.0.0.1:2"}, "listeners"),
        ({"listeners": "INTERNAL://127.0.0.1:1"}, "listener.security.protocol.map"),
        ({"listeners": "SSL://127.0.0.1:1"}, "ssl.keystore.location"),
        ({"sasl.enabled.mechanisms": "GSSAPI"}, "sasl.enabled.mechanisms"),
    ):
        broker = Broker(tmp_path / key, settings=settings)
        broker.start(wait=False)
        try:
            wait_until(lambda: broker.proc.poll() is not None, 15, "the broker to exit")
            assert broker.proc.returncode != 0
            assert key in broker.log_text(), broker.log_tail()
        finally:
            broker.stop()


def test_sessions_reauthenticate_on_the_same_connection_and_lapse_without_it(tmp_path):
    """KIP-368: with connections.max.reauth.ms, librdkafka re-authenticates on its open
    connection and goes on producing; a client that does not is cut off at its next request."""
    ports = {"ADMIN": free_port(), "SASL_PLAINTEXT": free_port()}
    broker = Broker(
        tmp_path / "data",
        settings={
            "listeners": ",".join(f"{n}://127.0.0.1:{p}" for n, p in ports.items()),
            "listener.security.protocol.map": "ADMIN:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
            "connections.max.reauth.ms": "1000",
        },
    ).start()
    try:
        admin_address = f"127.0.0.1:{ports['ADMIN']}"
        address = f"127.0.0.1:{ports['SASL_PLAINTEXT']}"
        admin = AdminClient({"bootstrap.servers": admin_address})
        upsert = [UserScramCredentialUpsertion("erin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"erin-pw")]
        for f in admin.alter_user_scram_credentials(upsert).values():
            f.result(timeout=15)
        kc.create_topic(admin_address, "reauth", 1)
        conf = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "erin", "sasl.password": "erin-pw"}
        producer = confluent_kafka.Producer({"bootstrap.servers": address, "acks": "all", **conf})
        delivered, failed = [], []
        deadline = time.monotonic() + 4.5
        i = 0
        while time.monotonic() < deadline:
            producer.produce("reauth", f"r{i}".encode(), partition=0,
                             on_delivery=lambda e, m: (failed if e else delivered).append(e))
            producer.poll(0.05)
            i += 1
        assert producer.flush(15) == 0
        assert len(delivered) == i and not failed, failed[:3]
        logins = broker.log_text().count("SASL authentication succeeded")
        assert logins >= 4, f"{logins} authentications in 4.5 s of 1 s sessions"
        # A raw client that authenticates once and then idles past its session is closed at
        # its next request.
        conn = kwire.Conn(address)
        assert sasl_handshake(conn, "PLAIN")[0] == 0
        _, r = conn.request(36, 1, kwire.nbytes(b"\0erin\0erin-pw"))
        assert r.i16() == 0
        r.string()
        r.bytes()
        assert r.i64() == 1000, "the session lifetime is announced"
        assert conn.api_versions()[0] == 0
        time.sleep(1.2)  # the session lifetime itself is under test: let it pass
        conn.send_frame(kwire.i16(3) + kwire.i16(1) + kwire.i32(9) + kwire.string("x") + kwire.i32(-1))
        assert conn.closed_by_peer()
    finally:
        broker.stop()


def test_a_secured_three_broker_cluster_loses_nothing_when_a_leader_is_killed(tmp_path):
    """Clients on SASL_SSL only, replication on the plaintext INTERNAL listener: every broker
    advertises its SASL_SSL address to SASL_SSL clients, and kill -9 of a leader under
    idempotent acks=all load loses, duplicates and reorders nothing."""
    import test_cluster as tc

    ca = Authority(tmp_path / "ca")
    broker_pem = ca.issue("broker", "broker", server=True)
    sasl_ports = {}

    def listeners(b):
        sasl_ports[b.port] = free_port()
        return {
            "listeners": f"INTERNAL://127.0.0.1:{b.port},SASL_SSL://127.0.0.1:{sasl_ports[b.port]}",
            "listener.security.protocol.map": "INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL",
            "inter.broker.listener.name": "INTERNAL",
            "ssl.keystore.location": str(broker_pem),
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        }

    with tc.running_cluster(tmp_path, listeners=listeners) as (brokers, internal, admin):
        upsert = [UserScramCredentialUpsertion("svc", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"svc-pw")]
        for f in admin.alter_user_scram_credentials(upsert).values():
            f.result(timeout=15)
        conf = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "svc", "sasl.password": "svc-pw", "ssl.ca.location": str(ca.ca_path)}
        secure_bootstrap = ",".join(f"127.0.0.1:{p}" for p in sasl_ports.values())
        seen = AdminClient({"bootstrap.servers": secure_bootstrap, **conf}).list_topics(timeout=10).brokers
        assert sorted(b.port for b in seen.values()) == sorted(sasl_ports.values())
        topic = "secured-faults"
        tc.create(admin, topic)
        load = tc.Load(secure_bootstrap, topic, conf).start()
        load.wait_for_progress(2000, 60, "records acknowledged over SASL_SSL")
        victim = tc.leader_of(brokers, topic, 0)
        tc.outage(brokers, topic, load, victim, tc.killed(brokers))
        load.finish()
        lost, duplicated, reordered = tc.check(secure_bootstrap, topic, load, conf)
        assert (lost, duplicated, reordered) == (0, 0, 0)
        assert load.errors == []
