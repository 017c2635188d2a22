//! `GET /sso`: nginx's `auth_request` target. Always 200; the answer is in two headers:
//! `X-SSO-Status` (`authenticated`, `missing header`, `unknown IP`, `logged-out machine`) and,
//! when authenticated, `X-SSO-User`. Read from the Snapshot only: no database, no allocation
//! beyond the response.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::presence::Peer;
use crate::AppState;

/// The `[sso]` table of keel.toml: nginx `auth_request` answers. Its `Default` is the one place
/// these defaults are written.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SsoConfig {
    /// The header nginx puts the client's address in; presence reads it too, from its own
    /// `trusted_proxies`.
    pub client_header: String,
    /// Peers whose client header is believed (nginx, as keel sees it).
    #[schemars(with = "Vec<String>")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Machines that always map to a login (a display screen, a judge's machine):
    /// `hostname = "login"`.
    pub overrides: HashMap<String, String>,
}

impl Default for SsoConfig {
    fn default() -> Self {
        let net = |n: &str| n.parse().unwrap_or_else(|_| unreachable!("constant network {n}"));
        Self {
            client_header: "X-Real-IP".into(),
            trusted_proxies: vec![net("127.0.0.1/32"), net("::1/128")],
            overrides: HashMap::new(),
        }
    }
}

impl SsoConfig {
    /// Where a request's client address is read from.
    pub fn client_addr(&self) -> crate::presence::ClientAddrConfig {
        crate::presence::ClientAddrConfig {
            header: self.client_header.trim().to_ascii_lowercase(),
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }
}

/// The statuses, exactly as the operators' debugging guide names them.
pub const AUTHENTICATED: &str = "authenticated";
pub const MISSING_HEADER: &str = "missing header";
pub const UNKNOWN_IP: &str = "unknown IP";
pub const LOGGED_OUT: &str = "logged-out machine";

/// Who is at the client's address: (status, login).
pub fn decide(st: &AppState, peer: Option<IpAddr>, headers: &HeaderMap) -> (&'static str, Option<String>) {
    let Ok(client) = st.config.client_addr.forwarded(peer, headers) else {
        return (MISSING_HEADER, None);
    };
    let IpAddr::V4(v4) = client else {
        return (UNKNOWN_IP, None);
    };
    let snap = st.db.snapshot();
    let Some((machine, session)) = snap.login_at(v4) else {
        return (UNKNOWN_IP, None);
    };
    if let Some(login) = st.config.sso.overrides.get(machine.hostname.as_str()) {
        return (AUTHENTICATED, Some(login.clone()));
    }
    match session {
        // A session the machine opened without the person's proof, where `[presence] proof`
        // wants one (opened before the policy changed), is vouched for by nobody.
        Some(s) if st.presence.config().proof.holds(&snap, s) => (AUTHENTICATED, Some(s.login.to_string())),
        _ => (LOGGED_OUT, None),
    }
}

/// `GET /sso`: always 200.
pub async fn sso(State(st): State<AppState>, Peer(peer): Peer, headers: HeaderMap) -> Response {
    answer(&st, peer, &headers, false)
}

/// `GET /sso/protect`: the same answer, but 403 unless authenticated (nginx's `protect` snippet).
pub async fn protect(State(st): State<AppState>, Peer(peer): Peer, headers: HeaderMap) -> Response {
    answer(&st, peer, &headers, true)
}

fn answer(st: &AppState, peer: Option<IpAddr>, headers: &HeaderMap, protect: bool) -> Response {
    let (status, login) = decide(st, peer, headers);
    st.metrics.sso(status);
    let mut resp = if protect && status != AUTHENTICATED {
        axum::http::StatusCode::FORBIDDEN.into_response()
    } else {
        ().into_response()
    };
    let h = resp.headers_mut();
    h.insert("x-sso-status", HeaderValue::from_static(status));
    if let Some(v) = login.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert("x-sso-user", v);
    }
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}
