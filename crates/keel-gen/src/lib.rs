//! Generators: a facility's part of the Snapshot in, the files of a service out.
//!
//! Pure and deterministic (invariant 3): the same input gives byte-identical files, so an
//! unchanged state yields an unchanged bundle digest and nothing is sent. Records are always
//! emitted in a fixed order (uid, then login; IP, then hostname), never in map order.

#![forbid(unsafe_code)]

mod accounts;
mod check;
mod dhcp;
mod dns;
mod firewall;
mod hosts;

use std::collections::BTreeMap;

use keel_model::service::{self, File, Version};
use keel_model::{Group, Kind, Machine, User};
use serde::{Deserialize, Serialize};

pub use accounts::{automount, homes, passwd, root_ssh};
pub use check::GenError;
pub use dhcp::{dhcp, site_network as dhcp_site_network, DhcpFormat, DhcpOptions};
pub use dns::{dns, dynamic_address, dynamic_name};
pub use firewall::{allowed, firewall, FirewallOptions};
pub use hosts::hosts;

/// What a facility receives: its users and the site's machines.
#[derive(Debug, Clone, Default)]
pub struct Input<'a> {
    pub facility: &'a str,
    pub users: Vec<&'a User>,
    pub machines: Vec<&'a Machine>,
    /// The reverse zones of the site's pools (`dns`).
    pub reverse_zones: Vec<String>,
    /// The zones' serial: the seq of the last machine change (`dns`).
    pub serial: u64,
    /// The pools' networks (the `dhcp` site network holds them; the `firewall`'s site).
    pub networks: Vec<ipnet::Ipv4Net>,
    /// Who is logged in where: each session's machine and user (`firewall`).
    pub sessions: Vec<(&'a Machine, &'a User)>,
    /// The `contest_mode` setting (`firewall`).
    pub contest_mode: bool,
    /// The facility's HFS number, when it is a home file server's (`homes` under the export root).
    pub hfs: Option<u32>,
    /// keel's service names (`mdb`, `sso`…) each machine answers to by its roles, by machine id:
    /// `hosts` and `dns` write them beside its own names.
    pub service_names: BTreeMap<u64, Vec<&'static str>>,
    /// The machine with the role `hfs/N`, by N: where `automount` mounts those users' homes from.
    pub hfs_servers: BTreeMap<u32, &'a Machine>,
}

impl Input<'_> {
    /// Every name `m` answers to in keel's zone: its hostname and aliases, then the service names
    /// its roles give it (each once).
    pub fn names_of(&self, m: &Machine) -> Vec<String> {
        let mut names: Vec<String> = m.names().map(ToString::to_string).collect();
        for s in self.service_names.get(&m.id).into_iter().flatten() {
            if !names.iter().any(|n| n == s) {
                names.push((*s).to_owned());
            }
        }
        names
    }
}

/// A group as it appears on hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostGroup {
    /// The group's name on hosts.
    pub name: String,
    /// Its gid on hosts.
    pub gid: u32,
    /// Groups the host already has (`sudo`, `wheel`, `adm`…) that this group's users join. The
    /// agent adds them to the host's own line, keeps the host's own members, and skips a group
    /// the host does not have.
    #[serde(default)]
    pub member_of: Vec<String>,
}

/// Site choices the generators follow (the `[propagation.generators]` table of keel.toml).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Homes are `<home_root>/<login>`.
    pub home_root: String,
    /// Mode of a new home directory.
    pub home_mode: u32,
    /// keel's groups on hosts. `root` is not called `root` there by default: that name and gid 0
    /// belong to the host. Each group and each of its keys given replaces only that default.
    #[serde(deserialize_with = "groups_over_defaults")]
    #[schemars(with = "BTreeMap<Group, HostGroup>")]
    pub groups: BTreeMap<Group, HostGroup>,
    /// The DNS zone machines live in (`hosts` writes `name.zone name aliases…`).
    pub zone: String,
    /// The `dns` service's zone files.
    pub dns: DnsOptions,
    /// The `dhcp` service's configuration.
    pub dhcp: DhcpOptions,
    /// The `firewall` service's ruleset.
    pub firewall: FirewallOptions,
    /// Homes on home file servers: the `automount` map and where an HFS keeps them.
    pub automount: AutomountOptions,
}

/// One keel group's host group as written in the config: every key optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostGroupPart {
    name: Option<String>,
    gid: Option<u32>,
    member_of: Option<Vec<String>>,
}

/// `[propagation.generators.groups]` over the defaults: `root = { member_of = ["adm"] }` keeps
/// root's name and gid and the other groups as they are.
fn groups_over_defaults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<Group, HostGroup>, D::Error> {
    let given = BTreeMap::<Group, HostGroupPart>::deserialize(d)?;
    let mut groups = Options::default().groups;
    for (g, part) in given {
        let e = groups
            .get_mut(&g)
            .ok_or_else(|| serde::de::Error::custom(format!("no default for {g}")))?;
        e.name = part.name.unwrap_or_else(|| e.name.clone());
        e.gid = part.gid.unwrap_or(e.gid);
        e.member_of = part.member_of.unwrap_or_else(|| e.member_of.clone());
    }
    Ok(groups)
}

