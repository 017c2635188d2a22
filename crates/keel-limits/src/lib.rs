//! What an outsider can make keel hold, bounded (invariant 12): refusals are logged within a
//! budget ([`refused!`]), events are counted per source address ([`RateLimit`]). No keel
//! dependency: the TFTP and DNS servers and the HTTP server share these.

pub mod duration;
#[doc(hidden)]
pub mod log_limit;

pub use log_limit::LogLimit;

use std::net::IpAddr;

/// An IPv4 address in an IPv6 socket (`::ffff:a.b.c.d`) is that IPv4 address: a source is
/// counted once, however it reached the socket.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// At most `limit` events per minute per address (self-registration while it is open): a
/// misbehaving or hostile machine cannot fill the pools. In memory; bounded.
pub struct RateLimit {
    limit: u32,
    seen: parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, (std::time::Instant, u32)>>,
}

impl RateLimit {
    pub fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            seen: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Counts one event from `ip`; false once it is over the limit for the current minute.
    pub fn allow(&self, ip: std::net::IpAddr) -> bool {
        let minute = std::time::Duration::from_secs(60);
        let mut seen = self.seen.lock();
        if seen.len() > 100_000 {
            seen.retain(|_, (start, _)| start.elapsed() < minute);
        }
        let e = seen.entry(ip).or_insert((std::time::Instant::now(), 0));
        if e.0.elapsed() >= minute {
            *e = (std::time::Instant::now(), 0);
        }
        e.1 += 1;
        e.1 <= self.limit
    }
}

#[cfg(test)]
mod rate_tests {
    #[test]
    fn each_address_has_its_own_budget() {
        let r = crate::RateLimit::per_minute(3);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!((0..3).all(|_| r.allow(a)));
        assert!(!r.allow(a));
        assert!(r.allow(b));
    }
}
