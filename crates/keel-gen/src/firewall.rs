//! `firewall`: the gateway's nftables ruleset, in keel's own table only (never anyone else's).
//!
//! Forwarded traffic from the site's networks to elsewhere is masqueraded, and dropped (logged,
//! rate-limited) unless its source is in the `internet` set: every machine of an always-allowed
//! type (orga, service), plus every machine where a user of an allowed group is logged in. Contestants'
//! group is allowed only while `contest_mode` is off. The file replaces the table in one `nft -f`
//! transaction (create, delete, define), so the set is swapped atomically and never seen empty.
//! `allowed` lists the set's addresses with why, for the hook that cuts the connections of
//! addresses that left it (conntrack).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use keel_model::service::File;
use keel_model::{Group, MachineType};
use serde::{Deserialize, Serialize};

use crate::check::{self, GenError};
use crate::{file, Input, Options};

/// `[propagation.generators.firewall]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FirewallOptions {
    /// keel's table (family `inet`).
    pub table: String,
    /// Groups whose logged-in machines reach the internet at all times.
    pub allowed_groups: Vec<Group>,
    /// Groups allowed only while `contest_mode` is off.
    pub outside_contest_groups: Vec<Group>,
    /// Machine types that always reach the internet, logged in or not.
    pub allowed_types: Vec<MachineType>,
    /// Logins allowed whatever their group (a contestant with a reason).
    pub allow_users: Vec<String>,
    /// Logins never allowed whatever their group.
    pub deny_users: Vec<String>,
    /// Prefix of the kernel log line of each dropped packet.
    pub log_prefix: String,
    /// Drop forwarded IPv6 (keel's site is IPv4: forwarded IPv6 would go around the set).
    pub drop_ipv6: bool,
}

impl Default for FirewallOptions {
    fn default() -> Self {
        Self {
            table: "keel".into(),
            allowed_groups: vec![Group::Root, Group::Orga],
            outside_contest_groups: vec![Group::User],
            // orga machines, and service machines (RFS, HFS, web servers: their packages and
            // updates), as prologin let its services network out.
            allowed_types: vec![MachineType::Orga, MachineType::Service],
            allow_users: Vec::new(),
            deny_users: Vec::new(),
            log_prefix: "keel-drop: ".into(),
            drop_ipv6: true,
        }
    }
}

impl FirewallOptions {
    fn allows(&self, login: &str, group: Group, contest_mode: bool) -> bool {
        if self.deny_users.iter().any(|u| u == login) {
            return false;
        }
        self.allow_users.iter().any(|u| u == login)
            || self.allowed_groups.contains(&group)
            || (!contest_mode && self.outside_contest_groups.contains(&group))
    }
}

/// The allowed addresses, each with why (`hostname` and `type orga` or the login).
pub fn allowed(input: &Input<'_>, opts: &FirewallOptions) -> BTreeMap<Ipv4Addr, String> {
    let mut out = BTreeMap::new();
    for m in &input.machines {
        if opts.allowed_types.contains(&m.mtype) {
            out.insert(m.ip, format!("{} type {}", m.hostname, m.mtype.as_str()));
        }
    }
    for (m, u) in &input.sessions {
        if opts.allows(u.login.as_str(), u.group, input.contest_mode) {
            out.insert(m.ip, format!("{} user {}", m.hostname, u.login));
        }
    }
    out
}

pub fn firewall(input: &Input<'_>, opts: &Options) -> Result<Vec<File>, GenError> {
    let o = &opts.firewall;
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if o.table.is_empty() || !o.table.chars().all(word) {
        return Err(GenError::new(
            "keel.nft",
            "site options",
            "firewall.table",
            "must be a word of a-z, A-Z, 0-9 and _",
        ));
    }
    check::option("keel.nft", "firewall.log_prefix", &o.log_prefix, &['"', '\\'])?;
    check::field("keel.nft", input.facility, "facility", input.facility, &[])?;
    for m in &input.machines {
        check::machine_names("allowed", m)?;
    }
    let allowed = allowed(input, o);
    let mut nets = input.networks.clone();
    nets.sort();
    nets.dedup();
    let t = &o.table;
    let mut s = String::with_capacity(1024 + allowed.len() * 20);
    let _ = writeln!(
        s,
        "#!/usr/sbin/nft -f\n# keel firewall for facility {} (contest_mode {}): generated, do not edit.\n\
         # One transaction: the table is made if missing, deleted, and defined anew.\n\
         table inet {t} {{}}\ndelete table inet {t}\ntable inet {t} {{",
        input.facility,
        if input.contest_mode { "on" } else { "off" }
    );
    set(&mut s, "site", " flags interval;", nets.iter().map(ToString::to_string));
    set(&mut s, "internet", "", allowed.keys().map(ToString::to_string));
    let _ = writeln!(
        s,
        "\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;"
    );
    if o.drop_ipv6 {
        s.push_str("\t\tmeta nfproto ipv6 drop\n");
    }
    let _ = writeln!(
        s,
        "\t\tip saddr != @site accept\n\t\tip daddr @site accept\n\t\tip saddr @internet accept\n\
         \t\tlimit rate 20/second burst 50 packets log prefix \"{}\" level info\n\t\tdrop\n\t}}",
        o.log_prefix
    );
    let _ = writeln!(
        s,
        "\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr @site ip daddr != @site masquerade\n\t}}\n}}"
    );
    let mut list = String::new();
    for (ip, why) in &allowed {
        let _ = writeln!(list, "{ip} {why}");
    }
    Ok(vec![file("keel.nft", 0o644, s), file("allowed", 0o644, list)])
}

/// A named set; nft refuses `elements = { }`, so an empty one has no elements line.
fn set(s: &mut String, name: &str, flags: &str, elements: impl Iterator<Item = String>) {
    let elements: Vec<String> = elements.collect();
    let _ = write!(s, "\tset {name} {{\n\t\ttype ipv4_addr;{flags}\n");
    if !elements.is_empty() {
        let _ = writeln!(s, "\t\telements = {{ {} }}", elements.join(", "));
    }
    s.push_str("\t}\n");
}
