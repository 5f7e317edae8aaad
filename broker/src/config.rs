//! Broker configuration: Kafka-named keys with embedded defaults, layered as
//! defaults < config file < `TOKAFKA_<KEY>` environment variables < command-line flags.
//!
//! Every key the broker understands is declared once in [`KEYS`] with its default and its
//! documentation, so `--help`, validation and the typed [`BrokerConfig`] cannot disagree.
//! Unknown keys are refused: a typo in a config file is an error, not a silently ignored line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::log::{FlushPolicy, LogConfig};

/// One configuration key.
pub struct KeySpec {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every broker configuration key, with its default.
pub const KEYS: &[KeySpec] = &[
    KeySpec { name: "node.id", default: "1", doc: "Id of this broker in the cluster." },
    KeySpec { name: "log.dirs", default: "./data", doc: "Directory holding the partition logs and broker metadata." },
    KeySpec { name: "listeners", default: "0.0.0.0:9092", doc: "HOST:PORT the Kafka protocol listener binds." },
    KeySpec { name: "advertised.listeners", default: "", doc: "HOST:PORT given to clients in metadata; defaults to the listener, with 127.0.0.1 for an unspecified host." },
    KeySpec { name: "http.listeners", default: "0.0.0.0:9644", doc: "HOST:PORT of the HTTP side port (/metrics, /healthz, /readyz)." },
    KeySpec { name: "num.partitions", default: "1", doc: "Partitions of an auto-created topic, and of CreateTopics with -1." },
    KeySpec { name: "default.replication.factor", default: "1", doc: "Replication factor of auto-created topics." },
    KeySpec { name: "auto.create.topics.enable", default: "true", doc: "Create a topic when a client asks for its metadata." },
    KeySpec { name: "min.insync.replicas", default: "1", doc: "Default min.insync.replicas of topics." },
    KeySpec { name: "log.retention.ms", default: "604800000", doc: "Default retention.ms of topics (-1: unlimited)." },
    KeySpec { name: "log.retention.bytes", default: "-1", doc: "Default retention.bytes of topics (-1: unlimited)." },
    KeySpec { name: "log.segment.bytes", default: "1073741824", doc: "Default segment.bytes of topics." },
    KeySpec { name: "log.roll.ms", default: "604800000", doc: "Default segment.ms of topics." },
    KeySpec { name: "log.index.interval.bytes", default: "4096", doc: "Default index.interval.bytes of topics." },
    KeySpec { name: "log.index.size.max.bytes", default: "10485760", doc: "Default segment.index.bytes of topics." },
    KeySpec { name: "log.flush.interval.messages", default: "-1", doc: "Default flush.messages of topics (-1: never forced)." },
    KeySpec { name: "log.flush.interval.ms", default: "-1", doc: "Default flush.ms of topics (-1: never forced)." },
    KeySpec { name: "log.retention.check.interval.ms", default: "300000", doc: "How often retention runs." },
    KeySpec { name: "log.cleanup.policy", default: "delete", doc: "Default cleanup.policy of topics." },
    KeySpec { name: "message.max.bytes", default: "1048588", doc: "Default max.message.bytes of topics: the largest record batch accepted." },
    KeySpec { name: "socket.request.max.bytes", default: "104857600", doc: "Largest request frame accepted; larger frames close the connection." },
    KeySpec { name: "connections.max.idle.ms", default: "600000", doc: "Connections idle this long are closed." },
    KeySpec { name: "max.connections", default: "10000", doc: "Connections accepted at once; further ones wait in the accept backlog." },
    KeySpec { name: "queued.max.requests", default: "32", doc: "Requests read ahead per connection while earlier ones are processed." },
    KeySpec { name: "fetch.max.bytes", default: "57671680", doc: "Upper bound on the bytes of one fetch response." },
    KeySpec { name: "producer.state.snapshot.interval.ms", default: "30000", doc: "How often idempotent-producer state is snapshotted to disk." },
    KeySpec { name: "offsets.topic.num.partitions", default: "50", doc: "Partitions of the internal __consumer_offsets topic (fixed once created)." },
    KeySpec { name: "offsets.topic.segment.bytes", default: "104857600", doc: "segment.bytes of the internal __consumer_offsets topic (set when it is created); compaction works on sealed segments." },
    KeySpec { name: "group.min.session.timeout.ms", default: "6000", doc: "Smallest session timeout a group member may ask for." },
    KeySpec { name: "group.max.session.timeout.ms", default: "1800000", doc: "Largest session timeout a group member may ask for." },
    KeySpec { name: "group.initial.rebalance.delay.ms", default: "3000", doc: "Wait for more members before the first rebalance of an empty group." },
    KeySpec { name: "group.max.size", default: "1000", doc: "Most members a consumer group may have." },
    KeySpec { name: "shutdown.timeout.ms", default: "30000", doc: "Longest wait for in-flight requests on SIGTERM." },
    KeySpec { name: "controller.quorum.voters", default: "", doc: "Controller voters as ID@HOST:PORT,...; empty: this node alone is a one-voter quorum (KRaft's combined mode)." },
    KeySpec { name: "controller.listeners", default: "", doc: "HOST:PORT this node's controller (Raft) listener binds when it is a voter; defaults to its entry in controller.quorum.voters, or for a node alone to an ephemeral port on 127.0.0.1." },
    KeySpec { name: "broker.rack", default: "", doc: "Rack of this broker, shown in metadata (empty: none)." },
    KeySpec { name: "broker.session.timeout.ms", default: "9000", doc: "A broker silent this long is fenced by the controller." },
    KeySpec { name: "broker.heartbeat.interval.ms", default: "2000", doc: "How often a broker heartbeats to the controller." },
    KeySpec { name: "replica.lag.time.max.ms", default: "30000", doc: "A follower not caught up for this long leaves the in-sync replica set." },
    KeySpec { name: "replica.fetch.wait.max.ms", default: "500", doc: "Longest wait of a follower fetch at the leader." },
    KeySpec { name: "replica.fetch.max.bytes", default: "1048576", doc: "Bytes a follower asks for per partition and fetch." },
    KeySpec { name: "unclean.leader.election.enable", default: "false", doc: "Elect a leader outside the ISR when no in-sync replica is alive (may lose acknowledged records)." },
    KeySpec { name: "auto.leader.rebalance.enable", default: "true", doc: "Move leadership back to preferred replicas when the imbalance passes the threshold." },
    KeySpec { name: "leader.imbalance.per.broker.percentage", default: "10", doc: "Leader imbalance (percent of a broker's preferred partitions led elsewhere) that triggers a rebalance." },
    KeySpec { name: "leader.imbalance.check.interval.seconds", default: "30", doc: "How often the leader imbalance is checked." },
    KeySpec { name: "offsets.topic.replication.factor", default: "3", doc: "Replication factor of __consumer_offsets (capped at the brokers registered when it is created)." },
    KeySpec { name: "controlled.shutdown.max.wait.ms", default: "30000", doc: "Longest wait on SIGTERM for leadership to move away before stopping." },
];

/// Configuration errors, each naming the key or source at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown configuration key `{key}` (from {source_name})")]
    UnknownKey { key: String, source_name: String },
    #[error("invalid value `{value}` for `{key}`: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} line {line}: expected KEY=VALUE")]
    BadLine { path: PathBuf, line: usize },
}

