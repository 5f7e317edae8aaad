//! Named listeners with Kafka's keys: `listeners` (`NAME://HOST:PORT,...`, or one bare
//! `HOST:PORT`, which is the listener `PLAINTEXT`), `advertised.listeners`,
//! `listener.security.protocol.map` (`NAME:PROTOCOL,...`) and `inter.broker.listener.name`.
//!
//! Pure parsing: the broker binds what [`listeners`] returns and the operator checks a
//! `BrokerCluster`'s configuration with the same function.

use std::collections::BTreeMap;

use super::address::split_host_port;
use super::settings::Settings;

/// How a listener secures its connections (Kafka's `SecurityProtocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    /// The protocol called `name` (case-insensitive, as Kafka reads it).
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Plaintext,
            Self::Ssl,
            Self::SaslPlaintext,
            Self::SaslSsl,
        ]
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Whether connections are wrapped in TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether a client must authenticate with SASL before anything else.
    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// One listener: where it binds (or is advertised) under its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Upper-case, as Kafka normalises listener names.
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `HOST:PORT`, IPv6 hosts in brackets.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The listener a bare `HOST:PORT` names.
pub const DEFAULT_LISTENER: &str = "PLAINTEXT";

/// The listeners of a `listeners` or `advertised.listeners` value: `NAME://HOST:PORT,...`
/// (an empty host binds every interface), or one bare `HOST:PORT` for the listener
/// `PLAINTEXT`.
///
/// # Errors
/// Why the value is malformed: an item that is neither form, a name given twice.
pub fn parse_endpoints(value: &str) -> Result<Vec<Endpoint>, String> {
    let items: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Err("at least one listener is needed".into());
    }
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(items.len());
    for item in items {
        let (name, address) = match item.split_once("://") {
            Some((name, address)) => (name.to_ascii_uppercase(), address),
            None if !value.contains(',') => (DEFAULT_LISTENER.to_string(), item),
            None => return Err(format!("`{item}`: expected NAME://HOST:PORT")),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "`{item}`: a listener name is letters, digits, _ and -"
            ));
        }
        let (host, port) = if let Some(port) = address.strip_prefix(':') {
            port.parse().ok().map(|port| (String::new(), port))
        } else {
            split_host_port(address)
        }
        .ok_or_else(|| format!("`{item}`: expected NAME://HOST:PORT"))?;
        if endpoints.iter().any(|e| e.name == name) {
            return Err(format!("listener {name} is listed twice"));
        }
        endpoints.push(Endpoint { name, host, port });
    }
    Ok(endpoints)
}

/// The protocols of a `listener.security.protocol.map` value, `NAME:PROTOCOL,...`; empty
/// means Kafka's default, each protocol's own name mapped to it.
///
/// # Errors
/// An item that is not `NAME:PROTOCOL`, an unknown protocol, a name mapped twice.
pub fn parse_protocol_map(value: &str) -> Result<BTreeMap<String, SecurityProtocol>, String> {
    let mut map = BTreeMap::new();
    if value.trim().is_empty() {
        for protocol in [
            SecurityProtocol::Plaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl,
        ] {
            map.insert(protocol.name().to_string(), protocol);
        }
        return Ok(map);
    }
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, protocol) = item
            .split_once(':')
            .ok_or_else(|| format!("`{item}`: expected NAME:PROTOCOL"))?;
        let protocol = SecurityProtocol::parse(protocol.trim()).ok_or_else(|| {
            format!("`{item}`: the protocol is one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")
        })?;
        if map
            .insert(name.trim().to_ascii_uppercase(), protocol)
            .is_some()
        {
            return Err(format!("listener {name} is mapped twice"));
        }
    }
    Ok(map)
}

/// A listener the broker binds, with its protocol and the address clients are given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub bind: Endpoint,
    pub protocol: SecurityProtocol,
    /// Host and port in metadata answers to clients that came in on this listener.
    pub advertised: Endpoint,
}

/// Every listener of the broker, in the order of `listeners`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listeners {
    pub listeners: Vec<Listener>,
    /// The listener other brokers fetch from (`inter.broker.listener.name`; default the
    /// first).
    pub inter_broker: String,
}

impl Listeners {
    /// The listener called `name`.
    pub fn get(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.bind.name == name)
    }

    /// Whether any listener uses TLS.
    pub fn any_tls(&self) -> bool {
        self.listeners.iter().any(|l| l.protocol.uses_tls())
    }

    /// Whether any listener asks for SASL.
    pub fn any_sasl(&self) -> bool {
        self.listeners.iter().any(|l| l.protocol.uses_sasl())
    }
}

/// A host that binds every interface is advertised as the loopback address (a single node on
/// a laptop); any other host as itself.
fn advertisable(host: &str) -> String {
    if host.is_empty() || host == "0.0.0.0" || host == "::" {
        "127.0.0.1".to_string()
    } else {
        host.to_string()
    }
}

