//! Every broker configuration key, declared once: its name (Kafka's where Kafka has one), its
//! default, its documentation, the kind of value it takes and which brokers read it.
//!
//! `--help`, the layering in [`Settings`](super::Settings), the validation in
//! [`validate`](super::validate), the broker's typed configuration and the operator's schema
//! all read this table, so none of them can know a key the others do not.

/// The integer type a key's value is read as by the broker's typed configuration: a value
/// that does not fit it is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int {
    I16,
    I32,
    I64,
    U32,
    U64,
    Usize,
}

impl Int {
    /// For people: "a 32-bit integer".
    pub fn describe(self) -> &'static str {
        match self {
            Int::I16 => "a 16-bit integer",
            Int::I32 => "a 32-bit integer",
            Int::I64 => "a 64-bit integer",
            Int::U32 => "an unsigned 32-bit integer",
            Int::U64 => "an unsigned 64-bit integer",
            Int::Usize => "an unsigned integer",
        }
    }
}

/// The values a key takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Any text (a path, a rack name; empty included).
    Text,
    /// `true` or `false`.
    Bool,
    /// An integer of type `int`, at least `min` and at most `max` when they are set.
    Int {
        int: Int,
        min: Option<i64>,
        max: Option<i64>,
    },
    /// `HOST:PORT` (an IPv6 host in brackets; the port a 16-bit number).
    HostPort,
    /// Empty, or `HOST:PORT`.
    OptionalHostPort,
    /// Empty, or controller voters `ID@HOST:PORT,...` with distinct ids.
    Voters,
    /// Exactly one of these words.
    OneOf(&'static [&'static str]),
}

impl Kind {
    /// For people: "a 32-bit integer of at least 1".
    pub fn describe(self) -> String {
        match self {
            Kind::Text => "any text".into(),
            Kind::Bool => "true or false".into(),
            Kind::Int { int, min, max } => match (min, max) {
                (None, None) => int.describe().into(),
                (Some(min), None) => format!("{} of at least {min}", int.describe()),
                (None, Some(max)) => format!("{} of at most {max}", int.describe()),
                (Some(min), Some(max)) => format!("{} from {min} to {max}", int.describe()),
            },
            Kind::HostPort => "HOST:PORT".into(),
            Kind::OptionalHostPort => "HOST:PORT, or empty".into(),
            Kind::Voters => "ID@HOST:PORT,... with distinct ids, or empty".into(),
            Kind::OneOf(words) => format!("one of {}", words.join(" | ")),
        }
    }
}

/// One configuration key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    pub name: &'static str,
    /// The value when no layer sets one (empty: derived from other keys, or none).
    pub default: &'static str,
    pub kind: Kind,
    pub doc: &'static str,
}

/// The smallest `log.segment.bytes`: a segment must hold at least a record batch's length
/// prefix and then some.
pub const SEGMENT_BYTES_MIN: i64 = 14;
/// The largest `log.segment.bytes`: positions within a segment are 32-bit.
pub const SEGMENT_BYTES_MAX: i64 = i32::MAX as i64;
/// The smallest `log.index.size.max.bytes`: room for one entry of each index.
pub const SEGMENT_INDEX_BYTES_MIN: i64 = 16;
/// The smallest `message.max.bytes`: the header of a v2 record batch.
pub const BATCH_HEADER_BYTES: i64 = 61;

const fn key(name: &'static str, default: &'static str, kind: Kind, doc: &'static str) -> KeySpec {
    KeySpec {
        name,
        default,
        kind,
        doc,
    }
}

const fn int(int: Int) -> Kind {
    Kind::Int {
        int,
        min: None,
        max: None,
    }
}

const fn at_least(int: Int, min: i64) -> Kind {
    Kind::Int {
        int,
        min: Some(min),
        max: None,
    }
}

const fn between(int: Int, min: i64, max: i64) -> Kind {
    Kind::Int {
        int,
        min: Some(min),
        max: Some(max),
    }
}

const CLEANUP_POLICIES: &[&str] = &["delete", "compact", "compact,delete", "delete,compact"];

use Int::{Usize, I16, I32, I64, U32, U64};
use Kind::{Bool, HostPort, OneOf, OptionalHostPort, Text, Voters};

