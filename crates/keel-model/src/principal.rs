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

/// How a principal proved who it is: the namespace its name lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// An API token (`name` is the token's name).
    Token,
    /// A person logged in with their password or through the SSO (`name` is their login).
    User,
    /// keel itself, a machine proving itself by its address, an anonymous caller: never a
    /// facility's manager.
    #[default]
    Keel,
}

/// A facility manager, named with its namespace (`token:NAME` or `user:LOGIN`), so that a login
/// never manages a facility by being spelled like a token's name (issue 31). A bare name, as
/// facilities listed them before, is a token's name: that is what it always meant to the API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ManagerName {
    Token(String),
    User(crate::Login),
}

impl ManagerName {
    pub fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        let s = s.trim();
        if let Some(login) = s.strip_prefix("user:") {
            return Ok(Self::User(crate::Login::parse(field, login)?));
        }
        let name = s.strip_prefix("token:").unwrap_or(s);
        let printable = name.chars().all(|c| !c.is_control() && !c.is_whitespace());
        if name.is_empty() || name.len() > 128 || !printable {
            return Err(ValidationError::new(
                field,
                format!("a manager is token:NAME or user:LOGIN, 1 to 128 printable characters (got {s:?})"),
            ));
        }
        Ok(Self::Token(name.to_owned()))
    }
}

impl fmt::Display for ManagerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(n) => write!(f, "token:{n}"),
            Self::User(l) => write!(f, "user:{l}"),
        }
    }
}

impl FromStr for ManagerName {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse("managers", s)
    }
}

impl TryFrom<String> for ManagerName {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse("managers", &s)
    }
}

impl From<ManagerName> for String {
    fn from(m: ManagerName) -> Self {
        m.to_string()
    }
}

/// An authenticated actor. `name` is what the change log records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// The namespace of `name`: only a token or a user can be a facility's manager.
    #[serde(default)]
    pub kind: PrincipalKind,
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
            kind: PrincipalKind::Keel,
            facilities: Vec::new(),
            host: None,
        }
    }

    /// An unauthenticated caller allowed by policy (e.g. self-registration); recorded as `anonymous`.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".to_owned(),
            role: Role::Readonly,
            kind: PrincipalKind::Keel,
            facilities: Vec::new(),
            host: None,
        }
    }

    /// An API token's principal (its facilities and host left empty).
    pub fn token(name: &str, role: Role) -> Self {
        Self {
            kind: PrincipalKind::Token,
            ..Self::user(name, role)
        }
    }

    /// A person acting with `role` under their own login (web pages, SSO).
    pub fn user(login: &str, role: Role) -> Self {
        Self {
            name: login.to_owned(),
            role,
            kind: PrincipalKind::User,
            facilities: Vec::new(),
            host: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// How a facility would list this principal among its managers, if it can be one.
    pub fn manager_name(&self) -> Option<ManagerName> {
        match self.kind {
            PrincipalKind::Token => Some(ManagerName::Token(self.name.clone())),
            PrincipalKind::User => crate::Login::parse("login", &self.name).ok().map(ManagerName::User),
            PrincipalKind::Keel => None,
        }
    }
}
