//! Machines and switches: the records of the machine database (prologin's mdb).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::input::{check_text, Fields};
use crate::{Hostname, Mac, ValidationError};

/// What a machine is for; each type has its IP pool.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MachineType {
    User,
    Orga,
    Cluster,
    Service,
}

impl MachineType {
    pub const ALL: [Self; 4] = [Self::User, Self::Orga, Self::Cluster, Self::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Orga => "orga",
            Self::Cluster => "cluster",
            Self::Service => "service",
        }
    }
}

impl fmt::Display for MachineType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MachineType {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            ValidationError::new(
                "mtype",
                format!("must be one of user, orga, cluster, service (got {s:?})"),
            )
        })
    }
}

/// A machine of the site. `id` is stable across renames; `version` is the seq of its last change.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub id: u64,
    pub hostname: Hostname,
    pub aliases: Vec<Hostname>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Ipv4))]
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub mtype: MachineType,
    pub room: String,
    pub rfs: u32,
    pub hfs: u32,
    pub is_faulty: bool,
    pub faulty_reason: String,
    /// How it boots from the network; unset: by its type (see [`Machine::boot_mode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootMode>,
    pub version: u64,
}

/// What `GET /boot/{mac}` gives a machine.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// Kernel and initrd of its RFS, root over NFS (user machines by default).
    Nfsroot,
    /// Boot the local disk (every other type by default).
    Local,
    /// The site's installer.
    Install,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nfsroot => "nfsroot",
            Self::Local => "local",
            Self::Install => "install",
        }
    }
}

impl FromStr for BootMode {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Nfsroot, Self::Local, Self::Install]
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| ValidationError::new("boot", format!("must be nfsroot, local or install (got {s:?})")))
    }
}

impl Machine {
    /// Its boot mode: the one set, else `nfsroot` for user machines and `local` for the others.
    pub fn boot_mode(&self) -> BootMode {
        self.boot.unwrap_or(if self.mtype == MachineType::User {
            BootMode::Nfsroot
        } else {
            BootMode::Local
        })
    }

    /// Every name the machine answers to: its hostname, then its aliases.
    pub fn names(&self) -> impl Iterator<Item = &Hostname> {
        std::iter::once(&self.hostname).chain(self.aliases.iter())
    }
}

/// The fields a caller may give when creating or editing a machine; `None` means "not given".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachinePatch {
    pub hostname: Option<Hostname>,
    pub aliases: Option<Vec<Hostname>>,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<Mac>,
    pub mtype: Option<MachineType>,
    pub room: Option<String>,
    pub rfs: Option<u32>,
    pub hfs: Option<u32>,
    pub is_faulty: Option<bool>,
    pub faulty_reason: Option<String>,
    /// `Some(None)`: back to the type's default.
    pub boot: Option<Option<BootMode>>,
}

impl MachinePatch {
    /// What an anonymous machine may ask for when it registers itself: a one-label hostname, its
    /// MAC, room, rfs and hfs. Its type is the site's (`self_registration_type`), never its own
    /// choice (an `orga` machine goes through the contest firewall); aliases would put names such
    /// as `gw` or `wpad` in every host's files; an address, a boot mode or a fault flag are the
    /// organisers' to set.
    pub fn self_registered(mut self, mtype: MachineType) -> Result<Self, ValidationError> {
        let refuse = |field: &str| {
            Err(ValidationError::new(
                field,
                "cannot be chosen by a machine registering itself; an organiser sets it",
            ))
        };
        if self.aliases.as_ref().is_some_and(|a| !a.is_empty()) {
            return refuse("aliases");
        }
        if self.ip.is_some() {
            return refuse("ip");
        }
        if self.is_faulty.is_some() || self.faulty_reason.is_some() {
            return refuse("is_faulty");
        }
        if self.boot.is_some() {
            return refuse("boot");
        }
        if self.mtype.is_some_and(|t| t != mtype) {
            return Err(ValidationError::new(
                "mtype",
                format!("a machine registering itself is of type {mtype}"),
            ));
        }
        if self.hostname.as_ref().is_some_and(|h| h.as_str().contains('.')) {
            return Err(ValidationError::new(
                "hostname",
                "a machine registering itself has a one-label name (no dots)",
            ));
        }
        if let Some(why) = self.hostname.as_ref().and_then(|h| crate::role::reserved(h.as_str())) {
            return Err(ValidationError::new(
                "hostname",
                format!("{why}: only an organiser may give a machine that name"),
            ));
        }
        self.mtype = Some(mtype);
        self.aliases = None;
        Ok(self)
    }