/// Raw settings by key, before typing.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Settings {
    /// The embedded defaults.
    pub fn defaults() -> Self {
        let values = KEYS
            .iter()
            .map(|k| (k.name.to_string(), k.default.to_string()))
            .collect();
        Self { values }
    }

    /// Sets a key, refusing unknown ones.
    ///
    /// # Errors
    /// [`ConfigError::UnknownKey`].
    pub fn set(&mut self, key: &str, value: &str, source_name: &str) -> Result<(), ConfigError> {
        if !KEYS.iter().any(|k| k.name == key) {
            return Err(ConfigError::UnknownKey {
                key: key.to_string(),
                source_name: source_name.to_string(),
            });
        }
        self.values
            .insert(key.to_string(), value.trim().to_string());
        Ok(())
    }

    pub fn get(&self, key: &str) -> &str {
        self.values.get(key).map_or("", String::as_str)
    }

    /// Applies a Kafka-style properties file: `key=value` lines, `#` comments.
    ///
    /// # Errors
    /// Unreadable file, malformed line or unknown key.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        self.apply_properties(&text, path)
    }

    fn apply_properties(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (key, value) = line.split_once('=').ok_or(ConfigError::BadLine {
                path: path.to_path_buf(),
                line: i + 1,
            })?;
            self.set(key.trim(), value, &path.display().to_string())?;
        }
        Ok(())
    }

    /// Applies `TOKAFKA_<KEY>` variables: the key upper-cased with dots as underscores
    /// (`TOKAFKA_LOG_RETENTION_MS` sets `log.retention.ms`).
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (name, value) in vars {
            let Some(suffix) = name.strip_prefix("TOKAFKA_") else {
                continue;
            };
            if let Some(spec) = KEYS.iter().find(|k| env_name(k.name) == suffix) {
                self.values
                    .insert(spec.name.to_string(), value.trim().to_string());
            }
        }
    }
}

