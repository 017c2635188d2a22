//! `dhcp`: ISC dhcpd's configuration, or Kea DHCPv4's (`[propagation.generators.dhcp] format`).
//!
//! A site is one segment: one subnet, the site network, holds every pool, so each machine gets its
//! mask and `option routers` and reaches every other machine and the gateway directly (prologin's
//! LAN was one /23 with gw as router). One subnet rather than a subnet per pool in a
//! `shared-network`: Kea derives option 1 (the mask) from the subnet's prefix and ignores a
//! configured one, so a /24 subnet would give a user machine a /24 and a gateway off its link.
//! Then a reservation per machine (MAC → fixed address, host name), and the boot chain: PXE
//! firmware (no iPXE user class) gets the iPXE binary over TFTP — BIOS or UEFI by client
//! architecture (option 93) — and iPXE gets keel's netboot URL. Unknown machines get an address from
//! an optional range with a short lease, and reach registration; keel never allocates an address of
//! that range to a machine (`Pool::dynamic`).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use keel_model::service::File;
use keel_model::Machine;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::check::{self, GenError};
use crate::{file, Input, Options};

/// Which DHCP server the files are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DhcpFormat {
    /// ISC dhcpd: `dhcpd.conf`.
    Isc,
    /// Kea DHCPv4: `kea-dhcp4.conf` (JSON).
    Kea,
}

/// How the `dhcp` service writes its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DhcpOptions {
    /// The DHCP server the files are for: `isc` (dhcpd.conf) or `kea` (kea-dhcp4.conf).
    pub format: DhcpFormat,
    /// The TFTP server PXE firmware loads iPXE from (keel's).
    pub tftp_server: Ipv4Addr,
    /// iPXE for BIOS firmware, on that TFTP server.
    pub bios_file: String,
    /// iPXE for UEFI firmware, on that TFTP server.
    pub uefi_file: String,
    /// What iPXE fetches: keel's netboot script for this MAC.
    pub boot_url: String,
    /// The resolvers machines are given (keel's DNS).
    pub dns_servers: Vec<Ipv4Addr>,
    /// The site's gateways (`option routers`): machines route through these.
    pub routers: Vec<Ipv4Addr>,
    /// The network of the site's one segment: every pool's network, the routers and the unknown
    /// range lie in it, and machines get its mask. None: the smallest network holding them all.
    #[schemars(with = "Option<String>")]
    pub site_network: Option<Ipv4Net>,
    /// Lease of known machines, seconds.
    pub lease_secs: u32,
    /// Addresses for unknown machines (`first`, `last`), inside one pool's network, which never
    /// allocates them to a machine; none: unknown machines get nothing.
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
            routers: vec![Ipv4Addr::new(192, 168, 1, 254)],
            site_network: None,
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

/// What must lie in the site network: every pool's network, the routers, the unknown range.
fn site_parts(networks: &[Ipv4Net], d: &DhcpOptions) -> Vec<(String, Ipv4Net)> {
    let host = |ip: Ipv4Addr| Ipv4Net::from(ip);
    let mut parts: Vec<(String, Ipv4Net)> = networks.iter().map(|n| (format!("the pool network {n}"), *n)).collect();
    parts.extend(d.routers.iter().map(|r| (format!("the router {r}"), host(*r))));
    if let Some((first, last)) = d.unknown_range {
        parts.push((format!("the unknown range's first address {first}"), host(first)));
        parts.push((format!("the unknown range's last address {last}"), host(last)));
    }
    parts
}

/// A netmask shorter than this is no segment a DHCP server serves by broadcast: the pools are
/// apart and the site must say which network it is (`site_network`).
const MIN_SITE_PREFIX: u8 = 16;

/// The site network: the configured one, which must hold every pool, router and the unknown range
/// (`keel serve --check` says so first), or the smallest network that does.
pub fn site_network(networks: &[Ipv4Net], d: &DhcpOptions) -> Result<Ipv4Net, String> {
    let parts = site_parts(networks, d);
    if let Some(site) = d.site_network {
        return match parts.iter().find(|(_, n)| !site.contains(n)) {
            Some((what, _)) => Err(format!("{site} does not hold {what}")),
            None => Ok(site.trunc()),
        };
    }
    let Some((_, first)) = parts.first() else {
        return Err("no pool network to serve".into());
    };
    let covering = (0..=32u8)
        .rev()
        .filter_map(|len| Ipv4Net::new(first.network(), len).ok().map(|n| n.trunc()))
        .find(|net| parts.iter().all(|(_, n)| net.contains(n)))
        .unwrap_or_default();
    if covering.prefix_len() < MIN_SITE_PREFIX {
        return Err(format!(
            "the pools, routers and unknown range span {covering}, which is no one segment: set site_network"
        ));
    }
    Ok(covering)
}

