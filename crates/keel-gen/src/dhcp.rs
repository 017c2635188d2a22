//! `dhcp`: ISC dhcpd's configuration, or Kea DHCPv4's (`[propagation.generators.dhcp] format`).
//!
//! One subnet per pool network, a reservation per machine (MAC → fixed address, host name), and the
//! boot chain: PXE firmware (no iPXE user class) gets the iPXE binary over TFTP — BIOS or UEFI by
//! client architecture (option 93) — and iPXE gets keel's netboot URL. Unknown machines get an
//! address from an optional range with a short lease, and reach registration.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use keel_bundle::File;
use keel_model::Machine;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::check::{self, GenError};
use crate::{file, Input, Options};

/// Which DHCP server the files are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpFormat {
    /// ISC dhcpd: `dhcpd.conf`.
    Isc,
    /// Kea DHCPv4: `kea-dhcp4.conf` (JSON).
    Kea,
}

/// How the `dhcp` service writes its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DhcpOptions {
    pub format: DhcpFormat,
    /// The TFTP server PXE firmware loads iPXE from (keel's).
    pub tftp_server: Ipv4Addr,
    /// iPXE for BIOS and for UEFI firmware, on that TFTP server.
    pub bios_file: String,
    pub uefi_file: String,
    /// What iPXE fetches: keel's netboot script for this MAC.
    pub boot_url: String,
    pub dns_servers: Vec<Ipv4Addr>,
    /// Lease of known machines, seconds.
    pub lease_secs: u32,
    /// Addresses for unknown machines (`first`, `last`), in one of the pools' networks; none:
    /// unknown machines get nothing.
    pub unknown_range: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Their (short) lease, seconds.
    pub unknown_lease_secs: u32,
    /// Where Kea keeps its leases.
    pub kea_lease_file: String,
}

impl Default for DhcpOptions {
    fn default() -> Self {
        Self {
            format: DhcpFormat::Isc,
            tftp_server: Ipv4Addr::new(192, 168, 1, 254),
            bios_file: "undionly.kpxe".into(),
            uefi_file: "ipxe.efi".into(),
            boot_url: "http://192.168.1.254:8080/boot/${net0/mac}".into(),
            dns_servers: vec![Ipv4Addr::new(192, 168, 1, 254)],
            lease_secs: 3600,
            unknown_range: None,
            unknown_lease_secs: 120,
            kea_lease_file: "/var/lib/kea/kea-leases4.csv".into(),
        }
    }
}

fn sorted<'a>(input: &Input<'a>) -> Vec<&'a Machine> {
    let mut m = input.machines.clone();
    m.sort_by(|a, b| (a.ip, &a.hostname).cmp(&(b.ip, &b.hostname)));
    m
}

/// The configuration file of the chosen server.
pub fn dhcp(input: &Input<'_>, opts: &Options) -> Result<Vec<File>, GenError> {
    for m in &input.machines {
        check::machine_names("dhcp", m)?;
    }
    Ok(match opts.dhcp.format {
        DhcpFormat::Isc => {
            // Site options go between double quotes in dhcpd.conf (Kea's JSON holds anything).
            let d = &opts.dhcp;
            for (name, value) in [
                ("zone", &opts.zone),
                ("dhcp.boot_url", &d.boot_url),
                ("dhcp.uefi_file", &d.uefi_file),
                ("dhcp.bios_file", &d.bios_file),
            ] {
                check::option("dhcpd.conf", name, value, &['"', '\\'])?;
            }
            vec![file("dhcpd.conf", 0o644, isc(input, opts))]
        }
        DhcpFormat::Kea => vec![file("kea-dhcp4.conf", 0o644, kea(input, opts))],
    })
}

