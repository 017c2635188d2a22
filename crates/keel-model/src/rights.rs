//! Who may do what to propagation's records — pure rules over the Snapshot, like
//! `Snapshot::decide_login` for presence. An admin does anything; a facility manager acts only
//! inside the facilities that name them as manager, and may claim a host or destination name only
//! if nobody holds it yet or it already belongs to a facility they manage (invariant 7).
//! keel-store calls these inside the write, against the Snapshot the write commits on.

use std::collections::BTreeSet;

use std::net::IpAddr;

use crate::identity::{is_self_address, is_self_name, parse_address};
use crate::propagation::{destination_host, host_names};
use crate::{Destination, Host, MachineRole, Principal, Role, Snapshot, ValidationError};

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
    /// destination. The claim index gives the hosts and destinations that may hold it; each is
    /// judged by the rule itself (`holds`).
    fn owners_of(&self, name: &str) -> BTreeSet<String> {
        let mut hosts: BTreeSet<&String> = self.claims().hosts_named(name).collect();
        for m in self.machines_named_by(name) {
            hosts.extend(m.names().flat_map(|n| self.claims().hosts_on_machine(n)));
        }
        let mut owners: BTreeSet<String> = hosts
            .into_iter()
            .filter_map(|h| self.host(h))
            .filter(|h| self.holds(h, name))
            .map(|h| h.facility.clone())
            .collect();
        owners.extend(
            self.claims()
                .destinations_to(name)
                .filter_map(|k| self.destination(k))
                .filter(|d| d.host() == name)
                .map(|d| d.facility.clone()),
        );
        owners
    }

    /// Host `h` answers to `name`: one of its names, or its machine's names (bare or as the first
    /// labels of `name`) or address.
    fn holds(&self, h: &Host, name: &str) -> bool {
        let machine = h.machine.as_deref().and_then(|m| self.machine_by_name(m));
        let via_machine = machine.is_some_and(|m| {
            m.names()
                .any(|n| name == n.as_str() || name.starts_with(&format!("{n}.")))
        });
        via_machine || host_names(h, machine, "").contains(name)
    }

    /// The machines `name` may reach: by its address, by itself, or by any dotted prefix of it.
    fn machines_named_by<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a crate::Machine> {
        let by_ip = name.parse().ok().and_then(|ip| self.machine_by_ip(ip));
        let prefixes = name
            .match_indices('.')
            .map(|(i, _)| &name[..i])
            .chain(std::iter::once(name));
        by_ip
            .into_iter()
            .chain(prefixes.filter_map(|p| self.machine_by_name(p)))
    }

    /// Invariant 7's second half: a manager claims a name only if it is free or already theirs.
    /// Decided on what the name reaches, never on its spelling: it is read as every client reads
    /// it (`destination_host`: `127.1`, `0x7f.1`, `::ffff:…` are their address), then refused if
    /// it is keel's own host — loopback, unspecified, a name every host resolves to itself
    /// (`localhost`, `ip6-loopback`), one of keel's addresses (`own`), the machine with the
    /// gateway role — or another facility's: a host by its names, aliases, first labels or its
    /// machine's names and address, a destination (bare names reach dotted ones through the search
    /// domain, and back), or a site machine that is no host of theirs.
    pub fn may_claim(&self, who: &Principal, field: &str, name: &str, own: &[IpAddr]) -> Result<(), RightsError> {
        if who.role == Role::Admin {
            return Ok(());
        }
        let name = destination_host(name);
        let refuse = |why: String| Err(RightsError::Forbidden(format!("{field}: {name:?} {why}")));
        let address = parse_address(&name);
        if is_self_name(&name) || address.is_some_and(|ip| is_self_address(ip) || own.contains(&ip)) {
            return refuse("is keel's own host; only admins send there".into());
        }
        let mut owners = self.owners_of(&name);
        let first = name.split('.').next().unwrap_or_default();
        if address.is_none() {
            // A bare name reaches whichever host or destination the search domain completes it
            // to, and a bare destination reaches the dotted names it completes to.
            owners.extend(
                self.claims()
                    .hosts_named(first)
                    .filter_map(|h| self.host(h))
                    .filter(|h| !name.contains('.') && host_short_names(h).contains(&name))
                    .map(|h| h.facility.clone()),
            );
            owners.extend(
                self.claims()
                    .destinations_to(first)
                    .filter_map(|k| self.destination(k))
                    .filter(|d| {
                        let host = d.host();
                        let short = host.split('.').next().unwrap_or_default();
                        (name.contains('.') && host == first) || (!name.contains('.') && short == name)
                    })
                    .map(|d| d.facility.clone()),
            );
        }
        let theirs = |f: &str| self.facility(f).is_some_and(|f| f.is_managed_by(who));
        let foreign: Vec<String> = owners.into_iter().filter(|f| !theirs(f)).collect();
        if !foreign.is_empty() {
            return refuse(format!(
                "belongs to facility {} which {} does not manage",
                foreign.join(", "),
                who.name
            ));
        }
        // A site machine: keel's own (the gateway role) never; another only through a host of
        // theirs that an admin linked to it.
        let machine = address
            .and_then(|ip| match ip {
                IpAddr::V4(v4) => self.machine_by_ip(v4),
                IpAddr::V6(_) => None,
            })
            .or_else(|| self.machine_answering(&name))
            .or_else(|| self.machine_answering(first));
        if let Some(m) = machine {
            if self.is_gateway(m) {
                return refuse(format!(
                    "is machine {}, keel's own host (the gateway role); only admins send there",
                    m.hostname
                ));
            }
            let own_host = self
                .hosts_linked_to(m)
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

    /// Why a destination of `facility` that a manager added may not be sent to at `ip` (what its
    /// name resolves to now, as ssh resolves it), if it may not: keel's own host — loopback,
    /// unspecified, one of keel's addresses, the machine with the gateway role — or a site machine
    /// that is no host of the facility. `None`: send.
    pub fn refuses_send(&self, facility: &str, ip: IpAddr, own: &[IpAddr]) -> Option<String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if is_self_address(ip) || own.contains(&ip) {
            return Some(format!("{ip} is keel's own host"));
        }
        let IpAddr::V4(v4) = ip else { return None };
        let m = self.machine_by_ip(v4)?;
        if self.is_gateway(m) {
            return Some(format!(
                "{ip} is machine {}, keel's own host (the gateway role)",
                m.hostname
            ));
        }
        let linked = self
            .hosts_linked_to(m)
            .any(|h| h.facility == facility && h.machine.as_deref() == Some(m.hostname.as_str()));
        (!linked).then(|| {
            format!(
                "{ip} is machine {}, which is no host of facility {facility}",
                m.hostname
            )
        })
    }

    /// The ssh destinations of managed facilities that the engine sends to unchecked
    /// (`claimed_by` unset: an admin's, or a manager's from before keel recorded it) and that a
    /// manager of their facility could not claim today, with why: one a manager may have aimed at
    /// keel's own host or another's machine before issue 31. keel names them at start.
    pub fn unchecked_destinations(&self, own: &[IpAddr]) -> Vec<(&Destination, String)> {
        let mut out = Vec::new();
        for d in self.destinations() {
            if d.channel != crate::Channel::Ssh || d.claimed_by.is_some() {
                continue;
            }
            let Some(manager) = self.facility(&d.facility).and_then(|f| f.managers.first()) else {
                continue;
            };
            let who = match manager {
                crate::ManagerName::Token(name) => Principal::token(name, Role::Manager),
                crate::ManagerName::User(login) => Principal::user(login.as_str(), Role::Manager),
            };
            if let Err(e) = self.may_claim(&who, "destination", &d.destination, own) {
                out.push((d, e.to_string()));
            }
        }
        out
    }

    /// A host's link to a machine (`Host::machine`) is what lets its facility's managers send to
    /// that machine's names: a manager may link a host only to a machine an admin already linked
    /// to a host of that facility (an admin assigns machines to facilities), and never to keel's
    /// own host. Unchanged links pass.
    pub fn may_link(&self, who: &Principal, host: &Host, before: Option<&Host>) -> Result<(), RightsError> {
        let Some(name) = host.machine.as_deref() else {
            return Ok(());
        };
        if who.role == Role::Admin || before.is_some_and(|b| b.machine.as_deref() == Some(name)) {
            return Ok(());
        }
        let refuse = |why: &str| {
            Err(RightsError::Forbidden(format!(
                "machine: {} may not link host {} to machine {name}: {why}",
                who.name, host.name
            )))
        };
        let Some(m) = self.machine_by_name(name) else {
            return Ok(()); // refused as unknown by the store's own check, with its field
        };
        if self.is_gateway(m) {
            return refuse("it is keel's own host");
        }
        let assigned = self
            .hosts_linked_to(m)
            .any(|h| h.facility == host.facility && h.name != host.name);
        if assigned {
            Ok(())
        } else {
            refuse("no admin has assigned it to the facility (a host of the facility linked to it)")
        }
    }
}

