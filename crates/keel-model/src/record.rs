//! What the store needs to know of a record to persist it generically.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Counter, Kind, Machine, Setting, Switch, User};

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

impl Record for Machine {
    const KIND: Kind = Kind::Machine;
    fn key(&self) -> String {
        self.id.to_string()
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, v: u64) {
        self.version = v;
    }
    fn unique_values(&self) -> Vec<(&'static str, String)> {
        let mut u: Vec<_> = self.names().map(|n| ("name", n.to_string())).collect();
        u.push(("mac", self.mac.to_string()));
        u.push(("ip", self.ip.to_string()));
        u
    }
}

impl Record for Switch {
    const KIND: Kind = Kind::Switch;
    fn key(&self) -> String {
        self.name.to_string()
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, v: u64) {
        self.version = v;
    }
    fn unique_values(&self) -> Vec<(&'static str, String)> {
        if self.chassis.is_empty() {
            Vec::new()
        } else {
            vec![("chassis", self.chassis.clone())]
        }
    }
}

impl Record for Setting {
    const KIND: Kind = Kind::Setting;
    fn key(&self) -> String {
        self.key.clone()
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, v: u64) {
        self.version = v;
    }
    fn unique_values(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

impl Record for User {
    const KIND: Kind = Kind::User;
    fn key(&self) -> String {
        self.login.to_string()
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, v: u64) {
        self.version = v;
    }
    fn unique_values(&self) -> Vec<(&'static str, String)> {
        vec![("login", self.login.to_string()), ("uid", self.uid.to_string())]
    }
}

impl Record for Counter {
    const KIND: Kind = Kind::Counter;
    fn key(&self) -> String {
        self.key.clone()
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, v: u64) {
        self.version = v;
    }
    fn unique_values(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}