    /// Reads and validates each given field; every error names its field.
    pub fn from_fields(mut f: Fields) -> Result<Self, ValidationError> {
        let patch = Self {
            hostname: f
                .opt_str("hostname")?
                .map(|s| Hostname::parse("hostname", &s))
                .transpose()?,
            aliases: f
                .opt_str_list("aliases")?
                .map(|list| {
                    list.iter()
                        .map(|a| Hostname::parse("aliases", a))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?,
            ip: f.opt_str("ip")?.map(|s| parse_ip(&s)).transpose()?,
            mac: f.opt_str("mac")?.map(|s| Mac::parse("mac", &s)).transpose()?,
            mtype: f.opt_str("mtype")?.map(|s| s.parse()).transpose()?,
            room: f.opt_str("room")?.map(|s| check_room(&s)).transpose()?,
            rfs: f.opt_u32("rfs")?,
            hfs: f.opt_u32("hfs")?,
            is_faulty: f.opt_bool("is_faulty")?,
            faulty_reason: f
                .opt_str("faulty_reason")?
                .map(|s| check_text("faulty_reason", &s, 256))
                .transpose()?,
            boot: f
                .opt_str("boot")?
                .map(|s| {
                    if s.is_empty() || s == "auto" {
                        Ok(None)
                    } else {
                        s.parse().map(Some)
                    }
                })
                .transpose()?,
        };
        f.finish()?;
        Ok(patch)
    }

    /// Builds a new machine; `ip` must already be decided (given or allocated).
    pub fn create(self, id: u64, ip: Ipv4Addr) -> Result<Machine, ValidationError> {
        let missing = |f: &str| ValidationError::new(f, "is required");
        let m = Machine {
            id,
            hostname: self.hostname.ok_or_else(|| missing("hostname"))?,
            aliases: self.aliases.unwrap_or_default(),
            ip,
            mac: self.mac.ok_or_else(|| missing("mac"))?,
            mtype: self.mtype.ok_or_else(|| missing("mtype"))?,
            room: self.room.unwrap_or_else(|| "other".to_owned()),
            rfs: self.rfs.unwrap_or(0),
            hfs: self.hfs.unwrap_or(0),
            is_faulty: self.is_faulty.unwrap_or(false),
            faulty_reason: self.faulty_reason.unwrap_or_default(),
            boot: self.boot.flatten(),
            version: 0,
        };
        check_aliases(&m)?;
        Ok(m)
    }

    /// Applies the given fields over an existing machine; `ip` is the address it ends with.
    pub fn apply(self, old: &Machine, ip: Ipv4Addr) -> Result<Machine, ValidationError> {
        let mut m = old.clone();
        m.ip = ip;
        if let Some(v) = self.hostname {
            m.hostname = v;
        }
        if let Some(v) = self.aliases {
            m.aliases = v;
        }
        if let Some(v) = self.mac {
            m.mac = v;
        }
        if let Some(v) = self.mtype {
            m.mtype = v;
        }
        if let Some(v) = self.room {
            m.room = v;
        }
        m.rfs = self.rfs.unwrap_or(m.rfs);
        m.hfs = self.hfs.unwrap_or(m.hfs);
        m.is_faulty = self.is_faulty.unwrap_or(m.is_faulty);
        if let Some(v) = self.faulty_reason {
            m.faulty_reason = v;
        }
        if let Some(v) = self.boot {
            m.boot = v;
        }
        check_aliases(&m)?;
        Ok(m)
    }
}

fn parse_ip(s: &str) -> Result<Ipv4Addr, ValidationError> {
    s.trim()
        .parse()
        .map_err(|_| ValidationError::new("ip", format!("is not an IPv4 address (got {s:?})")))
}

/// A token that reaches generated files and iPXE scripts as one word: 1–64 of `a-z A-Z 0-9 . _ -`
/// (plus `:` for chassis ids, which LLDP often gives as a MAC address). No space, quote, `$`, `#`
/// or `;` can end up in a file that way.
fn check_token(field: &str, s: &str, extra: &[char]) -> Result<String, ValidationError> {
    let ok = (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || extra.contains(&c));
    if ok {
        Ok(s.to_owned())
    } else {
        let also = extra.iter().map(|c| format!(" {c}")).collect::<String>();
        Err(ValidationError::new(
            field,
            format!("must be 1 to 64 of a-z, A-Z, 0-9, '.', '_', '-'{also} (got {s:?})"),
        ))
    }
}

/// A room: one word (see [`check_token`]).
pub fn check_room(s: &str) -> Result<String, ValidationError> {
    check_token("room", s, &[])
}

/// A switch's LLDP chassis id: one word, `:` allowed; empty when unknown.
pub fn check_chassis(s: &str) -> Result<String, ValidationError> {
    if s.is_empty() {
        return Ok(String::new());
    }
    check_token("chassis", s, &[':'])
}

/// A machine's own names must not repeat (uniqueness against others is the Snapshot's job).
fn check_aliases(m: &Machine) -> Result<(), ValidationError> {
    let mut seen = std::collections::HashSet::new();
    for name in m.names() {
        if !seen.insert(name) {
            return Err(ValidationError::new("aliases", format!("{name} is given twice")));
        }
    }
    if m.aliases.len() > 64 {
        return Err(ValidationError::new("aliases", "at most 64 aliases"));
    }
    Ok(())
}

/// A network switch: lets a booting machine inherit its room and servers (from LLDP).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    pub name: Hostname,
    pub chassis: String,
    pub room: String,
    pub rfs: u32,
    pub hfs: u32,
    pub version: u64,
}

impl Switch {
    /// Reads a switch from fields; `existing` gives defaults for an edit.
    pub fn from_fields(mut f: Fields, existing: Option<&Switch>) -> Result<Self, ValidationError> {
        let name = match (f.opt_str("name")?, existing) {
            (Some(n), _) => Hostname::parse("name", &n)?,
            (None, Some(e)) => e.name.clone(),
            (None, None) => return Err(ValidationError::new("name", "is required")),
        };
        let d = existing.cloned();
        let sw = Self {
            name,
            chassis: match f.opt_str("chassis")? {
                Some(c) => check_chassis(c.trim())?,
                None => d.as_ref().map(|d| d.chassis.clone()).unwrap_or_default(),
            },
            room: match f.opt_str("room")? {
                Some(r) => check_room(&r)?,
                None => d.as_ref().map_or_else(|| "other".to_owned(), |d| d.room.clone()),
            },
            rfs: f.opt_u32("rfs")?.or(d.as_ref().map(|d| d.rfs)).unwrap_or(0),
            hfs: f.opt_u32("hfs")?.or(d.as_ref().map(|d| d.hfs)).unwrap_or(0),
            version: d.map_or(0, |d| d.version),
        };
        f.finish()?;
        Ok(sw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_and_chassis_are_one_word() {
        for (room, ok) in [
            ("pasteur", true),
            ("hall-B.2_x", true),
            ("", false),
            ("a b", false),
            ("a\nb", false),
            ("$x", false),
            ("a;b", false),
            ("a:b", false),
        ] {
            assert_eq!(check_room(room).is_ok(), ok, "{room:?}");
        }
        assert!(check_room(&"a".repeat(64)).is_ok());
        assert!(check_room(&"a".repeat(65)).is_err());
        assert_eq!(check_chassis("00:1b:21:00:00:01").unwrap(), "00:1b:21:00:00:01");
        assert_eq!(check_chassis("").unwrap(), "");
        assert!(check_chassis("sw 1").is_err());
    }
}