impl Snapshot {
    /// Whether `m` is keel's own host (the machine with the gateway role).
    fn is_gateway(&self, m: &crate::Machine) -> bool {
        self.roles_of(m.id).any(|r| r == MachineRole::Gateway)
    }

    /// The hosts the claim index files under the hostname of `m` (each caller checks the link).
    fn hosts_linked_to<'a>(&'a self, m: &'a crate::Machine) -> impl Iterator<Item = &'a Host> + 'a {
        self.claims().hosts_on_machine(&m.hostname).filter_map(|h| self.host(h))
    }
}

/// The first labels of a host's own names (`b1` of `b1.example.org`).
fn host_short_names(h: &Host) -> BTreeSet<String> {
    std::iter::once(&h.name)
        .chain(&h.aliases)
        .map(|n| destination_host(n).split('.').next().unwrap_or_default().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::{Change, Kind, Op};

    /// The rule as a pass over every host and destination: what the claim index must agree with.
    fn may_claim_by_scan(s: &Snapshot, who: &Principal, name: &str, own: &[IpAddr]) -> bool {
        let name = destination_host(name);
        let address = parse_address(&name);
        if is_self_name(&name) || address.is_some_and(|ip| is_self_address(ip) || own.contains(&ip)) {
            return false;
        }
        let first = name.split('.').next().unwrap_or_default();
        let mut owners = BTreeSet::new();
        for h in s.hosts() {
            if s.holds(h, &name) {
                owners.insert(h.facility.clone());
            }
            if address.is_none() && !name.contains('.') && host_short_names(h).contains(&name) {
                owners.insert(h.facility.clone());
            }
        }
        for d in s.destinations() {
            let host = d.host();
            let short = host.split('.').next().unwrap_or_default();
            let bare_match = address.is_none()
                && host.parse::<IpAddr>().is_err()
                && ((name.contains('.') && host == first) || (!name.contains('.') && short == name));
            if host == name || bare_match {
                owners.insert(d.facility.clone());
            }
        }
        let theirs = |f: &str| s.facility(f).is_some_and(|f| f.is_managed_by(who));
        if !owners.iter().all(|f| theirs(f)) {
            return false;
        }
        let machine = address
            .and_then(|ip| match ip {
                IpAddr::V4(v4) => s.machine_by_ip(v4),
                IpAddr::V6(_) => None,
            })
            .or_else(|| s.machine_answering(&name))
            .or_else(|| s.machine_answering(first));
        machine.is_none_or(|m| {
            !s.roles_of(m.id).any(|r| r == MachineRole::Gateway)
                && s.hosts()
                    .any(|h| h.machine.as_deref() == Some(m.hostname.as_str()) && theirs(&h.facility))
        })
    }

    /// Other spellings of the same destination: case, a trailing dot, `user@`, `:port`, and for
    /// an IPv4 address its other `inet_aton` forms (integer, hex, octal, short) and IPv4-mapped.
    fn spellings(name: &str) -> Vec<String> {
        let mut out = vec![
            name.to_ascii_uppercase(),
            format!("{name}."),
            format!("root@{name}"),
            format!("{name}:22"),
        ];
        if let Ok(ip) = name.parse::<std::net::Ipv4Addr>() {
            let n = u32::from(ip);
            let o = ip.octets();
            out.extend([
                n.to_string(),
                format!("0x{n:x}"),
                format!("{}.{}", o[0], n & 0xff_ffff),
                format!("{}.{}.{}", o[0], o[1], n & 0xffff),
                o.iter().map(|b| format!("0{b:o}")).collect::<Vec<_>>().join("."),
                format!("::ffff:{ip}"),
                format!("[::ffff:{ip}]:22"),
            ]);
        }
        out
    }

    /// Names drawn from a few labels, so that hosts, machines, destinations and claims collide.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[abc]",
            "[abc]\\.[abx]",
            "[abc]\\.[ab]\\.[xy]",
            "[A-C]",
            "10\\.0\\.0\\.[1-3]",
            "::ffff:10\\.0\\.0\\.[1-3]",
            "127\\.0\\.[0-1]\\.[1-2]",
            "192\\.168\\.1\\.25[45]",
            Just("localhost".to_owned()),
            Just("ip6-loopback".to_owned()),
            Just("0.0.0.0".to_owned()),
        ]
    }

    /// One change to the site: a host, a destination, a machine (put or removed).
    #[derive(Debug, Clone)]
    enum Edit {
        Host {
            name: String,
            facility: u8,
            machine: Option<String>,
            aliases: Vec<String>,
        },
        NoHost(String),
        Destination {
            facility: u8,
            service: u8,
            destination: String,
        },
        NoDestination {
            facility: u8,
            service: u8,
            destination: String,
        },
        Machine {
            id: u8,
            hostname: String,
            alias: Option<String>,
        },
        /// The gateway role (keel's own host) given to machine `id`.
        Gateway {
            id: u8,
        },
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let user = "(root@)?";
        prop_oneof![
            // Hosts mostly on a machine: the rule's rarest paths need two facilities' hosts on one.
            4 => (name(), 0u8..3, proptest::option::weighted(0.7, prop_oneof![3 => "[abc][0-9]?", 1 => name()]),
                  proptest::collection::vec(name(), 0..2))
                .prop_map(|(name, facility, machine, aliases)| Edit::Host { name, facility, machine, aliases }),
            1 => name().prop_map(Edit::NoHost),
            2 => (0u8..3, 0u8..2, (user, name(), "(:22)?")).prop_map(|(facility, service, (u, n, p))| {
                Edit::Destination { facility, service, destination: format!("{u}{n}{p}") }
            }),
            1 => (0u8..3, 0u8..2, name())
                .prop_map(|(facility, service, destination)| Edit::NoDestination { facility, service, destination }),
            3 => (1u8..4, "[abc]", proptest::option::of("[abc][0-9]?"))
                .prop_map(|(id, hostname, alias)| Edit::Machine { id, hostname, alias }),
            1 => (1u8..4).prop_map(|id| Edit::Gateway { id }),
        ]
    }

    fn change(seq: u64, kind: Kind, key: String, after: Option<serde_json::Value>) -> Change {
        Change {
            seq,
            time: String::new(),
            principal: "test".into(),
            kind,
            op: if after.is_some() { Op::Put } else { Op::Delete },
            key,
            before: None,
            after,
        }
    }

    fn site(edits: &[Edit]) -> Snapshot {
        let mut s = Snapshot::default();
        let mut seq = 0;
        let mut put = |s: &mut Snapshot, kind, key: String, after| {
            seq += 1;
            s.apply(&change(seq, kind, key, after)).unwrap();
        };
        for f in 0..3 {
            let f = json!({"name": format!("f{f}"), "managers": [format!("m{f}")]});
            put(&mut s, Kind::Facility, String::new(), Some(f));
        }
        for e in edits {
            match e {
                Edit::Host {
                    name,
                    facility,
                    machine,
                    aliases,
                } => {
                    let h = json!({"name": name, "facility": format!("f{facility}"), "machine": machine, "aliases": aliases});
                    put(&mut s, Kind::Host, name.clone(), Some(h));
                }
                Edit::NoHost(name) => put(&mut s, Kind::Host, name.clone(), None),
                Edit::Destination {
                    facility,
                    service,
                    destination,
                } => {
                    let d = json!({"facility": format!("f{facility}"), "service": format!("s{service}"),
                                   "destination": destination, "channel": "ssh"});
                    put(&mut s, Kind::Destination, String::new(), Some(d));
                }
                Edit::NoDestination {
                    facility,
                    service,
                    destination,
                } => {
                    put(
                        &mut s,
                        Kind::Destination,
                        format!("f{facility}/s{service}/{destination}"),
                        None,
                    );
                }
                Edit::Machine { id, hostname, alias } => {
                    let taken = |n: &str| s.machine_by_name(n).is_some_and(|m| m.id != u64::from(*id));
                    if taken(hostname) || alias.as_deref().is_some_and(|a| taken(a) || a == hostname) {
                        continue;
                    }
                    let m = json!({"id": id, "hostname": hostname, "aliases": alias.iter().collect::<Vec<_>>(),
                                   "ip": format!("10.0.0.{id}"), "mac": format!("02:00:00:00:00:0{id}"),
                                   "mtype": "user", "room": "", "rfs": 0, "hfs": 0, "is_faulty": false,
                                   "faulty_reason": "", "version": 1});
                    put(&mut s, Kind::Machine, id.to_string(), Some(m));
                }
                Edit::Gateway { id } => {
                    let r = json!({"role": "gateway", "machine": id, "version": 1});
                    put(&mut s, Kind::Role, "gateway".into(), Some(r));
                }
            }
        }
        s
    }

    /// Issue 31: destinations from before `claimed_by` are sent to unchecked; keel names at start
    /// those a manager of their facility could not claim today (the gateway, loopback in any
    /// spelling, another's machine), and not the others.
    #[test]
    fn unchecked_destinations_are_the_ones_a_manager_could_not_claim_today() {
        let dest = |destination: &str| Edit::Destination {
            facility: 0,
            service: 0,
            destination: destination.into(),
        };
        let s = site(&[
            Edit::Machine {
                id: 1,
                hostname: "gw".into(),
                alias: None,
            },
            Edit::Gateway { id: 1 },
            Edit::Machine {
                id: 2,
                hostname: "pc2".into(),
                alias: None,
            },
            dest("root@gw"),
            dest("root@127.1"),
            dest("root@10.0.0.2"),
            dest("root@far.example.org"),
        ]);
        let found: Vec<&str> = s
            .unchecked_destinations(&[])
            .iter()
            .map(|(d, _)| d.destination.as_str())
            .collect();
        assert_eq!(found, ["root@10.0.0.2", "root@127.1", "root@gw"]);
        // Recorded as a manager's: the engine checks it at every send, nothing to name at start.
        let mut checked = s.clone();
        let mut d = s.destinations().find(|d| d.destination == "root@gw").unwrap().clone();
        d.claimed_by = Some("m0".into());
        let after = serde_json::to_value(&d).unwrap();
        checked
            .apply(&change(99, Kind::Destination, String::new(), Some(after)))
            .unwrap();
        assert_eq!(checked.unchecked_destinations(&[]).len(), 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Through any history of hosts, destinations and machines, the indexed rule decides every
        /// claim as the pass over the whole site does, and a facility's hosts and destinations
        /// are those a pass finds.
        #[test]
        fn the_claim_index_decides_as_a_pass_over_every_host(
            edits in proptest::collection::vec(edit(), 0..24),
            claims in proptest::collection::vec((name(), 0u8..3), 1..8),
        ) {
            let s = site(&edits);
            // The facility indexes, through the same histories (hosts move between facilities).
            for f in ["f0", "f1", "f2"] {
                let by_index: Vec<&str> = s.hosts_of(f).map(|h| h.name.as_str()).collect();
                let by_pass: Vec<&str> = s.hosts().filter(|h| h.facility == f).map(|h| h.name.as_str()).collect();
                prop_assert_eq!(by_index, by_pass);
                let by_index: Vec<String> = s.destinations_in(f).map(|d| d.key()).collect();
                let by_pass: Vec<String> = s.destinations().filter(|d| d.facility == f).map(|d| d.key()).collect();
                prop_assert_eq!(by_index, by_pass);
            }
            let own: [IpAddr; 1] = ["192.168.1.255".parse().unwrap()];
            for (claim, manager) in claims {
                let who = Principal::token(&format!("m{manager}"), Role::Manager);
                let decided = s.may_claim(&who, "name", &claim, &own).is_ok();
                prop_assert_eq!(decided, may_claim_by_scan(&s, &who, &claim, &own), "{}", claim);
                // Issue 31: every spelling of the same destination gets the same decision.
                let canonical = destination_host(&claim);
                prop_assert_eq!(s.may_claim(&who, "name", &canonical, &own).is_ok(), decided, "{}", canonical);
                for other in spellings(&canonical) {
                    prop_assert_eq!(s.may_claim(&who, "name", &other, &own).is_ok(), decided, "{} as {}", canonical, other);
                }
            }
        }
    }
}
