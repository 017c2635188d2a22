//! The mutations keel offers, as `Db` methods: validate against the Snapshot, then one commit.

use keel_model::input::Fields;
use keel_model::{
    Change, Machine, MachinePatch, Principal, Record, Setting, Snapshot, Switch, User, UserPatch, ValidationError,
    ValidationErrors,
};
use serde_json::Value;

use crate::store::Write;
use crate::{Db, StoreError};

/// `If-Match` semantics: the caller's version must be the record's current one.
pub(crate) fn check_version(current: u64, expected: u64) -> Result<(), StoreError> {
    if current == expected {
        Ok(())
    } else {
        Err(StoreError::VersionMismatch { expected, current })
    }
}

fn decode<R: Record>(changes: &[Change]) -> Result<R, StoreError> {
    record(changes, false)
}

/// The record of the last change, as written (`before` false) or as it was (`before` true).
pub(crate) fn record<R: Record>(changes: &[Change], before: bool) -> Result<R, StoreError> {
    let c = changes.last().ok_or_else(|| StoreError::Corrupt("no change".into()))?;
    let v = if before { c.before.clone() } else { c.after.clone() };
    serde_json::from_value(v.ok_or_else(|| StoreError::Corrupt("no record".into()))?)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn find_switch<'s>(s: &'s Snapshot, name: &str) -> Result<&'s Switch, StoreError> {
    s.switch(name)
        .ok_or_else(|| StoreError::NotFound(format!("switch {name}")))
}

fn find_machine<'s>(s: &'s Snapshot, name: &str) -> Result<&'s Machine, StoreError> {
    s.machine_by_name(name)
        .ok_or_else(|| StoreError::NotFound(format!("machine {name}")))
}