/// Homes of diskless machines (docs/homes.md): each user's home is on one HFS, exported from
/// `<export_root>/<login>` and mounted by autofs at `<home_root>/<login>` on the machines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AutomountOptions {
    /// Where an HFS keeps the homes (and what it exports).
    pub export_root: String,
    /// How machines reach the home file server of HFS N, the machine with the role `hfs/N`:
    /// `{host}` is its hostname, `{ip}` its address, `{hfs}` N (default `{host}`).
    pub server: String,
    /// autofs mount options of each entry.
    pub options: String,
}

impl Default for AutomountOptions {
    fn default() -> Self {
        Self {
            export_root: "/export/home".into(),
            server: "{host}".into(),
            options: "-fstype=nfs,rw,hard,nosuid,nodev".into(),
        }
    }
}

/// How the `dns` service writes its zones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DnsOptions {
    /// The machine named in NS and SOA records.
    pub ns: String,
    /// TTL of the zones' records.
    pub ttl: u32,
    /// Where the zone files are on the BIND host (named.conf.keel names them there); the agent's
    /// `[services.dns] dir` must be the same directory.
    pub bind_dir: String,
    /// A and PTR records for every free address of the DHCP range for unknown machines
    /// (`dhcp.unknown_range`), named `<unknown_prefix>-A-B-C-D`.
    pub unknown_names: bool,
    /// The first label of those names' prefix.
    pub unknown_prefix: String,
}

impl Default for DnsOptions {
    fn default() -> Self {
        Self {
            ns: "gw".into(),
            ttl: 60,
            bind_dir: "/etc/bind/keel".into(),
            unknown_names: true,
            unknown_prefix: "dhcp".into(),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        let g = |name: &str, gid| HostGroup {
            name: name.into(),
            gid,
            member_of: Vec::new(),
        };
        Self {
            home_root: "/home".into(),
            home_mode: 0o700,
            groups: BTreeMap::from([
                (Group::User, g("user", 10000)),
                (Group::Orga, g("orga", 11000)),
                // keel's roots already hold root's keys (root_ssh); sudo as themselves too, on
                // Debian (`sudo`) and Red Hat (`wheel`) hosts alike.
                (
                    Group::Root,
                    HostGroup {
                        member_of: vec!["sudo".into(), "wheel".into()],
                        ..g("roots", 12000)
                    },
                ),
            ]),
            zone: "prolo".into(),
            dns: DnsOptions::default(),
            dhcp: DhcpOptions::default(),
            firewall: FirewallOptions::default(),
            automount: AutomountOptions::default(),
        }
    }
}

impl Options {
    fn group(&self, g: Group) -> HostGroup {
        self.groups.get(&g).cloned().unwrap_or_else(|| HostGroup {
            member_of: Vec::new(),
            name: g.as_str().into(),
            gid: 65534,
        })
    }
}

/// The services keel ships. Custom services (a command) and the network ones live beside these
/// in the engine; these are the ones that are pure functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BuiltIn {
    Passwd,
    RootSsh,
    Homes,
    Automount,
    Hosts,
    Dns,
    Dhcp,
    Firewall,
}

impl BuiltIn {
    pub const ALL: [Self; 8] = [
        Self::Passwd,
        Self::RootSsh,
        Self::Homes,
        Self::Automount,
        Self::Hosts,
        Self::Dns,
        Self::Dhcp,
        Self::Firewall,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Passwd => service::PASSWD,
            Self::RootSsh => service::ROOT_SSH,
            Self::Homes => service::HOMES,
            Self::Automount => service::AUTOMOUNT,
            Self::Hosts => service::HOSTS,
            Self::Dns => "dns",
            Self::Dhcp => "dhcp",
            Self::Firewall => "firewall",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == s)
    }

    /// The version agents check: a new major means old agents must refuse it. The ones the
    /// agent merges itself take their major from the table both sides share.
    pub fn version(self) -> Version {
        Version::new(service::agent_major(self.name()).unwrap_or(1), 0)
    }

    /// Whether a change of this kind can change this service's files.
    pub fn affected_by(self, kind: Kind) -> bool {
        match self {
            Self::Passwd | Self::RootSsh | Self::Homes | Self::Automount => kind == Kind::User,
            Self::Hosts | Self::Dns | Self::Dhcp => kind == Kind::Machine,
            Self::Firewall => matches!(kind, Kind::Machine | Kind::User | Kind::Session | Kind::Setting),
        }
    }

    /// A debounce of its own, shorter than the engine's: a login must open the internet at once,
    /// and a first login waits for its home.
    pub fn debounce(self) -> Option<std::time::Duration> {
        match self {
            Self::Firewall | Self::Homes => Some(std::time::Duration::from_millis(50)),
            _ => None,
        }
    }

    /// The service's files, or the first value its format cannot hold (nothing is sent then).
    pub fn generate(self, input: &Input<'_>, opts: &Options) -> Result<Vec<File>, GenError> {
        match self {
            Self::Passwd => passwd(input, opts),
            Self::RootSsh => root_ssh(input),
            Self::Homes => homes(input, opts),
            Self::Automount => automount(input, opts),
            Self::Hosts => hosts(input, opts),
            Self::Dns => dns(input, opts),
            Self::Dhcp => dhcp(input, opts),
            Self::Firewall => firewall(input, opts),
        }
    }
}

fn file(path: &str, mode: u32, data: String) -> File {
    File {
        path: path.into(),
        mode,
        data: data.into_bytes(),
    }
}