/// The configuration file of the chosen server.
pub fn dhcp(input: &Input<'_>, opts: &Options) -> Result<Vec<File>, GenError> {
    for m in &input.machines {
        check::machine_names("dhcp", m)?;
    }
    let file_name = match opts.dhcp.format {
        DhcpFormat::Isc => "dhcpd.conf",
        DhcpFormat::Kea => "kea-dhcp4.conf",
    };
    let site = site_network(&input.networks, &opts.dhcp)
        .map_err(|why| GenError::new(file_name, "site options", "dhcp.site_network", why))?;
    if let Some((first, last)) = opts.dhcp.unknown_range.filter(|(f, l)| f > l) {
        return Err(GenError::new(
            file_name,
            "site options",
            "dhcp.unknown_range",
            format!("starts at {first}, after its end {last}"),
        ));
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
            vec![file(file_name, 0o644, isc(input, opts, site))]
        }
        DhcpFormat::Kea => vec![file(file_name, 0o644, kea(input, opts, site))],
    })
}

fn isc(input: &Input<'_>, opts: &Options, site: Ipv4Net) -> String {
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
    let pools: Vec<String> = input.networks.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        out,
        "# The site's one segment, holding the pools {}.\nsubnet {} netmask {} {{",
        pools.join(", "),
        site.network(),
        site.netmask()
    );
    if !d.routers.is_empty() {
        let routers: Vec<String> = d.routers.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  option routers {};", routers.join(", "));
    }
    if let Some((first, last)) = d.unknown_range {
        let _ = writeln!(
            out,
            "  pool {{\n    allow unknown-clients;\n    range {first} {last};\n    default-lease-time {l};\n    max-lease-time {l};\n  }}",
            l = d.unknown_lease_secs
        );
    }
    out.push_str("}\n");
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

fn kea(input: &Input<'_>, opts: &Options, site: Ipv4Net) -> String {
    let d = &opts.dhcp;
    let dns: Vec<String> = d.dns_servers.iter().map(ToString::to_string).collect();
    let reservations: Vec<serde_json::Value> = sorted(input)
        .iter()
        .map(|m| json!({"hw-address": m.mac.to_string(), "ip-address": m.ip.to_string(), "hostname": m.hostname.to_string()}))
        .collect();
    let mut subnet = json!({"id": 1, "subnet": site.to_string(), "reservations": reservations});
    if !d.routers.is_empty() {
        let routers: Vec<String> = d.routers.iter().map(ToString::to_string).collect();
        subnet["option-data"] = json!([{"name": "routers", "data": routers.join(", ")}]);
    }
    if let Some((first, last)) = d.unknown_range {
        // Only machines without a reservation take from the range, with the short lease of the
        // `unknown` class (a subnet's lifetime would shorten every machine's lease).
        subnet["pools"] = json!([{"pool": format!("{first} - {last}"), "client-class": "unknown"}]);
    }
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
            {"name": "unknown", "test": "member('UNKNOWN')", "valid-lifetime": d.unknown_lease_secs},
            {"name": "ipxe", "test": "substring(option[77].hex,0,4) == 'iPXE'", "boot-file-name": d.boot_url},
            {"name": "uefi", "test": "not member('ipxe') and (option[93].hex == 0x0007 or option[93].hex == 0x0009)",
             "next-server": d.tftp_server.to_string(), "boot-file-name": d.uefi_file},
            {"name": "bios", "test": "not member('ipxe') and not member('uefi')",
             "next-server": d.tftp_server.to_string(), "boot-file-name": d.bios_file}
        ],
        "subnet4": [subnet]
    }});
    let mut text = serde_json::to_string_pretty(&conf).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<Ipv4Net> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn the_site_network_is_the_smallest_holding_pools_routers_and_the_range() {
        let d = DhcpOptions::default();
        let pools = nets(&["192.168.0.0/24", "192.168.1.0/24", "192.168.2.0/24"]);
        assert_eq!(site_network(&pools, &d).unwrap().to_string(), "192.168.0.0/22");
        let two = nets(&["192.168.0.0/24", "192.168.1.0/24"]);
        assert_eq!(site_network(&two, &d).unwrap().to_string(), "192.168.0.0/23");
        let with_range = DhcpOptions {
            unknown_range: Some(("192.168.3.1".parse().unwrap(), "192.168.3.9".parse().unwrap())),
            ..d.clone()
        };
        assert_eq!(site_network(&two, &with_range).unwrap().to_string(), "192.168.0.0/22");
        // Pools far apart are no one segment: the site must say which network it is.
        let apart = nets(&["10.0.0.0/24", "192.168.1.0/24"]);
        assert!(site_network(&apart, &d).unwrap_err().contains("set site_network"));
        let given = DhcpOptions {
            site_network: Some("192.168.0.0/23".parse().unwrap()),
            ..d
        };
        assert!(site_network(&two, &given).is_ok());
        assert!(site_network(&pools, &given).unwrap_err().contains("192.168.2.0/24"));
    }
}
