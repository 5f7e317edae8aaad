//! Network addresses in configuration values.

/// Splits `HOST:PORT` (IPv6 hosts in brackets).
pub fn split_host_port(value: &str) -> Option<(String, u16)> {
    let (host, port) = value.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port))
}
