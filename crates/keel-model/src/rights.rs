//! Who may do what to propagation's records — pure rules over the Snapshot, like
//! `Snapshot::decide_login` for presence. An admin does anything; a facility manager acts only
//! inside the facilities that name them as manager, and may claim a host or destination name only
//! if nobody holds it yet or it already belongs to a facility they manage (DESIGN invariant 7).
//! keel-store calls these inside the write, against the Snapshot the write commits on.

use std::collections::BTreeSet;

use crate::propagation::{destination_host, host_names};
use crate::{Host, Principal, Role, Snapshot, ValidationError};

/// Why a principal may not make a change to propagation's records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RightsError {
    /// Refused: the text says who may not do what, and why.
    #[error("{0}")]
    Forbidden(String),
    /// The request names something that does not exist (a facility).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

impl RightsError {
    pub fn forbidden(who: &Principal, what: &str) -> Self {
        Self::Forbidden(format!("{} ({}) may not {what}", who.name, who.role))
    }
}

impl Snapshot {
    /// `who` may act on facility `f`: an admin, or one of its managers.
    pub fn may_manage(&self, who: &Principal, facility: &str) -> Result<(), RightsError> {
        let f = self
            .facility(facility)
            .ok_or_else(|| ValidationError::new("facility", format!("no facility {facility:?}")))?;
        if f.is_run_by(who) {
            Ok(())
        } else {
            Err(RightsError::forbidden(
                who,
                &format!("change facility {facility}, which they do not manage"),
            ))
        }
    }

    /// The facilities that already hold `name` through a host (its name, aliases, machine names) or a
    /// destination.
    fn owners_of(&self, name: &str) -> BTreeSet<String> {
        let mut owners = BTreeSet::new();
        for h in self.hosts() {
            let machine = h.machine.as_deref().and_then(|m| self.machine_by_name(m));
            let names = host_names(h, machine, "");
            let via_machine = machine.is_some_and(|m| {
                m.names()
                    .any(|n| name == n.as_str() || name.starts_with(&format!("{n}.")))
            });
            if names.contains(name) || via_machine {
                owners.insert(h.facility.clone());
            }
        }
        for d in self.destinations() {
            if d.host() == name {
                owners.insert(d.facility.clone());
            }
        }
        owners
    }

    /// Invariant 7's second half: a manager claims a name only if it is free or already theirs.
    /// "Theirs or free" is judged on every spelling that could reach another facility's host: the
    /// name, a bare name equal to a host's first label (it resolves through the search domain), an IPv4-mapped
    /// address as IPv4, a site machine's names and address (the gateway where keel runs is one), and
    /// loopback, which is keel's own host.
    pub fn may_claim(&self, who: &Principal, field: &str, name: &str) -> Result<(), RightsError> {
        if who.role == Role::Admin {
            return Ok(());
        }
        let name = canonical_claim(&destination_host(name));
        let refuse = |why: String| Err(RightsError::Forbidden(format!("{field}: {name:?} {why}")));
        if is_loopback(&name) {
            return refuse("is keel's own host; only admins send there".into());
        }
        let mut owners = self.owners_of(&name);
        if !name.contains(['.', ':']) {
            // A bare name reaches whichever host the search domain completes it to.
            owners.extend(
                self.hosts()
                    .filter(|h| host_short_names(h).contains(&name))
                    .map(|h| h.facility.clone()),
            );
        }
        let theirs = |f: &str| self.facility(f).is_some_and(|f| f.is_managed_by(&who.name));
        let foreign: Vec<String> = owners.into_iter().filter(|f| !theirs(f)).collect();
        if !foreign.is_empty() {
            return refuse(format!(
                "belongs to facility {} which {} does not manage",
                foreign.join(", "),
                who.name
            ));
        }
        // A site machine that is no host of theirs (keel's own gateway included) is not theirs either.
        let machine = name
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .and_then(|ip| self.machine_by_ip(ip))
            .or_else(|| self.machine_by_name(&name))
            .or_else(|| self.machine_by_name(name.split('.').next().unwrap_or_default()));
        if let Some(m) = machine {
            let own_host = self
                .hosts()
                .any(|h| h.machine.as_deref() == Some(m.hostname.as_str()) && theirs(&h.facility));
            if !own_host {
                return refuse(format!(
                    "is machine {}, which is no host of a facility {} manages",
                    m.hostname, who.name
                ));
            }
        }
        Ok(())
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical_claim(name: &str) -> String {
    match name
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .and_then(|v6| v6.to_ipv4_mapped())
    {
        Some(v4) => v4.to_string(),
        None => name.to_owned(),
    }
}

fn is_loopback(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name.starts_with("localhost.")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// The first labels of a host's own names (`b1` of `b1.example.org`).
fn host_short_names(h: &Host) -> BTreeSet<String> {
    std::iter::once(&h.name)
        .chain(&h.aliases)
        .map(|n| destination_host(n).split('.').next().unwrap_or_default().to_owned())
        .collect()
}
