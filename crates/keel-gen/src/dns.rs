//! `dns`: BIND zone files for sites that keep BIND — the forward zone, one reverse zone per pool,
//! and a `named.conf` fragment naming them. The SOA serial is the seq of the last machine change,
//! so it grows exactly when the zones' data does (and the files stay byte-identical otherwise).

use std::fmt::Write as _;

use keel_bundle::File;
use keel_model::Machine;

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

/// `d.c.b.a.in-addr.arpa` of a machine.
fn ptr_name(m: &Machine) -> String {
    let [a, b, c, d] = m.ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa")
}

/// The zone files and the named.conf fragment.
pub fn dns(input: &Input<'_>, opts: &Options) -> Vec<File> {
    let mut machines = input.machines.clone();
    machines.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    let zone = &opts.zone;
    let mut forward = String::with_capacity(machines.len() * 40 + 256);
    soa(&mut forward, opts, input.serial);
    for m in &machines {
        for name in m.names() {
            let _ = writeln!(forward, "{name} IN A {}", m.ip);
        }
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
            let full = ptr_name(m);
            if let Some(rel) = full.strip_suffix(&suffix) {
                let _ = writeln!(text, "{rel} IN PTR {}.{zone}.", m.hostname);
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
    files
}