impl Db {
    /// Deletes the record `find` picks, which must be at version `if_version`; returns it as it was.
    pub(crate) async fn delete_one<R: Record>(
        &self,
        who: &Principal,
        if_version: u64,
        find: impl for<'s> FnOnce(&'s Snapshot) -> Result<&'s R, StoreError>,
    ) -> Result<R, StoreError> {
        let changes = self
            .write(who, |s, _| {
                let old = find(s)?;
                check_version(old.version(), if_version)?;
                Ok(vec![Write::delete(old, Some(if_version))])
            })
            .await?;
        record(&changes, true)
    }

    /// Adds a machine; its address is allocated from its type's pool unless given.
    /// Creates a machine. Anyone but an admin is a machine registering itself: the patch must
    /// already be [`MachinePatch::self_registered`] (checked again here, so no route can forget).
    pub async fn create_machine(&self, who: &Principal, patch: MachinePatch) -> Result<Machine, StoreError> {
        if !who.is_admin() {
            let mtype = patch.mtype.unwrap_or(keel_model::MachineType::User);
            let checked = patch.clone().self_registered(mtype)?;
            if checked != patch {
                return Err(StoreError::Forbidden(
                    "a machine registering itself must say its type (the site's self_registration_type)".into(),
                ));
            }
        }
        let changes = self
            .write(who, |s, pools| {
                let mut hints = self.alloc_hints();
                let m = s.new_machine_hinted(patch, 0, pools, &mut hints)?;
                Ok(vec![Write::put(&m, Some(0), true)?])
            })
            .await?;
        decode(&changes)
    }

    /// Edits the machine named `name` (hostname or alias), which must be at version `if_version`.
    pub async fn edit_machine(
        &self,
        who: &Principal,
        name: &str,
        if_version: u64,
        patch: MachinePatch,
    ) -> Result<Machine, StoreError> {
        let changes = self
            .write(who, |s, pools| {
                let old = find_machine(s, name)?;
                check_version(old.version, if_version)?;
                let m = s.edit_machine(old, patch, pools)?;
                // Someone logged in on a renamed machine stays logged in on it (SSO finds them).
                // The machine's own Change comes last: it is what this call answers.
                let mut writes = Vec::new();
                if let Some(session) = s
                    .session_on(old.hostname.as_str())
                    .filter(|_| m.hostname != old.hostname)
                {
                    let moved = keel_model::Session {
                        hostname: m.hostname.clone(),
                        ..session.clone()
                    };
                    writes.push(Write::put(&moved, Some(session.version), false)?);
                }
                writes.push(Write::put(&m, Some(if_version), false)?);
                Ok(writes)
            })
            .await?;
        decode(&changes)
    }

    /// Moves machines to free addresses of their types' pools (`keel machine renumber`): those
    /// named, or every machine outside today's pools. With `dry_run` nothing is written: the
    /// moves the write would make, planned against the live state. Otherwise all of them in one
    /// commit, or none; each is a Change in the log.
    pub async fn renumber_machines(
        &self,
        who: &Principal,
        names: Option<Vec<keel_model::Hostname>>,
        dry_run: bool,
    ) -> Result<Vec<(Machine, std::net::Ipv4Addr)>, StoreError> {
        if dry_run {
            let snap = self.snapshot();
            let moved = snap.renumber(names.as_deref(), &self.pools())?;
            return Ok(with_old_addresses(&snap, moved));
        }
        let mut planned = Vec::new();
        self.write(who, |s, pools| {
            let moved = s.renumber(names.as_deref(), pools)?;
            let writes = moved
                .iter()
                .map(|m| Write::put(m, Some(m.version), false))
                .collect::<Result<Vec<_>, _>>()?;
            planned = with_old_addresses(s, moved);
            Ok(writes)
        })
        .await?;
        Ok(planned)
    }

    /// Deletes a machine; a session on it ends in the same commit.
    pub async fn delete_machine(&self, who: &Principal, name: &str, if_version: u64) -> Result<Machine, StoreError> {
        let changes = self
            .write(who, |s, _| {
                let old = find_machine(s, name)?;
                check_version(old.version, if_version)?;
                let mut writes = Vec::new();
                if let Some(session) = s.session_on(old.hostname.as_str()) {
                    writes.push(Write::delete(session, Some(session.version)));
                }
                // Its roles go with it: no role points at a machine that is gone.
                for role in s.roles_of(old.id).collect::<Vec<_>>() {
                    if let Some(r) = s.role(&role) {
                        writes.push(Write::delete(r, Some(r.version)));
                    }
                }
                writes.push(Write::delete(old, Some(if_version)));
                Ok(writes)
            })
            .await?;
        record(&changes, true)
    }

    /// Adds many machines at once, all or nothing. Every bad row is reported with its line. With
    /// `dry_run`, the same plan against the live state, and nothing committed or logged: the
    /// machines the import would create.
    pub async fn import_machines(
        &self,
        who: &Principal,
        rows: Vec<(usize, Result<MachinePatch, ValidationError>)>,
        dry_run: bool,
    ) -> Result<Vec<Machine>, StoreError> {
        if dry_run {
            return plan_machine_import(&self.snapshot(), &self.pools(), rows);
        }
        let changes = self
            .write(who, |s, pools| {
                plan_machine_import(s, pools, rows)?
                    .iter()
                    .map(|m| Write::put(m, Some(0), true))
                    .collect()
            })
            .await?;
        changes.iter().map(|c| decode(std::slice::from_ref(c))).collect()
    }

    pub async fn create_switch(&self, who: &Principal, fields: Fields) -> Result<Switch, StoreError> {
        let changes = self
            .write(who, |s, _| {
                let sw = Switch::from_fields(fields, None)?;
                if s.switch(sw.name.as_str()).is_some() {
                    return Err(ValidationError::new("name", format!("switch {} already exists", sw.name)).into());
                }
                s.check_switch(&sw)?;
                Ok(vec![Write::put(&sw, Some(0), false)?])
            })
            .await?;
        decode(&changes)
    }

    pub async fn edit_switch(
        &self,
        who: &Principal,
        name: &str,
        if_version: u64,
        fields: Fields,
    ) -> Result<Switch, StoreError> {
        let changes = self
            .write(who, |s, _| {
                let old = find_switch(s, name)?;
                check_version(old.version, if_version)?;
                let sw = Switch::from_fields(fields, Some(old))?;
                if sw.name != old.name {
                    return Err(
                        ValidationError::new("name", "a switch cannot be renamed; delete and re-add it").into(),
                    );
                }
                s.check_switch(&sw)?;
                Ok(vec![Write::put(&sw, Some(if_version), false)?])
            })
            .await?;
        decode(&changes)
    }

    pub async fn delete_switch(&self, who: &Principal, name: &str, if_version: u64) -> Result<Switch, StoreError> {
        self.delete_one(who, if_version, |s| find_switch(s, name)).await
    }

    /// Sets a known setting; `if_version` (0 for a never-set one) guards against lost updates.
    pub async fn set_setting(
        &self,
        who: &Principal,
        key: &str,
        value: Value,
        if_version: Option<u64>,
    ) -> Result<Setting, StoreError> {
        let changes = self
            .write(who, |s, _| {
                let current = s.setting(key)?;
                if let Some(v) = if_version {
                    check_version(current.version, v)?;
                }
                let new = Setting::new(key, value)?;
                Ok(vec![Write::put(&new, None, false)?])
            })
            .await?;
        decode(&changes)
    }
}

