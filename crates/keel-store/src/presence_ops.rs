//! Presence mutations: open, close, expire and rebuild sessions — each decided once, under the
//! writer lock, against the Snapshot (so two logins racing for one user or one machine can never
//! both be accepted).

use keel_model::{Decision, Principal, ProofPolicy, Refusal, Session, Snapshot, User};

use crate::ops::record;
use crate::store::Write;
use crate::{now_rfc3339, Db, StoreError};

/// What a login did.
#[derive(Debug, Clone)]
pub enum Opened {
    /// A new session (a Change was written). `home`: the HFS this first login gave the user's
    /// home (written in the same commit), when it gave one.
    New { session: Session, home: Option<u32> },
    /// The user was already logged in on that machine: nothing changed.
    Existing(Session),
}

impl Db {
    /// Logs `login` in on `hostname`, or says why not. A user without a home yet gets the
    /// machine's HFS on this login, when a facility serves that HFS (docs/homes.md). `proven`:
    /// the caller holds proof from the person (or is an admin); without it, `policy` decides
    /// against the user as this commit sees them. A proven login on a session opened unproven
    /// makes it proven.
    pub async fn open_session(
        &self,
        who: &Principal,
        login: &str,
        hostname: &str,
        proven: bool,
        policy: ProofPolicy,
    ) -> Result<Opened, StoreError> {
        let (mut existing, mut upgraded) = (None, false);
        let mut home = None;
        let changes = self
            .write(who, |s, _| match s.decide_login(login, hostname, &now_rfc3339()) {
                _ if !proven && s.user(login).is_some_and(|u| policy.needs_proof(u)) => {
                    Err(StoreError::Refused(Refusal::ProofNeeded {
                        login: login.to_owned(),
                    }))
                }
                Ok(Decision::Already(old)) if proven && !old.proven => {
                    let now_proven = Session {
                        proven: true,
                        ..old.clone()
                    };
                    upgraded = true;
                    Ok(vec![Write::put(&now_proven, Some(old.version), false)?])
                }
                Ok(Decision::Open(mut new)) => {
                    new.proven = proven;
                    let mut writes = Vec::with_capacity(2);
                    if let Some(user) = first_home(s, login, hostname) {
                        home = user.hfs;
                        writes.push(Write::put(&user, Some(user.version), false)?);
                    }
                    // Last: the session is the record this returns.
                    writes.push(Write::put(&new, Some(0), false)?);
                    Ok(writes)
                }
                Ok(Decision::Already(old)) => {
                    existing = Some(old);
                    Ok(Vec::new())
                }
                Err(r) => Err(StoreError::Refused(r)),
            })
            .await?;
        match existing {
            Some(s) => Ok(Opened::Existing(s)),
            None if upgraded => Ok(Opened::Existing(record(&changes, false)?)),
            None => Ok(Opened::New {
                session: record(&changes, false)?,
                home,
            }),
        }
    }

    /// Logs `login` out. With `on_host`, only if the session is on that machine (a machine may
    /// close its own sessions only). Returns the closed session, or `None` if there was none.
    pub async fn close_session(
        &self,
        who: &Principal,
        login: &str,
        on_host: Option<&str>,
    ) -> Result<Option<Session>, StoreError> {
        let changes = self
            .write(who, |s, _| {
                let Some(old) = s.session(login) else {
                    return Ok(Vec::new());
                };
                if on_host.is_some_and(|h| h != old.hostname.as_str()) {
                    return Err(StoreError::Forbidden(format!(
                        "{login} is logged in on {}, not on this machine",
                        old.hostname
                    )));
                }
                Ok(vec![Write::delete(old, Some(old.version))])
            })
            .await?;
        if changes.is_empty() {
            return Ok(None);
        }
        record(&changes, true).map(Some)
    }

    /// Closes the sessions of `logins` that still exist and are still the ones `since` says (a
    /// session reopened meanwhile is left alone), in one commit.
    pub async fn expire_sessions(&self, who: &Principal, expired: &[Session]) -> Result<Vec<Session>, StoreError> {
        let changes = self
            .write(who, |s, _| {
                Ok(expired
                    .iter()
                    .filter_map(|e| s.session(e.login.as_str()).filter(|cur| cur.since == e.since))
                    .map(|cur| Write::delete(cur, Some(cur.version)))
                    .collect())
            })
            .await?;
        changes
            .iter()
            .map(|c| {
                serde_json::from_value(c.before.clone().unwrap_or_default())
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// Recovery after a restart: rebuilds the sessions a machine's heartbeat reports, each obeying
    /// the login rules. Returns the sessions opened and the logins refused, with why.
    pub async fn rebuild_sessions(
        &self,
        who: &Principal,
        hostname: &str,
        logins: &[String],
        policy: ProofPolicy,
    ) -> Result<(Vec<Session>, Vec<(String, Refusal)>), StoreError> {
        let mut refused = Vec::new();
        let changes = self
            .write(who, |s, _| {
                let now = now_rfc3339();
                let mut next = s.clone();
                let mut writes = Vec::new();
                for login in logins {
                    // A heartbeat is the machine's word only: it never rebuilds a session that
                    // needs the person's proof.
                    if next.user(login).is_some_and(|u| policy.needs_proof(u)) {
                        refused.push((login.clone(), Refusal::ProofNeeded { login: login.clone() }));
                        continue;
                    }
                    match next.decide_login(login, hostname, &now) {
                        Ok(Decision::Open(new)) => {
                            writes.push(Write::put(&new, Some(0), false)?);
                            next.put_session(new);
                        }
                        Ok(Decision::Already(_)) => {}
                        Err(r) => refused.push((login.clone(), r)),
                    }
                }
                Ok(writes)
            })
            .await?;
        let opened = changes
            .iter()
            .filter_map(|c| serde_json::from_value(c.after.clone()?).ok())
            .collect();
        Ok((opened, refused))
    }
}

/// The user `login` with its home on `hostname`'s HFS, if the user has none yet and a facility
/// serves that HFS (a site without home file servers assigns nothing).
fn first_home(s: &Snapshot, login: &str, hostname: &str) -> Option<User> {
    let user = s.user(login).filter(|u| u.hfs.is_none())?;
    let hfs = s.machine_by_name(hostname)?.hfs;
    s.facilities().any(|f| f.hfs == Some(hfs)).then(|| User {
        hfs: Some(hfs),
        ..user.clone()
    })
}
