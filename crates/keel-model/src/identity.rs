//! What a name or address reaches, whatever its spelling: the one resolution every rights
//! decision about propagation uses (claims of hosts and destinations, bundles), so that rights are
//! decided on what a name reaches — never on how it is spelled.
//!
//! An address is read as glibc and OpenSSH read it (`inet_aton`: `127.1`, `2130706433`,
//! `0x7f.1`, `0300.0250.1.0376`, `192.168.510`; IPv6, IPv4-mapped and IPv4-compatible forms as
//! their IPv4 address) and written one way: the dotted quad. Names that resolve to the host
//! itself (`localhost`, `*.localhost`, `ip6-localhost`, `ip6-loopback`, `localhost6`…) are
//! loopback, whatever DNS would say.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 address as glibc's `inet_aton` reads it: one to four parts, the last one filling the
/// bytes left (`a`, `a.b`, `a.b.c`, `a.b.c.d`), each decimal, octal (a leading `0`) or
/// hexadecimal (`0x`).
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let numbers = parts.iter().map(|p| part(p)).collect::<Option<Vec<u64>>>()?;
    let (last, head) = numbers.split_last()?;
    if head.iter().any(|h| *h > 0xff) {
        return None;
    }
    let room = 8 * (4 - u32::try_from(head.len()).ok()?);
    if *last >= 1u64 << room {
        return None;
    }
    let mut value = *last;
    for (i, h) in head.iter().enumerate() {
        value |= h << (24 - 8 * i);
    }
    Some(Ipv4Addr::from(u32::try_from(value).ok()?))
}

/// One part of an `inet_aton` address: decimal, octal (`017`) or hexadecimal (`0x1f`).
fn part(p: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() || digits.len() > 11 || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// An address in any spelling glibc or OpenSSH accept, `[brackets]` and an IPv6 `%scope` left out;
/// an IPv6 address holding an IPv4 one (mapped or compatible) as that IPv4 address.
pub fn parse_address(s: &str) -> Option<IpAddr> {
    let s = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    if let Some(v4) = inet_aton(s) {
        return Some(IpAddr::V4(v4));
    }
    let v6: Ipv6Addr = s.split('%').next()?.parse().ok()?;
    Some(match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        // `::a.b.c.d` (IPv4-compatible), but not `::` or `::1`.
        None if v6.segments()[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() => {
            IpAddr::V4(v6.to_ipv4().unwrap_or(Ipv4Addr::UNSPECIFIED))
        }
        None => IpAddr::V6(v6),
    })
}

/// What reaching an address means for keel: the host itself, or nowhere in particular.
pub fn is_self_address(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

/// Names every host resolves to itself (its /etc/hosts), whatever DNS says.
pub fn is_self_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let first = name.split('.').next().unwrap_or_default();
    first.starts_with("localhost") || first.starts_with("ip6-") || name.ends_with(".localhost")
}

/// The one spelling of a host name or address: lower case, no trailing dot, an address as
/// [`parse_address`] reads it and written back canonically (`127.1` → `127.0.0.1`).
pub fn canonical_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    match parse_address(&host) {
        Some(ip) => ip.to_string(),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The spellings of issue 31's review, each as glibc reads it.
    #[test]
    fn every_spelling_glibc_accepts_is_the_address_it_means() {
        for (spelling, want) in [
            ("127.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0", "0.0.0.0"),
            ("3232236030", "192.168.1.254"),
            ("192.168.510", "192.168.1.254"),
            ("0300.0250.1.0376", "192.168.1.254"),
            ("0xc0a801fe", "192.168.1.254"),
            ("::ffff:192.168.1.254", "192.168.1.254"),
            ("::ffff:c0a8:1fe", "192.168.1.254"),
            ("[::ffff:127.0.0.1]", "127.0.0.1"),
            ("::1", "::1"),
            ("0:0:0:0:0:0:0:1", "::1"),
            ("fe80::1%eth0", "fe80::1"),
        ] {
            assert_eq!(canonical_host(spelling), want, "{spelling}");
        }
        for not_an_address in [
            "256.1.1.1",
            "1.2.3.4.5",
            "08",
            "0x",
            "1..2",
            "gw",
            "1.2.3.256",
            "4294967296",
        ] {
            assert!(parse_address(not_an_address).is_none(), "{not_an_address}");
        }
        for name in [
            "localhost",
            "LOCALHOST.",
            "ip6-localhost",
            "ip6-loopback",
            "localhost6.localdomain6",
            "a.localhost",
        ] {
            assert!(is_self_name(name), "{name}");
        }
    }

    proptest! {
        /// Any address, written in any of inet_aton's forms and bases, reads back as itself.
        #[test]
        fn any_spelling_of_an_address_reads_as_it(a in any::<u32>(), form in 1usize..=4, bases in prop::collection::vec(0u8..3, 4)) {
            let ip = Ipv4Addr::from(a);
            let o = ip.octets();
            let parts: Vec<u64> = match form {
                1 => vec![u64::from(a)],
                2 => vec![u64::from(o[0]), u64::from(a & 0xff_ffff)],
                3 => vec![u64::from(o[0]), u64::from(o[1]), u64::from(a & 0xffff)],
                _ => o.iter().map(|b| u64::from(*b)).collect(),
            };
            let spelled: Vec<String> = parts
                .iter()
                .zip(&bases)
                .map(|(p, b)| match b {
                    0 => p.to_string(),
                    1 => format!("0{p:o}"),
                    _ => format!("0x{p:x}"),
                })
                .collect();
            let text = spelled.join(".");
            prop_assert_eq!(inet_aton(&text), Some(ip), "{}", text);
            prop_assert_eq!(canonical_host(&format!("::ffff:{ip}")), ip.to_string());
        }
    }
}