impl Db {
    /// Gives `role` to the machine named `machine` (admins only: roles decide what other machines
    /// boot, mount and resolve, and what keel counts as its own host). `if_version`: 0 for a role
    /// not given yet, else the version of its record.
    pub async fn set_role(
        &self,
        who: &Principal,
        role: &keel_model::MachineRole,
        machine: &str,
        if_version: Option<u64>,
    ) -> Result<keel_model::RoleRecord, StoreError> {
        if !who.is_admin() {
            return Err(StoreError::Forbidden(format!(
                "{} may not give roles: admins only",
                who.name
            )));
        }
        let changes = self
            .write(who, |s, _| {
                let m = find_machine(s, machine)?;
                if let keel_model::MachineRole::Service(name) = role {
                    if let Some(other) = s.machine_by_name(name).filter(|o| o.id != m.id) {
                        return Err(ValidationError::new(
                            "machine",
                            format!(
                                "{name} is the name of machine {}: rename it, or give it the role",
                                other.hostname
                            ),
                        )
                        .into());
                    }
                }
                let current = s.role(role).map_or(0, |r| r.version);
                if let Some(v) = if_version {
                    check_version(current, v)?;
                }
                let r = keel_model::RoleRecord {
                    role: role.key(),
                    machine: m.id,
                    version: current,
                };
                Ok(vec![Write::put(&r, Some(current), false)?])
            })
            .await?;
        decode(&changes)
    }

    /// Takes `role` back (admins only).
    pub async fn remove_role(
        &self,
        who: &Principal,
        role: &keel_model::MachineRole,
        if_version: u64,
    ) -> Result<keel_model::RoleRecord, StoreError> {
        if !who.is_admin() {
            return Err(StoreError::Forbidden(format!(
                "{} may not take roles back: admins only",
                who.name
            )));
        }
        self.delete_one(who, if_version, |s| {
            s.role(role).ok_or_else(|| StoreError::NotFound(format!("role {role}")))
        })
        .await
    }

    /// `[presence] proof` when keel.toml does not set it: `off` for a database made before
    /// proofs (its machines' PAM lines have no `auth` step yet), `required` otherwise.
    pub async fn default_proof_policy(&self) -> Result<keel_model::ProofPolicy, StoreError> {
        Ok(if self.store().meta_flag("presence_proof_off").await? {
            keel_model::ProofPolicy::Off
        } else {
            keel_model::ProofPolicy::Required
        })
    }

    /// Before roles were records, netboot took "the machine named rfsN" as RFS N, automount
    /// "hfsN", the DNS the aliases `mdb`, `sso`…, and `gw` was keel's host. Once, on a database
    /// from then, each such machine is given that role (logged, as `keel (roles)`), so an
    /// existing site boots, mounts and resolves as before; an admin changes them from then on.
    pub async fn migrate_roles(&self) -> Result<usize, StoreError> {
        const PENDING: &str = "roles_from_names";
        if !self.store().meta_flag(PENDING).await? {
            return Ok(0);
        }
        let who = Principal {
            name: "keel (roles)".into(),
            ..Principal::system()
        };
        let changes = self
            .write(&who, |s, _| {
                let mut writes = Vec::new();
                let mut given = std::collections::BTreeSet::new();
                for m in s.machines() {
                    for name in m.names() {
                        let Some(role) = role_by_old_name(name.as_str()) else {
                            continue;
                        };
                        if s.role(&role).is_none() && given.insert(role.key()) {
                            let r = keel_model::RoleRecord {
                                role: role.key(),
                                machine: m.id,
                                version: 0,
                            };
                            writes.push(Write::put(&r, Some(0), false)?);
                        }
                    }
                }
                Ok(writes)
            })
            .await?;
        self.store().clear_meta_flag(PENDING).await?;
        Ok(changes.len())
    }
}

