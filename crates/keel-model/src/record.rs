//! What the store needs to know of a record to persist it generically.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Counter, Destination, Facility, Host, Kind, Machine, RoleRecord, Session, Setting, Switch, User};

/// A record kind the store can write: its key, its version and the unique values it claims.
pub trait Record: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const KIND: Kind;
    fn key(&self) -> String;
    fn version(&self) -> u64;
    fn set_version(&mut self, v: u64);
    /// (space, value) pairs that no other record may hold; the store enforces them as a last line
    /// of defence even though the Snapshot already checked them.
    fn unique_values(&self) -> Vec<(&'static str, String)>;
}

/// The same impl for every record type: its kind, how to key it, what it must hold alone.
macro_rules! record {
    ($t:ty, $kind:expr, |$s:ident| key: $key:expr, uniques: $uniques:expr) => {
        impl Record for $t {
            const KIND: Kind = $kind;
            fn key(&self) -> String {
                let $s = self;
                $key
            }
            fn version(&self) -> u64 {
                self.version
            }
            fn set_version(&mut self, v: u64) {
                self.version = v;
            }
            #[allow(unused_variables)] // some record types hold no unique value
            fn unique_values(&self) -> Vec<(&'static str, String)> {
                let $s = self;
                $uniques
            }
        }
    };
}

record!(Machine, Kind::Machine, |m| key: m.id.to_string(), uniques: {
    let mut u: Vec<_> = m.names().map(|n| ("name", n.to_string())).collect();
    u.push(("mac", m.mac.to_string()));
    u.push(("ip", m.ip.to_string()));
    u
});
record!(Switch, Kind::Switch, |s| key: s.name.to_string(), uniques: {
    if s.chassis.is_empty() { Vec::new() } else { vec![("chassis", s.chassis.clone())] }
});
record!(Setting, Kind::Setting, |s| key: s.key.clone(), uniques: Vec::new());
record!(User, Kind::User, |u| key: u.login.to_string(), uniques: {
    vec![("login", u.login.to_string()), ("uid", u.uid.to_string())]
});
record!(Counter, Kind::Counter, |c| key: c.key.clone(), uniques: Vec::new());
record!(Host, Kind::Host, |h| key: h.name.clone(), uniques: vec![("host", h.name.clone())]);
record!(Facility, Kind::Facility, |f| key: f.name.clone(), uniques: Vec::new());
record!(Destination, Kind::Destination, |d| key: d.key(), uniques: Vec::new());
record!(Session, Kind::Session, |s| key: s.login.to_string(), uniques: {
    vec![("session_login", s.login.to_string()), ("session_host", s.hostname.to_string())]
});
record!(RoleRecord, Kind::Role, |r| key: r.role.clone(), uniques: Vec::new());
