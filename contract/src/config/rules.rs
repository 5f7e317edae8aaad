//! What makes settings valid: each value of its key's [`Kind`], and the rules that tie keys
//! together. The broker runs [`validate`] before it types its configuration, and the operator
//! runs it on a `BrokerCluster`'s configuration: one rule set, so a configuration the operator
//! accepts is one the broker starts with.
//!
//! Every broker reads every key (a single node is a cluster of one), so every key is checked.

use std::collections::BTreeMap;

use super::address::split_host_port;
use super::keys::{Int, Kind, KEYS};
use super::settings::{ConfigError, Settings};

/// A rule over more than one key (or over a key beyond its kind), reported against `key`.
struct Rule {
    key: &'static str,
    /// `Err(reason)` when the settings break the rule.
    check: fn(&Settings) -> Result<(), String>,
}

const RULES: &[Rule] = &[
    Rule {
        key: "broker.session.timeout.ms",
        check: session_outlasts_heartbeats,
    },
    Rule {
        key: "min.insync.replicas",
        check: min_insync_replicas_is_a_count,
    },
    Rule {
        key: "log.dirs",
        check: log_dirs_are_distinct_paths,
    },
];

/// The directories of `log.dirs`, in order: comma-separated, blanks around each trimmed.
pub fn log_dirs(value: &str) -> Vec<&str> {
    value.split(',').map(str::trim).collect()
}

/// Each log directory holds its own replicas: none may be blank or listed twice.
fn log_dirs_are_distinct_paths(settings: &Settings) -> Result<(), String> {
    let dirs = log_dirs(settings.get("log.dirs"));
    if dirs.iter().any(|d| d.is_empty()) {
        return Err("a directory is blank".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    match dirs.iter().find(|d| !seen.insert(d.trim_end_matches('/'))) {
        Some(dir) => Err(format!("{dir} is listed twice")),
        None => Ok(()),
    }
}

/// The SASL mechanisms of a `sasl.enabled.mechanisms` value, upper-cased.
///
/// # Errors
/// An unknown mechanism, or none at all.
pub fn sasl_mechanisms(value: &str) -> Result<Vec<String>, String> {
    let mechanisms: Vec<String> = value
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .filter(|m| !m.is_empty())
        .collect();
    if let Some(unknown) = mechanisms
        .iter()
        .find(|m| !SASL_MECHANISMS.contains(&m.as_str()))
    {
        return Err(format!(
            "{unknown} is not one of {}",
            SASL_MECHANISMS.join(", ")
        ));
    }
    if mechanisms.is_empty() {
        return Err("at least one mechanism is needed".into());
    }
    Ok(mechanisms)
}

/// The SASL mechanisms a broker can offer.
pub const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// A TLS listener needs a key and certificate; a client certificate needs a CA to check it
/// against; SASL listeners need mechanisms.
fn security_is_complete(
    settings: &Settings,
    listeners: &super::listeners::Listeners,
) -> Result<(), (&'static str, String)> {
    sasl_mechanisms(settings.get("sasl.enabled.mechanisms"))
        .map_err(|e| ("sasl.enabled.mechanisms", e))?;
    let versions = settings.get("ssl.enabled.protocols");
    let mut any = false;
    for version in versions.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        if version != "TLSv1.2" && version != "TLSv1.3" {
            return Err((
                "ssl.enabled.protocols",
                format!("{version} is not one of TLSv1.2, TLSv1.3"),
            ));
        }
        any = true;
    }
    if !any {
        return Err(("ssl.enabled.protocols", "no TLS version is enabled".into()));
    }
    let clustered = !settings.get("controller.quorum.voters").trim().is_empty();
    let inter_broker = listeners.get(&listeners.inter_broker).map(|l| l.protocol);
    if clustered && inter_broker != Some(super::listeners::SecurityProtocol::Plaintext) {
        return Err((
            "inter.broker.listener.name",
            "replication runs on a PLAINTEXT listener for now (TLS and SASL between brokers \
             are not implemented yet): name one here"
                .into(),
        ));
    }
    if !listeners.any_tls() {
        return Ok(());
    }
    if settings.get("ssl.keystore.location").trim().is_empty() {
        return Err((
            "ssl.keystore.location",
            "an SSL or SASL_SSL listener needs the broker's key and certificate".into(),
        ));
    }
    if settings.get("ssl.client.auth") != "none"
        && settings.get("ssl.truststore.location").trim().is_empty()
    {
        return Err((
            "ssl.truststore.location",
            "client certificates (ssl.client.auth) need the CA certificates to check them".into(),
        ));
    }
    Ok(())
}

/// A broker is fenced when silent for the session timeout: it must have time for more than
/// one heartbeat.
fn session_outlasts_heartbeats(settings: &Settings) -> Result<(), String> {
    let session = settings.get("broker.session.timeout.ms").parse::<u64>();
    let heartbeat = settings.get("broker.heartbeat.interval.ms").parse::<u64>();
    match (session, heartbeat) {
        (Ok(session), Ok(heartbeat)) if heartbeat == 0 || session <= heartbeat => {
            Err("must exceed broker.heartbeat.interval.ms, which must be positive".into())
        }
        _ => Ok(()),
    }
}

/// The broker counts in-sync replicas against `min.insync.replicas`.
fn min_insync_replicas_is_a_count(settings: &Settings) -> Result<(), String> {
    settings
        .get("min.insync.replicas")
        .parse::<usize>()
        .map(|_| ())
        .map_err(|_| "must not be negative: it counts in-sync replicas".into())
}

/// Checks every value against its key's kind, then every rule between keys.
///
/// # Errors
/// [`ConfigError::InvalidValue`] naming the first key at fault and why.
pub fn validate(settings: &Settings) -> Result<(), ConfigError> {
    for spec in KEYS {
        let value = settings.get(spec.name);
        check_value(spec.kind, value).map_err(|reason| invalid(spec.name, value, reason))?;
    }
    for rule in RULES {
        (rule.check)(settings)
            .map_err(|reason| invalid(rule.key, settings.get(rule.key), reason))?;
    }
    let listeners = super::listeners::listeners(settings)
        .map_err(|(key, reason)| invalid(key, settings.get(key), reason))?;
    security_is_complete(settings, &listeners)
        .map_err(|(key, reason)| invalid(key, settings.get(key), reason))?;
    Ok(())
}

fn invalid(key: &str, value: &str, reason: String) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    }
}

