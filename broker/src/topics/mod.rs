//! Kafka's rules for topics, as pure functions: legal names, partition counts, topic configs
//! ([`config`]) and IncrementalAlterConfigs operations. The controller quorum holds what
//! topics exist; the protocol handlers check requests with these rules before they write to
//! it, so that a bad request changes nothing.

pub mod config;

use std::collections::BTreeMap;

use crate::config::BrokerConfig;
pub use config::TopicConfigError;

/// Longest legal topic name (Kafka's limit).
pub const TOPIC_NAME_MAX_CHARS: usize = 249;
/// Most partitions a topic may have.
pub const PARTITIONS_MAX: i32 = 100_000;

/// Why a topic request is refused.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("invalid topic name `{name}`: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error(transparent)]
    InvalidConfig(#[from] TopicConfigError),
}

/// Checks a topic name against Kafka's rules.
///
/// # Errors
/// [`TopicError::InvalidName`].
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |reason| {
        Err(TopicError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name == "." || name == ".." {
        return invalid("`.` and `..` are not allowed");
    }
    if name.len() > TOPIC_NAME_MAX_CHARS {
        return invalid("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

/// Checks a partition count of a new topic (`-1`: the broker's `num.partitions`); returns the
/// count to use.
///
/// # Errors
/// [`TopicError::InvalidPartitions`].
pub fn partition_count(requested: i32, broker: &BrokerConfig) -> Result<i32, TopicError> {
    let partitions = if requested == -1 {
        broker.num_partitions
    } else {
        requested
    };
    if (1..=PARTITIONS_MAX).contains(&partitions) {
        Ok(partitions)
    } else {
        Err(TopicError::InvalidPartitions(format!(
            "{partitions} (must be between 1 and {PARTITIONS_MAX})"
        )))
    }
}

/// One config change of IncrementalAlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

/// The topic configs after `ops` (all or nothing: the first invalid result refuses them all).
///
/// # Errors
/// [`TopicConfigError`] naming the key: an unknown key, an invalid value, or APPEND/SUBTRACT
/// on a key that is not a list.
pub fn apply_config_ops(
    current: &BTreeMap<String, String>,
    ops: &[ConfigOp],
    broker: &BrokerConfig,
) -> Result<BTreeMap<String, String>, TopicConfigError> {
    let mut configs = current.clone();
    for op in ops {
        match op {
            ConfigOp::Set(key, value) => {
                config::validate_entry(key, value)?;
                configs.insert(key.clone(), value.clone());
            }
            ConfigOp::Delete(key) => {
                config::validate_entry(key, &config::broker_default(key, broker))?;
                configs.remove(key);
            }
            ConfigOp::Append(key, value) | ConfigOp::Subtract(key, value) => {
                if key != "cleanup.policy" {
                    return Err(TopicConfigError {
                        key: key.clone(),
                        value: value.clone(),
                        reason: "APPEND and SUBTRACT apply to list configs only".into(),
                    });
                }
                let current = configs
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| broker.cleanup_policy.clone());
                let mut items: Vec<String> = current
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if matches!(op, ConfigOp::Append(..)) {
                    if !items.contains(value) {
                        items.push(value.clone());
                    }
                } else {
                    items.retain(|i| i != value);
                }
                let joined = items.join(",");
                config::validate_entry(key, &joined)?;
                configs.insert(key.clone(), joined);
            }
        }
    }
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "has space", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partition_counts_default_and_stay_in_range() {
        let broker = BrokerConfig::for_tests(Path::new("d"));
        assert_eq!(
            partition_count(-1, &broker).ok(),
            Some(broker.num_partitions)
        );
        assert_eq!(partition_count(3, &broker).ok(), Some(3));
        assert!(partition_count(0, &broker).is_err());
        assert!(partition_count(PARTITIONS_MAX + 1, &broker).is_err());
    }

    #[test]
    fn config_ops_are_all_or_nothing_and_lists_append() {
        let broker = BrokerConfig::for_tests(Path::new("d"));
        let current = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        let bad = [
            ConfigOp::Set("retention.ms".into(), "5000".into()),
            ConfigOp::Set("bogus".into(), "1".into()),
        ];
        let err = apply_config_ops(&current, &bad, &broker).expect_err("unknown key");
        assert_eq!(err.key, "bogus");
        let ops = [
            ConfigOp::Delete("retention.ms".into()),
            ConfigOp::Append("cleanup.policy".into(), "compact".into()),
        ];
        let after = apply_config_ops(&current, &ops, &broker).expect("valid");
        assert_eq!(after.get("retention.ms"), None);
        assert_eq!(
            after.get("cleanup.policy").map(String::as_str),
            Some("delete,compact")
        );
        let retention = [ConfigOp::Append("retention.ms".into(), "1".into())];
        assert!(apply_config_ops(&current, &retention, &broker).is_err());
    }
}
