//! Which hosts and destinations may hold a name: the index `Snapshot::may_claim` (rights.rs)
//! looks names up in, so that a facility manager's write of a host or destination costs
//! O(log n) rather than a pass over every host and destination of the site (issue 23).
//!
//! It gives candidates, a superset: rights.rs still applies its exact rule to each. What it must
//! never do is miss one, so every way a host answers to a name maps to a key here:
//! - its own names and aliases (as `destination_host` spells them), and their first labels (a
//!   bare name reaches a host through the search domain): `hosts_by_name`;
//! - the machine it names (`Host::machine`), as `Snapshot::machine_by_name` reads it (a parsed
//!   `Hostname`), so that the hosts of a machine found by one of its names, a dotted prefix of the
//!   claim, or its address are `hosts_by_machine` of that machine's names;
//! - a destination by the host it sends to, and that host's first label: `destinations_by_host`.
//!
//! Machines are not indexed here: they are resolved when a claim is judged, so a renamed
//! machine needs no update of this index.

use imbl::{OrdMap, OrdSet};

use crate::propagation::{destination_host, Destination, Host};
use crate::Hostname;

/// Host names and destination keys by the names that lead to them.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClaimIndex {
    hosts_by_name: OrdMap<String, OrdSet<String>>,
    hosts_by_machine: OrdMap<Hostname, OrdSet<String>>,
    destinations_by_host: OrdMap<String, OrdSet<String>>,
}

impl ClaimIndex {
    pub(crate) fn add_host(&mut self, h: &Host) {
        for k in own_names(h) {
            add(&mut self.hosts_by_name, k, &h.name);
        }
        if let Some(m) = machine_ref(h) {
            add(&mut self.hosts_by_machine, m, &h.name);
        }
    }

    pub(crate) fn remove_host(&mut self, h: &Host) {
        for k in own_names(h) {
            remove(&mut self.hosts_by_name, &k, &h.name);
        }
        if let Some(m) = machine_ref(h) {
            remove(&mut self.hosts_by_machine, &m, &h.name);
        }
    }

    pub(crate) fn add_destination(&mut self, d: &Destination) {
        for k in destination_keys(d) {
            add(&mut self.destinations_by_host, k, &d.key());
        }
    }

    pub(crate) fn remove_destination(&mut self, d: &Destination) {
        for k in destination_keys(d) {
            remove(&mut self.destinations_by_host, &k, &d.key());
        }
    }

    /// Hosts answering to `name` (or to `name` as a first label) by their own names.
    pub(crate) fn hosts_named(&self, name: &str) -> impl Iterator<Item = &String> {
        self.hosts_by_name.get(name).into_iter().flatten()
    }

    /// Hosts that name machine `name` (any of the machine's names leads to them).
    pub(crate) fn hosts_on_machine(&self, name: &Hostname) -> impl Iterator<Item = &String> {
        self.hosts_by_machine.get(name).into_iter().flatten()
    }

    /// Destinations sending to `host` (as `Destination::host` spells it), or to a dotted name
    /// whose first label `host` is.
    pub(crate) fn destinations_to(&self, host: &str) -> impl Iterator<Item = &String> {
        self.destinations_by_host.get(host).into_iter().flatten()
    }
}

/// A host's own names and aliases, normalized, and each one's first label.
fn own_names(h: &Host) -> OrdSet<String> {
    let mut keys = OrdSet::new();
    for n in std::iter::once(&h.name).chain(&h.aliases) {
        let full = destination_host(n);
        keys.insert(full.split('.').next().unwrap_or_default().to_owned());
        keys.insert(full);
    }
    keys
}

/// A destination's host, and its first label (a bare claim reaches it through the search domain).
fn destination_keys(d: &Destination) -> OrdSet<String> {
    let host = d.host();
    let mut keys = OrdSet::new();
    if host.parse::<std::net::IpAddr>().is_err() {
        keys.insert(host.split('.').next().unwrap_or_default().to_owned());
    }
    keys.insert(host);
    keys
}

/// The machine a host names, as `Snapshot::machine_by_name` parses it.
fn machine_ref(h: &Host) -> Option<Hostname> {
    h.machine.as_deref().and_then(|m| Hostname::parse("machine", m).ok())
}

/// Adds `value` to the set of `key` (a multimap of ordered sets; also the Snapshot's hosts by
/// facility).
pub(crate) fn add<K: Ord + Clone>(map: &mut OrdMap<K, OrdSet<String>>, key: K, value: &str) {
    map.entry(key).or_default().insert(value.to_owned());
}

/// Takes `value` out of the set of `key`, and the key with its last value.
pub(crate) fn remove<K: Ord + Clone>(map: &mut OrdMap<K, OrdSet<String>>, key: &K, value: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}
