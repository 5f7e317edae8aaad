//! The broker's typed configuration, read from raw [`Settings`].
//!
//! The keys, their defaults, the layering of settings (defaults < config file <
//! `TOKAFKA_<KEY>` environment variables < command-line flags) and the validation of every
//! value live in the contract crate ([`tokafka_contract::config`]), which the operator shares:
//! [`BrokerConfig::from_settings`] runs that validation first, so the operator and the broker
//! cannot disagree about what a valid configuration is. This module only types what passed.

use std::path::{Path, PathBuf};

pub use tokafka_contract::config::{
    env_name, keys_help, split_host_port, validate, ConfigError, KeySpec, Settings, KEYS,
};

pub use tokafka_contract::config::listeners::{Endpoint, Listener, Listeners, SecurityProtocol};

use crate::log::{FlushPolicy, LogConfig};
use crate::security::principal::PrincipalMapper;
use crate::security::tls::{ClientAuth, TlsSettings};

/// TLS and SASL settings shared by the listeners that use them.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Set when a listener uses TLS.
    pub tls: Option<TlsSettings>,
    pub principal_mapper: PrincipalMapper,
    /// Upper-case SASL mechanism names offered, in the configured order.
    pub sasl_mechanisms: Vec<String>,
    /// 0: sessions never expire.
    pub connections_max_reauth_ms: i64,
    pub failed_authentication_delay_ms: u64,
}

impl SecurityConfig {
    fn from_settings(settings: &Settings, listeners: &Listeners) -> Result<Self, ConfigError> {
        let mapping = settings.get("ssl.principal.mapping.rules");
        let principal_mapper = PrincipalMapper::parse(mapping)
            .map_err(|e| invalid("ssl.principal.mapping.rules", mapping, &e.to_string()))?;
        let versions = settings.get("ssl.enabled.protocols");
        let tls = listeners.any_tls().then(|| {
            let truststore = settings.get("ssl.truststore.location").trim();
            TlsSettings {
                keystore: PathBuf::from(settings.get("ssl.keystore.location").trim()),
                truststore: (!truststore.is_empty()).then(|| PathBuf::from(truststore)),
                client_auth: ClientAuth::parse(settings.get("ssl.client.auth")),
                tls12: versions.contains("TLSv1.2"),
                tls13: versions.contains("TLSv1.3"),
                reload_interval: std::time::Duration::from_millis(
                    settings
                        .get("ssl.reload.interval.ms")
                        .parse()
                        .unwrap_or(5000),
                ),
            }
        });
        let mechanisms = settings.get("sasl.enabled.mechanisms");
        Ok(Self {
            tls,
            principal_mapper,
            sasl_mechanisms: tokafka_contract::config::sasl_mechanisms(mechanisms)
                .map_err(|e| invalid("sasl.enabled.mechanisms", mechanisms, &e))?,
            connections_max_reauth_ms: parse(settings, "connections.max.reauth.ms")?,
            failed_authentication_delay_ms: parse(
                settings,
                "connection.failed.authentication.delay.ms",
            )?,
        })
    }
}

/// The typed broker configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// The first of `log_dirs`: it also holds the broker's identity, replica catalog and
    /// controller log.
    pub data_dir: PathBuf,
    /// Every log directory (`log.dirs`), in order; never empty.
    pub log_dirs: Vec<PathBuf>,
    /// The Kafka listeners, in the order of `listeners`; never empty.
    pub listeners: Listeners,
    /// The inter-broker listener's advertised address: what other brokers replicate from.
    pub advertised_host: String,
    pub advertised_port: i32,
    pub security: SecurityConfig,
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
    Listed(std::collections::BTreeMap<u64, String>),
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
                tokafka_contract::config::parse_voters(voters_value)
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
            // A node alone: only this process talks to its voter.
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

