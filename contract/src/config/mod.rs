//! The broker's configuration as both sides see it: the keys ([`KEYS`]: name, default, doc,
//! value kind, scope), the raw [`Settings`] and their layering (defaults < properties file <
//! `TOKAFKA_<KEY>` environment variables < `--set` and flags), and [`validate`], the one rule
//! set a configuration must pass. The broker types its configuration only after `validate`
//! accepted it; the operator refuses a `BrokerCluster` configuration `validate` refuses.

mod address;
mod keys;
pub mod listeners;
mod rules;
mod settings;

pub use address::split_host_port;
pub use keys::{
    env_name, find, keys_help, Int, KeySpec, Kind, BATCH_HEADER_BYTES, KEYS, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN, SEGMENT_INDEX_BYTES_MIN,
};
pub use rules::{check_value, log_dirs, parse_voters, sasl_mechanisms, validate, SASL_MECHANISMS};
pub use settings::{ConfigError, Settings};
