//! The Snapshot: the whole current state, as persistent maps with indexes.
//!
//! Cloning a Snapshot is O(1) and applying a Change is O(log n): the maps are `imbl`'s structurally
//! shared trees, so a writer builds the next Snapshot from the current one without copying it and
//! readers keep the one they hold.
//!
//! The large maps hold their records behind `Arc` and key users by `Arc<str>`: a write copies the
//! tree nodes on its path (up to 64 entries each), and a copied entry is then a reference count,
//! not a deep copy of a record — an import of 10,000 users into 100,000 otherwise copied nearly
//! every user once (issue 23).

use std::net::Ipv4Addr;
use std::sync::Arc;

use imbl::{HashMap, OrdMap};

use crate::{
    Change, Counter, Destination, Facility, Host, Hostname, Kind, Mac, Machine, MachinePatch, Op, Pools, Session,
    Setting, Switch, User, UserPatch, ValidationError, SETTINGS,
};

/// Why a Change could not be applied (a corrupt log entry: never expected).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("change {seq}: {kind} record does not decode: {source}")]
    Decode {
        seq: u64,
        kind: Kind,
        source: serde_json::Error,
    },
    #[error("change {seq} is not after the snapshot's seq {at}")]
    OutOfOrder { seq: u64, at: u64 },
}

/// Where allocation got to in each pool during a run of additions (see `new_machine_hinted`).
/// Valid only while nothing is removed: every address below a hint is used or reserved.
#[derive(Debug, Default)]
pub struct AllocHints(std::collections::HashMap<ipnet::Ipv4Net, Ipv4Addr>);

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    seq: u64,
    /// The seq of the last machine change: what the DNS zone serial follows.
    machines_seq: u64,
    machines: OrdMap<u64, Arc<Machine>>,
    by_hostname: OrdMap<Hostname, u64>,
    by_name: HashMap<Hostname, u64>,
    by_mac: HashMap<Mac, u64>,
    by_ip: OrdMap<Ipv4Addr, u64>,
    switches: OrdMap<String, Switch>,
    settings: OrdMap<String, Setting>,
    users: OrdMap<Arc<str>, Arc<User>>,
    /// Ordered: the highest uid of a pool is a range query, not a pass over every user.
    by_uid: OrdMap<u32, Arc<str>>,
    counters: OrdMap<String, Counter>,
    hosts: OrdMap<String, Host>,
    facilities: OrdMap<String, Facility>,
    destinations: OrdMap<String, Destination>,
    /// Hosts and destinations by the names that lead to them (for `may_claim`).
    claims: crate::claims::ClaimIndex,
    /// Host names by facility.
    hosts_by_facility: OrdMap<String, imbl::OrdSet<String>>,
    /// Sessions by login, and the login on each machine (by hostname).
    sessions: OrdMap<String, Arc<Session>>,
    session_by_host: HashMap<String, String>,
    /// Roles by key (`gateway`, `rfs/1`), and the keys of each machine's roles.
    roles: OrdMap<String, crate::RoleRecord>,
    roles_by_machine: OrdMap<u64, imbl::OrdSet<String>>,
}

impl Snapshot {
    /// The seq of the last change this Snapshot includes.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// The seq of the last change to a machine: grows exactly when machine data changes.
    pub fn machines_seq(&self) -> u64 {
        self.machines_seq
    }

    pub fn set_machines_seq(&mut self, seq: u64) {
        self.machines_seq = seq;
    }

    /// Applies a committed change (in seq order).
    pub fn apply(&mut self, c: &Change) -> Result<(), ApplyError> {
        if c.seq <= self.seq && self.seq != 0 {
            return Err(ApplyError::OutOfOrder {
                seq: c.seq,
                at: self.seq,
            });
        }
        let decode = |e| ApplyError::Decode {
            seq: c.seq,
            kind: c.kind,
            source: e,
        };
        match (c.op, &c.after) {
            (Op::Put, Some(v)) => self.load(c.kind, v).map_err(decode)?,
            _ => self.remove_record(c.kind, &c.key),
        }
        self.seq = c.seq;
        if c.kind == Kind::Machine {
            self.machines_seq = c.seq;
        }
        Ok(())
    }

