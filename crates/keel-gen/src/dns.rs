//! `dns`: BIND zone files for sites that keep BIND — the forward zone, one reverse zone per pool,
//! and a `named.conf` fragment naming them. The SOA serial is the seq of the last machine change,
//! so it grows exactly when the zones' data does (and the files stay byte-identical otherwise).

use std::fmt::Write as _;

use keel_model::service::File;

use keel_model::Hostname;

use crate::check::{self, GenError};
use crate::{file, Input, Options};

fn soa(out: &mut String, opts: &Options, serial: u64) {
    let d = &opts.dns;
    let _ = writeln!(out, "$TTL {}", d.ttl);
    let _ = writeln!(
        out,
        "@ IN SOA {ns}.{zone}. hostmaster.{zone}. ( {serial} 3600 600 86400 {ttl} )",
        ns = d.ns,
        zone = opts.zone,
        serial = serial % u64::from(u32::MAX),
        ttl = d.ttl
    );
    let _ = writeln!(out, "@ IN NS {}.{}.", d.ns, opts.zone);
}

/// `d.c.b.a.in-addr.arpa` of an address.
fn ptr_name(ip: std::net::Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa")
}

/// At most this many names for the unknown machines' range (a /16 of them).
const MAX_DYNAMIC: u32 = 65_536;

/// The addresses of the DHCP range for unknown machines that no machine holds, when the site asks
/// for names for them (`dns.unknown_names`).
fn unknown_addresses(input: &Input<'_>, opts: &Options) -> Vec<std::net::Ipv4Addr> {
    let Some((first, last)) = opts.dhcp.unknown_range.filter(|_| opts.dns.unknown_names) else {
        return Vec::new();
    };
    let used: std::collections::HashSet<std::net::Ipv4Addr> = input.machines.iter().map(|m| m.ip).collect();
    let (first, last) = (u32::from(first), u32::from(last));
    (first..=last.min(first.saturating_add(MAX_DYNAMIC - 1)))
        .map(std::net::Ipv4Addr::from)
        .filter(|ip| !used.contains(ip))
        .collect()
}

/// `dhcp-192-168-250-7`: the name of an address of the unknown machines' range.
pub fn dynamic_name(prefix: &str, ip: std::net::Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{prefix}-{a}-{b}-{c}-{d}")
}

/// The address a `dynamic_name` stands for (`None`: not one of them). Only the canonical
/// spelling (no leading zeros, no sign) counts, so one address has exactly one name.
pub fn dynamic_address(prefix: &str, name: &str) -> Option<std::net::Ipv4Addr> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let octets: Vec<u8> = rest.split('-').map(str::parse).collect::<Result<_, _>>().ok()?;
    let [a, b, c, d] = octets[..] else {
        return None;
    };
    let ip = std::net::Ipv4Addr::new(a, b, c, d);
    (dynamic_name(prefix, ip) == name).then_some(ip)
}

/// The zone files and the named.conf fragment.
pub fn dns(input: &Input<'_>, opts: &Options) -> Result<Vec<File>, GenError> {
    for (name, value) in [
        ("zone", &opts.zone),
        ("dns.ns", &opts.dns.ns),
        ("dns.unknown_prefix", &opts.dns.unknown_prefix),
    ] {
        Hostname::parse(name, value).map_err(|e| GenError::new("named.conf.keel", "site options", name, e.message))?;
    }
    check::option(
        "named.conf.keel",
        "dns.bind_dir",
        &opts.dns.bind_dir,
        &['"', '\\', ';', ' '],
    )?;
    let mut machines = input.machines.clone();
    machines.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    let zone = &opts.zone;
    let mut forward = String::with_capacity(machines.len() * 40 + 256);
    soa(&mut forward, opts, input.serial);
    for m in &machines {
        check::machine_names("zone", m)?;
        for name in input.names_of(m) {
            let _ = writeln!(forward, "{name} IN A {}", m.ip);
        }
    }
    let dynamic = unknown_addresses(input, opts);
    for ip in &dynamic {
        let _ = writeln!(forward, "{} IN A {ip}", dynamic_name(&opts.dns.unknown_prefix, *ip));
    }
    let mut files = vec![file(&format!("db.{zone}"), 0o644, forward)];
    let mut conf = String::from("// Managed by keel (service dns): include this file from named.conf.\n");
    let _ = writeln!(
        conf,
        "zone \"{zone}\" {{ type master; file \"{}/db.{zone}\"; }};",
        opts.dns.bind_dir
    );
    let mut by_ip = machines.clone();
    by_ip.sort_by_key(|m| m.ip);
    for rz in &input.reverse_zones {
        let mut text = String::new();
        soa(&mut text, opts, input.serial);
        let suffix = format!(".{rz}");
        for m in &by_ip {
            let full = ptr_name(m.ip);
            if let Some(rel) = full.strip_suffix(&suffix) {
                let _ = writeln!(text, "{rel} IN PTR {}.{zone}.", m.hostname);
            }
        }
        for ip in &dynamic {
            if let Some(rel) = ptr_name(*ip).strip_suffix(&suffix) {
                let _ = writeln!(
                    text,
                    "{rel} IN PTR {}.{zone}.",
                    dynamic_name(&opts.dns.unknown_prefix, *ip)
                );
            }
        }
        files.push(file(&format!("db.{rz}"), 0o644, text));
        let _ = writeln!(
            conf,
            "zone \"{rz}\" {{ type master; file \"{}/db.{rz}\"; }};",
            opts.dns.bind_dir
        );
    }
    files.push(file("named.conf.keel", 0o644, conf));
    Ok(files)
}