/// The environment-variable suffix of a key.
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

/// The typed broker configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub data_dir: PathBuf,
    pub listen: String,
    pub advertised_host: String,
    pub advertised_port: i32,
    pub http_listen: String,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics: bool,
    pub min_insync_replicas: i32,
    pub log_defaults: LogConfig,
    pub cleanup_policy: String,
    pub retention_check_interval_ms: u64,
    pub socket_request_max_bytes: usize,
    pub connections_max_idle_ms: u64,
    pub max_connections: usize,
    pub queued_max_requests: usize,
    pub fetch_max_bytes: usize,
    pub producer_snapshot_interval_ms: u64,
    pub shutdown_timeout_ms: u64,
    pub offsets_topic_partitions: i32,
    pub offsets_topic_segment_bytes: u64,
    pub group_limits: crate::group::membership::GroupLimits,
    pub cluster: ClusterConfig,
}

/// Who votes in the controller quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Voters {
    /// This node alone: a one-voter quorum on its controller listener, whose address is known
    /// once it is bound (KRaft's combined mode).
    Alone,
    /// These voters by node id, at the `HOST:PORT` of their controller listeners.
    Listed(BTreeMap<u64, String>),
}

/// How the broker takes part in its cluster, run by a controller quorum.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub voters: Voters,
    /// Where this node's controller listener binds, when it is a voter.
    pub controller_listen: Option<String>,
    pub rack: Option<String>,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub replica_lag_time_max_ms: u64,
    pub replica_fetch_wait_max_ms: u64,
    pub replica_fetch_max_bytes: i32,
    pub unclean_leader_election: bool,
    pub auto_leader_rebalance: bool,
    pub leader_imbalance_percentage: u32,
    pub leader_imbalance_check_interval_ms: u64,
    pub offsets_topic_replication_factor: i16,
    pub controlled_shutdown_max_wait_ms: u64,
    /// The broker's `min.insync.replicas` (topics may override it).
    pub default_min_insync_replicas: usize,
}

impl ClusterConfig {
    /// What this node does when it is the active controller.
    pub fn controller_policy(&self) -> crate::controller::policy::ControllerPolicy {
        use crate::controller::policy::{ControllerPolicy, LeaderRebalance};
        ControllerPolicy {
            unclean_leader_election: self.unclean_leader_election,
            leader_rebalance: self.auto_leader_rebalance.then(|| LeaderRebalance {
                threshold_percent: self.leader_imbalance_percentage,
                check_interval: std::time::Duration::from_millis(
                    self.leader_imbalance_check_interval_ms,
                ),
            }),
        }
    }

