//! Logging in and out of the pages, sessions, and the one page everyone may use: `/password`.

use std::time::Duration;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use keel_model::Group;
use serde::Deserialize;

use super::{html, Errors, Form, Me, Nav, WebError, WebRole};
use crate::WebState;
use keel_server::auth::{check_password, PasswordCheck};

const COOKIE: &str = "keel_session";
const LOGIN_COOKIE: &str = "keel_login";

/// Sessions of logged-in people: in the database, so a restart logs nobody out and every server on
/// a shared database knows them. A session is found by the sha256 of the random secret in its
/// cookie (the database never holds the secret); its CSRF token is derived from the secret.
#[derive(Default)]
pub(crate) struct Sessions {
    /// Derives the CSRF token of people logged in through nginx's SSO (they hold no session); the
    /// same on every server (`keel_store::WEB_SSO_KEY`), read from the database once.
    sso_key: tokio::sync::OnceCell<String>,
}

/// A session's use is written back at most this often: a page view stays a read. (A session may
/// so end up to this much before `idle_hours`.)
const TOUCH_EVERY_MS: i64 = 60_000;

fn digest(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// The stored id of the session whose cookie holds `secret`.
fn session_id(secret: &str) -> String {
    digest(secret)
}

fn csrf_of(secret: &str) -> String {
    digest(&format!("csrf:{secret}"))
}

fn random() -> String {
    // The OS RNG failing is not survivable for a login anyway; an empty token then never matches.
    keel_store::token::random_hex(24).unwrap_or_default()
}

/// A presented token equals the expected one (an empty one never does).
pub(crate) fn same(a: &str, b: &str) -> bool {
    !a.is_empty() && keel_server::auth::same_secret(a.as_bytes(), b.as_bytes())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| cookie::Cookie::split_parse(v).filter_map(Result::ok))
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// A `Set-Cookie` for keel's pages: HttpOnly, SameSite=Strict, for `path` only, Secure when the
/// site is served over HTTPS; `max_age` 0 removes it.
fn set_cookie(st: &WebState, name: &str, value: &str, path: &str, max_age: u64) -> Option<HeaderValue> {
    let c = cookie::Cookie::build((name, value))
        .path(path)
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(time::Duration::seconds(i64::try_from(max_age).unwrap_or(i64::MAX)))
        .secure(st.web.secure_cookies)
        .build();
    HeaderValue::from_str(&c.to_string()).ok()
}

impl Sessions {
    /// A new session; returns the cookie's secret. Sessions unused for longer than `idle` go.
    async fn open(&self, st: &WebState, login: &str, role: &WebRole, idle: Duration) -> Result<String, WebError> {
        let secret = random();
        if secret.is_empty() {
            return Err(WebError::Internal("the system's random generator failed".into()));
        }
        let role = serde_json::to_string(role).map_err(|e| WebError::Internal(e.to_string()))?;
        let now = keel_server::auth::now_ms();
        let store = st.app.db.store();
        store
            .end_web_sessions(None, now.saturating_sub(keel_server::auth::millis(idle)))
            .await
            .map_err(|e| WebError::Internal(e.to_string()))?;
        let row = keel_store::WebSession {
            id: session_id(&secret),
            login: login.to_owned(),
            role,
            last_ms: now,
        };
        store
            .put_web_session(&row)
            .await
            .map_err(|e| WebError::Internal(e.to_string()))?;
        Ok(secret)
    }

    pub(crate) async fn session_of(&self, st: &WebState, headers: &HeaderMap, idle: Duration) -> Option<Me> {
        let secret = cookie(headers, COOKIE).filter(|s| !s.is_empty())?;
        let id = session_id(&secret);
        let store = st.app.db.store();
        let row = match store.web_session(&id).await {
            Ok(row) => row?,
            Err(e) => {
                tracing::error!(%e, "cannot read web sessions");
                return None;
            }
        };
        let now = keel_server::auth::now_ms();
        let unused = now.saturating_sub(row.last_ms);
        if unused > keel_server::auth::millis(idle) {
            let _ = store.end_web_sessions(Some(&id), 0).await;
            return None;
        }
        if unused > TOUCH_EVERY_MS {
            if let Err(e) = store.touch_web_session(&id, now).await {
                tracing::warn!(%e, "cannot record a web session's use");
            }
        }
        // The role is the user's now, not the one they had at login: an admin removed from
        // root, or deleted, is out at their next request.
        let Some(role) = role_of(st, &row.login) else {
            tracing::warn!(login = %row.login, "web session ended: the user no longer has a role on the pages");
            let _ = store.end_web_sessions(Some(&id), 0).await;
            return None;
        };
        Some(Me {
            login: row.login,
            role,
            csrf: csrf_of(&secret),
        })
    }

    async fn close(&self, st: &WebState, headers: &HeaderMap) {
        if let Some(secret) = cookie(headers, COOKIE).filter(|s| !s.is_empty()) {
            if let Err(e) = st.app.db.store().end_web_sessions(Some(&session_id(&secret)), 0).await {
                tracing::error!(%e, "cannot end a web session");
            }
        }
    }

    async fn sso_key(&self, st: &WebState) -> Option<String> {
        let key = self
            .sso_key
            .get_or_try_init(|| st.app.db.store().meta_secret(keel_store::WEB_SSO_KEY))
            .await;
        match key {
            Ok(k) => Some(k.clone()),
            Err(e) => {
                tracing::error!(%e, "cannot read the SSO form key");
                None
            }
        }
    }
}

/// Who may use the pages: admins (group root) and facility managers.
fn role_of(st: &WebState, login: &str) -> Option<WebRole> {
    let snap = st.app.db.snapshot();
    let user = snap.user(login)?;
    if user.group == Group::Root {
        return Some(WebRole::Admin);
    }
    // Only a facility that lists this *user* (`user:LOGIN`) makes them its manager here; a token
    // spelled like their login does not (issue 31).
    let me = keel_model::Principal::user(login, keel_model::Role::Manager);
    let managed: Vec<String> = snap
        .facilities()
        .filter(|f| f.is_managed_by(&me))
        .map(|f| f.name.clone())
        .collect();
    (!managed.is_empty()).then_some(WebRole::Manager(managed))
}

/// nginx's SSO, when trusted: the login it puts in `X-SSO-User` (only from a trusted proxy).
pub(crate) async fn from_sso(parts: &Parts, st: &WebState) -> Option<Me> {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())?;
    let peer = keel_limits::canonical(peer);
    if !st.web.vouching_proxies().iter().any(|n| n.contains(&peer)) {
        keel_limits::refused!(WARN, %peer, "X-SSO-User ignored: not from one of [web] sso_proxies");
        return None;
    }
    let login = parts.headers.get("x-sso-user")?.to_str().ok()?.trim();
    let role = role_of(st, login)?;
    // No session is stored (nginx vouches for every request); the CSRF token is derived from
    // the login and the site's key, so it is stable between a page and its form, whichever
    // server serves each.
    let csrf = digest(&format!("{}:{login}", st.web_sessions.sso_key(st).await?));
    Some(Me {
        login: login.to_owned(),
        role,
        csrf,
    })
}

