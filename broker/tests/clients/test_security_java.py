"""Kafka 4.3.1's own Java tools against a secured tokafka broker, unchanged: `kafka-configs`
creates a SCRAM user, the console producer and consumer use it over SASL_SSL, and over mutual
TLS with PEM key and trust stores (Kafka 2.7+'s `ssl.keystore.type=PEM`).

Run through `scripts/kafka-reference run CLASS` (Kafka's jars, fetched once by
`scripts/install-deps`)."""

import subprocess

import pytest

import kclients as kc
from conftest import REPO, Broker, free_port
from tlsfiles import Authority

TOPIC = "java-secured"


def kafka_tool(cls, *args, stdin=None, timeout=120):
    result = subprocess.run(
        [str(REPO / "scripts/kafka-reference"), "run", cls, *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )
    return result


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    root = tmp_path_factory.mktemp("java-security")
    ca = Authority(root / "ca")
    broker_pem = ca.issue("broker", "broker-1", server=True)
    client_pem = ca.issue("java-client", "java-client")
    ports = {name: free_port() for name in ("ADMIN", "SASL_SSL", "SSL")}
    settings = {
        "listeners": ",".join(f"{n}://127.0.0.1:{p}" for n, p in ports.items()),
        "listener.security.protocol.map": "ADMIN:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL",
        "ssl.keystore.location": str(broker_pem),
        "ssl.truststore.location": str(ca.ca_path),
        "ssl.client.auth": "required",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
    }
    broker = Broker(root / "data", settings=settings).start()
    addr = {n: f"127.0.0.1:{p}" for n, p in ports.items()}
    kc.create_topic(addr["ADMIN"], TOPIC, 1)
    sasl_props = root / "sasl.properties"
    sasl_props.write_text(
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="java-user" password="java-pw-1";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={ca.ca_path}\n"
    )
    mtls_props = root / "mtls.properties"
    mtls_props.write_text(
        "security.protocol=SSL\n"
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={ca.ca_path}\n"
        "ssl.keystore.type=PEM\n"
        f"ssl.keystore.location={client_pem}\n"
    )
    yield {"addr": addr, "sasl": sasl_props, "mtls": mtls_props}
    broker.stop()


def produce_and_consume(bootstrap, props, lines, offset):
    produced = kafka_tool(
        "org.apache.kafka.tools.ConsoleProducer",
        "--bootstrap-server", bootstrap, "--topic", TOPIC,
        "--command-config", str(props),
        stdin="\n".join(lines).encode() + b"\n",
    )
    assert produced.returncode == 0, produced.stderr.decode()[-3000:]
    consumed = kafka_tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        "--bootstrap-server", bootstrap, "--topic", TOPIC, "--partition", "0",
        "--offset", str(offset), "--max-messages", str(len(lines)),
        "--command-config", str(props), "--timeout-ms", "60000",
    )
    assert consumed.returncode == 0, consumed.stderr.decode()[-3000:]
    assert consumed.stdout.decode().splitlines() == lines


def test_kafka_configs_creates_a_scram_user_the_console_clients_use(secured):
    alter = kafka_tool(
        "kafka.admin.ConfigCommand",
        "--bootstrap-server", secured["addr"]["ADMIN"],
        "--alter", "--entity-type", "users", "--entity-name", "java-user",
        "--add-config", "SCRAM-SHA-512=[iterations=8192,password=java-pw-1]",
    )
    assert alter.returncode == 0, alter.stderr.decode()[-3000:]
    # (`kafka-configs --describe --entity-type users` also asks for client quotas, which
    # tokafka does not serve yet; DescribeUserScramCredentials is tested in test_security.py.)
    produce_and_consume(secured["addr"]["SASL_SSL"], secured["sasl"], [f"sasl-{i}" for i in range(20)], 0)


def test_console_clients_over_mutual_tls_with_pem_stores(secured):
    # Runs after the SASL test's 20 records (module order).
    produce_and_consume(secured["addr"]["SSL"], secured["mtls"], [f"mtls-{i}" for i in range(20)], 20)