    fn from_settings(settings: &Settings, node_id: i32) -> Result<Self, ConfigError> {
        let voters_value = settings.get("controller.quorum.voters");
        let voters = if voters_value.is_empty() {
            Voters::Alone
        } else {
            Voters::Listed(
                crate::controller::quorum::parse_voters(voters_value)
                    .map_err(|reason| invalid("controller.quorum.voters", voters_value, &reason))?,
            )
        };
        let listen = settings.get("controller.listeners");
        let controller_listen = if !listen.is_empty() {
            split_host_port(listen)
                .ok_or_else(|| invalid("controller.listeners", listen, "expected HOST:PORT"))?;
            Some(listen.to_string())
        } else if let Voters::Listed(voters) = &voters {
            let own = u64::try_from(node_id).ok().and_then(|id| voters.get(&id));
            own.map(|address| match split_host_port(address) {
                Some((host, _)) if host.parse::<std::net::IpAddr>().is_ok() => address.clone(),
                // A DNS name of this host (a pod's stable name): bind every interface.
                Some((_, port)) => format!("0.0.0.0:{port}"),
                None => address.clone(),
            })
        } else {
            Some("127.0.0.1:0".to_string())
        };
        let rack = settings.get("broker.rack");
        let config = Self {
            voters,
            controller_listen,
            rack: (!rack.is_empty()).then(|| rack.to_string()),
            session_timeout_ms: parse(settings, "broker.session.timeout.ms")?,
            heartbeat_interval_ms: parse(settings, "broker.heartbeat.interval.ms")?,
            replica_lag_time_max_ms: parse(settings, "replica.lag.time.max.ms")?,
            replica_fetch_wait_max_ms: parse(settings, "replica.fetch.wait.max.ms")?,
            replica_fetch_max_bytes: parse(settings, "replica.fetch.max.bytes")?,
            unclean_leader_election: parse(settings, "unclean.leader.election.enable")?,
            auto_leader_rebalance: parse(settings, "auto.leader.rebalance.enable")?,
            leader_imbalance_percentage: parse(settings, "leader.imbalance.per.broker.percentage")?,
            leader_imbalance_check_interval_ms: parse::<u64>(
                settings,
                "leader.imbalance.check.interval.seconds",
            )?
            .saturating_mul(1000),
            offsets_topic_replication_factor: parse(settings, "offsets.topic.replication.factor")?,
            controlled_shutdown_max_wait_ms: parse(settings, "controlled.shutdown.max.wait.ms")?,
            default_min_insync_replicas: parse(settings, "min.insync.replicas")?,
        };
        if config.heartbeat_interval_ms == 0
            || config.session_timeout_ms <= config.heartbeat_interval_ms
        {
            return Err(invalid(
                "broker.session.timeout.ms",
                settings.get("broker.session.timeout.ms"),
                "must exceed broker.heartbeat.interval.ms, which must be positive",
            ));
        }
        if config.offsets_topic_replication_factor < 1 {
            return Err(invalid(
                "offsets.topic.replication.factor",
                settings.get("offsets.topic.replication.factor"),
                "must be at least 1",
            ));
        }
        Ok(config)
    }

    /// Whether this node runs a controller voter.
    pub fn is_voter(&self, node_id: i32) -> bool {
        match &self.voters {
            Voters::Alone => true,
            Voters::Listed(voters) => {
                u64::try_from(node_id).is_ok_and(|id| voters.contains_key(&id))
            }
        }
    }
}

fn parse<T: std::str::FromStr>(settings: &Settings, key: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let value = settings.get(key);
    value.parse::<T>().map_err(|e| ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: e.to_string(),
    })
}

fn invalid(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// `-1` (or any negative) means "none".
fn optional_i64(settings: &Settings, key: &str) -> Result<Option<i64>, ConfigError> {
    let v: i64 = parse(settings, key)?;
    Ok((v >= 0).then_some(v))
}

/// Splits `HOST:PORT` (IPv6 hosts in brackets).
pub fn split_host_port(value: &str) -> Option<(String, u16)> {
    let (host, port) = value.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port))
}

impl BrokerConfig {
    /// Types and checks the settings.
    ///
    /// # Errors
    /// The first invalid value.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let listen = settings.get("listeners").to_string();
        let (listen_host, listen_port) = split_host_port(&listen)
            .ok_or_else(|| invalid("listeners", &listen, "expected HOST:PORT"))?;
        let advertised = settings.get("advertised.listeners");
        let (advertised_host, advertised_port) = if advertised.is_empty() {
            let host = if listen_host.is_empty() || listen_host == "0.0.0.0" || listen_host == "::"
            {
                "127.0.0.1".to_string()
            } else {
                listen_host
            };
            (host, listen_port)
        } else {
            split_host_port(advertised)
                .ok_or_else(|| invalid("advertised.listeners", advertised, "expected HOST:PORT"))?
        };
        let http_listen = settings.get("http.listeners").to_string();
        split_host_port(&http_listen)
            .ok_or_else(|| invalid("http.listeners", &http_listen, "expected HOST:PORT"))?;

