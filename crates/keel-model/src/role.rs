//! Roles: what a machine is for besides its type — the gateway (keel's own host), the NFS root
//! server of machines with `rfs` N, the home file server of users with `hfs` N, and keel's service
//! names (`mdb`, `sso`, …). A role is a record an admin gives a machine, kept outside the machine
//! record (prologin's RPC shape is unchanged); netboot, automount, hosts, DNS and the rights rules
//! read the role, never a name pattern — a machine that calls itself `rfs2` serves nobody's root.
//!
//! Names that other software resolves specially (`localhost`, `wpad`, `isatap`, `ip6-*`, keel's
//! service names) are refused to anyone but an admin ([`reserved`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// keel's service names: what prologin's clients and machines ask for by name (`mdb.prolo`).
pub const SERVICE_NAMES: [&str; 8] = [
    "mdb",
    "udb",
    "mdbsync",
    "udbsync",
    "netboot",
    "sso",
    "map",
    "presencesync",
];

/// A role a machine can be given.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MachineRole {
    /// keel's own host: never a destination of a facility manager's, in any spelling.
    Gateway,
    /// The NFS root server of the machines whose `rfs` is N.
    Rfs(u32),
    /// The home file server of the users (and machines) whose `hfs` is N.
    Hfs(u32),
    /// One of keel's service names ([`SERVICE_NAMES`]): DNS and the hosts files give it this
    /// machine's address.
    Service(&'static str),
}

impl MachineRole {
    /// `gateway`, `rfs/N`, `hfs/N` or `service/NAME`, the key of its record.
    pub fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        let number = |n: &str| {
            n.parse::<u32>()
                .map_err(|_| ValidationError::new(field, format!("{s:?}: the number must be 0 to 4294967295")))
        };
        match s.split_once('/') {
            None if s == "gateway" => Ok(Self::Gateway),
            Some(("rfs", n)) => Ok(Self::Rfs(number(n)?)),
            Some(("hfs", n)) => Ok(Self::Hfs(number(n)?)),
            Some(("service", name)) => SERVICE_NAMES
                .iter()
                .find(|k| **k == name)
                .map(|k| Self::Service(k))
                .ok_or_else(|| {
                    ValidationError::new(
                        field,
                        format!(
                            "{name:?} is not one of keel's service names ({})",
                            SERVICE_NAMES.join(", ")
                        ),
                    )
                }),
            _ => Err(ValidationError::new(
                field,
                format!("{s:?} is not a role: gateway, rfs/N, hfs/N or service/NAME"),
            )),
        }
    }

    pub fn key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for MachineRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gateway => f.write_str("gateway"),
            Self::Rfs(n) => write!(f, "rfs/{n}"),
            Self::Hfs(n) => write!(f, "hfs/{n}"),
            Self::Service(s) => write!(f, "service/{s}"),
        }
    }
}

/// A role given to a machine (by its id: a renamed machine keeps its roles).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRecord {
    /// The role's key (`gateway`, `rfs/1`, `service/mdb`).
    pub role: String,
    pub machine: u64,
    pub version: u64,
}

impl RoleRecord {
    /// The role it gives (records are validated when written; an unknown one reads as `None`).
    pub fn role(&self) -> Option<MachineRole> {
        MachineRole::parse("role", &self.role).ok()
    }
}

/// Why `name` may be given by an admin only: a name other software resolves specially, or one of
/// keel's service names. `None` when anyone who may name a machine may use it.
pub fn reserved(name: &str) -> Option<&'static str> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let first = name.split('.').next().unwrap_or_default();
    if first == "localhost" || name.ends_with(".localhost") || first.starts_with("ip6-") {
        return Some("resolves to the machine itself on every host (/etc/hosts)");
    }
    if matches!(first, "wpad" | "isatap") {
        return Some("browsers and Windows look it up to find a proxy or a tunnel");
    }
    if matches!(first, "hostmaster" | "postmaster" | "webmaster" | "abuse") {
        return Some("is a well-known mailbox name");
    }
    if SERVICE_NAMES.contains(&first) {
        return Some("is one of keel's service names (a role an admin gives)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_print_as_their_keys() {
        for s in ["gateway", "rfs/1", "hfs/12", "service/mdb"] {
            assert_eq!(MachineRole::parse("role", s).unwrap().key(), s);
        }
        for bad in ["gw", "rfs/x", "rfs/", "service/ftp", "hfs/-1", "gateway/1", ""] {
            assert!(MachineRole::parse("role", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_other_software_resolves_are_reserved() {
        for name in [
            "localhost",
            "localhost.prolo",
            "a.localhost",
            "ip6-loopback",
            "WPAD",
            "isatap.prolo",
            "hostmaster",
            "mdb",
            "sso.prolo",
        ] {
            assert!(reserved(name).is_some(), "{name}");
        }
        for name in ["r00p01", "rfs2", "hfs2", "gw", "wpadx", "mdb1"] {
            assert!(reserved(name).is_none(), "{name}");
        }
    }
}