/// The broker's listeners from its settings.
///
/// # Errors
/// `(key, reason)`: the key at fault and why (a malformed value, a listener without a
/// protocol, an advertised listener that is not bound, two listeners on one port, an
/// unknown inter-broker listener).
pub fn listeners(settings: &Settings) -> Result<Listeners, (&'static str, String)> {
    let bound = parse_endpoints(settings.get("listeners")).map_err(|e| ("listeners", e))?;
    let advertised_value = settings.get("advertised.listeners");
    let advertised = if advertised_value.trim().is_empty() {
        Vec::new()
    } else {
        parse_endpoints(advertised_value).map_err(|e| ("advertised.listeners", e))?
    };
    let protocols = parse_protocol_map(settings.get("listener.security.protocol.map"))
        .map_err(|e| ("listener.security.protocol.map", e))?;
    for (i, endpoint) in bound.iter().enumerate() {
        if endpoint.port != 0 && bound[..i].iter().any(|e| e.port == endpoint.port) {
            return Err((
                "listeners",
                format!("listeners share port {}", endpoint.port),
            ));
        }
    }
    if let Some(stray) = advertised
        .iter()
        .find(|a| !bound.iter().any(|b| b.name == a.name))
    {
        return Err((
            "advertised.listeners",
            format!("{} is not one of `listeners`", stray.name),
        ));
    }
    let mut listeners = Vec::with_capacity(bound.len());
    for bind in bound {
        let protocol = *protocols.get(&bind.name).ok_or_else(|| {
            (
                "listener.security.protocol.map",
                format!("listener {} has no security protocol", bind.name),
            )
        })?;
        let advertised = advertised
            .iter()
            .find(|a| a.name == bind.name)
            .cloned()
            .unwrap_or_else(|| Endpoint {
                name: bind.name.clone(),
                host: advertisable(&bind.host),
                port: bind.port,
            });
        listeners.push(Listener {
            bind,
            protocol,
            advertised,
        });
    }
    let named = settings
        .get("inter.broker.listener.name")
        .trim()
        .to_ascii_uppercase();
    let inter_broker = if named.is_empty() {
        listeners[0].bind.name.clone()
    } else if listeners.iter().any(|l| l.bind.name == named) {
        named
    } else {
        return Err((
            "inter.broker.listener.name",
            format!("{named} is not one of `listeners`"),
        ));
    };
    Ok(Listeners {
        listeners,
        inter_broker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let mut s = Settings::defaults();
        for (k, v) in pairs {
            s.set(k, v, "test").expect("known key");
        }
        s
    }

    #[test]
    fn a_bare_address_is_the_plaintext_listener() {
        let l = listeners(&settings(&[("listeners", "0.0.0.0:9092")])).expect("valid");
        assert_eq!(l.listeners.len(), 1);
        assert_eq!(l.listeners[0].bind.name, "PLAINTEXT");
        assert_eq!(l.listeners[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(l.listeners[0].advertised.address(), "127.0.0.1:9092");
        assert_eq!(l.inter_broker, "PLAINTEXT");
    }

    #[test]
    fn named_listeners_map_to_protocols_and_advertised_addresses() {
        let l = listeners(&settings(&[
            ("listeners", "internal://:9093, EXTERNAL://0.0.0.0:9092"),
            ("advertised.listeners", "EXTERNAL://kafka.example.com:443"),
            (
                "listener.security.protocol.map",
                "INTERNAL:SSL,EXTERNAL:SASL_SSL",
            ),
            ("inter.broker.listener.name", "INTERNAL"),
        ]))
        .expect("valid");
        let internal = l.get("INTERNAL").expect("internal");
        assert_eq!(internal.protocol, SecurityProtocol::Ssl);
        assert_eq!(internal.bind.host, "");
        assert_eq!(internal.advertised.address(), "127.0.0.1:9093");
        let external = l.get("EXTERNAL").expect("external");
        assert_eq!(external.protocol, SecurityProtocol::SaslSsl);
        assert_eq!(external.advertised.address(), "kafka.example.com:443");
        assert_eq!(l.inter_broker, "INTERNAL");
        assert!(l.any_tls() && l.any_sasl());
    }

    #[test]
    fn inconsistent_listeners_are_refused_naming_the_key() {
        for (pairs, key, reason) in [
            (
                vec![("listeners", "A://:1,A://:2")],
                "listeners",
                "listed twice",
            ),
            (
                vec![("listeners", "PLAINTEXT://:1,SSL://:1")],
                "listeners",
                "share port 1",
            ),
            (
                vec![("listeners", "a:1,b:2")],
                "listeners",
                "expected NAME://HOST:PORT",
            ),
            (
                vec![("listeners", "INTERNAL://:9093")],
                "listener.security.protocol.map",
                "no security protocol",
            ),
            (
                vec![("listener.security.protocol.map", "PLAINTEXT:TLS")],
                "listener.security.protocol.map",
                "the protocol is one of",
            ),
            (
                vec![("advertised.listeners", "SSL://h:1")],
                "advertised.listeners",
                "not one of `listeners`",
            ),
            (
                vec![("inter.broker.listener.name", "SSL")],
                "inter.broker.listener.name",
                "not one of `listeners`",
            ),
            (
                vec![("listeners", "PLAIN TEXT://:1")],
                "listeners",
                "letters, digits",
            ),
        ] {
            let (got_key, got_reason) = listeners(&settings(&pairs)).expect_err("refused");
            assert_eq!(got_key, key, "{pairs:?}");
            assert!(got_reason.contains(reason), "{pairs:?}: {got_reason}");
        }
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets_in_addresses() {
        let l = listeners(&settings(&[("listeners", "SSL://[::1]:9094")])).expect("valid");
        assert_eq!(l.listeners[0].bind.address(), "[::1]:9094");
    }
}
