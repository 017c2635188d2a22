//! Presence: `POST /api/v1/sessions`, `DELETE /api/v1/sessions/{login}`,
//! `POST /api/v1/sessions/heartbeat`, and the expiry keel runs itself.
//!
//! Machines booted from one shared NFS root cannot hold a token each, so a machine proves itself
//! by its address (the request must come from the IP of the machine it names) plus the site's
//! presence secret; admins use their token. Heartbeats are not Changes: the time of each
//! session's last one is kept in memory here. After a start, every stored session counts as seen
//! at that start, so an outage never logs everyone out; during the first timeout, heartbeats
//! rebuild sessions (the original presencesync's recovery) and logins are refused.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_limits::canonical;
use keel_model::{Principal, Refusal, Role, Session};
use keel_store::Opened;
use serde::Deserialize;
use serde_json::json;

use crate::{ApiError, AppState, Caller};

pub use keel_model::ProofPolicy;

/// The header a machine sends its site secret in.
pub const SECRET_HEADER: &str = "x-keel-presence-secret";

/// The `[presence]` table of keel.toml: sessions, their expiry, how machines prove who they are.
/// Its `Default` is the one place these defaults are written.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// A session without a heartbeat for this long is closed.
    #[serde(rename = "timeout_secs", with = "keel_limits::duration::secs")]
    #[schemars(with = "u64")]
    pub timeout: Duration,
    /// After a start, heartbeats rebuild sessions and logins wait this long (default:
    /// `timeout_secs`).
    #[serde(rename = "recovery_secs", with = "keel_limits::duration::opt_secs")]
    #[schemars(with = "Option<u64>")]
    pub recovery: Option<Duration>,
    /// The site secret machines send with presence calls (at least 16 characters), made on first
    /// start with mode 0600; a relative path is under the data directory.
    pub secret_file: std::path::PathBuf,
    /// `/map` without a token (the site's network sees who sits where).
    pub map_public: bool,
    /// Which sessions a machine opens only with proof of the person's password: `off`,
    /// `password` (users who have one), `required` (default for a data directory made since
    /// issue 31; `off` for an older one).
    #[serde(rename = "proof")]
    pub proof_setting: Option<keel_model::ProofPolicy>,
    /// Proxies whose client-address header (`[sso] client_header`) presence believes (default
    /// none: machines call keel directly). Not `[sso]`'s: nginx on keel's host speaks for the
    /// SSO's clients, but a local user there must not speak for a machine.
    #[schemars(with = "Vec<String>")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The secret read from `secret_file`; `None`: only admins' tokens are accepted.
    #[serde(skip)]
    #[schemars(skip)]
    pub secret: Option<crate::Secret>,
    /// The policy in force: `proof` when set, else what the data directory's age gives.
    #[serde(skip)]
    #[schemars(skip)]
    pub proof: keel_model::ProofPolicy,
    /// `[sso] client_header` with `trusted_proxies`.
    #[serde(skip)]
    #[schemars(skip)]
    pub client_addr: ClientAddrConfig,
}

impl PresenceConfig {
    /// How long after a start heartbeats rebuild sessions.
    pub fn recovery(&self) -> Duration {
        self.recovery.unwrap_or(self.timeout)
    }
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            recovery: None,
            secret_file: "presence.secret".into(),
            map_public: true,
            proof_setting: None,
            trusted_proxies: Vec::new(),
            secret: None,
            proof: keel_model::ProofPolicy::Required,
            client_addr: ClientAddrConfig {
                trusted_proxies: Vec::new(),
                ..crate::sso::SsoConfig::default().client_addr()
            },
        }
    }
}

