//! Presence: who is logged in on which machine (`Session`), why a login is refused (`Refusal`),
//! which sessions need the person's proof (`ProofPolicy`). The rules themselves, decided on a
//! Snapshot, are in `decide.rs`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Hostname, Login};

/// A user logged in on a machine. Keyed by login (one session per user); the machine's hostname
/// is a unique value too (one user per machine).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub login: Login,
    pub hostname: Hostname,
    /// RFC 3339, UTC: when the session was opened (or rebuilt by a heartbeat).
    pub since: String,
    /// Opened with proof from the person (their password, checked by keel; or an admin's
    /// token), not with the machines' shared secret alone. See [`ProofPolicy`].
    #[serde(default)]
    pub proven: bool,
    #[serde(default)]
    pub version: u64,
}

/// Why a login is refused — each a sentence the person at the machine understands (PAM shows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UnknownMachine(String),
    UnknownUser(String),
    /// A contestant on a machine that is not a contestant's machine.
    NotAUserMachine {
        login: String,
        hostname: String,
    },
    /// One session per user.
    LoggedInElsewhere {
        login: String,
        hostname: String,
    },
    /// One user per machine.
    MachineInUse {
        hostname: String,
        by: String,
    },
    /// keel restarted less than one timeout ago and is still rebuilding sessions from heartbeats.
    Recovering {
        seconds: u64,
    },
    /// `[presence] proof` wants proof of the person's password, and none (or a wrong one) came.
    ProofNeeded {
        login: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownMachine(h) => write!(f, "unknown machine {h:?}: this machine is not registered"),
            Self::UnknownUser(l) => write!(f, "unknown user {l:?}"),
            Self::NotAUserMachine { login, hostname } => write!(
                f,
                "{login} is a contestant and {hostname} is not a contestant's machine: use a machine of type user"
            ),
            Self::LoggedInElsewhere { login, hostname } => write!(
                f,
                "{login} is already logged in on {hostname}: log out there first (one session per user)"
            ),
            Self::MachineInUse { hostname, by } => {
                write!(f, "{hostname} is in use by {by}: one user per machine")
            }
            Self::Recovering { seconds } => write!(
                f,
                "keel restarted and is recovering sessions: logins are refused for {seconds} more second(s)"
            ),
            Self::ProofNeeded { login } => write!(
                f,
                "keel needs proof of {login}'s password for this session, and this machine sent none that holds: log in again with your password"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// A short, stable name for scripts and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownMachine(_) => "unknown_machine",
            Self::UnknownUser(_) => "unknown_user",
            Self::NotAUserMachine { .. } => "not_a_user_machine",
            Self::LoggedInElsewhere { .. } => "logged_in_elsewhere",
            Self::MachineInUse { .. } => "machine_in_use",
            Self::Recovering { .. } => "recovering",
            Self::ProofNeeded { .. } => "proof_needed",
        }
    }
}

/// Which sessions need proof from the person (`[presence] proof`): the machines' shared secret
/// is on every netbooted machine, so with it alone a contestant could log *anyone* in on their
/// own seat and the SSO would vouch for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProofPolicy {
    /// The secret and the machine's address suffice (keel before issue 31; older data dirs).
    Off,
    /// Users with a password need proof of it; users without one (keys, Kerberos) log in as
    /// under `off`.
    Password,
    /// Every session a machine opens needs proof: a user without a password is logged in by an
    /// admin's token only.
    #[default]
    Required,
}

impl ProofPolicy {
    pub const ALL: [Self; 3] = [Self::Off, Self::Password, Self::Required];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Password => "password",
            Self::Required => "required",
        }
    }

    /// Whether a session of `user` opened by a machine needs proof.
    pub fn needs_proof(self, user: &crate::User) -> bool {
        match self {
            Self::Off => false,
            Self::Password => !user.password_hash.is_empty(),
            Self::Required => true,
        }
    }
}

impl fmt::Display for ProofPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProofPolicy {
    type Err = crate::ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            crate::ValidationError::new("proof", format!("must be off, password or required (got {s:?})"))
        })
    }
}
