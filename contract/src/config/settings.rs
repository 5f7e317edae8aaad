//! Raw settings by key, layered as defaults < properties file < `TOKAFKA_<KEY>` environment
//! variables < `--set` and flags: each layer overrides the ones before it, and a key the
//! broker does not know is refused (a typo in a config file is an error, not a silently
//! ignored line).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::keys::{env_name, find, KEYS};

/// Configuration errors, each naming the key or the source at fault.
#[derive(Debug)]
pub enum ConfigError {
    UnknownKey {
        key: String,
        source_name: String,
    },
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    BadLine {
        path: PathBuf,
        line: usize,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::UnknownKey { key, source_name } => {
                write!(f, "unknown configuration key `{key}` (from {source_name})")
            }
            ConfigError::InvalidValue { key, value, reason } => {
                write!(f, "invalid value `{value}` for `{key}`: {reason}")
            }
            ConfigError::ReadFile { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::BadLine { path, line } => {
                write!(
                    f,
                    "config file {} line {line}: expected KEY=VALUE",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::ReadFile { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Raw settings by key, before typing. Values are kept trimmed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Settings {
    /// The embedded defaults: the first layer.
    pub fn defaults() -> Self {
        let values = KEYS
            .iter()
            .map(|k| (k.name.to_string(), k.default.to_string()))
            .collect();
        Self { values }
    }

    /// Sets a key, refusing unknown ones; `source_name` says where the value came from.
    ///
    /// # Errors
    /// [`ConfigError::UnknownKey`].
    pub fn set(&mut self, key: &str, value: &str, source_name: &str) -> Result<(), ConfigError> {
        if find(key).is_none() {
            return Err(ConfigError::UnknownKey {
                key: key.to_string(),
                source_name: source_name.to_string(),
            });
        }
        self.values
            .insert(key.to_string(), value.trim().to_string());
        Ok(())
    }

    /// The value of `key`; empty when no layer set it.
    pub fn get(&self, key: &str) -> &str {
        self.values.get(key).map_or("", String::as_str)
    }

    /// Applies a Kafka-style properties file: `key=value` lines, `#` and `!` comments.
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

    /// Applies the text of a properties file read from `path` (named in errors).
    ///
    /// # Errors
    /// A malformed line or an unknown key.
    pub fn apply_properties(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
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
    /// (`TOKAFKA_LOG_RETENTION_MS` sets `log.retention.ms`). Other variables, and
    /// `TOKAFKA_` variables that name no key, are ignored.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_defaults_file_env_then_set() {
        let mut settings = Settings::defaults();
        assert_eq!(settings.get("num.partitions"), "1");
        settings
            .apply_properties(
                "# comment\n! also a comment\nnum.partitions=3\nlog.retention.ms = 1000\nmax.connections=5\n",
                Path::new("f"),
            )
            .expect("file");
        assert_eq!(settings.get("num.partitions"), "3");
        settings.apply_env([
            ("TOKAFKA_NUM_PARTITIONS".to_string(), "6".to_string()),
            ("TOKAFKA_MAX_CONNECTIONS".to_string(), " 7 ".to_string()),
            ("TOKAFKA_NOT_A_KEY".to_string(), "x".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ]);
        assert_eq!(settings.get("num.partitions"), "6");
        assert_eq!(settings.get("max.connections"), "7");
        settings
            .set("num.partitions", " 9", "--set")
            .expect("known key");
        assert_eq!(settings.get("num.partitions"), "9");
        assert_eq!(settings.get("log.retention.ms"), "1000");
        assert_eq!(settings.get("node.id"), "1", "untouched keys keep defaults");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_source() {
        let mut settings = Settings::defaults();
        let err = settings
            .apply_properties("num.partitons=3\n", Path::new("broker.properties"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown configuration key `num.partitons` (from broker.properties)"
        );
        let err = settings.set("no.such.key", "1", "--set").unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { ref key, .. } if key == "no.such.key"));
    }

    #[test]
    fn a_line_without_equals_is_refused_by_number() {
        let err = Settings::defaults()
            .apply_properties("# fine\njust text\n", Path::new("f"))
            .unwrap_err();
        assert!(matches!(err, ConfigError::BadLine { line: 2, .. }));
        assert_eq!(err.to_string(), "config file f line 2: expected KEY=VALUE");
    }

    #[test]
    fn an_unreadable_file_names_its_path() {
        let err = Settings::defaults()
            .apply_file(Path::new("/nonexistent/tokafka/broker.properties"))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read config file /nonexistent/tokafka/broker.properties"),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