/// Proxies (nginx) whose client-address header is believed; any other peer is the client itself.
/// Made from `[sso]` (and `[presence] trusted_proxies` for presence calls).
#[derive(Debug, Clone)]
pub struct ClientAddrConfig {
    /// The header's name, lower case.
    pub header: String,
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl ClientAddrConfig {
    pub(crate) fn trusts(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }

    /// The address a trusted proxy says the client has: `Err(())` when the peer is not trusted
    /// or sent no usable header.
    pub(crate) fn forwarded(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Result<IpAddr, ()> {
        if !peer.is_some_and(|p| self.trusts(p)) {
            return Err(());
        }
        let v = headers.get(self.header.as_str()).ok_or(())?;
        v.to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(canonical)
            .ok_or(())
    }

    /// The client: what a trusted proxy says, else the peer.
    pub(crate) fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        self.forwarded(peer, headers).ok().or(peer.map(canonical))
    }
}

/// The connection's peer address, when the server recorded it (every real connection; `oneshot`
/// tests add a `ConnectInfo` themselves).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()),
        ))
    }
}

/// Presence's live state: when each session last showed a heartbeat.
pub struct Presence {
    /// Replaced whole by a reload of keel.toml ([`Presence::reconfigure`]).
    config: arc_swap::ArcSwap<PresenceConfig>,
    started: Instant,
    seen: parking_lot::Mutex<HashMap<String, Instant>>,
    pub(crate) proofs: crate::proof::Proofs,
}

impl Presence {
    pub fn new(config: PresenceConfig) -> Self {
        Self {
            config: arc_swap::ArcSwap::from_pointee(config),
            started: Instant::now(),
            seen: parking_lot::Mutex::new(HashMap::new()),
            proofs: crate::proof::Proofs::default(),
        }
    }

    /// The settings in force now.
    pub fn config(&self) -> Arc<PresenceConfig> {
        self.config.load_full()
    }

    /// New settings (a reload): the next login, heartbeat and expiry pass use them. The recovery
    /// window stays counted from the start.
    pub fn reconfigure(&self, config: PresenceConfig) {
        self.config.store(Arc::new(config));
    }

    /// The machine calling: its address, or what a proxy `[presence] trusted_proxies` lists says.
    fn client(&self, peer: Peer, headers: &HeaderMap) -> Option<IpAddr> {
        self.config().client_addr.client(peer.0, headers)
    }

    fn seen(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Instant>> {
        self.seen.lock()
    }

    fn touch(&self, login: &str) {
        self.seen().insert(login.to_owned(), Instant::now());
    }

    /// Seconds of recovery left after the start, if any.
    fn recovering(&self) -> Option<u64> {
        let left = self.config().recovery().checked_sub(self.started.elapsed())?;
        (!left.is_zero()).then(|| left.as_secs().max(1))
    }

    /// Sessions whose last heartbeat (or, for those never seen by this server, its start) is
    /// older than the timeout — and, with several servers, whose last heartbeat any server
    /// recorded (`shared`: login → Unix ms) is too.
    fn overdue(&self, sessions: impl Iterator<Item = Session>, shared: &HashMap<String, i64>) -> Vec<Session> {
        let now = Instant::now();
        let now_ms = crate::auth::now_ms();
        let timeout = self.config().timeout;
        let timeout_ms = crate::auth::millis(timeout);
        let seen = self.seen();
        sessions
            .filter(|s| {
                let last = seen.get(s.login.as_str()).copied().unwrap_or(self.started);
                let heard_elsewhere = shared.get(s.login.as_str()).is_some_and(|at| now_ms - at <= timeout_ms);
                now.duration_since(last) > timeout && !heard_elsewhere
            })
            .collect()
    }
}

/// With several servers, tells the others that these logins' machines are alive.
async fn share_heartbeats(st: &AppState, logins: &[String]) {
    if st.db.store().shared() {
        if let Err(e) = st.db.store().record_heartbeats(logins, crate::auth::now_ms()).await {
            tracing::warn!(%e, "cannot share heartbeats with the other servers");
        }
    }
}

/// Expires overdue sessions every second until the server stops.
pub async fn run_expiry(st: AppState) {
    let who = Principal {
        name: "keel (presence expiry)".into(),
        ..Principal::system()
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = st.stopping() => return,
        }
        let shared: HashMap<String, i64> = if st.db.store().shared() {
            match st.db.store().heartbeats().await {
                Ok(rows) => rows.into_iter().collect(),
                Err(e) => {
                    // Without the others' heartbeats, expiring could close live sessions: wait.
                    tracing::warn!(%e, "cannot read the shared heartbeats; not expiring this round");
                    continue;
                }
            }
        } else {
            HashMap::new()
        };
        let overdue = st.presence.overdue(st.db.snapshot().sessions().cloned(), &shared);
        if overdue.is_empty() {
            continue;
        }
        match st.db.expire_sessions(&who, &overdue).await {
            Ok(gone) => {
                let mut seen = st.presence.seen();
                for s in &gone {
                    seen.remove(s.login.as_str());
                    tracing::info!(login = %s.login, hostname = %s.hostname, "session expired (no heartbeat)");
                }
                st.metrics.presence_expired(gone.len());
            }
            Err(e) => tracing::error!(%e, "cannot expire sessions"),
        }
    }
}

