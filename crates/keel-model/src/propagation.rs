//! Propagation's records: hosts, facilities and destinations, and the rights rule that ties a
//! destination name to the facilities its manager runs (invariant 7).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{Group, Login, ValidationError};

/// A propagation target: a name (FQDN), the facility it belongs to, and optionally the Machine it
/// is (then the machine's names are the host's too).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: String,
    pub facility: String,
    #[serde(default)]
    pub machine: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub version: u64,
}

/// A named set of hosts with its managers, the users it receives and the services it runs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facility {
    pub name: String,
    /// Who manages this facility: API tokens and user logins, each named as such.
    #[serde(default)]
    pub managers: Vec<crate::ManagerName>,
    /// Users of these groups are received…
    #[serde(default)]
    pub groups: Vec<Group>,
    /// …and these users, whatever their group.
    #[serde(default)]
    pub members: Vec<Login>,
    /// Services enabled on this facility.
    #[serde(default)]
    pub services: Vec<String>,
    /// Services blocked on this facility: never sent (results show DENIED).
    #[serde(default)]
    pub blocked: Vec<String>,
    /// A home file server's facility: of the users above, it receives only those whose home is on
    /// `hfsN` (their `hfs`), and its `homes` service creates them under the export root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hfs: Option<u32>,
    #[serde(default)]
    pub version: u64,
}

impl Facility {
    /// Whether this facility receives `u`.
    pub fn receives(&self, u: &crate::User) -> bool {
        let listed = self.groups.contains(&u.group) || self.members.contains(&u.login);
        listed && self.hfs.is_none_or(|n| u.hfs == Some(n))
    }

    /// Whether this facility lists `p` among its managers (by namespace and name, never by
    /// spelling alone: user `alice` is not token `alice`).
    pub fn is_managed_by(&self, p: &crate::Principal) -> bool {
        p.manager_name().is_some_and(|m| self.managers.contains(&m))
    }

    /// Whether `p` may act on this facility: an admin, or a manager it lists.
    pub fn is_run_by(&self, p: &crate::Principal) -> bool {
        p.is_admin() || (p.role == crate::Role::Manager && self.is_managed_by(p))
    }
}

/// How a destination is reached.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// `ssh host`, `user@host`, `host:port`, piping the bundle to `keel-agent apply`.
    Ssh,
    /// The agent as a child process on keel's own host.
    Local,
}

/// Where a facility's service goes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub facility: String,
    pub service: String,
    /// `host`, `user@host`, `host:port`, `user@[v6]:port`; `local` for a local destination.
    pub destination: String,
    pub channel: Channel,
    #[serde(default)]
    pub blocked: bool,
    /// The facility manager who added it (set by the store, never taken from a request); none
    /// when an admin did. The engine resolves such a destination at every send, as ssh will, and
    /// refuses to send where it leads to keel's own host or a machine outside the facility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    #[serde(default)]
    pub version: u64,
}

impl Destination {
    /// `facility/service/destination`: the record's key.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.facility, self.service, self.destination)
    }

    /// The host part invariant 7 compares.
    pub fn host(&self) -> String {
        destination_host(&self.destination)
    }
}

/// A facility or service name: 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_name(field: &str, s: &str) -> Result<(), ValidationError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("must be 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit (got {s:?})"),
        ))
    }
}

/// A host name: lower-case DNS labels (`a-z 0-9 -`, 1 to 63 each), at most 253 bytes.
pub fn check_fqdn(field: &str, s: &str) -> Result<(), ValidationError> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("must be a lower-case host name (labels of a-z, 0-9 and '-'; got {s:?})"),
        ))
    }
}

/// Checks a destination as written: `local`, or `[user@]host[:port]` with a host name or an IP.
pub fn check_destination(channel: Channel, d: &str) -> Result<(), ValidationError> {
    let err = |m: &str| Err(ValidationError::new("destination", format!("{m} (got {d:?})")));
    match channel {
        Channel::Local if d == "local" => return Ok(()),
        Channel::Local => return err("a local destination is written `local`"),
        Channel::Ssh if d == "local" => return err("`local` needs channel local"),
        Channel::Ssh => {}
    }
    let (user, rest) = d.rsplit_once('@').map_or((None, d), |(u, r)| (Some(u), r));
    if let Some(u) = user {
        if Login::parse("destination", u).is_err() {
            return err("the user part must be a login");
        }
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return err("an unclosed '['");
        };
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return err("brackets hold an IPv6 address");
        }
        (h, after.strip_prefix(':'))
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return err("the port must be 1 to 65535");
        }
    }
    if host.parse::<std::net::IpAddr>().is_ok()
        || check_fqdn(
            "destination",
            &host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase(),
        )
        .is_ok()
    {
        Ok(())
    } else {
        err("expected [user@]host[:port]")
    }
}

/// The host part of a destination, compared by invariant 7: lower-cased, without `user@`,
/// `:port`, brackets or a trailing dot; an IP in canonical form. (keel-agent does the same.)
pub fn destination_host(d: &str) -> String {
    let d = d.trim();
    let d = d.rsplit_once('@').map_or(d, |(_, h)| h);
    let host = if let Some(rest) = d.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else if d.matches(':').count() == 1 {
        d.split_once(':').map_or(d, |(h, _)| h)
    } else {
        d
    };
    // One spelling for every address glibc and OpenSSH read (`127.1`, `0x7f.1`, `::ffff:…`).
    crate::identity::canonical_host(host)
}

/// Every name a host answers to, normalized: its name, aliases, and its machine's names (bare
/// and in `zone`).
pub fn host_names(h: &Host, machine: Option<&crate::Machine>, zone: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = std::iter::once(&h.name)
        .chain(&h.aliases)
        .map(|n| destination_host(n))
        .collect();
    if let Some(m) = machine {
        for n in m.names() {
            names.insert(n.to_string());
            names.insert(format!("{n}.{zone}"));
        }
        names.insert(m.ip.to_string());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        for ok in [
            "host1.prolo",
            "root@host1.prolo",
            "host1:2222",
            "root@[::1]:22",
            "127.0.0.1",
            "Host1.Prolo",
        ] {
            assert!(check_destination(Channel::Ssh, ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "local",
            "root@",
            "h:0",
            "h:99999",
            "[::1",
            "$(x)",
            "a b",
            "-oProxyCommand=x",
            "ro ot@h",
        ] {
            assert!(check_destination(Channel::Ssh, bad).is_err(), "{bad}");
        }
        assert!(check_destination(Channel::Local, "local").is_ok());
        assert_eq!(destination_host("root@Host1.Prolo.:22"), "host1.prolo");
    }
}
