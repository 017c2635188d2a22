//! Mutations of propagation's records (hosts, facilities, destinations), with the rights rules:
//! an admin does anything; a facility manager acts only inside the facilities that name them as
//! manager, and may claim a host or destination name only if nobody holds it yet or it already
//! belongs to a facility they manage (invariant 7). Rights are checked inside the write, against
//! the Snapshot the write commits on, so two concurrent requests cannot both slip through.

use std::collections::BTreeSet;

use keel_model::propagation::{check_destination, check_fqdn, check_name, destination_host, host_names};
use keel_model::{Destination, Facility, Host, Principal, Role, Snapshot, ValidationError};

use crate::ops::{check_version, record};
use crate::store::Write;
use crate::{Db, StoreError};

fn forbidden(who: &Principal, what: &str) -> StoreError {
    StoreError::Forbidden(format!("{} ({}) may not {what}", who.name, who.role))
}

/// `who` may act on facility `f`: an admin, or one of its managers.
fn may_manage(s: &Snapshot, who: &Principal, facility: &str) -> Result<(), StoreError> {
    let f = s
        .facility(facility)
        .ok_or_else(|| ValidationError::new("facility", format!("no facility {facility:?}")))?;
    if f.is_run_by(who) {
        Ok(())
    } else {
        Err(forbidden(
            who,
            &format!("change facility {facility}, which they do not manage"),
        ))
    }
}

