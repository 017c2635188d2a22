//! Who acts: principals and their roles.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Acts on the facilities it manages only.
    Manager,
    /// Reads everything, changes nothing.
    Readonly,
    /// A host's agent: reads what its host receives, reports results.
    Agent,
}

impl Role {
    pub const ALL: [Self; 4] = [Self::Admin, Self::Manager, Self::Readonly, Self::Agent];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Manager => "manager",
            Self::Readonly => "readonly",
            Self::Agent => "agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            ValidationError::new(
                "role",
                format!("must be one of admin, manager, readonly, agent (got {s:?})"),
            )
        })
    }
}

/// An authenticated actor. `name` is what the change log records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// For managers: the facilities they manage.
    #[serde(default)]
    pub facilities: Vec<String>,
    /// For agents: the host they act for.
    #[serde(default)]
    pub host: Option<String>,
}

impl Principal {
    /// The principal keel itself acts as (example site, first start).
    pub fn system() -> Self {
        Self {
            name: "keel".to_owned(),
            role: Role::Admin,
            facilities: Vec::new(),
            host: None,
        }
    }

    /// An unauthenticated caller allowed by policy (e.g. self-registration); recorded as `anonymous`.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".to_owned(),
            role: Role::Readonly,
            facilities: Vec::new(),
            host: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}
