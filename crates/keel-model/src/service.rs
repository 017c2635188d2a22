//! What a service's generator produces and how services are versioned, shared by the generators
//! (keel-gen), the bundle (keel-bundle) and the agent: [`File`], [`Version`], and the services
//! whose files keel-agent merges into the host itself, named and versioned once for both sides —
//! keel-gen generates them under these names at these majors, keel-agent implements them. (The
//! network services — dns, dhcp, firewall — and custom ones are applied as directories of files
//! with hooks, and need nothing of the agent's code.)

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A generated file, before it goes into a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// A service's version, `major.minor`. Agents refuse another major; a minor difference is news.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("version must be MAJOR.MINOR with decimal numbers (got {s:?})");
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        let num = |x: &str| {
            if x.is_empty() || x.len() > 9 || !x.bytes().all(|c| c.is_ascii_digit()) {
                Err(bad())
            } else {
                x.parse().map_err(|_| bad())
            }
        };
        Ok(Self::new(num(a)?, num(b)?))
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

pub const PASSWD: &str = "passwd";
pub const ROOT_SSH: &str = "root_ssh";
pub const HOMES: &str = "homes";
pub const HOSTS: &str = "hosts";
pub const AUTOMOUNT: &str = "automount";

/// Each of them with the major version its bundles carry: another major is refused by the
/// agent (exit 200), so a change of format must raise it here, on both sides at once.
pub const AGENT_BUILT_IN: [(&str, u32); 5] = [(PASSWD, 1), (ROOT_SSH, 1), (HOMES, 1), (HOSTS, 1), (AUTOMOUNT, 1)];

/// The major an agent built-in is implemented at, if `service` is one.
pub fn agent_major(service: &str) -> Option<u32> {
    AGENT_BUILT_IN.iter().find(|(n, _)| *n == service).map(|(_, m)| *m)
}

/// Whether the agent can read back, from the host as it is now, the file `path` of `service` as
/// keel last sent it — so that the engine may send that file as a patch against it (a delta). The
/// account files are keel's lines of /etc/passwd, group and shadow; a marker-block service's file
/// is its block; a custom service's files are in its directory as sent. `group-members` and
/// `homes` leave no such copy on the host: they always travel whole.
pub fn patchable(service: &str, path: &str) -> bool {
    match service {
        PASSWD => matches!(path, "passwd" | "group" | "shadow"),
        ROOT_SSH => path == "authorized_keys",
        HOSTS => path == "hosts",
        AUTOMOUNT => path == "auto.home",
        HOMES => false,
        _ => true,
    }
}
