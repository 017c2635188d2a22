//! IP pools per machine type and address allocation.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{MachineType, ValidationError};

/// One pool: a network, minus its network and broadcast addresses and the reserved ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// The pool's network (required when the pool is given).
    #[schemars(with = "String")]
    pub network: Ipv4Net,
    /// Addresses of the network never given to a machine.
    #[serde(default)]
    pub reserved: Vec<Ipv4Addr>,
    /// The DHCP range for unknown machines (`first`, `last`) when it lies in this pool: its
    /// addresses are leased to machines being registered, so none is ever a machine's. Set from
    /// `[propagation.generators.dhcp] unknown_range` when the config is loaded, never written
    /// under `[pools]` (one setting, one place).
    #[serde(skip)]
    #[schemars(skip)]
    pub dynamic: Option<(Ipv4Addr, Ipv4Addr)>,
}

impl Pool {
    pub fn new(network: Ipv4Net) -> Self {
        Self {
            network: network.trunc(),
            reserved: Vec::new(),
            dynamic: None,
        }
    }

    /// True if `ip` may be given to a machine of this pool.
    pub fn admits(&self, ip: Ipv4Addr) -> bool {
        self.network.contains(&ip) && !self.is_edge(ip) && !self.reserved.contains(&ip) && !self.is_dynamic(ip)
    }

    /// True if `ip` is in the DHCP range for unknown machines.
    pub fn is_dynamic(&self, ip: Ipv4Addr) -> bool {
        self.dynamic.is_some_and(|(first, last)| first <= ip && ip <= last)
    }

    fn is_edge(&self, ip: Ipv4Addr) -> bool {
        // A /31 or /32 has no network/broadcast address to skip (RFC 3021).
        self.network.prefix_len() < 31 && (ip == self.network.network() || ip == self.network.broadcast())
    }

    /// The lowest admissible address for which `is_used` is false.
    ///
    /// `used_in_order` yields the used addresses inside the pool in increasing order, so the walk
    /// costs the number of used addresses below the first gap, not the pool's size.
    pub fn lowest_free(&self, used_in_order: impl Iterator<Item = Ipv4Addr>) -> Option<Ipv4Addr> {
        self.lowest_free_from(self.network.network(), used_in_order)
    }

    /// As [`Pool::lowest_free`], for a caller that knows no address below `from` is free.
    pub fn lowest_free_from(&self, from: Ipv4Addr, used_in_order: impl Iterator<Item = Ipv4Addr>) -> Option<Ipv4Addr> {
        let mut used = used_in_order.peekable();
        let (first, last) = (u32::from(self.network.network()), u32::from(self.network.broadcast()));
        let mut candidate = u32::from(from).clamp(first, last);
        loop {
            let ip = Ipv4Addr::from(candidate);
            while used.next_if(|u| *u < ip).is_some() {}
            if used.peek() != Some(&ip) && self.admits(ip) {
                return Some(ip);
            }
            // The dynamic range is passed in one step: its size costs nothing (invariant 13).
            let next = match self.dynamic {
                Some((_, end)) if self.is_dynamic(ip) => u32::from(end),
                _ => candidate,
            };
            if next >= last {
                return None;
            }
            candidate = next + 1;
        }
    }
}

/// The pools of the four machine types (user and orga may share one network). Each one given
/// replaces its default alone: `[pools.user]` or `[pools.uids.user]` by itself is a whole config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Pools {
    /// Contestants' machines.
    pub user: Pool,
    /// Organisers' machines (may share the user network).
    pub orga: Pool,
    /// Cluster machines.
    pub cluster: Pool,
    /// Servers (RFS, HFS, web servers).
    pub service: Pool,
    /// uid pools of the user groups (`[pools.uids.user] first = 10001, last = 10999`, …).
    pub uids: crate::UidPools,
}

impl Default for Pools {
    fn default() -> Self {
        let net = |s: &str| Pool::new(s.parse().unwrap_or_else(|_| unreachable!("constant network {s}")));
        Self {
            user: net("192.168.0.0/24"),
            orga: net("192.168.0.0/24"),
            service: net("192.168.1.0/24"),
            cluster: net("192.168.2.0/24"),
            uids: crate::UidPools::default(),
        }
    }
}

impl Pools {
    pub fn of(&self, mtype: MachineType) -> &Pool {
        match mtype {
            MachineType::User => &self.user,
            MachineType::Orga => &self.orga,
            MachineType::Cluster => &self.cluster,
            MachineType::Service => &self.service,
        }
    }

    pub fn of_mut(&mut self, mtype: MachineType) -> &mut Pool {
        match mtype {
            MachineType::User => &mut self.user,
            MachineType::Orga => &mut self.orga,
            MachineType::Cluster => &mut self.cluster,
            MachineType::Service => &mut self.service,
        }
    }

