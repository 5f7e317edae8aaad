//! Pod addresses: each pod gets its own loopback address from 127.1.0.0/16.
//!
//! All of 127.0.0.0/8 routes to the loopback interface on Linux, so a process can bind
//! `127.1.0.7:9092` while another binds `127.1.0.8:9092`: pods can listen on the same port as
//! long as they bind their own address (`status.podIP`), not 0.0.0.0.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The lowest free address of 127.1.0.1–127.1.255.254 (skipping .0 and .255 octets), if any.
pub fn allocate(used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    (0u8..=255)
        .flat_map(|third| (1u8..=254).map(move |fourth| Ipv4Addr::new(127, 1, third, fourth)))
        .find(|ip| !used.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_address() {
        let mut used = BTreeSet::new();
        assert_eq!(allocate(&used), Some(Ipv4Addr::new(127, 1, 0, 1)));
        used.insert(Ipv4Addr::new(127, 1, 0, 1));
        used.insert(Ipv4Addr::new(127, 1, 0, 3));
        assert_eq!(allocate(&used), Some(Ipv4Addr::new(127, 1, 0, 2)));
    }

    #[test]
    fn skips_broadcast_like_octets() {
        let used: BTreeSet<_> = (1..=254).map(|i| Ipv4Addr::new(127, 1, 0, i)).collect();
        assert_eq!(allocate(&used), Some(Ipv4Addr::new(127, 1, 1, 1)));
    }
}