/// Every broker configuration key.
#[rustfmt::skip]
pub const KEYS: &[KeySpec] = &[
    key("node.id", "1", int(I32),
        "Id of this broker in the cluster."),
    key("log.dirs", "./data", Text,
        "Comma-separated directories holding the partition logs; the first also holds the broker's metadata. A directory whose disk fails goes offline alone."),
    key("listeners", "0.0.0.0:9092", Text,
        "Kafka protocol listeners, NAME://HOST:PORT,... (an empty host binds every interface), or one HOST:PORT for the listener PLAINTEXT."),
    key("advertised.listeners", "", Text,
        "Addresses given in metadata to clients of each listener, NAME://HOST:PORT,... (or one HOST:PORT); a listener not named here advertises its own address, with 127.0.0.1 for an unspecified host."),
    key("listener.security.protocol.map", "", Text,
        "NAME:PROTOCOL,... with PROTOCOL one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL; empty: each protocol's name maps to itself."),
    key("inter.broker.listener.name", "", Text,
        "The listener other brokers replicate from (empty: the first of `listeners`)."),
    key("ssl.keystore.type", "PEM", OneOf(&["PEM"]),
        "Format of ssl.keystore.location."),
    key("ssl.keystore.location", "", Text,
        "PEM file with this broker's private key (PKCS#8, PKCS#1 or SEC1, unencrypted) and certificate chain, for SSL and SASL_SSL listeners; re-read when it changes."),
    key("ssl.truststore.type", "PEM", OneOf(&["PEM"]),
        "Format of ssl.truststore.location."),
    key("ssl.truststore.location", "", Text,
        "PEM file of the CA certificates client certificates must chain to; re-read when it changes."),
    key("ssl.client.auth", "none", OneOf(&["none", "requested", "required"]),
        "Whether TLS clients must (required), may (requested) or do not (none) present a certificate; a client's certificate subject is its principal."),
    key("ssl.principal.mapping.rules", "DEFAULT", Text,
        "Kafka's rules turning a certificate subject into a principal name: RULE:PATTERN/REPLACEMENT/[LU],... then DEFAULT (the whole subject)."),
    key("ssl.enabled.protocols", "TLSv1.2,TLSv1.3", Text,
        "TLS versions offered: TLSv1.2, TLSv1.3 or both."),
    key("ssl.reload.interval.ms", "5000", at_least(U64, 100),
        "How often the key, certificate and CA files are checked for changes (new connections use new files; open ones are kept)."),
    key("sasl.enabled.mechanisms", "SCRAM-SHA-256,SCRAM-SHA-512", Text,
        "SASL mechanisms offered on SASL listeners: any of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (PLAIN checks the user's SCRAM credential)."),
    key("connections.max.reauth.ms", "0", int(I64),
        "Longest life of a SASL authentication before the client must re-authenticate on its connection (0: unlimited)."),
    key("connection.failed.authentication.delay.ms", "100", int(U64),
        "Delay before a failed authentication is answered and its connection closed."),
    key("http.listeners", "0.0.0.0:9644", HostPort,
        "HOST:PORT of the HTTP side port (/metrics, /healthz, /readyz)."),
    key("num.partitions", "1", at_least(I32, 1),
        "Partitions of an auto-created topic, and of CreateTopics with -1."),
    key("default.replication.factor", "1", int(I16),
        "Replication factor of auto-created topics."),
    key("auto.create.topics.enable", "true", Bool,
        "Create a topic when a client asks for its metadata."),
    key("min.insync.replicas", "1", int(I32),
        "Default min.insync.replicas of topics."),
    key("log.retention.ms", "604800000", int(I64),
        "Default retention.ms of topics (-1: unlimited)."),
    key("log.retention.bytes", "-1", int(I64),
        "Default retention.bytes of topics (-1: unlimited)."),
    key("log.segment.bytes", "1073741824", between(U64, SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX),
        "Default segment.bytes of topics."),
    key("log.roll.ms", "604800000", at_least(I64, 1),
        "Default segment.ms of topics."),
    key("log.index.interval.bytes", "4096", int(U64),
        "Default index.interval.bytes of topics."),
    key("log.index.size.max.bytes", "10485760", at_least(Usize, SEGMENT_INDEX_BYTES_MIN),
        "Default segment.index.bytes of topics."),
    key("log.flush.interval.messages", "-1", int(I64),
        "Default flush.messages of topics (-1: never forced)."),
    key("log.flush.interval.ms", "-1", int(I64),
        "Default flush.ms of topics (-1: never forced)."),
    key("log.retention.check.interval.ms", "300000", int(U64),
        "How often retention runs."),
    key("log.cleanup.policy", "delete", OneOf(CLEANUP_POLICIES),
        "Default cleanup.policy of topics."),
    key("message.max.bytes", "1048588", at_least(Usize, BATCH_HEADER_BYTES),
        "Default max.message.bytes of topics: the largest record batch accepted."),
    key("socket.request.max.bytes", "104857600", int(Usize),
        "Largest request frame accepted; larger frames close the connection."),
    key("connections.max.idle.ms", "600000", int(U64),
        "Connections idle this long are closed."),
    key("max.connections", "10000", at_least(Usize, 1),
        "Connections accepted at once; further ones wait in the accept backlog."),
    key("queued.max.requests", "32", at_least(Usize, 1),
        "Requests read ahead per connection while earlier ones are processed."),
    key("fetch.max.bytes", "57671680", int(Usize),
        "Upper bound on the bytes of one fetch response."),
    key("producer.state.snapshot.interval.ms", "30000", int(U64),
        "How often idempotent-producer state is snapshotted to disk."),
    key("offsets.topic.num.partitions", "50", at_least(I32, 1),
        "Partitions of the internal __consumer_offsets topic (fixed once created)."),
    key("offsets.topic.segment.bytes", "104857600", int(U64),
        "segment.bytes of the internal __consumer_offsets topic (set when it is created); compaction works on sealed segments."),
    key("group.min.session.timeout.ms", "6000", int(I32),
        "Smallest session timeout a group member may ask for."),
    key("group.max.session.timeout.ms", "1800000", int(I32),
        "Largest session timeout a group member may ask for."),
    key("group.initial.rebalance.delay.ms", "3000", int(I64),
        "Wait for more members before the first rebalance of an empty group."),
    key("group.max.size", "1000", int(Usize),
        "Most members a consumer group may have."),
    key("shutdown.timeout.ms", "30000", int(U64),
        "Longest wait for in-flight requests on SIGTERM."),
    key("controller.quorum.voters", "", Voters,
        "Controller voters as ID@HOST:PORT,...; empty: this node alone is a one-voter quorum (KRaft's combined mode)."),
    key("controller.listeners", "", OptionalHostPort,
        "HOST:PORT this node's controller (Raft) listener binds when it is a voter; defaults to its entry in controller.quorum.voters, or for a node alone to an ephemeral port on 127.0.0.1."),
    key("broker.rack", "", Text,
        "Rack of this broker, shown in metadata (empty: none)."),
    key("broker.session.timeout.ms", "9000", int(U64),
        "A broker silent this long is fenced by the controller."),
    key("broker.heartbeat.interval.ms", "2000", at_least(U64, 1),
        "How often a broker heartbeats to the controller."),
    key("replica.lag.time.max.ms", "30000", int(U64),
        "A follower not caught up for this long leaves the in-sync replica set."),
    key("replica.fetch.wait.max.ms", "500", int(U64),
        "Longest wait of a follower fetch at the leader."),
    key("replica.fetch.max.bytes", "1048576", int(I32),
        "Bytes a follower asks for per partition and fetch."),
    key("unclean.leader.election.enable", "false", Bool,
        "Elect a leader outside the ISR when no in-sync replica is alive (may lose acknowledged records)."),
    key("auto.leader.rebalance.enable", "true", Bool,
        "Move leadership back to preferred replicas when the imbalance passes the threshold."),
    key("leader.imbalance.per.broker.percentage", "10", int(U32),
        "Leader imbalance (percent of a broker's preferred partitions led elsewhere) that triggers a rebalance."),
    key("leader.imbalance.check.interval.seconds", "30", int(U64),
        "How often the leader imbalance is checked."),
    key("offsets.topic.replication.factor", "3", at_least(I16, 1),
        "Replication factor of __consumer_offsets (capped at the brokers registered when it is created)."),
    key("controlled.shutdown.max.wait.ms", "30000", int(U64),
        "Longest wait on SIGTERM for leadership to move away before stopping."),
];

/// The key named `name`, if the broker knows it.
pub fn find(name: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.name == name)
}

/// The environment-variable suffix of a key: upper-cased, dots and dashes as underscores
/// (`log.retention.ms` is `TOKAFKA_LOG_RETENTION_MS`).
pub fn env_name(key: &str) -> String {
    key.to_ascii_uppercase().replace(['.', '-'], "_")
}

/// Help text listing every key, its variable and its default.
pub fn keys_help() -> String {
    let mut out = String::from(
        "Configuration keys (config file KEY=VALUE, env TOKAFKA_<KEY>, or --set KEY=VALUE):\n",
    );
    for k in KEYS {
        let default = if k.default.is_empty() {
            "(derived)"
        } else {
            k.default
        };
        out.push_str(&format!(
            "  {:<38} {}\n  {:<38} env TOKAFKA_{}, default {}\n",
            k.name,
            k.doc,
            "",
            env_name(k.name),
            default
        ));
    }
    out
}