fn isc(input: &Input<'_>, opts: &Options) -> String {
    let d = &opts.dhcp;
    let dns: Vec<String> = d.dns_servers.iter().map(ToString::to_string).collect();
    let mut out = String::from("# Managed by keel (service dhcp). Changes here are overwritten.\n");
    let _ = write!(
        out,
        "authoritative;\noption domain-name \"{zone}\";\n",
        zone = opts.zone
    );
    if !dns.is_empty() {
        let _ = writeln!(out, "option domain-name-servers {};", dns.join(", "));
    }
    let _ = write!(
        out,
        "default-lease-time {l};\nmax-lease-time {l};\noption client-arch code 93 = unsigned integer 16;\n\
         next-server {tftp};\n\
         if exists user-class and option user-class = \"iPXE\" {{\n  filename \"{url}\";\n}} \
         elsif option client-arch = 7 or option client-arch = 9 {{\n  filename \"{uefi}\";\n}} \
         else {{\n  filename \"{bios}\";\n}}\n\n",
        l = d.lease_secs,
        tftp = d.tftp_server,
        url = d.boot_url,
        uefi = d.uefi_file,
        bios = d.bios_file
    );
    for net in &input.networks {
        let _ = writeln!(out, "subnet {} netmask {} {{", net.network(), net.netmask());
        if let Some((first, last)) = d.unknown_range.filter(|(f, _)| net.contains(f)) {
            let _ = writeln!(
                out,
                "  pool {{\n    allow unknown-clients;\n    range {first} {last};\n    default-lease-time {l};\n    max-lease-time {l};\n  }}",
                l = d.unknown_lease_secs
            );
        }
        out.push_str("}\n");
    }
    out.push('\n');
    for m in sorted(input) {
        let _ = writeln!(
            out,
            "host {h} {{ hardware ethernet {mac}; fixed-address {ip}; option host-name \"{h}\"; }}",
            h = m.hostname,
            mac = m.mac,
            ip = m.ip
        );
    }
    out
}

fn kea(input: &Input<'_>, opts: &Options) -> String {
    let d = &opts.dhcp;
    let dns: Vec<String> = d.dns_servers.iter().map(ToString::to_string).collect();
    let machines = sorted(input);
    let subnets: Vec<serde_json::Value> = input
        .networks
        .iter()
        .enumerate()
        .map(|(i, net)| {
            let reservations: Vec<serde_json::Value> = machines
                .iter()
                .filter(|m| net.contains(&m.ip))
                .map(|m| json!({"hw-address": m.mac.to_string(), "ip-address": m.ip.to_string(), "hostname": m.hostname.to_string()}))
                .collect();
            let mut s = json!({"id": i + 1, "subnet": net.to_string(), "reservations": reservations});
            if let Some((first, last)) = d.unknown_range.filter(|(f, _)| net.contains(f)) {
                s["pools"] = json!([{"pool": format!("{first} - {last}")}]);
                s["valid-lifetime"] = json!(d.unknown_lease_secs);
            }
            s
        })
        .collect();
    let mut options = vec![json!({"name": "domain-name", "data": opts.zone})];
    if !dns.is_empty() {
        options.push(json!({"name": "domain-name-servers", "data": dns.join(", ")}));
    }
    let conf = json!({"Dhcp4": {
        "interfaces-config": {"interfaces": ["*"]},
        "lease-database": {"type": "memfile", "persist": true, "name": d.kea_lease_file},
        "valid-lifetime": d.lease_secs,
        "authoritative": true,
        "option-data": options,
        "client-classes": [
            {"name": "ipxe", "test": "substring(option[77].hex,0,4) == 'iPXE'", "boot-file-name": d.boot_url},
            {"name": "uefi", "test": "not member('ipxe') and (option[93].hex == 0x0007 or option[93].hex == 0x0009)",
             "next-server": d.tftp_server.to_string(), "boot-file-name": d.uefi_file},
            {"name": "bios", "test": "not member('ipxe') and not member('uefi')",
             "next-server": d.tftp_server.to_string(), "boot-file-name": d.bios_file}
        ],
        "subnet4": subnets
    }});
    let mut text = serde_json::to_string_pretty(&conf).unwrap_or_default();
    text.push('\n');
    text
}