/// The role a machine name meant before roles were records.
fn role_by_old_name(name: &str) -> Option<keel_model::MachineRole> {
    use keel_model::MachineRole;
    let number = |prefix: &str| name.strip_prefix(prefix).and_then(|n| n.parse::<u32>().ok());
    if name == "gw" {
        return Some(MachineRole::Gateway);
    }
    if let Some(n) = number("rfs") {
        return Some(MachineRole::Rfs(n));
    }
    if let Some(n) = number("hfs") {
        return Some(MachineRole::Hfs(n));
    }
    keel_model::role::SERVICE_NAMES
        .iter()
        .find(|s| **s == name)
        .map(|s| MachineRole::Service(s))
}

fn find_user<'s>(s: &'s Snapshot, login: &str) -> Result<&'s User, StoreError> {
    s.user(login)
        .ok_or_else(|| StoreError::NotFound(format!("user {login}")))
}

impl Db {
    /// Adds a user; its uid is the next of its group's pool, never one given before.
    pub async fn create_user(&self, who: &Principal, patch: UserPatch) -> Result<User, StoreError> {
        let changes = self
            .write(who, |s, pools| {
                let (user, counter) = s.new_user(patch, &pools.uids)?;
                Ok(vec![
                    Write::put(&user, Some(0), false)?,
                    Write::put(&counter, None, false)?,
                ])
            })
            .await?;
        changes
            .iter()
            .find(|c| c.kind == User::KIND)
            .and_then(|c| c.after.clone())
            .and_then(|a| serde_json::from_value(a).ok())
            .ok_or_else(|| StoreError::Corrupt("no user in the commit".into()))
    }

    /// Edits the user `login`, which must be at version `if_version`.
    pub async fn edit_user(
        &self,
        who: &Principal,
        login: &str,
        if_version: u64,
        patch: UserPatch,
    ) -> Result<User, StoreError> {
        let changes = self
            .write(who, |s, _| {
                let old = find_user(s, login)?;
                check_version(old.version, if_version)?;
                let u = patch.apply(old)?;
                Ok(vec![Write::put(&u, Some(if_version), false)?])
            })
            .await?;
        decode(&changes)
    }

    /// Puts `login`'s home on HFS `to`: the one write that changes an assigned `hfs` (an edit may
    /// only set it once). The caller has moved the files first (the site's hook); this records it.
    pub async fn move_home(&self, who: &Principal, login: &str, if_version: u64, to: u32) -> Result<User, StoreError> {
        let changes = self
            .write(who, |s, _| {
                let old = find_user(s, login)?;
                check_version(old.version, if_version)?;
                let u = User {
                    hfs: Some(to),
                    ..old.clone()
                };
                Ok(vec![Write::put(&u, Some(if_version), false)?])
            })
            .await?;
        decode(&changes)
    }

    /// Removes a user. Its uid is not given again (the group's counter keeps it).
    pub async fn delete_user(&self, who: &Principal, login: &str, if_version: u64) -> Result<User, StoreError> {
        self.delete_one(who, if_version, |s| find_user(s, login)).await
    }
}

/// What an import does with a login that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExisting {
    /// The line is an error (the default).
    Refuse,
    /// The user is updated with the line's fields.
    Update,
    /// The line is skipped.
    Ignore,
}

/// What an import did (or, for a dry run, would do).
#[derive(Debug, Default, serde::Serialize)]
pub struct ImportReport {
    pub created: Vec<User>,
    pub updated: Vec<User>,
    pub ignored: Vec<String>,
}

