//! Topic-level configuration: the keys a topic may override, their validation, and how the
//! overrides combine with the broker defaults into a partition's [`LogConfig`].

use std::collections::BTreeMap;

use tokafka_contract::config::{
    BATCH_HEADER_BYTES, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_INDEX_BYTES_MIN,
};

use crate::config::BrokerConfig;
use crate::log::{FlushPolicy, LogConfig};

/// Topic config keys and the broker key that provides each default.
pub const TOPIC_KEYS: &[(&str, &str)] = &[
    ("cleanup.policy", "log.cleanup.policy"),
    ("retention.ms", "log.retention.ms"),
    ("retention.bytes", "log.retention.bytes"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.ms", "log.roll.ms"),
    ("segment.index.bytes", "log.index.size.max.bytes"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("max.message.bytes", "message.max.bytes"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
];

/// A refused topic config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value `{value}` for topic config `{key}`: {reason}")]
pub struct TopicConfigError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

fn error(key: &str, value: &str, reason: &str) -> TopicConfigError {
    TopicConfigError {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// Checks one topic config key and value.
///
/// # Errors
/// Unknown key or a value out of range.
pub fn validate_entry(key: &str, value: &str) -> Result<(), TopicConfigError> {
    let number = || {
        value
            .trim()
            .parse::<i64>()
            .map_err(|_| error(key, value, "not a number"))
    };
    match key {
        "cleanup.policy" => {
            let ok = !value.is_empty()
                && value
                    .split(',')
                    .all(|p| matches!(p.trim(), "delete" | "compact"));
            if !ok {
                return Err(error(key, value, "expected delete and/or compact"));
            }
        }
        "retention.ms" | "retention.bytes" | "flush.messages" | "flush.ms" => {
            if number()? < -1 {
                return Err(error(key, value, "must be -1 or at least 0"));
            }
        }
        "segment.bytes" => {
            let v = number()?;
            if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&v) {
                let reason = format!("must be between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}");
                return Err(error(key, value, &reason));
            }
        }
        "segment.ms" | "index.interval.bytes" => {
            if number()? < 1 {
                return Err(error(key, value, "must be at least 1"));
            }
        }
        "segment.index.bytes" => {
            if number()? < SEGMENT_INDEX_BYTES_MIN {
                let reason = format!("must be at least {SEGMENT_INDEX_BYTES_MIN}");
                return Err(error(key, value, &reason));
            }
        }
        "max.message.bytes" => {
            if number()? < BATCH_HEADER_BYTES {
                let reason = format!("must be at least {BATCH_HEADER_BYTES}");
                return Err(error(key, value, &reason));
            }
        }
        "min.insync.replicas" => {
            if number()? < 1 {
                return Err(error(key, value, "must be at least 1"));
            }
        }
        _ => return Err(error(key, value, "unknown topic config")),
    }
    Ok(())
}

/// The effective value of every topic key: the override if present, else the broker default.
pub fn effective(
    overrides: &BTreeMap<String, String>,
    broker: &BrokerConfig,
) -> Vec<(&'static str, String, bool)> {
    TOPIC_KEYS
        .iter()
        .map(|(key, _)| match overrides.get(*key) {
            Some(v) => (*key, v.clone(), false),
            None => (*key, broker_default(key, broker), true),
        })
        .collect()
}

fn opt_to_string(v: Option<i64>) -> String {
    v.map_or("-1".to_string(), |v| v.to_string())
}

/// The broker-level default of a topic key, as a string.
pub fn broker_default(key: &str, broker: &BrokerConfig) -> String {
    let log = &broker.log_defaults;
    match key {
        "cleanup.policy" => broker.cleanup_policy.clone(),
        "retention.ms" => opt_to_string(log.retention_ms),
        "retention.bytes" => opt_to_string(log.retention_bytes.map(|v| v as i64)),
        "segment.bytes" => log.segment_bytes.to_string(),
        "segment.ms" => log.segment_ms.to_string(),
        "segment.index.bytes" => log.segment_index_bytes.to_string(),
        "index.interval.bytes" => log.index_interval_bytes.to_string(),
        "max.message.bytes" => log.max_message_bytes.to_string(),
        "min.insync.replicas" => broker.min_insync_replicas.to_string(),
        "flush.messages" => opt_to_string(log.flush.every_records.map(|v| v as i64)),
        "flush.ms" => opt_to_string(log.flush.every_ms),
        _ => String::new(),
    }
}

/// The partition log configuration of a topic with `overrides` (already validated).
pub fn log_config(overrides: &BTreeMap<String, String>, broker: &BrokerConfig) -> LogConfig {
    let mut config = broker.log_defaults.clone();
    let num = |key: &str| {
        overrides
            .get(key)
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    let optional = |v: i64| (v >= 0).then_some(v);
    if let Some(v) = num("retention.ms") {
        config.retention_ms = optional(v);
    }
    if let Some(v) = num("retention.bytes") {
        config.retention_bytes = optional(v).map(|v| v as u64);
    }
    if let Some(v) = num("segment.bytes") {
        config.segment_bytes = v as u64;
    }
    if let Some(v) = num("segment.ms") {
        config.segment_ms = v;
    }
    if let Some(v) = num("segment.index.bytes") {
        config.segment_index_bytes = v as usize;
    }
    if let Some(v) = num("index.interval.bytes") {
        config.index_interval_bytes = v as u64;
    }
    if let Some(v) = num("max.message.bytes") {
        config.max_message_bytes = v as usize;
    }
    // Time and size retention delete whole segments; a topic whose policy is only `compact`
    // keeps its records until compaction supersedes them (as in Kafka).
    let policy = overrides
        .get("cleanup.policy")
        .map_or(broker.cleanup_policy.as_str(), String::as_str);
    if !policy.split(',').any(|p| p.trim() == "delete") {
        config.retention_ms = None;
        config.retention_bytes = None;
    }
    let every_records = num("flush.messages").map_or(config.flush.every_records, |v| {
        optional(v).map(|v| v.max(1) as u64)
    });
    let every_ms = num("flush.ms").map_or(config.flush.every_ms, optional);
    config.flush = FlushPolicy {
        every_records,
        every_ms,
    };
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_broker_defaults() {
        let broker = BrokerConfig::for_tests(std::path::Path::new("/tmp/x"));
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "-1".to_string());
        overrides.insert("segment.bytes".to_string(), "1000".to_string());
        overrides.insert("flush.messages".to_string(), "1".to_string());
        let config = log_config(&overrides, &broker);
        assert_eq!(config.retention_ms, None);
        assert_eq!(config.segment_bytes, 1000);
        assert_eq!(config.flush.every_records, Some(1));
        assert_eq!(
            config.max_message_bytes,
            broker.log_defaults.max_message_bytes
        );
        let all = effective(&overrides, &broker);
        assert!(all.contains(&("segment.bytes", "1000".to_string(), false)));
        assert!(all
            .iter()
            .any(|(k, _, default)| *k == "cleanup.policy" && *default));
    }

    #[test]
    fn invalid_values_are_refused() {
        assert!(validate_entry("retention.ms", "1000").is_ok());
        assert!(validate_entry("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_entry("cleanup.policy", "shred").is_err());
        assert!(validate_entry("segment.bytes", "10").is_err());
        assert!(validate_entry("retention.ms", "soon").is_err());
        assert!(validate_entry("no.such.key", "1").is_err());
    }

    #[test]
    fn retention_applies_only_to_topics_whose_policy_deletes() {
        let dir = std::path::Path::new("/nonexistent");
        let mut broker = BrokerConfig::for_tests(dir);
        broker.log_defaults.retention_ms = Some(1_000);
        broker.log_defaults.retention_bytes = Some(4_096);
        let with_policy = |policy: &str| {
            let mut overrides = BTreeMap::new();
            overrides.insert("cleanup.policy".to_string(), policy.to_string());
            let config = log_config(&overrides, &broker);
            (config.retention_ms, config.retention_bytes)
        };
        assert_eq!(with_policy("compact"), (None, None));
        assert_eq!(with_policy("compact,delete"), (Some(1_000), Some(4_096)));
        assert_eq!(with_policy("delete"), (Some(1_000), Some(4_096)));
        // the broker default policy applies when the topic sets none
        broker.cleanup_policy = "compact".into();
        assert_eq!(log_config(&BTreeMap::new(), &broker).retention_ms, None);
    }
}
