//! The rules a login must obey, decided on a Snapshot: one session per user and one user per
//! machine, as the contest's rules want — a contestant sits at one `user` machine, nobody shares a
//! seat. Decided here so that the store decides a login exactly once (under its writer lock) and
//! the heartbeat's recovery obeys the same rules.

use crate::{Group, MachineType, ProofPolicy, Refusal, Session, Snapshot};

impl ProofPolicy {
    /// Whether this session may stay open and be vouched for (heartbeats, SSO).
    pub fn holds(self, snap: &Snapshot, session: &Session) -> bool {
        session.proven || snap.user(session.login.as_str()).is_none_or(|u| !self.needs_proof(u))
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
    use crate::{Hostname, Login, MachinePatch, Pools, UserPatch};

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
