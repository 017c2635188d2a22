//! Wire records in the prologin SADM shapes (mdb `query`, `switches`), shared by server and client.
//! Converted by hand from the model types so the model can evolve without breaking old clients.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Machine, Switch};

/// A machine as prologin's mdb returns it (`aliases` is a comma-separated string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub hostname: String,
    pub aliases: String,
    pub ip: String,
    pub mac: String,
    pub rfs: u32,
    pub hfs: u32,
    pub mtype: String,
    pub room: String,
    #[serde(default)]
    pub is_faulty: bool,
    #[serde(default)]
    pub faulty_reason: String,
    #[serde(default)]
    pub version: u64,
}

impl From<&Machine> for MachineRecord {
    fn from(m: &Machine) -> Self {
        Self {
            hostname: m.hostname.to_string(),
            aliases: m.aliases.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            ip: m.ip.to_string(),
            mac: m.mac.to_string(),
            rfs: m.rfs,
            hfs: m.hfs,
            mtype: m.mtype.to_string(),
            room: m.room.clone(),
            is_faulty: m.is_faulty,
            faulty_reason: m.faulty_reason.clone(),
            version: m.version,
        }
    }
}

/// A switch as prologin's mdb returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchRecord {
    pub name: String,
    pub chassis: String,
    pub rfs: u32,
    pub hfs: u32,
    pub room: String,
    #[serde(default)]
    pub version: u64,
}

impl From<&Switch> for SwitchRecord {
    fn from(s: &Switch) -> Self {
        Self {
            name: s.name.to_string(),
            chassis: s.chassis.clone(),
            rfs: s.rfs,
            hfs: s.hfs,
            room: s.room.clone(),
            version: s.version,
        }
    }
}

/// A record that Django-style filters can look into, field by field, as text.
pub trait Queryable {
    const FIELDS: &'static [&'static str];
    fn field(&self, name: &str) -> Option<Cow<'_, str>>;
}

impl Queryable for Machine {
    const FIELDS: &'static [&'static str] = &[
        "hostname",
        "aliases",
        "ip",
        "mac",
        "rfs",
        "hfs",
        "mtype",
        "room",
        "is_faulty",
        "faulty_reason",
        "id",
    ];
    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        Some(match name {
            "hostname" => Cow::Borrowed(self.hostname.as_str()),
            "aliases" => Cow::Owned(
                self.aliases
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            "ip" => Cow::Owned(self.ip.to_string()),
            "mac" => Cow::Owned(self.mac.to_string()),
            "rfs" => Cow::Owned(self.rfs.to_string()),
            "hfs" => Cow::Owned(self.hfs.to_string()),
            "mtype" => Cow::Borrowed(self.mtype.as_str()),
            "room" => Cow::Borrowed(self.room.as_str()),
            "is_faulty" => Cow::Borrowed(if self.is_faulty { "true" } else { "false" }),
            "faulty_reason" => Cow::Borrowed(self.faulty_reason.as_str()),
            "id" => Cow::Owned(self.id.to_string()),
            _ => return None,
        })
    }
}

impl Queryable for Switch {
    const FIELDS: &'static [&'static str] = &["name", "chassis", "rfs", "hfs", "room"];
    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        Some(match name {
            "name" => Cow::Borrowed(self.name.as_str()),
            "chassis" => Cow::Borrowed(self.chassis.as_str()),
            "rfs" => Cow::Owned(self.rfs.to_string()),
            "hfs" => Cow::Owned(self.hfs.to_string()),
            "room" => Cow::Borrowed(self.room.as_str()),
            _ => return None,
        })
    }
}

/// An RPC answer in the prologin shape: `{"type":"result","data":…}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RpcReply {
    Result { data: Value },
    Exception { exn_type: String, exn_message: String },
}