    /// Inserts or replaces a record given as its stored JSON.
    pub fn load_record(&mut self, kind: Kind, v: serde_json::Value) -> Result<(), serde_json::Error> {
        self.load(kind, &v)
    }

    /// As [`Snapshot::load_record`], decoding from a borrowed value: a Change is applied without
    /// first copying its JSON tree.
    fn load(&mut self, kind: Kind, v: &serde_json::Value) -> Result<(), serde_json::Error> {
        use serde::Deserialize;
        match kind {
            Kind::Machine => self.put_machine(Machine::deserialize(v)?),
            Kind::Switch => self.put_switch(Switch::deserialize(v)?),
            Kind::Setting => self.put_setting(Setting::deserialize(v)?),
            Kind::User => self.put_user(User::deserialize(v)?),
            Kind::Counter => {
                let c = Counter::deserialize(v)?;
                self.counters.insert(c.key.clone(), c);
            }
            Kind::Host => {
                let h = Host::deserialize(v)?;
                if let Some(old) = self.hosts.remove(&h.name) {
                    self.unindex_host(&old);
                }
                self.index_host(&h);
                self.hosts.insert(h.name.clone(), h);
            }
            Kind::Facility => {
                let f = Facility::deserialize(v)?;
                self.facilities.insert(f.name.clone(), f);
            }
            Kind::Destination => {
                let d = Destination::deserialize(v)?;
                let key = d.key();
                if let Some(old) = self.destinations.get(&key) {
                    self.claims.remove_destination(old);
                }
                self.claims.add_destination(&d);
                self.destinations.insert(key, d);
            }
            Kind::Session => self.put_session(Session::deserialize(v)?),
            Kind::Role => self.put_role(crate::RoleRecord::deserialize(v)?),
        }
        Ok(())
    }

    fn remove_record(&mut self, kind: Kind, key: &str) {
        match kind {
            Kind::Machine => {
                if let Ok(id) = key.parse() {
                    self.remove_machine(id);
                }
            }
            Kind::Switch => {
                self.switches.remove(key);
            }
            Kind::Setting => {
                self.settings.remove(key);
            }
            Kind::User => {
                if let Some(u) = self.users.remove(key) {
                    self.by_uid.remove(&u.uid);
                }
            }
            Kind::Counter => {
                self.counters.remove(key);
            }
            Kind::Host => {
                if let Some(old) = self.hosts.remove(key) {
                    self.unindex_host(&old);
                }
            }
            Kind::Facility => {
                self.facilities.remove(key);
            }
            Kind::Destination => {
                if let Some(old) = self.destinations.remove(key) {
                    self.claims.remove_destination(&old);
                }
            }
            Kind::Session => {
                self.remove_session(key);
            }
            Kind::Role => self.remove_role(key),
        }
    }

    fn put_role(&mut self, r: crate::RoleRecord) {
        self.remove_role(&r.role.clone());
        crate::claims::add(&mut self.roles_by_machine, r.machine, &r.role);
        self.roles.insert(r.role.clone(), r);
    }

    fn remove_role(&mut self, key: &str) {
        if let Some(old) = self.roles.remove(key) {
            crate::claims::remove(&mut self.roles_by_machine, &old.machine, key);
        }
    }

    /// Every role given, by key.
    pub fn roles(&self) -> impl Iterator<Item = &crate::RoleRecord> {
        self.roles.values()
    }

    /// The record of `role`, if it is given.
    pub fn role(&self, role: &crate::MachineRole) -> Option<&crate::RoleRecord> {
        self.roles.get(&role.key())
    }

    /// The machine that has `role`.
    pub fn machine_with(&self, role: &crate::MachineRole) -> Option<&Machine> {
        self.role(role).and_then(|r| self.machine(r.machine))
    }