impl Db {
    /// Adds (or updates) many users at once, all or nothing; every bad line is named.
    pub async fn import_users(
        &self,
        who: &Principal,
        rows: Vec<(usize, Result<UserPatch, ValidationError>)>,
        on_existing: OnExisting,
        dry_run: bool,
    ) -> Result<ImportReport, StoreError> {
        if dry_run {
            let snap = self.snapshot();
            return plan_user_import(&snap, &self.pools().uids, rows, on_existing).map(|(report, _)| report);
        }
        let mut report = None;
        self.write(who, |s, pools| {
            let (r, writes) = plan_user_import(s, &pools.uids, rows, on_existing)?;
            report = Some(r);
            Ok(writes)
        })
        .await?;
        report.ok_or_else(|| StoreError::Corrupt("no import report".into()))
    }
}

/// Checks every row against the database and the rows before it; returns the report and the writes.
fn plan_user_import(
    s: &Snapshot,
    uids: &keel_model::UidPools,
    rows: Vec<(usize, Result<UserPatch, ValidationError>)>,
    on_existing: OnExisting,
) -> Result<(ImportReport, Vec<Write>), StoreError> {
    let mut scratch = s.clone();
    let mut report = ImportReport::default();
    let mut errors = Vec::new();
    let mut counters = std::collections::BTreeMap::new();
    let mut in_file: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (line, row) in rows {
        let result = row.and_then(|patch| {
            if let Some(l) = &patch.login {
                if let Some(first) = in_file.insert(l.to_string(), line) {
                    return Err(ValidationError::new("login", format!("{l} is already on line {first}")));
                }
            }
            let existing = patch.login.as_ref().and_then(|l| scratch.user(l.as_str())).cloned();
            match (existing, on_existing) {
                (Some(old), OnExisting::Ignore) => {
                    report.ignored.push(old.login.to_string());
                    Ok(())
                }
                (Some(old), OnExisting::Update) => {
                    let u = patch.apply(&old)?;
                    scratch.put_user(u.clone());
                    report.updated.push(u);
                    Ok(())
                }
                (Some(old), OnExisting::Refuse) => Err(ValidationError::new(
                    "login",
                    format!("{} already exists (import with --update or --ignore)", old.login),
                )),
                (None, _) => {
                    let (u, counter) = scratch.new_user(patch, uids)?;
                    scratch.put_user(u.clone());
                    counters.insert(counter.key.clone(), counter.clone());
                    scratch.put_counter(counter);
                    report.created.push(u);
                    Ok(())
                }
            }
        });
        if let Err(e) = result {
            errors.push(e.at_line(line));
        }
    }
    if !errors.is_empty() {
        return Err(ValidationErrors(errors).into());
    }
    let mut writes = Vec::new();
    for u in &report.created {
        writes.push(Write::put(u, Some(0), false)?);
    }
    for u in &report.updated {
        let version = s.user(u.login.as_str()).map_or(0, |o| o.version);
        writes.push(Write::put(u, Some(version), false)?);
    }
    for c in counters.values() {
        writes.push(Write::put(c, None, false)?);
    }
    Ok((report, writes))
}

/// Each moved machine with the address it had in `before`.
fn with_old_addresses(before: &keel_model::Snapshot, moved: Vec<Machine>) -> Vec<(Machine, std::net::Ipv4Addr)> {
    moved
        .into_iter()
        .map(|m| {
            let old = before.machine(m.id).map_or(m.ip, |o| o.ip);
            (m, old)
        })
        .collect()
}

/// The machines an import of `rows` makes: each row checked against the database and the rows
/// before it, every bad row named with its line.
fn plan_machine_import(
    s: &keel_model::Snapshot,
    pools: &keel_model::Pools,
    rows: Vec<(usize, Result<MachinePatch, ValidationError>)>,
) -> Result<Vec<Machine>, StoreError> {
    let mut scratch = s.clone();
    let mut hints = keel_model::AllocHints::default();
    let mut errors = Vec::new();
    let mut machines = Vec::with_capacity(rows.len());
    for (i, (line, row)) in rows.into_iter().enumerate() {
        let provisional_id = u64::MAX - i as u64;
        match row.and_then(|p| scratch.new_machine_hinted(p, provisional_id, pools, &mut hints)) {
            Ok(m) => {
                scratch.put_machine(m.clone());
                machines.push(m);
            }
            Err(e) => errors.push(e.at_line(line)),
        }
    }
    if errors.is_empty() {
        Ok(machines)
    } else {
        Err(ValidationErrors(errors).into())
    }
}