impl BrokerConfig {
    /// Checks the settings with the contract's [`validate`], then types them.
    ///
    /// # Errors
    /// The first invalid value (typing what `validate` accepted does not fail; its errors are
    /// a backstop).
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        validate(settings)?;
        let listeners = tokafka_contract::config::listeners::listeners(settings)
            .map_err(|(key, reason)| invalid(key, settings.get(key), &reason))?;
        let inter_broker = listeners
            .get(&listeners.inter_broker)
            .map(|l| l.advertised.clone())
            .ok_or_else(|| invalid("inter.broker.listener.name", "", "no such listener"))?;
        let security = SecurityConfig::from_settings(settings, &listeners)?;
        let http_listen = settings.get("http.listeners").to_string();

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
        // The log's own invariants; the contract bounds these keys alike (see the test
        // `the_contracts_log_bounds_are_the_logs_own`), so this refuses nothing `validate` let
        // through.
        log_defaults
            .validate()
            .map_err(|e| invalid("log.*", "", &e.to_string()))?;
        let cleanup_policy = settings.get("log.cleanup.policy").to_string();
        let num_partitions: i32 = parse(settings, "num.partitions")?;
        let log_dirs: Vec<PathBuf> = tokafka_contract::config::log_dirs(settings.get("log.dirs"))
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let config = Self {
            node_id: parse(settings, "node.id")?,
            data_dir: log_dirs.first().cloned().unwrap_or_default(),
            log_dirs,
            listeners,
            advertised_host: inter_broker.host,
            advertised_port: i32::from(inter_broker.port),
            security,
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
        Ok(config)
    }

    /// A configuration for tests and tools: defaults with the given data directory and an
    /// ephemeral listener.
    pub fn for_tests(data_dir: &Path) -> Self {
        let mut settings = Settings::defaults();
        for (key, value) in [
            ("log.dirs", data_dir.display().to_string()),
            ("listeners", "127.0.0.1:0".to_string()),
            ("http.listeners", "127.0.0.1:0".to_string()),
        ] {
            settings.set(key, &value, "for_tests").expect("a known key");
        }
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
        let only = &config.listeners.listeners[..];
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].bind.address(), "0.0.0.0:9092");
        assert_eq!(only[0].protocol, SecurityProtocol::Plaintext);
        assert!(config.security.tls.is_none());
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

    #[test]
    fn the_contracts_log_bounds_are_the_logs_own() {
        use crate::log::format::BATCH_HEADER_SIZE;
        // (key, the smallest or largest value the log takes, one past it)
        let edges = [
            ("log.segment.bytes", 14, 13),
            ("log.segment.bytes", u64::from(i32::MAX as u32), 1 << 31),
            ("log.index.size.max.bytes", 16, 15),
            ("log.roll.ms", 1, 0),
            (
                "message.max.bytes",
                BATCH_HEADER_SIZE as u64,
                BATCH_HEADER_SIZE as u64 - 1,
            ),
        ];
        for (key, inside, outside) in edges {
            let mut settings = Settings::defaults();
            settings
                .set(key, &inside.to_string(), "test")
                .expect("known");
            let config = BrokerConfig::from_settings(&settings).expect(key);
            assert!(config.log_defaults.validate().is_ok(), "{key}={inside}");
            settings
                .set(key, &outside.to_string(), "test")
                .expect("known");
            assert!(
                validate(&settings).is_err(),
                "the contract refuses {key}={outside}"
            );
            let log = match key {
                "log.segment.bytes" => LogConfig {
                    segment_bytes: outside,
                    ..config.log_defaults
                },
                "log.index.size.max.bytes" => LogConfig {
                    segment_index_bytes: outside as usize,
                    ..config.log_defaults
                },
                "log.roll.ms" => LogConfig {
                    segment_ms: outside as i64,
                    ..config.log_defaults
                },
                _ => LogConfig {
                    max_message_bytes: outside as usize,
                    ..config.log_defaults
                },
            };
            assert!(log.validate().is_err(), "the log refuses {key}={outside}");
        }
    }
}