    /// The roles of machine `id`.
    pub fn roles_of(&self, id: u64) -> impl Iterator<Item = crate::MachineRole> + '_ {
        self.roles_by_machine
            .get(&id)
            .into_iter()
            .flatten()
            .filter_map(|k| crate::MachineRole::parse("role", k).ok())
    }

    /// The machines keel itself runs on: those with the gateway role.
    pub fn gateways(&self) -> impl Iterator<Item = &Machine> {
        self.machine_with(&crate::MachineRole::Gateway).into_iter()
    }

    /// The machine a name in keel's zone answers with: its hostname or an alias, else a service
    /// name (`mdb`) by its role.
    pub fn machine_answering(&self, name: &str) -> Option<&Machine> {
        self.machine_by_name(name).or_else(|| {
            let service = crate::role::SERVICE_NAMES.iter().find(|s| **s == name)?;
            self.machine_with(&crate::MachineRole::Service(service))
        })
    }

    /// The service names (`mdb`, `sso`, …) machine `id` answers to by its roles: DNS and the hosts
    /// files give them its address.
    pub fn service_names_of(&self, id: u64) -> impl Iterator<Item = &'static str> + '_ {
        self.roles_of(id).filter_map(|r| match r {
            crate::MachineRole::Service(s) => Some(s),
            _ => None,
        })
    }

    fn index_host(&mut self, h: &Host) {
        self.claims.add_host(h);
        crate::claims::add(&mut self.hosts_by_facility, h.facility.clone(), &h.name);
    }

    fn unindex_host(&mut self, h: &Host) {
        self.claims.remove_host(h);
        crate::claims::remove(&mut self.hosts_by_facility, &h.facility, &h.name);
    }

    pub fn put_session(&mut self, s: Session) {
        self.remove_session(s.login.as_str());
        self.session_by_host.insert(s.hostname.to_string(), s.login.to_string());
        self.sessions.insert(s.login.to_string(), Arc::new(s));
    }

    pub fn remove_session(&mut self, login: &str) -> Option<Session> {
        let old = self.sessions.remove(login)?;
        self.session_by_host.remove(old.hostname.as_str());
        Some(Arc::unwrap_or_clone(old))
    }

    /// Every session, by login.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values().map(|s| &**s)
    }

    pub fn session(&self, login: &str) -> Option<&Session> {
        self.sessions.get(login).map(|s| &**s)
    }

    /// The session on the machine named `hostname` (its hostname, not an alias).
    pub fn session_on(&self, hostname: &str) -> Option<&Session> {
        self.session_by_host.get(hostname).and_then(|l| self.session(l))
    }

    /// Inserts or replaces a machine (by id), keeping every index in step.
    pub fn put_machine(&mut self, m: Machine) {
        self.remove_machine(m.id);
        for name in m.names() {
            self.by_name.insert(name.clone(), m.id);
        }
        self.by_hostname.insert(m.hostname.clone(), m.id);
        self.by_mac.insert(m.mac, m.id);
        self.by_ip.insert(m.ip, m.id);
        self.machines.insert(m.id, Arc::new(m));
    }

    pub fn remove_machine(&mut self, id: u64) -> Option<Machine> {
        let old = self.machines.remove(&id)?;
        for name in old.names() {
            self.by_name.remove(name);
        }
        self.by_hostname.remove(&old.hostname);
        self.by_mac.remove(&old.mac);
        self.by_ip.remove(&old.ip);
        Some(Arc::unwrap_or_clone(old))
    }

    pub fn put_switch(&mut self, s: Switch) {
        self.switches.insert(s.name.to_string(), s);
    }

    pub fn put_setting(&mut self, s: Setting) {
        self.settings.insert(s.key.clone(), s);
    }

    /// Propagation hosts, by name.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.values()
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.get(name)
    }

    /// The hosts of one facility, by name (an index, not a pass over every host).
    pub fn hosts_of<'a>(&'a self, facility: &str) -> impl Iterator<Item = &'a Host> {
        self.hosts_by_facility
            .get(facility)
            .into_iter()
            .flatten()
            .filter_map(|h| self.hosts.get(h))
    }

    pub fn facilities(&self) -> impl Iterator<Item = &Facility> {
        self.facilities.values()
    }

    pub fn facility(&self, name: &str) -> Option<&Facility> {
        self.facilities.get(name)
    }

    /// Destinations, by facility, service, destination.
    pub fn destinations(&self) -> impl Iterator<Item = &Destination> {
        self.destinations.values()
    }

    /// The destinations whose keys (`facility/service/destination`) start with `prefix`: a range
    /// of the ordered keys, not a pass over every destination of the site.
    fn destinations_under(&self, prefix: String) -> impl Iterator<Item = &Destination> {
        self.destinations
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, d)| d)
    }

    /// The destinations of one facility (a facility name has no `/`).
    pub fn destinations_in<'a>(&'a self, facility: &'a str) -> impl Iterator<Item = &'a Destination> {
        self.destinations_under(format!("{facility}/"))
            .filter(move |d| d.facility == facility)
    }

    /// The destinations of one facility's service.
    pub fn destinations_of<'a>(&'a self, facility: &'a str, service: &'a str) -> impl Iterator<Item = &'a Destination> {
        self.destinations_under(format!("{facility}/{service}/"))
            .filter(move |d| d.facility == facility && d.service == service)
    }

    pub(crate) fn claims(&self) -> &crate::claims::ClaimIndex {
        &self.claims
    }

    /// The hosts that may answer to `name` by their own names or aliases (or have it as a first
    /// label): found in the claim index, a few at most; the caller judges each.
    pub fn hosts_named(&self, name: &str) -> impl Iterator<Item = &Host> {
        self.claims.hosts_named(name).filter_map(|h| self.hosts.get(h))
    }

    pub fn destination(&self, key: &str) -> Option<&Destination> {
        self.destinations.get(key)
    }

    /// All machines, ordered by hostname.
    pub fn machines(&self) -> impl Iterator<Item = &Machine> {
        self.by_hostname.values().filter_map(|id| self.machine(*id))
    }

    /// Machines whose address is not one their type's pool hands out today (the pools changed
    /// since they got it). They keep it: only an explicit renumbering moves them. A pass over every
    /// machine, for a start, a reload and `--outside-pools`.
    pub fn machines_outside<'a>(&'a self, pools: &'a Pools) -> impl Iterator<Item = &'a Machine> + 'a {
        self.machines().filter(|m| !pools.of(m.mtype).admits(m.ip))
    }

    /// Users whose uid is outside their group's uid pool today (the pools changed since).
    pub fn users_outside<'a>(&'a self, pools: &'a crate::UidPools) -> impl Iterator<Item = &'a User> + 'a {
        self.users().filter(|u| {
            let r = pools.of(u.group);
            !(r.first..=r.last).contains(&u.uid)
        })
    }

    pub fn machine_count(&self) -> usize {
        self.machines.len()
    }

    pub fn machine(&self, id: u64) -> Option<&Machine> {
        self.machines.get(&id).map(|m| &**m)
    }

    /// A machine by hostname or alias.
    pub fn machine_by_name(&self, name: &str) -> Option<&Machine> {
        let h = Hostname::parse("hostname", name).ok()?;
        self.by_name.get(&h).and_then(|id| self.machine(*id))
    }

    pub fn machine_by_mac(&self, mac: &Mac) -> Option<&Machine> {
        self.by_mac.get(mac).and_then(|id| self.machine(*id))
    }

    pub fn machine_by_ip(&self, ip: Ipv4Addr) -> Option<&Machine> {
        self.by_ip.get(&ip).and_then(|id| self.machine(*id))
    }

    pub fn switches(&self) -> impl Iterator<Item = &Switch> {
        self.switches.values()
    }

    pub fn switch(&self, name: &str) -> Option<&Switch> {
        self.switches.get(name)
    }

    /// Every known setting, with its default where it was never set.
    pub fn settings(&self) -> Vec<Setting> {
        SETTINGS
            .iter()
            .map(|spec| {
                self.settings
                    .get(spec.key)
                    .cloned()
                    .unwrap_or_else(|| Setting::default_for(spec))
            })
            .collect()
    }

    pub fn setting(&self, key: &str) -> Result<Setting, ValidationError> {
        let spec = Setting::spec(key)?;
        Ok(self
            .settings
            .get(key)
            .cloned()
            .unwrap_or_else(|| Setting::default_for(spec)))
    }

    pub fn flag(&self, key: &str) -> bool {
        self.setting(key).map(|s| s.as_bool()).unwrap_or(false)
    }

    /// Whether machines may register themselves at `now` (RFC 3339, as `rfc3339` writes it):
    /// `allow_self_registration` on, or its end time still ahead.
    pub fn registration_open(&self, now: &str) -> bool {
        self.setting("allow_self_registration").is_ok_and(|s| s.on_at(now))
    }

    /// Decides a new machine from a patch: allocates its address if none is given, checks its pool
    /// and that none of its names, MAC or IP is taken.
    pub fn new_machine(&self, patch: MachinePatch, id: u64, pools: &Pools) -> Result<Machine, ValidationError> {
        self.new_machine_hinted(patch, id, pools, &mut AllocHints::default())
    }

    /// As [`Snapshot::new_machine`], remembering where each pool's allocation got to, so that many
    /// machines added in a row (an import) cost one walk over the used addresses, not one each.
    pub fn new_machine_hinted(
        &self,
        patch: MachinePatch,
        id: u64,
        pools: &Pools,
        hints: &mut AllocHints,
    ) -> Result<Machine, ValidationError> {
        let mtype = patch
            .mtype
            .ok_or_else(|| ValidationError::new("mtype", "is required"))?;
        let ip = match patch.ip {
            Some(ip) => ip,
            None => {
                let net = pools.of(mtype).network;
                let from = hints.0.get(&net).copied();
                let ip = pools.allocate(mtype, from, self.used_ips_from(from.unwrap_or(net.network()), net))?;
                hints.0.insert(net, ip);
                ip
            }
        };
        let m = patch.create(id, ip)?;
        pools.check(m.mtype, m.ip)?;
        self.check_unique(&m)?;
        Ok(m)
    }

    /// Decides an edited machine: only the fields the patch names change. Its address stays as it
    /// is — even outside today's pools (the pools changed since it got it) — unless the patch gives
    /// one, or changes the type to one whose pool does not hold it (then it gets the lowest free
    /// address of the new type's pool, which the Change records). The pool is checked only for an
    /// address or type the patch changes: an edit of the room never fails, or moves anything,
    /// because the pools moved.
    pub fn edit_machine(&self, old: &Machine, patch: MachinePatch, pools: &Pools) -> Result<Machine, ValidationError> {
        let mtype = patch.mtype.unwrap_or(old.mtype);
        let ip = match patch.ip {
            Some(ip) => ip,
            None if mtype == old.mtype || pools.of(mtype).admits(old.ip) => old.ip,
            None => {
                let net = pools.of(mtype).network;
                pools.allocate(mtype, None, self.used_ips_from(net.network(), net))?
            }
        };
        let m = patch.apply(old, ip)?;
        if m.ip != old.ip || m.mtype != old.mtype {
            pools.check(m.mtype, m.ip)?;
        }
        self.check_unique(&m)?;
        Ok(m)
    }

    /// Gives each named machine the lowest free address of its type's pool, in hostname order
    /// (`keel machine renumber`): the machines outside today's pools, when `names` is `None`.
    /// All or nothing: the first that cannot be placed (a full pool) fails the whole plan.
    pub fn renumber(&self, names: Option<&[Hostname]>, pools: &Pools) -> Result<Vec<Machine>, ValidationError> {
        let chosen: Vec<&Machine> = match names {
            None => self.machines_outside(pools).collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    self.machine_by_name(n.as_str())
                        .ok_or_else(|| ValidationError::new("machines", format!("no machine named {n}")))
                })
                .collect::<Result<_, _>>()?,
        };
        let mut working = self.clone();
        let mut moved = Vec::with_capacity(chosen.len());
        for old in chosen {
            // The addresses given so far are taken: `working` holds the machines moved before.
            let net = pools.of(old.mtype).network;
            let ip = pools.allocate(old.mtype, None, working.used_ips_from(net.network(), net))?;
            let m = Machine { ip, ..old.clone() };
            working.put_machine(m.clone());
            moved.push(m);
        }
        Ok(moved)
    }

    fn used_ips_from(&self, from: Ipv4Addr, net: ipnet::Ipv4Net) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.by_ip.range(from..=net.broadcast()).map(|(ip, _)| *ip)
    }

    /// Checks a machine against the others: unique names (hostnames and aliases), MAC and IP.
    pub fn check_unique(&self, m: &Machine) -> Result<(), ValidationError> {
        let taken = |field: &str, what: String, other: u64| {
            let by = self
                .machines
                .get(&other)
                .map_or_else(|| other.to_string(), |o| o.hostname.to_string());
            Err(ValidationError::new(
                field,
                format!("{what} is already used by machine {by}"),
            ))
        };
        for (i, name) in m.names().enumerate() {
            let field = if i == 0 { "hostname" } else { "aliases" };
            if let Some(&other) = self.by_name.get(name).filter(|&&o| o != m.id) {
                return taken(field, name.to_string(), other);
            }
            // A service name given to another machine by its role is that machine's too.
            if let Some(other) = self.machine_answering(name.as_str()).filter(|o| o.id != m.id) {
                return taken(field, name.to_string(), other.id);
            }
        }
        if let Some(&other) = self.by_mac.get(&m.mac).filter(|&&o| o != m.id) {
            return taken("mac", m.mac.to_string(), other);
        }
        if let Some(&other) = self.by_ip.get(&m.ip).filter(|&&o| o != m.id) {
            return taken("ip", m.ip.to_string(), other);
        }
        Ok(())
    }

    pub fn put_user(&mut self, u: User) {
        if let Some(old) = self.users.remove(u.login.as_str()) {
            self.by_uid.remove(&old.uid);
        }
        let login: Arc<str> = Arc::from(u.login.as_str());
        self.by_uid.insert(u.uid, login.clone());
        self.users.insert(login, Arc::new(u));
    }

    /// All users, ordered by login.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values().map(|u| &**u)
    }

    pub fn user(&self, login: &str) -> Option<&User> {
        self.users.get(login).map(|u| &**u)
    }

    pub fn user_by_uid(&self, uid: u32) -> Option<&User> {
        self.by_uid.get(&uid).and_then(|l| self.user(l))
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn put_counter(&mut self, c: Counter) {
        self.counters.insert(c.key.clone(), c);
    }

    pub fn counters(&self) -> impl Iterator<Item = &Counter> {
        self.counters.values()
    }

    pub fn counter(&self, key: &str) -> Option<&Counter> {
        self.counters.get(key)
    }

    /// Decides a new user: login free, uid the next of its group's pool — above every uid that pool
    /// ever gave (its counter) — and the counter moved up to it.
    pub fn new_user(&self, patch: UserPatch, pools: &crate::UidPools) -> Result<(User, Counter), ValidationError> {
        let group = patch
            .group
            .ok_or_else(|| ValidationError::new("group", "is required"))?;
        if let Some(login) = &patch.login {
            if self.users.contains_key(login.as_str()) {
                return Err(ValidationError::new("login", format!("{login} already exists")));
            }
        }
        let range = pools.of(group);
        let uid = pools.next(group, self.uid_high_water(group, range))?;
        let user = patch.create(uid)?;
        let key = Counter::uid_range_key(group, range);
        let version = self.counters.get(&key).map_or(0, |c| c.version);
        Ok((
            user,
            Counter {
                key,
                value: u64::from(uid),
                version,
            },
        ))
    }

    /// The highest uid of `range` ever handed out, or held now: each uid range keeps a counter of
    /// its own (`uid.GROUP.FIRST-LAST`, which has given every uid from FIRST to its value), so a
    /// range the pools moved to is not counted as used up by another's counter — and a range that
    /// overlaps one used before counts that one's uids as given. A counter from before ranges had
    /// their own (`uid.GROUP`) counts where its value falls in `range`. O(log n): the group's few
    /// counters and one range query over the uids.
    fn uid_high_water(&self, group: crate::Group, range: crate::UidRange) -> Option<u32> {
        let legacy = Counter::uid_key(group);
        let counted = self
            .counters
            .range(legacy.clone()..)
            .take_while(|(k, _)| k.starts_with(&legacy))
            .filter_map(|(k, c)| {
                let value = u32::try_from(c.value).unwrap_or(u32::MAX);
                if *k == legacy {
                    return (range.first..=range.last).contains(&value).then_some(value);
                }
                let given = Counter::parse_uid_range(k.strip_prefix(&format!("{legacy}."))?)?;
                (given.first <= range.last && value >= range.first).then_some(value.min(range.last))
            })
            .max();
        // O(log n): the last key of the pool's range (issue 23: this was a pass over every uid,
        // so an import of k users into n cost k·n).
        let present = self.by_uid.range(range.first..=range.last).next_back().map(|(u, _)| *u);
        counted.into_iter().chain(present).max()
    }

    /// Checks a switch's chassis id against the other switches.
    pub fn check_switch(&self, s: &Switch) -> Result<(), ValidationError> {
        if s.chassis.is_empty() {
            return Ok(());
        }
        match self
            .switches
            .values()
            .find(|o| o.chassis == s.chassis && o.name != s.name)
        {
            Some(o) => Err(ValidationError::new(
                "chassis",
                format!("{} is already used by switch {}", s.chassis, o.name),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Fields, Strictness};

    fn patch(i: u32, ip: Option<&str>) -> MachinePatch {
        let mut v = serde_json::json!({"hostname": format!("h{i}"), "mac": format!("02:00:00:00:{:02x}:{:02x}", i >> 8, i & 255), "mtype": "user"});
        if let Some(ip) = ip {
            v["ip"] = ip.into();
        }
        MachinePatch::from_fields(Fields::new(v, Strictness::Strict).unwrap()).unwrap()
    }

    /// Allocating with hints (imports) gives exactly the addresses one-by-one allocation gives.
    #[test]
    fn hinted_allocation_equals_plain_allocation() {
        let mut pools = Pools::default();
        pools.user.reserved = vec!["192.168.0.3".parse().unwrap(), "192.168.0.9".parse().unwrap()];
        let (mut plain, mut hinted) = (Snapshot::default(), Snapshot::default());
        let mut hints = AllocHints::default();
        for i in 0..200u32 {
            // Some rows pin an address ahead of the allocation, which must then be skipped.
            let ip = (i % 17 == 5).then(|| format!("192.168.0.{}", 20 + i));
            let a = plain
                .new_machine(patch(i, ip.as_deref()), u64::from(i) + 1, &pools)
                .unwrap();
            let b = hinted
                .new_machine_hinted(patch(i, ip.as_deref()), u64::from(i) + 1, &pools, &mut hints)
                .unwrap();
            assert_eq!(a.ip, b.ip, "machine {i}");
            plain.put_machine(a);
            hinted.put_machine(b);
        }
    }
}

/// Issue 23: a task's destinations are a range of the ordered keys; neighbours whose names share
/// a prefix (`passwd` and `passwd2`, facility `f` and `f2`) are not in it.
#[cfg(test)]
mod destination_tests {
    use super::*;

    #[test]
    fn destinations_of_a_task_are_exactly_its_own() {
        let mut s = Snapshot::default();
        for (f, svc, d) in [
            ("f", "passwd", "h1"),
            ("f", "passwd", "h2"),
            ("f", "passwd2", "h1"),
            ("f2", "passwd", "h1"),
            ("e", "passwd", "h1"),
        ] {
            let dest = serde_json::json!({"facility": f, "service": svc, "destination": d, "channel": "ssh"});
            s.load_record(Kind::Destination, dest).unwrap();
        }
        let of = |f: &str, svc: &str| -> Vec<String> { s.destinations_of(f, svc).map(Destination::key).collect() };
        assert_eq!(of("f", "passwd"), ["f/passwd/h1", "f/passwd/h2"]);
        assert_eq!(of("f", "passwd2"), ["f/passwd2/h1"]);
        assert_eq!(of("f2", "passwd"), ["f2/passwd/h1"]);
        assert!(of("g", "passwd").is_empty());
    }
}

/// Issue 23: the next uid of a pool is the pool's highest present uid (or its counter) plus one,
/// found by a range query — users of other pools, however many and however high, do not count.
#[cfg(test)]
mod uid_tests {
    use super::*;
    use crate::input::{Fields, Strictness};

    fn user(login: &str, group: &str) -> UserPatch {
        UserPatch::from_fields(
            Fields::new(serde_json::json!({"login": login, "group": group}), Strictness::Strict).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn new_user_takes_the_pools_highest_uid_plus_one() {
        let pools = crate::UidPools::default();
        let mut s = Snapshot::default();
        assert_eq!(s.new_user(user("a", "user"), &pools).unwrap().0.uid, 10001);
        for (login, group, uid) in [
            ("u1", "user", 10001),
            ("u7", "user", 10007),
            ("o1", "orga", 11900),
            ("r1", "root", 12999),
        ] {
            let mut u = user(login, group).create(uid).unwrap();
            u.version = 1;
            s.put_user(u);
        }
        assert_eq!(s.new_user(user("b", "user"), &pools).unwrap().0.uid, 10008);
        assert_eq!(s.new_user(user("c", "orga"), &pools).unwrap().0.uid, 11901);
        assert_eq!(
            s.new_user(user("d", "root"), &pools).unwrap_err().field,
            "uid",
            "root's pool is full"
        );
    }

    /// Issue 30: "the user uid pool 10001–10999 is used up" when every user had been made in a
    /// configured 20001–20999. Each range has its counter; a counter of another range counts only
    /// where the uids it gave fall in this one.
    #[test]
    fn a_uid_range_is_not_used_up_by_another_ranges_counter() {
        let counter = |key: &str, value: u64| Counter {
            key: key.into(),
            value,
            version: 1,
        };
        let range = |first, last| crate::UidPools {
            user: crate::UidRange { first, last },
            ..crate::UidPools::default()
        };
        for old in ["uid.user", "uid.user.20001-20999"] {
            let mut s = Snapshot::default();
            s.put_counter(counter(old, 20999));
            let (u, c) = s.new_user(user("a", "user"), &range(10001, 10999)).unwrap();
            assert_eq!((u.uid, c.key.as_str()), (10001, "uid.user.10001-10999"), "{old}");
        }
        // A range that overlaps one used before: its uids up to that counter were given.
        let mut s = Snapshot::default();
        s.put_counter(counter("uid.user.10001-10999", 10500));
        assert_eq!(
            s.new_user(user("a", "user"), &range(10001, 11999)).unwrap().0.uid,
            10501
        );
        assert_eq!(
            s.new_user(user("a", "user"), &range(10401, 10600)).unwrap().0.uid,
            10501
        );
        assert_eq!(
            s.new_user(user("a", "user"), &range(10001, 10300)).unwrap_err().field,
            "uid",
            "every uid of 10001-10300 was given: none is given again"
        );
        assert_eq!(
            s.new_user(user("a", "user"), &range(11001, 11500)).unwrap().0.uid,
            11001
        );
    }
}