/// Whether `value` is of `kind`; `Err` says why not.
///
/// # Errors
/// The reason, for people.
pub fn check_value(kind: Kind, value: &str) -> Result<(), String> {
    let expected = || format!("expected {}", kind.describe());
    match kind {
        Kind::Text => Ok(()),
        Kind::Bool => value.parse::<bool>().map(|_| ()).map_err(|_| expected()),
        Kind::Int { int, min, max } => {
            let number = parse_int(int, value).map_err(|e| format!("{}: {e}", expected()))?;
            let below = min.is_some_and(|min| number < i128::from(min));
            let above = max.is_some_and(|max| number > i128::from(max));
            if below || above {
                return Err(expected());
            }
            Ok(())
        }
        Kind::HostPort => split_host_port(value).map(|_| ()).ok_or_else(expected),
        Kind::OptionalHostPort if value.is_empty() => Ok(()),
        Kind::OptionalHostPort => split_host_port(value).map(|_| ()).ok_or_else(expected),
        Kind::Voters if value.is_empty() => Ok(()),
        Kind::Voters => parse_voters(value).map(|_| ()),
        Kind::OneOf(words) if words.contains(&value) => Ok(()),
        Kind::OneOf(_) => Err(expected()),
    }
}

/// `value` read as the integer type `int`, widened.
fn parse_int(int: Int, value: &str) -> Result<i128, std::num::ParseIntError> {
    Ok(match int {
        Int::I16 => i128::from(value.parse::<i16>()?),
        Int::I32 => i128::from(value.parse::<i32>()?),
        Int::I64 => i128::from(value.parse::<i64>()?),
        Int::U32 => i128::from(value.parse::<u32>()?),
        Int::U64 => i128::from(value.parse::<u64>()?),
        Int::Usize => value.parse::<usize>()? as i128,
    })
}