fn session_cookie(st: &WebState, id: &str, max_age: u64) -> Option<HeaderValue> {
    set_cookie(st, COOKIE, id, "/", max_age)
}

#[derive(Template)]
#[template(path = "web/login.html")]
struct LoginPage {
    nav: Nav,
    next: String,
    login: String,
    csrf: String,
    error: String,
}

#[derive(Deserialize)]
pub(crate) struct Next {
    next: Option<String>,
}

/// Only a local path: never an open redirect to another site (browsers drop tabs and newlines
/// and read `\\` as `/`, so `/\t/evil` or `/\\evil` would be `//evil`: only visible ASCII passes).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.chars().all(|c| c.is_ascii_graphic()) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

pub(crate) async fn login_page(State(st): State<WebState>, Query(q): Query<Next>) -> Response {
    render_login(&st, safe_next(q.next.as_deref()), String::new(), String::new())
}

/// The login form, with a fresh double-submit token in its own cookie (there is no session yet).
fn render_login(st: &WebState, next: String, login: String, error: String) -> Response {
    let csrf = random();
    let mut r = html(&LoginPage {
        nav: Nav::default(),
        next,
        login,
        csrf: csrf.clone(),
        error,
    });
    if let Some(v) = set_cookie(st, LOGIN_COOKIE, &csrf, "/login", 3600) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

pub(crate) async fn login(State(st): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    let f = Form::parse(&body);
    let next = safe_next(f.get("next"));
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !f.get("csrf").is_some_and(|t| same(t, &expected)) {
        return WebError::Csrf.into_response();
    }
    let login = f.get("login").unwrap_or("").to_owned();
    let password = f.get("password").unwrap_or("").to_owned();
    match check_password(&st.app, &login, password).await {
        PasswordCheck::Right => {}
        PasswordCheck::Wait(wait) => {
            let login = keel_server::auth::shown(&login);
            let msg = format!("Too many wrong passwords: try again in {} s.", wait.as_secs() + 1);
            return render_login(&st, next, login, msg);
        }
        PasswordCheck::Wrong => {
            let login = keel_server::auth::shown(&login);
            keel_limits::refused!(WARN, %login, "web login refused: wrong login or password");
            return render_login(&st, next, login, "Wrong login or password.".into());
        }
    }
    let Some(role) = role_of(&st, &login) else {
        keel_limits::refused!(WARN, %login, "web login refused: neither an admin nor a facility manager");
        return render_login(
            &st,
            next,
            login,
            "These pages are for admins and facility managers. To change your password, use the \
             password page."
                .into(),
        );
    };
    let id = match st.web_sessions.open(&st, &login, &role, st.web.idle).await {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    tracing::info!(%login, "web login");
    let mut r = Redirect::to(&next).into_response();
    if let Some(v) = session_cookie(&st, &id, st.web.idle.as_secs()) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

pub(crate) async fn logout(State(st): State<WebState>, me: Me, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = Form::checked(&body, &me) {
        return e.into_response();
    }
    st.web_sessions.close(&st, &headers).await;
    tracing::info!(login = %me.login, "web logout");
    let mut r = Redirect::to("/login").into_response();
    if let Some(v) = session_cookie(&st, "", 0) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Template)]
#[template(path = "web/password.html")]
struct PasswordPage {
    nav: Nav,
    login: String,
    csrf: String,
    errors: Errors,
    done: bool,
}

pub(crate) async fn password_page(State(st): State<WebState>) -> Response {
    render_password(&st, String::new(), Errors::default(), false)
}

fn render_password(st: &WebState, login: String, errors: Errors, done: bool) -> Response {
    let csrf = random();
    let mut r = html(&PasswordPage {
        nav: Nav::default(),
        login,
        csrf: csrf.clone(),
        errors,
        done,
    });
    if let Some(v) = set_cookie(st, LOGIN_COOKIE, &csrf, "/password", 3600) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `/password`: anyone changes their own password with the current one. The new one is hashed
/// here and dropped; only the hash is stored (and neither is logged).
pub(crate) async fn password(State(st): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    let f = Form::parse(&body);
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !f.get("csrf").is_some_and(|t| same(t, &expected)) {
        return WebError::Csrf.into_response();
    }
    let login = f.get("login").unwrap_or("").to_owned();
    let (new, again) = (f.get("new").unwrap_or(""), f.get("again").unwrap_or(""));
    if new.chars().count() < 8 {
        return render_password(&st, login, Errors::one("new", "at least 8 characters"), false);
    }
    if new != again {
        return render_password(&st, login, Errors::one("again", "the two new passwords differ"), false);
    }
    match check_password(&st.app, &login, f.get("old").unwrap_or("").to_owned()).await {
        PasswordCheck::Right => {}
        PasswordCheck::Wait(wait) => {
            let login = keel_server::auth::shown(&login);
            let e = Errors::one(
                "old",
                format!("too many wrong passwords: try again in {} s", wait.as_secs() + 1),
            );
            return render_password(&st, login, e, false);
        }
        PasswordCheck::Wrong => {
            let login = keel_server::auth::shown(&login);
            keel_limits::refused!(WARN, %login, "web password change refused: wrong login or password");
            return render_password(&st, login, Errors::one("old", "wrong login or password"), false);
        }
    }
    let new = new.to_owned();
    let hash = match tokio::task::spawn_blocking(move || keel_password::hash(&new)).await {
        Ok(Ok(h)) => h,
        _ => return WebError::Internal("hashing failed".into()).into_response(),
    };
    let Some(user) = st.app.db.snapshot().user(&login).cloned() else {
        return render_password(&st, login, Errors::one("old", "wrong login or password"), false);
    };
    let patch = keel_model::UserPatch {
        password_hash: Some(hash),
        password_changed: Some(true),
        ..Default::default()
    };
    let who = keel_model::Principal::user(&login, keel_model::Role::Readonly);
    match st.app.db.edit_user(&who, &login, user.version, patch).await {
        Ok(_) => {
            tracing::info!(%login, "password changed on the web page");
            render_password(&st, String::new(), Errors::default(), true)
        }
        Err(e) => WebError::from(e).into_response(),
    }
}