        let flush_messages = optional_i64(settings, "log.flush.interval.messages")?;
        let log_defaults = LogConfig {
            segment_bytes: parse(settings, "log.segment.bytes")?,
            segment_ms: parse(settings, "log.roll.ms")?,
            segment_index_bytes: parse(settings, "log.index.size.max.bytes")?,
            index_interval_bytes: parse(settings, "log.index.interval.bytes")?,
            retention_ms: optional_i64(settings, "log.retention.ms")?,
            retention_bytes: optional_i64(settings, "log.retention.bytes")?.map(|v| v as u64),
            max_message_bytes: parse(settings, "message.max.bytes")?,
            flush: FlushPolicy {
                every_records: flush_messages.map(|v| v.max(1) as u64),
                every_ms: optional_i64(settings, "log.flush.interval.ms")?,
            },
        };
        log_defaults
            .validate()
            .map_err(|e| invalid("log.*", "", &e.to_string()))?;
        let cleanup_policy = settings.get("log.cleanup.policy").to_string();
        if !matches!(
            cleanup_policy.as_str(),
            "delete" | "compact" | "compact,delete" | "delete,compact"
        ) {
            return Err(invalid(
                "log.cleanup.policy",
                &cleanup_policy,
                "expected delete and/or compact",
            ));
        }
        let num_partitions: i32 = parse(settings, "num.partitions")?;
        if num_partitions < 1 {
            return Err(invalid(
                "num.partitions",
                settings.get("num.partitions"),
                "must be at least 1",
            ));
        }
        let config = Self {
            node_id: parse(settings, "node.id")?,
            data_dir: PathBuf::from(settings.get("log.dirs")),
            listen,
            advertised_host,
            advertised_port: i32::from(advertised_port),
            http_listen,
            num_partitions,
            default_replication_factor: parse(settings, "default.replication.factor")?,
            auto_create_topics: parse(settings, "auto.create.topics.enable")?,
            min_insync_replicas: parse(settings, "min.insync.replicas")?,
            log_defaults,
            cleanup_policy,
            retention_check_interval_ms: parse(settings, "log.retention.check.interval.ms")?,
            socket_request_max_bytes: parse(settings, "socket.request.max.bytes")?,
            connections_max_idle_ms: parse(settings, "connections.max.idle.ms")?,
            max_connections: parse(settings, "max.connections")?,
            queued_max_requests: parse(settings, "queued.max.requests")?,
            fetch_max_bytes: parse(settings, "fetch.max.bytes")?,
            producer_snapshot_interval_ms: parse(settings, "producer.state.snapshot.interval.ms")?,
            shutdown_timeout_ms: parse(settings, "shutdown.timeout.ms")?,
            offsets_topic_partitions: parse(settings, "offsets.topic.num.partitions")?,
            offsets_topic_segment_bytes: parse(settings, "offsets.topic.segment.bytes")?,
            group_limits: crate::group::membership::GroupLimits {
                min_session_timeout_ms: parse(settings, "group.min.session.timeout.ms")?,
                max_session_timeout_ms: parse(settings, "group.max.session.timeout.ms")?,
                initial_rebalance_delay_ms: parse(settings, "group.initial.rebalance.delay.ms")?,
                max_members: parse(settings, "group.max.size")?,
            },
            cluster: ClusterConfig::from_settings(settings, parse(settings, "node.id")?)?,
        };
        if config.offsets_topic_partitions < 1 {
            return Err(invalid(
                "offsets.topic.num.partitions",
                "0",
                "must be at least 1",
            ));
        }
        if config.queued_max_requests == 0 || config.max_connections == 0 {
            return Err(invalid(
                "queued.max.requests/max.connections",
                "0",
                "must be at least 1",
            ));
        }
        Ok(config)
    }

    /// A configuration for tests and tools: defaults with the given data directory and an
    /// ephemeral listener.
    pub fn for_tests(data_dir: &Path) -> Self {
        let mut settings = Settings::defaults();
        settings
            .values
            .insert("log.dirs".into(), data_dir.display().to_string());
        settings
            .values
            .insert("listeners".into(), "127.0.0.1:0".into());
        settings
            .values
            .insert("http.listeners".into(), "127.0.0.1:0".into());
        Self::from_settings(&settings).expect("the embedded defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_settings_parse_and_bad_ones_are_refused() {
        let mut settings = Settings::defaults();
        settings
            .set("node.id", "2", "test")
            .and_then(|()| {
                settings.set(
                    "controller.quorum.voters",
                    "1@127.0.0.1:19192,2@127.0.0.2:19193,3@broker-2.brokers:19194",
                    "test",
                )
            })
            .expect("known keys");
        let config = BrokerConfig::from_settings(&settings).expect("valid");
        let cluster = config.cluster;
        assert!(matches!(&cluster.voters, Voters::Listed(v) if v.len() == 3));
        assert!(cluster.is_voter(2) && !cluster.is_voter(4));
        assert_eq!(
            cluster.controller_listen.as_deref(),
            Some("127.0.0.2:19193")
        );
        settings.set("node.id", "3", "test").expect("known key");
        let config = BrokerConfig::from_settings(&settings).expect("valid");
        assert_eq!(
            config.cluster.controller_listen.as_deref(),
            Some("0.0.0.0:19194"),
            "a DNS voter name binds every interface"
        );
        for (key, value) in [
            ("controller.quorum.voters", "1@nowhere"),
            ("controller.quorum.voters", "1@h:1,1@h:2"),
            ("broker.session.timeout.ms", "1000"),
            ("offsets.topic.replication.factor", "0"),
        ] {
            let mut bad = settings.clone();
            bad.set(key, value, "test").expect("known key");
            assert!(BrokerConfig::from_settings(&bad).is_err(), "{key}={value}");
        }
    }

    #[test]
    fn defaults_give_a_single_local_node() {
        let config = BrokerConfig::from_settings(&Settings::defaults()).expect("defaults valid");
        assert_eq!(config.listen, "0.0.0.0:9092");
        assert_eq!(
            (config.advertised_host.as_str(), config.advertised_port),
            ("127.0.0.1", 9092)
        );
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert!(config.auto_create_topics);
        assert_eq!(config.cluster.voters, Voters::Alone, "a one-voter quorum");
        assert!(config.cluster.is_voter(config.node_id));
        assert_eq!(
            config.cluster.controller_listen.as_deref(),
            Some("127.0.0.1:0"),
            "on loopback, where nothing else needs to reach it"
        );
    }

    #[test]
    fn layers_apply_in_order_file_then_env() {
        let mut settings = Settings::defaults();
        settings
            .apply_properties(
                "# comment\nnum.partitions=3\nlog.retention.ms = 1000\n",
                Path::new("f"),
            )
            .expect("file");
        settings.apply_env([
            ("TOKAFKA_NUM_PARTITIONS".to_string(), "6".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ]);
        let config = BrokerConfig::from_settings(&settings).expect("valid");
        assert_eq!(config.num_partitions, 6);
        assert_eq!(config.log_defaults.retention_ms, Some(1000));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let mut settings = Settings::defaults();
        let err = settings
            .apply_properties("num.partitons=3\n", Path::new("f"))
            .unwrap_err();
        assert!(err.to_string().contains("num.partitons"), "{err}");
        settings
            .set("num.partitions", "zero", "test")
            .expect("known key");
        let err = BrokerConfig::from_settings(&settings).unwrap_err();
        assert!(err.to_string().contains("num.partitions"), "{err}");
        let err = Settings::defaults()
            .apply_properties("just text\n", Path::new("f"))
            .unwrap_err();
        assert!(matches!(err, ConfigError::BadLine { line: 1, .. }));
    }

    #[test]
    fn advertised_listener_defaults_to_loopback_for_wildcard_binds() {
        let mut settings = Settings::defaults();
        settings
            .set("listeners", "10.1.2.3:9000", "test")
            .expect("set");
        let config = BrokerConfig::from_settings(&settings).expect("valid");
        assert_eq!(
            (config.advertised_host.as_str(), config.advertised_port),
            ("10.1.2.3", 9000)
        );
        assert_eq!(
            split_host_port("[::1]:9092"),
            Some(("::1".to_string(), 9092))
        );
    }
}
