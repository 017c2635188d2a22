//! Mutations of propagation's records (hosts, facilities, destinations). The rights rules are
//! keel-model's (`Snapshot::may_manage`, `Snapshot::may_claim`, pure); they are checked here,
//! inside the write, against the Snapshot the write commits on, so two concurrent requests cannot
//! both slip through.

use std::collections::BTreeSet;

use keel_model::propagation::{check_destination, check_fqdn, check_name, host_names};
use keel_model::{Destination, Facility, Host, Principal, RightsError, Snapshot, ValidationError};

use crate::ops::{check_version, record};
use crate::store::Write;
use crate::{Db, StoreError};

fn forbidden(who: &Principal, what: &str) -> StoreError {
    RightsError::forbidden(who, what).into()
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
    for n in std::iter::once(&h.name).chain(&h.aliases) {
        let taken = s
            .hosts_named(n)
            .find(|o| o.name != h.name && host_names(o, None, "").contains(n));
        if let Some(other) = taken {
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
        let own = self.own_addresses();
        let changes = self
            .write(who, |s, _| {
                s.may_manage(who, &h.facility)?;
                let before = s.host(&h.name);
                match (before, if_version) {
                    (Some(old), v) => {
                        // Rights first: a host of another facility is refused without a word about
                        // it (its version included); a create over one's own is a conflict.
                        s.may_manage(who, &old.facility)?;
                        if v == 0 {
                            return Err(StoreError::Conflict(format!("host {} already exists", h.name)));
                        }
                        check_version(old.version, v)?;
                    }
                    (None, 0) => {}
                    (None, _) => return Err(StoreError::NotFound(format!("host {}", h.name))),
                }
                for n in std::iter::once(&h.name).chain(&h.aliases) {
                    s.may_claim(who, "name", n, &own)?;
                }
                s.may_link(who, &h, before)?;
                check_host(s, &h)?;
                Ok(vec![Write::put(&h, Some(if_version), false)?])
            })
            .await?;
        record(&changes, false)
    }

    pub async fn delete_host(&self, who: &Principal, name: &str, if_version: u64) -> Result<Host, StoreError> {
        self.delete_one(who, if_version, |s| {
            let h = found(s.host(name), || format!("host {name}"))?;
            s.may_manage(who, &h.facility)?;
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
                        s.may_manage(who, &f.name)?;
                        // Who manages a facility and which users it receives (and so whose
                        // hashes its hosts get) are the admins' decision; managers keep its
                        // hosts, destinations and services.
                        if !who.is_admin() && old.managers != f.managers {
                            return Err(forbidden(who, "change a facility's managers"));
                        }
                        if !who.is_admin() && (old.groups != f.groups || old.members != f.members || old.hfs != f.hfs) {
                            return Err(forbidden(
                                who,
                                "change which users a facility receives (groups, members, hfs)",
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
                let hosts = s.hosts_of(name).count();
                let dests = s.destinations_in(name).count();
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
        let own = self.own_addresses();
        let mut d = d;
        let changes = self
            .write(who, |s, _| {
                s.may_manage(who, &d.facility)?;
                if !services.contains(&d.service) {
                    return Err(ValidationError::new("service", format!("unknown service {:?}", d.service)).into());
                }
                check_destination(d.channel, &d.destination)?;
                match (s.destination(&d.key()), if_version) {
                    (Some(old), v) => {
                        check_version(old.version, v)?;
                        d.claimed_by.clone_from(&old.claimed_by);
                    }
                    (None, 0) => {
                        d.claimed_by = (!who.is_admin()).then(|| who.name.clone());
                        if d.channel == keel_model::Channel::Ssh {
                            s.may_claim(who, "destination", &d.destination, &own)?;
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
            s.may_manage(who, &d.facility)?;
            Ok(d)
        })
        .await
    }
}
