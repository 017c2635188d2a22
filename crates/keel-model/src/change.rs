//! The Change: one committed mutation, as the log records it and watchers receive it.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What kind of record a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Machine,
    Switch,
    Setting,
    User,
    Host,
    Facility,
    Destination,
    /// Who is logged in where (presence).
    Session,
    /// Internal high-water marks (uids); never sent on watch streams.
    Counter,
    /// A role given to a machine (gateway, rfs/N, hfs/N, service/NAME).
    Role,
}

impl Kind {
    pub const ALL: [Self; 10] = [
        Self::Machine,
        Self::Switch,
        Self::Setting,
        Self::User,
        Self::Host,
        Self::Facility,
        Self::Destination,
        Self::Session,
        Self::Counter,
        Self::Role,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Machine => "machine",
            Self::Switch => "switch",
            Self::Setting => "setting",
            Self::User => "user",
            Self::Host => "host",
            Self::Facility => "facility",
            Self::Destination => "destination",
            Self::Session => "session",
            Self::Counter => "counter",
            Self::Role => "role",
        }
    }

    /// Kinds that watchers may see (counters are keel's own bookkeeping).
    pub fn is_public(self) -> bool {
        self != Self::Counter
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the record was written or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Put,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Delete => "delete",
        }
    }
}

/// One committed mutation. `seq` is strictly increasing with no gaps; `before`/`after` are the
/// record as JSON (absent for a create / a delete).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub seq: u64,
    /// RFC 3339, UTC, set by the store at commit.
    pub time: String,
    pub principal: String,
    pub kind: Kind,
    pub op: Op,
    pub key: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}