/// The controller voters of a `controller.quorum.voters` value, `ID@HOST:PORT,...`: the
/// `HOST:PORT` of each voter's controller listener by node id.
///
/// # Errors
/// Why the value is malformed: an item that is not `ID@HOST:PORT`, an id listed twice, or no
/// voter at all.
pub fn parse_voters(value: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut voters = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, address) = item
            .split_once('@')
            .ok_or_else(|| format!("`{item}`: expected ID@HOST:PORT"))?;
        let id: u64 = id
            .parse()
            .map_err(|_| format!("`{item}`: the id must be a number"))?;
        if split_host_port(address).is_none() {
            return Err(format!("`{item}`: expected ID@HOST:PORT"));
        }
        if voters.insert(id, address.to_string()).is_some() {
            return Err(format!("voter {id} is listed twice"));
        }
    }
    if voters.is_empty() {
        return Err("at least one controller voter is needed".into());
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::keys::find;

    /// The defaults of a broker in a three-voter cluster (every key is checked).
    fn clustered() -> Settings {
        let mut settings = Settings::defaults();
        settings
            .set(
                "controller.quorum.voters",
                "1@127.0.0.1:19192,2@127.0.0.2:19193,3@broker-2.brokers:19194",
                "test",
            )
            .expect("known key");
        settings
    }

    fn with(mut settings: Settings, key: &str, value: &str) -> Settings {
        settings.set(key, value, "test").expect("known key");
        settings
    }

    /// The reason `value` is refused for `key`, in clustered settings.
    fn refusal(key: &str, value: &str) -> String {
        match validate(&with(clustered(), key, value)) {
            Err(error @ ConfigError::InvalidValue { .. }) => error.to_string(),
            Err(other) => panic!("{key}={value}: unexpected {other}"),
            Ok(()) => panic!("{key}={value} was accepted"),
        }
    }

    #[test]
    fn the_key_table_is_sane() {
        let names: BTreeSet<&str> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(names.len(), KEYS.len(), "key names are unique");
        for spec in KEYS {
            assert!(!spec.doc.is_empty(), "{} has a doc", spec.name);
            assert_eq!(spec.name, spec.name.trim().to_ascii_lowercase());
            assert!(
                check_value(spec.kind, spec.default).is_ok(),
                "the default of {} is {}",
                spec.name,
                spec.kind.describe()
            );
            assert_eq!(find(spec.name), Some(spec));
        }
    }

    #[test]
    fn the_defaults_are_valid_alone_and_clustered() {
        validate(&Settings::defaults()).expect("the defaults of a node alone");
        validate(&clustered()).expect("clustered defaults");
    }

    /// A value outside each kind, for the test below.
    fn bad_value(kind: Kind) -> Option<String> {
        match kind {
            Kind::Text => None,
            Kind::Bool => Some("yes".into()),
            Kind::Int { min: Some(min), .. } => Some((min - 1).to_string()),
            Kind::Int { .. } => Some("many".into()),
            Kind::HostPort | Kind::OptionalHostPort => Some("no-port".into()),
            Kind::Voters => Some("1@h:1,1@h:2".into()),
            Kind::OneOf(_) => Some("sometimes".into()),
        }
    }

    #[test]
    fn every_key_refuses_a_value_outside_its_kind_naming_the_key() {
        for spec in KEYS {
            let Some(bad) = bad_value(spec.kind) else {
                continue;
            };
            let message = refusal(spec.name, &bad);
            assert!(
                message.contains(&format!("`{}`", spec.name)),
                "{}: {message}",
                spec.name
            );
            assert!(message.contains(&bad), "{}: {message}", spec.name);
        }
    }

    #[test]
    fn integers_must_fit_the_brokers_type_and_bounds() {
        assert!(refusal("default.replication.factor", "40000").contains("16-bit"));
        assert!(refusal("node.id", "1.5").contains("32-bit"));
        assert!(refusal("log.retention.check.interval.ms", "-1").contains("unsigned"));
        assert!(refusal("log.segment.bytes", "13").contains("from 14 to 2147483647"));
        assert!(refusal("log.segment.bytes", "2147483648").contains("from 14"));
        assert!(refusal("log.index.size.max.bytes", "15").contains("at least 16"));
        assert!(refusal("message.max.bytes", "60").contains("at least 61"));
        assert!(refusal("log.roll.ms", "0").contains("at least 1"));
        for (key, value) in [
            ("log.segment.bytes", "14"),
            ("log.segment.bytes", "2147483647"),
            ("log.retention.ms", "-1"),
            ("num.partitions", "+3"),
        ] {
            validate(&with(clustered(), key, value)).expect(key);
        }
    }

    #[test]
    fn words_and_addresses_are_checked() {
        assert!(refusal("log.cleanup.policy", "compact, delete").contains("one of delete"));
        validate(&with(clustered(), "log.cleanup.policy", "delete,compact")).expect("both");
        assert!(refusal("auto.create.topics.enable", "True").contains("true or false"));
        assert!(refusal("listeners", "").contains("`listeners`"));
        assert!(refusal("http.listeners", "localhost:port").contains("HOST:PORT"));
        validate(&with(clustered(), "advertised.listeners", "")).expect("derived");
        validate(&with(clustered(), "listeners", "[::1]:9092")).expect("IPv6");
    }

    #[test]
    fn malformed_voters_are_refused() {
        for (value, reason) in [
            ("1@nowhere", "`1@nowhere`: expected ID@HOST:PORT"),
            ("one@h:1", "the id must be a number"),
            ("1@h:1,1@h:2", "voter 1 is listed twice"),
            (" , ", "at least one controller voter is needed"),
        ] {
            let message = refusal("controller.quorum.voters", value);
            assert!(message.contains("`controller.quorum.voters`"), "{message}");
            assert!(message.contains(reason), "{message}");
        }
        let voters =
            parse_voters("1@127.0.0.1:19192, 2@127.0.0.1:19193,3@localhost:19194").expect("parse");
        assert_eq!(voters.get(&3).map(String::as_str), Some("localhost:19194"));
        let ipv6 = parse_voters("1@[::1]:19192").expect("an IPv6 voter");
        assert_eq!(ipv6.get(&1).map(String::as_str), Some("[::1]:19192"));
        for bad in ["", "1@", "x@h:1", "1-h:1", "1@h", "1@h:x", "1@h:70000"] {
            assert!(parse_voters(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn log_dirs_must_be_distinct_and_not_blank() {
        for (value, reason) in [
            ("/a,,/b", "blank"),
            ("", "blank"),
            ("/a,/b,/a/", "/a/ is listed twice"),
        ] {
            let message = refusal("log.dirs", value);
            assert!(message.contains("`log.dirs`"), "{message}");
            assert!(message.contains(reason), "{message}");
        }
        validate(&with(clustered(), "log.dirs", "/a, /b")).expect("two directories");
        assert_eq!(log_dirs("/a, /b"), vec!["/a", "/b"]);
    }

    #[test]
    fn tls_and_sasl_settings_must_be_complete() {
        let tls = |pairs: &[(&str, &str)]| {
            let mut s = with(Settings::defaults(), "listeners", "SSL://:9093");
            for (k, v) in pairs {
                s = with(s, k, v);
            }
            validate(&s)
        };
        let refused = |r: Result<(), ConfigError>| r.expect_err("refused").to_string();
        assert!(refused(tls(&[])).contains("ssl.keystore.location"));
        validate(&with(clustered(), "ssl.client.auth", "required")).expect("no TLS listener");
        tls(&[("ssl.keystore.location", "/k.pem")]).expect("server-only TLS");
        assert!(refused(tls(&[
            ("ssl.keystore.location", "/k.pem"),
            ("ssl.client.auth", "required"),
        ]))
        .contains("ssl.truststore.location"));
        assert!(refused(tls(&[
            ("ssl.keystore.location", "/k.pem"),
            ("ssl.enabled.protocols", "TLSv1.1"),
        ]))
        .contains("ssl.enabled.protocols"));
        assert!(refusal("sasl.enabled.mechanisms", "GSSAPI").contains("sasl.enabled.mechanisms"));
        let secured_replication = with(
            with(clustered(), "listeners", "SASL_PLAINTEXT://:9092"),
            "sasl.enabled.mechanisms",
            "PLAIN",
        );
        assert!(refused(validate(&secured_replication)).contains("inter.broker.listener.name"));
        let plaintext_replication = with(
            with(
                clustered(),
                "listeners",
                "INTERNAL://:9093,SASL_PLAINTEXT://:9092",
            ),
            "listener.security.protocol.map",
            "INTERNAL:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        );
        validate(&with(
            plaintext_replication,
            "inter.broker.listener.name",
            "INTERNAL",
        ))
        .expect("replication on the plaintext listener");
        assert!(refusal("sasl.enabled.mechanisms", " , ").contains("at least one"));
        assert_eq!(
            sasl_mechanisms("plain, SCRAM-SHA-512").expect("valid"),
            vec!["PLAIN".to_string(), "SCRAM-SHA-512".to_string()]
        );
    }

    #[test]
    fn the_session_must_outlast_the_heartbeat() {
        let message = refusal("broker.session.timeout.ms", "2000");
        assert!(message.contains("`broker.session.timeout.ms`"), "{message}");
        assert!(
            message.contains("broker.heartbeat.interval.ms"),
            "{message}"
        );
        let message = refusal("broker.heartbeat.interval.ms", "0");
        assert!(
            message.contains("`broker.heartbeat.interval.ms`"),
            "{message}"
        );
        validate(&with(clustered(), "broker.session.timeout.ms", "2001")).expect("longer");
    }

    #[test]
    fn min_insync_replicas_is_a_count() {
        let message = refusal("min.insync.replicas", "-1");
        assert!(message.contains("`min.insync.replicas`"), "{message}");
        assert!(message.contains("counts in-sync replicas"), "{message}");
    }

    #[test]
    fn a_node_alone_checks_every_key_too() {
        for spec in KEYS {
            let Some(bad) = bad_value(spec.kind) else {
                continue;
            };
            assert!(
                validate(&with(Settings::defaults(), spec.name, &bad)).is_err(),
                "{}={bad}",
                spec.name
            );
        }
    }

    #[test]
    fn host_port_splits_at_the_last_colon() {
        assert_eq!(
            split_host_port("[::1]:9092"),
            Some(("::1".to_string(), 9092))
        );
        assert_eq!(split_host_port("h:70000"), None);
        assert_eq!(split_host_port("h"), None);
    }
}