/// The credential of a presence call, checked before its body is read: an admin's token
/// (`Some`), or the site's secret (`None`: a machine, which [`authorize`] then ties to the hostname
/// the body names).
fn credential(st: &AppState, caller: &Caller, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
    if caller.0.is_some() {
        return caller.admin().cloned().map(Some);
    }
    let config = st.presence.config();
    let Some(secret) = &config.secret else {
        return Err(ApiError::Unauthorized(
            "presence needs an admin token (no presence secret is configured)",
        ));
    };
    let sent = headers.get(SECRET_HEADER).ok_or(ApiError::Unauthorized(
        "send the site's presence secret in X-Keel-Presence-Secret",
    ))?;
    if !crate::auth::same_secret(sent.as_bytes(), secret.expose().as_bytes()) {
        return Err(ApiError::Unauthorized("wrong presence secret"));
    }
    Ok(None)
}

/// Who is calling a presence endpoint about `hostname`: the admin of `credential`, or the
/// machine `hostname` itself when the call comes from its address.
fn authorize(
    st: &AppState,
    admin: Option<Principal>,
    headers: &HeaderMap,
    peer: Peer,
    hostname: &str,
) -> Result<Principal, ApiError> {
    if let Some(admin) = admin {
        return Ok(admin);
    }
    let client = st.presence.client(peer, headers);
    let snap = st.db.snapshot();
    let machine = snap
        .machine_by_name(hostname)
        .ok_or_else(|| ApiError::Refused(Refusal::UnknownMachine(hostname.to_owned())))?;
    if client != Some(IpAddr::V4(machine.ip)) {
        return Err(ApiError::Forbidden(format!(
            "this request comes from {}, not from {} ({}): a machine speaks only for itself",
            client.map_or("an unknown address".into(), |c| c.to_string()),
            machine.hostname,
            machine.ip
        )));
    }
    Ok(Principal {
        name: format!("machine {}", machine.hostname),
        role: Role::Agent,
        kind: keel_model::PrincipalKind::Keel,
        facilities: Vec::new(),
        host: Some(machine.hostname.to_string()),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    login: String,
    hostname: String,
    /// What `POST /api/v1/proofs` answered for this login on this machine.
    proof: Option<String>,
}

/// `POST /api/v1/sessions`: 201 with the session, 200 if already logged in there, 423 with why not.
#[utoipa::path(post, path = "/sessions", operation_id = "open_session", tag = "sessions")]
pub async fn login(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    peer: Peer,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let admin = credential(&st, &caller, &headers)?;
    let body: LoginBody = crate::json_body(&body)?;
    let by_admin = admin.is_some();
    let who = authorize(&st, admin, &headers, peer, &body.hostname)?;
    if let Some(seconds) = st.presence.recovering() {
        st.metrics.presence_refused();
        return Err(ApiError::Refused(Refusal::Recovering { seconds }));
    }
    let proven = by_admin || proven(&st, &body).await;
    let policy = st.presence.config().proof;
    let opened = st
        .db
        .open_session(&who, &body.login, &body.hostname, proven, policy)
        .await;
    let (status, s) = match opened {
        Ok(Opened::New { session, home }) => {
            if let Some(hfs) = home {
                crate::homes::first_login(&st, session.login.as_str(), hfs).await;
            }
            (StatusCode::CREATED, session)
        }
        Ok(Opened::Existing(s)) => (StatusCode::OK, s),
        Err(e) => {
            if matches!(e, keel_store::StoreError::Refused(_)) {
                st.metrics.presence_refused();
            }
            return Err(e.into());
        }
    };
    st.presence.touch(s.login.as_str());
    share_heartbeats(&st, &[s.login.to_string()]).await;
    tracing::info!(login = %s.login, hostname = %s.hostname, by = %who.name, "session opened");
    st.metrics.presence_login();
    Ok((status, Json(s)).into_response())
}

/// Whether the login carries a proof keel issued for this login on this machine, unused. The
/// hostname is the machine's own name (the body may name it by an alias).
async fn proven(st: &AppState, body: &LoginBody) -> bool {
    let Some(proof) = &body.proof else {
        return false;
    };
    let snap = st.db.snapshot();
    let Some(machine) = snap.machine_by_name(&body.hostname) else {
        return false;
    };
    let ok = st
        .presence
        .proofs
        .take(st, proof, &body.login, machine.hostname.as_str())
        .await;
    if !ok {
        keel_limits::refused!(WARN, login = %crate::auth::shown(&body.login), hostname = %machine.hostname, "presence proof refused: not keel's, expired, taken or another's");
    }
    ok
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofBody {
    login: String,
    hostname: String,
    password: String,
}

/// `POST /api/v1/proofs`: the PAM `auth` line's call with the password the person typed; 201
/// with a proof the `session` line presents, 401 for a wrong login or password, 429 while the
/// login's tries are throttled. A machine asks only for itself (address and secret).
#[utoipa::path(post, path = "/proofs", tag = "proofs")]
pub async fn issue_proof(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    peer: Peer,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let admin = credential(&st, &caller, &headers)?;
    let body: ProofBody = crate::json_body(&body)?;
    authorize(&st, admin, &headers, peer, &body.hostname)?;
    let login = crate::auth::shown(&body.login);
    match crate::auth::check_password(&st, &body.login, body.password).await {
        crate::auth::PasswordCheck::Right => {}
        crate::auth::PasswordCheck::Wait(wait) => {
            keel_limits::refused!(WARN, %login, "presence proof refused: too many tries");
            return Err(ApiError::TooManyAttempts(wait.as_secs() + 1));
        }
        crate::auth::PasswordCheck::Wrong => {
            keel_limits::refused!(WARN, %login, hostname = %crate::auth::shown(&body.hostname), "presence proof refused: wrong login or password");
            return Err(ApiError::Unauthorized("wrong login or password"));
        }
    }
    let snap = st.db.snapshot();
    let host = snap
        .machine_by_name(&body.hostname)
        .map(|m| m.hostname.to_string())
        .unwrap_or_default();
    let proof = st.presence.proofs.issue(&st, &body.login, &host).await?;
    let expires_secs = crate::proof::TTL_MS / 1000;
    Ok((
        StatusCode::CREATED,
        Json(json!({"proof": proof, "expires_secs": expires_secs})),
    )
        .into_response())
}

/// `DELETE /api/v1/sessions/heartbeat`: the logout of a user whose login is `heartbeat` (the
/// heartbeat's own route would otherwise answer 405 for it).
#[utoipa::path(
    delete,
    path = "/sessions/heartbeat",
    operation_id = "close_session_of_heartbeat",
    tag = "sessions"
)]
pub async fn logout_heartbeat_user(
    st: State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    peer: Peer,
) -> Result<StatusCode, ApiError> {
    logout(st, caller, headers, peer, Path("heartbeat".to_owned())).await
}

/// `DELETE /api/v1/sessions/{login}`: 204 (also when there was no session: logging out twice is
/// not an error).
#[utoipa::path(delete, path = "/sessions/{login}", operation_id = "close_session", tag = "sessions", params(("login" = String, Path)))]
pub async fn logout(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    peer: Peer,
    Path(login): Path<String>,
) -> Result<StatusCode, ApiError> {
    let snap = st.db.snapshot();
    // A machine speaks for the machine the session is on; with no session, for the machine at
    // its own address (still checked: an unauthenticated caller learns nothing, changes nothing).
    let on_host = match (&caller.0, snap.session(&login)) {
        (Some(_), _) => None,
        (None, Some(s)) => Some(s.hostname.to_string()),
        (None, None) => {
            let client = st.presence.client(peer, &headers);
            let own = match client {
                Some(IpAddr::V4(ip)) => snap.machine_by_ip(ip).map(|m| m.hostname.to_string()),
                _ => None,
            };
            Some(own.ok_or_else(|| ApiError::Forbidden("this address is not a machine's".into()))?)
        }
    };
    let host = on_host.clone().unwrap_or_default();
    let admin = credential(&st, &caller, &headers)?;
    let who = authorize(&st, admin, &headers, peer, &host)?;
    if let Some(s) = st.db.close_session(&who, &login, on_host.as_deref()).await? {
        st.presence.seen().remove(s.login.as_str());
        tracing::info!(login = %s.login, hostname = %s.hostname, by = %who.name, "session closed");
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    hostname: String,
    logins: Vec<String>,
}

/// `POST /api/v1/sessions/heartbeat`: refreshes the machine's sessions it lists; during recovery,
/// also rebuilds the ones keel does not know (obeying the login rules).
#[utoipa::path(post, path = "/sessions/heartbeat", tag = "sessions")]
pub async fn heartbeat(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    peer: Peer,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let admin = credential(&st, &caller, &headers)?;
    let body: HeartbeatBody = crate::json_body(&body)?;
    if body.logins.len() > 1024 {
        return Err(ApiError::invalid("logins", "at most 1024 logins per heartbeat"));
    }
    let who = authorize(&st, admin, &headers, peer, &body.hostname)?;
    let snap = st.db.snapshot();
    let host = snap
        .machine_by_name(&body.hostname)
        .map(|m| m.hostname.to_string())
        .unwrap_or_default();
    let policy = st.presence.config().proof;
    let (mut refreshed, mut unknown, mut unproven) = (Vec::new(), Vec::new(), Vec::new());
    for login in &body.logins {
        match snap.session(login) {
            // The machine's word keeps only a session the person proved (`[presence] proof`).
            Some(s) if s.hostname.as_str() == host && !policy.holds(&snap, s) => unproven.push(login.clone()),
            Some(s) if s.hostname.as_str() == host => {
                st.presence.touch(login);
                refreshed.push(login.clone());
            }
            _ => unknown.push(login.clone()),
        }
    }
    let mut rebuilt = Vec::new();
    let mut refused = Vec::new();
    if st.presence.recovering().is_some() && !unknown.is_empty() {
        let (opened, no) = st.db.rebuild_sessions(&who, &host, &unknown, policy).await?;
        for s in opened {
            st.presence.touch(s.login.as_str());
            tracing::info!(login = %s.login, hostname = %s.hostname, "session rebuilt from a heartbeat");
            rebuilt.push(s.login.to_string());
        }
        refused = no
            .into_iter()
            .map(|(login, r)| {
                // Someone logged in while keel was down, and keel cannot take the machine's word
                // for it (a proof is needed, the seat is taken…): their SSO and internet wait
                // for a new login. Said here, so an admin asked "why not me?" finds it.
                tracing::warn!(%login, %host, reason = r.code(), "a session a heartbeat reports was not rebuilt");
                json!({"login": login, "reason": r.code(), "error": r.to_string()})
            })
            .collect();
        unknown.clear();
    }
    let mut alive = refreshed.clone();
    alive.extend(rebuilt.iter().cloned());
    share_heartbeats(&st, &alive).await;
    Ok(Json(json!({
        "refreshed": refreshed,
        "rebuilt": rebuilt,
        "refused": refused,
        "ignored": unknown,
        "unproven": unproven,
        "contest_mode": snap.flag("contest_mode"),
        "timeout_secs": st.presence.config().timeout.as_secs(),
    })))
}

/// `GET /api/v1/sessions`: who is logged in where.
#[utoipa::path(get, path = "/sessions", operation_id = "list_sessions", tag = "sessions", responses((status = 200, description = "every session", body = Vec<keel_model::Session>)))]
pub async fn list(State(st): State<AppState>, caller: Caller) -> Result<Json<Vec<Session>>, ApiError> {
    caller.reader(st.config.open_reads)?;
    Ok(Json(st.db.snapshot().sessions().cloned().collect()))
}
