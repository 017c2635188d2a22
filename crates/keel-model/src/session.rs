//! Presence: who is logged in on which machine, and the rules a login must obey.
//!
//! One session per user and one user per machine, as the contest's rules want: a contestant sits
//! at one `user` machine, nobody shares a seat. The rules are decided here, on a Snapshot, so the
//! store decides a login exactly once (under its writer lock) and the heartbeat's recovery obeys
//! the same rules.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Group, Hostname, Login, MachineType, Snapshot};

/// A user logged in on a machine. Keyed by login (one session per user); the machine's hostname
/// is a unique value too (one user per machine).
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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

    /// Whether this session may stay open and be vouched for (heartbeats, SSO).
    pub fn holds(self, snap: &Snapshot, session: &Session) -> bool {
        session.proven || snap.user(session.login.as_str()).is_none_or(|u| !self.needs_proof(u))
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

/// What a login asks for, once the rules are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A new session to write.
    Open(Session),
    /// The same user is already logged in on that machine (another terminal): nothing to write.
    Already(Session),
}

impl Snapshot {
    /// Decides a login of `login` on `hostname` (a hostname or an alias) at `now` (RFC 3339).
    pub fn decide_login(&self, login: &str, hostname: &str, now: &str) -> Result<Decision, Refusal> {
        let machine = self
            .machine_by_name(hostname)
            .ok_or_else(|| Refusal::UnknownMachine(hostname.to_owned()))?;
        let user = self.user(login).ok_or_else(|| Refusal::UnknownUser(login.to_owned()))?;
        let host = machine.hostname.to_string();
        if user.group == Group::User && machine.mtype != MachineType::User {
            return Err(Refusal::NotAUserMachine {
                login: login.to_owned(),
                hostname: host,
            });
        }
        if let Some(s) = self.session(login) {
            if s.hostname == machine.hostname {
                return Ok(Decision::Already(s.clone()));
            }
            return Err(Refusal::LoggedInElsewhere {
                login: login.to_owned(),
                hostname: s.hostname.to_string(),
            });
        }
        if let Some(other) = self.session_on(&host) {
            return Err(Refusal::MachineInUse {
                hostname: host,
                by: other.login.to_string(),
            });
        }
        Ok(Decision::Open(Session {
            login: user.login.clone(),
            hostname: machine.hostname.clone(),
            since: now.to_owned(),
            proven: false,
            version: 0,
        }))
    }

    /// The login using `ip`'s machine, if any: what SSO answers.
    pub fn login_at(&self, ip: std::net::Ipv4Addr) -> Option<(&crate::Machine, Option<&Session>)> {
        let m = self.machine_by_ip(ip)?;
        Some((m, self.session_on(m.hostname.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MachinePatch, Pools, UserPatch};

    fn site() -> Snapshot {
        let mut s = Snapshot::default();
        let pools = Pools::default();
        for (i, (name, t)) in [("pc1", "user"), ("pc2", "user"), ("srv", "orga")].iter().enumerate() {
            let p = MachinePatch {
                hostname: Some(Hostname::parse("h", name).unwrap()),
                mac: Some(crate::Mac::parse("mac", &format!("00:00:00:00:00:0{i}")).unwrap()),
                mtype: Some(t.parse().unwrap()),
                room: Some("a".into()),
                ..MachinePatch::default()
            };
            let m = s.new_machine(p, i as u64 + 1, &pools).unwrap();
            s.put_machine(m);
        }
        for (login, g) in [("alice", "user"), ("bob", "user"), ("root1", "root")] {
            let p = UserPatch {
                login: Some(Login::parse("l", login).unwrap()),
                group: Some(g.parse().unwrap()),
                firstname: Some("A".into()),
                lastname: Some("B".into()),
                ..UserPatch::default()
            };
            let (u, c) = s.new_user(p, &crate::UidPools::default()).unwrap();
            s.put_user(u);
            s.put_counter(c);
        }
        s
    }

    fn open(s: &mut Snapshot, login: &str, host: &str) {
        match s.decide_login(login, host, "t").unwrap() {
            Decision::Open(x) => s.put_session(x),
            Decision::Already(_) => panic!("already"),
        }
    }

    #[test]
    fn each_refusal_in_its_case() {
        let mut s = site();
        let code = |s: &Snapshot, l: &str, h: &str| s.decide_login(l, h, "t").unwrap_err().code();
        assert_eq!(code(&s, "alice", "nope"), "unknown_machine");
        assert_eq!(code(&s, "zed", "pc1"), "unknown_user");
        assert_eq!(code(&s, "alice", "srv"), "not_a_user_machine");
        open(&mut s, "alice", "pc1");
        assert_eq!(code(&s, "alice", "pc2"), "logged_in_elsewhere");
        assert_eq!(code(&s, "bob", "pc1"), "machine_in_use");
        assert!(matches!(s.decide_login("alice", "pc1", "t"), Ok(Decision::Already(_))));
        // Staff may sit anywhere.
        open(&mut s, "root1", "srv");
        assert_eq!(
            s.login_at(s.machine_by_name("srv").unwrap().ip)
                .unwrap()
                .1
                .unwrap()
                .login
                .as_str(),
            "root1"
        );
        s.remove_session("alice");
        open(&mut s, "bob", "pc1");
    }
}