    /// Checks that an explicitly given address belongs to the type's pool.
    pub fn check(&self, mtype: MachineType, ip: Ipv4Addr) -> Result<(), ValidationError> {
        let pool = self.of(mtype);
        if pool.is_dynamic(ip) {
            Err(ValidationError::new(
                "ip",
                format!("{ip} is in the DHCP range for unknown machines ([propagation.generators.dhcp] unknown_range): it is never a machine's"),
            ))
        } else if pool.admits(ip) {
            Ok(())
        } else {
            Err(ValidationError::new(
                "ip",
                format!("{ip} is not a usable address of the {mtype} pool {}", pool.network),
            ))
        }
    }

    /// Picks the lowest free address of the type's pool at or above `from`; the caller guarantees
    /// none below it is free (`from` = the network address for a plain allocation).
    pub fn allocate(
        &self,
        mtype: MachineType,
        from: Option<Ipv4Addr>,
        used_in_order: impl Iterator<Item = Ipv4Addr>,
    ) -> Result<Ipv4Addr, ValidationError> {
        let pool = self.of(mtype);
        pool.lowest_free_from(from.unwrap_or(pool.network.network()), used_in_order)
            .ok_or_else(|| {
                ValidationError::new(
                    "ip",
                    format!("the {mtype} pool {} is full: no free address left", pool.network),
                )
            })
    }
}

/// The octet-aligned reverse zone that holds a network: a /24 is `C.B.A.in-addr.arpa`, a /16 (or a
/// /20, served as its /16) `B.A.in-addr.arpa`, a /8 `A.in-addr.arpa`.
pub fn reverse_zone(net: ipnet::Ipv4Net) -> String {
    let o = net.network().octets();
    let keep = usize::from(net.prefix_len() / 8).clamp(1, 3);
    let mut labels: Vec<String> = o[..keep].iter().rev().map(ToString::to_string).collect();
    labels.push("in-addr.arpa".into());
    labels.join(".")
}

impl Pools {
    /// The pools' networks, sorted, each once (user and orga may share one).
    pub fn networks(&self) -> Vec<ipnet::Ipv4Net> {
        let mut nets: Vec<ipnet::Ipv4Net> = [&self.user, &self.orga, &self.service, &self.cluster]
            .iter()
            .map(|p| p.network)
            .collect();
        nets.sort();
        nets.dedup();
        nets
    }

    /// The reverse zones of every pool, sorted, each once.
    pub fn reverse_zones(&self) -> Vec<String> {
        let mut zones: Vec<String> = [&self.user, &self.orga, &self.service, &self.cluster]
            .iter()
            .map(|p| reverse_zone(p.network))
            .collect();
        zones.sort();
        zones.dedup();
        zones
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn pool(net: &str, reserved: &[&str]) -> Pool {
        Pool {
            network: net.parse().unwrap(),
            reserved: reserved.iter().map(|r| r.parse().unwrap()).collect(),
            dynamic: None,
        }
    }

    #[test]
    fn skips_network_broadcast_and_reserved() {
        let p = pool("10.0.0.0/30", &[]);
        let used: Vec<Ipv4Addr> = vec!["10.0.0.1".parse().unwrap()];
        assert_eq!(p.lowest_free(used.into_iter()), Some("10.0.0.2".parse().unwrap()));
        let p = pool("10.0.0.0/30", &["10.0.0.1"]);
        assert_eq!(p.lowest_free(std::iter::empty()), Some("10.0.0.2".parse().unwrap()));
        let used: Vec<Ipv4Addr> = vec!["10.0.0.2".parse().unwrap()];
        assert_eq!(p.lowest_free(used.into_iter()), None);
    }

    proptest! {
        /// Allocation never returns a used address, never one outside the pool or in its DHCP
        /// range for unknown machines, and returns the lowest.
        #[test]
        fn allocation_is_lowest_free(
            used in proptest::collection::btree_set(0u32..64, 0..64),
            prefix in 26u8..=30,
            dynamic in proptest::option::of((0u8..64, 0u8..8)),
        ) {
            let mut p = Pool::new(Ipv4Net::new(Ipv4Addr::new(10, 1, 2, 0), prefix).unwrap());
            p.dynamic = dynamic.map(|(first, len)| (Ipv4Addr::new(10, 1, 2, first), Ipv4Addr::new(10, 1, 2, first.saturating_add(len))));
            let used: BTreeSet<Ipv4Addr> = used.into_iter().map(|o| Ipv4Addr::new(10, 1, 2, o as u8)).collect();
            let got = p.lowest_free(used.iter().copied());
            let in_range = |ip: &Ipv4Addr| p.dynamic.is_some_and(|(f, l)| f <= *ip && *ip <= l);
            let expect = p.network.hosts().find(|ip| !used.contains(ip) && !in_range(ip));
            prop_assert_eq!(got, expect);
            if let Some(ip) = got {
                prop_assert!(p.admits(ip));
                prop_assert!(!used.contains(&ip));
            }
        }
    }
}