/// The facilities that already hold `name` through a host (its name, aliases, machine names) or a
/// destination.
fn owners_of(s: &Snapshot, name: &str) -> BTreeSet<String> {
    let mut owners = BTreeSet::new();
    for h in s.hosts() {
        let machine = h.machine.as_deref().and_then(|m| s.machine_by_name(m));
        let names = host_names(h, machine, "");
        let via_machine = machine.is_some_and(|m| {
            m.names()
                .any(|n| name == n.as_str() || name.starts_with(&format!("{n}.")))
        });
        if names.contains(name) || via_machine {
            owners.insert(h.facility.clone());
        }
    }
    for d in s.destinations() {
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
fn may_claim(s: &Snapshot, who: &Principal, field: &str, name: &str) -> Result<(), StoreError> {
    if who.role == Role::Admin {
        return Ok(());
    }
    let name = canonical_claim(&destination_host(name));
    let refuse = |why: String| Err(StoreError::Forbidden(format!("{field}: {name:?} {why}")));
    if is_loopback(&name) {
        return refuse("is keel's own host; only admins send there".into());
    }
    let mut owners = owners_of(s, &name);
    if !name.contains(['.', ':']) {
        // A bare name reaches whichever host the search domain completes it to.
        owners.extend(
            s.hosts()
                .filter(|h| host_short_names(h).contains(&name))
                .map(|h| h.facility.clone()),
        );
    }
    let theirs = |f: &str| s.facility(f).is_some_and(|f| f.is_managed_by(&who.name));
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
        .and_then(|ip| s.machine_by_ip(ip))
        .or_else(|| s.machine_by_name(&name))
        .or_else(|| s.machine_by_name(name.split('.').next().unwrap_or_default()));
    if let Some(m) = machine {
        let own_host = s
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

fn check_host(s: &Snapshot, h: &Host) -> Result<(), StoreError> {
    check_fqdn("name", &h.name)?;
    for a in &h.aliases {
        check_fqdn("aliases", a)?;
    }
    if let Some(m) = &h.machine {
        if s.machine_by_name(m).is_none() {
            return Err(ValidationError::new("machine", format!("no machine {m:?}")).into());
        }
    }
    for other in s.hosts().filter(|o| o.name != h.name) {
        let theirs = host_names(other, None, "");
        if let Some(n) = std::iter::once(&h.name).chain(&h.aliases).find(|n| theirs.contains(*n)) {
            return Err(
                ValidationError::new("aliases", format!("{n} is already a name of host {}", other.name)).into(),
            );
        }
    }
    Ok(())
}

fn check_facility(f: &Facility, services: &BTreeSet<String>) -> Result<(), StoreError> {
    check_name("name", &f.name)?;
    for s in f.services.iter().chain(&f.blocked) {
        if !services.contains(s) {
            let known: Vec<&str> = services.iter().map(String::as_str).collect();
            return Err(ValidationError::new(
                "services",
                format!("unknown service {s:?}; known: {}", known.join(", ")),
            )
            .into());
        }
    }
    Ok(())
}

fn found<R>(r: Option<&R>, what: impl FnOnce() -> String) -> Result<&R, StoreError> {
    r.ok_or_else(|| StoreError::NotFound(what()))
}

impl Db {
    /// Creates (`if_version` 0) or replaces (at `if_version`) a host.
    pub async fn put_host(&self, who: &Principal, h: Host, if_version: u64) -> Result<Host, StoreError> {
        let changes = self
            .write(who, |s, _| {
                may_manage(s, who, &h.facility)?;
                match (s.host(&h.name), if_version) {
                    (Some(old), v) => {
                        check_version(old.version, v)?;
                        may_manage(s, who, &old.facility)?;
                    }
                    (None, 0) => {}
                    (None, _) => return Err(StoreError::NotFound(format!("host {}", h.name))),
                }
                for n in std::iter::once(&h.name).chain(&h.aliases) {
                    may_claim(s, who, "name", n)?;
                }
                check_host(s, &h)?;
                Ok(vec![Write::put(&h, Some(if_version), false)?])
            })
            .await?;
        record(&changes, false)
    }

    pub async fn delete_host(&self, who: &Principal, name: &str, if_version: u64) -> Result<Host, StoreError> {
        self.delete_one(who, if_version, |s| {
            let h = found(s.host(name), || format!("host {name}"))?;
            may_manage(s, who, &h.facility)?;
            Ok(h)
        })
        .await
    }

    /// Creates (admins only) or edits a facility. Managers may change what their facility
    /// receives and runs, not who manages it.
    pub async fn put_facility(
        &self,
        who: &Principal,
        f: Facility,
        if_version: u64,
        services: &BTreeSet<String>,
    ) -> Result<Facility, StoreError> {
        let changes = self
            .write(who, |s, _| {
                check_facility(&f, services)?;
                match (s.facility(&f.name), if_version) {
                    (Some(old), v) => {
                        check_version(old.version, v)?;
                        may_manage(s, who, &f.name)?;
                        // Who manages a facility and which users it receives (and so whose
                        // hashes its hosts get) are the admins' decision; managers keep its
                        // hosts, destinations and services.
                        if !who.is_admin() && old.managers != f.managers {
                            return Err(forbidden(who, "change a facility's managers"));
                        }
                        if !who.is_admin() && (old.groups != f.groups || old.members != f.members) {
                            return Err(forbidden(
                                who,
                                "change which users a facility receives (groups, members)",
                            ));
                        }
                    }
                    (None, 0) if who.is_admin() => {}
                    (None, 0) => return Err(forbidden(who, "create facilities")),
                    (None, _) => return Err(StoreError::NotFound(format!("facility {}", f.name))),
                }
                Ok(vec![Write::put(&f, Some(if_version), false)?])
            })
            .await?;
        record(&changes, false)
    }

    /// Deletes an empty facility (admins only): hosts and destinations must go first.
    pub async fn delete_facility(&self, who: &Principal, name: &str, if_version: u64) -> Result<Facility, StoreError> {
        let changes = self
            .write(who, |s, _| {
                if !who.is_admin() {
                    return Err(forbidden(who, "delete facilities"));
                }
                let f = found(s.facility(name), || format!("facility {name}"))?;
                check_version(f.version, if_version)?;
                let hosts = s.hosts().filter(|h| h.facility == name).count();
                let dests = s.destinations().filter(|d| d.facility == name).count();
                if hosts + dests > 0 {
                    return Err(StoreError::Conflict(format!(
                        "facility {name} still has {hosts} host(s) and {dests} destination(s); remove them first"
                    )));
                }
                Ok(vec![Write::delete(f, Some(if_version))])
            })
            .await?;
        record(&changes, true)
    }

    /// Adds a destination, or (at `if_version`) changes whether it is blocked.
    pub async fn put_destination(
        &self,
        who: &Principal,
        d: Destination,
        if_version: u64,
        services: &BTreeSet<String>,
    ) -> Result<Destination, StoreError> {
        let changes = self
            .write(who, |s, _| {
                may_manage(s, who, &d.facility)?;
                if !services.contains(&d.service) {
                    return Err(ValidationError::new("service", format!("unknown service {:?}", d.service)).into());
                }
                check_destination(d.channel, &d.destination)?;
                match (s.destination(&d.key()), if_version) {
                    (Some(old), v) => check_version(old.version, v)?,
                    (None, 0) => {
                        if d.channel == keel_model::Channel::Ssh {
                            may_claim(s, who, "destination", &d.destination)?;
                        } else if !who.is_admin() {
                            return Err(forbidden(who, "add a local destination (it runs on keel's own host)"));
                        }
                    }
                    (None, _) => return Err(StoreError::NotFound(format!("destination {}", d.key()))),
                }
                Ok(vec![Write::put(&d, Some(if_version), false)?])
            })
            .await?;
        record(&changes, false)
    }

    pub async fn delete_destination(
        &self,
        who: &Principal,
        key: &str,
        if_version: u64,
    ) -> Result<Destination, StoreError> {
        self.delete_one(who, if_version, |s| {
            let d = found(s.destination(key), || format!("destination {key}"))?;
            may_manage(s, who, &d.facility)?;
            Ok(d)
        })
        .await
    }
}
