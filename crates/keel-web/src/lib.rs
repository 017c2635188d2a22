//! What keel renders for people and machines that browse it: the web administration pages, the
//! live map, and the iPXE menus network-booted machines follow. It sits above keel-server: its
//! handlers share the server's state ([`WebState`] holds an [`AppState`]), its `Caller` and
//! `ApiError`, and [`app`] builds the combined router — keel-server's routes and these — in
//! keel-server's layers. The authorization matrix test (`tests_matrix.rs`) walks that router.
//!
//! The pages are server-rendered (askama templates in `templates/web/`, checked at compile time)
//! with no JavaScript needed. Who may log in: users of group `root` (admins) and users named as a
//! facility's manager (they see the propagation of their facilities only). Everyone else —
//! contestants included — may use one page, `/password`. Sessions live in the store and ride an
//! HTTP-only, SameSite=Strict cookie; every form carries the session's CSRF token, checked before
//! anything else. Pages go through the same `Db` mutations as the API, so the same validation
//! rules and the same change log apply.

mod auth;
mod log;
mod machines;
mod map;
pub mod netboot;
mod other;
mod users;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use keel_model::{Principal, Role};
use keel_server::routes::Recorded;
use keel_server::AppState;

pub(crate) use auth::Sessions;

/// What the pages and menus are configured with (`[web]`, `[netboot]`).
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub web: WebConfig,
    pub netboot: netboot::NetbootConfig,
}

/// The state of keel-web's handlers: the server's, and what only the pages hold.
#[derive(Clone)]
pub struct WebState {
    pub app: AppState,
    pub(crate) web: Arc<WebConfig>,
    pub(crate) netboot: Arc<netboot::NetbootConfig>,
    pub(crate) web_sessions: Arc<Sessions>,
}

impl FromRef<WebState> for AppState {
    fn from_ref(st: &WebState) -> Self {
        st.app.clone()
    }
}

impl WebState {
    pub fn new(app: AppState, config: Config) -> Self {
        Self {
            app,
            web: Arc::new(config.web),
            netboot: Arc::new(config.netboot),
            web_sessions: Arc::new(Sessions::default()),
        }
    }
}

/// The whole HTTP application: keel-server's routes and keel-web's, in keel-server's layers.
pub fn app(state: WebState) -> Router {
    app_with_paths(state).0
}

/// The application and every path it serves (each `{param}` as written in the route), for the
/// authorization matrix test.
pub fn app_with_paths(state: WebState) -> (Router, Vec<String>) {
    let files = tower_http::services::ServeDir::new(&state.netboot.files_dir);
    let ours = Recorded::new("")
        .route("/boot/{mac}", get(netboot::boot))
        .route("/register", get(netboot::register))
        .route("/bootstrap", get(netboot::bootstrap))
        .nest_service("/boot/files", files)
        .route("/map", get(map::page))
        .route("/map.json", get(map::data))
        .merge(routes())
        .with_state(state.clone());
    keel_server::finish(&state.app, keel_server::routes(&state.app).merge(ours))
}

/// The `[web]` table of keel.toml: the administration pages' sessions. Its `Default` is the one
/// place these defaults are written.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Mark the session cookie `Secure` (browsers then send it over HTTPS only; localhost is
    /// exempt). A site serving the pages over plain HTTP on its LAN sets false.
    pub secure_cookies: bool,
    /// Take the login nginx's SSO vouches for (`X-SSO-User`) as a web login. Needs `sso_proxies`.
    pub trust_sso: bool,
    /// The addresses of the nginx that sets `X-SSO-User`: only they may vouch for a login. No
    /// default, and not the presence's trusted proxies (loopback): a local user on keel's host
    /// must not be able to claim a login.
    #[schemars(with = "Vec<String>")]
    pub sso_proxies: Vec<ipnet::IpNet>,
    /// A session unused for this long ends.
    #[serde(rename = "idle_hours", with = "keel_limits::duration::hours")]
    #[schemars(with = "u64")]
    pub idle: Duration,
}

impl WebConfig {
    /// The addresses whose `X-SSO-User` is a login: none unless `trust_sso`.
    pub fn vouching_proxies(&self) -> &[ipnet::IpNet] {
        if self.trust_sso {
            &self.sso_proxies
        } else {
            &[]
        }
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            secure_cookies: true,
            trust_sso: false,
            sso_proxies: Vec::new(),
            idle: Duration::from_secs(8 * 3600),
        }
    }
}

const CSS: &str = include_str!("../templates/web/keel.css");

/// The administration pages' routes.
fn routes() -> Recorded<WebState> {
    Recorded::new("")
        .route("/", get(home))
        .route("/static/keel.css", get(css))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/password", get(auth::password_page).post(auth::password))
        .route("/machines", get(machines::list))
        .route("/machines/new", get(machines::new_page).post(machines::create))
        .route("/machines/bulk", post(machines::bulk))
        .route("/machines/{name}", get(machines::edit_page).post(machines::save))
        .route(
            "/machines/{name}/delete",
            get(machines::delete_page).post(machines::delete),
        )
        .route("/users", get(users::list))
        .route("/users/new", get(users::new_page).post(users::create))
        .route("/users/{login}", get(users::edit_page).post(users::save))
        .route("/users/{login}/reset", post(users::reset))
        .route("/switches", get(other::switches))
        .route("/switches/new", get(other::new_switch).post(other::create_switch))
        .route("/switches/{name}", get(other::edit_switch).post(other::save_switch))
        .route("/settings", get(other::settings).post(other::save_setting))
        .route("/log", get(log::page))
        .route("/propagation", get(other::propagation))
        .route("/propagation/force", post(other::force))
        .route("/propagation/block", post(other::block))
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

async fn home(me: Me) -> Redirect {
    if me.is_admin() {
        Redirect::to("/machines")
    } else {
        Redirect::to("/propagation")
    }
}

/// What a logged-in person may do on these pages (stored with their session).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum WebRole {
    Admin,
    /// Manages these facilities.
    Manager(Vec<String>),
}

/// The logged-in person, from the session cookie (or nginx's SSO when trusted). A request
/// without one is sent to the login page.
#[derive(Debug, Clone)]
pub(crate) struct Me {
    pub login: String,
    pub role: WebRole,
    pub csrf: String,
}

impl Me {
    pub(crate) fn is_admin(&self) -> bool {
        self.role == WebRole::Admin
    }

    /// The principal the change log records for this person's writes.
    pub(crate) fn principal(&self) -> Principal {
        match &self.role {
            WebRole::Admin => Principal::user(&self.login, Role::Admin),
            WebRole::Manager(f) => Principal {
                facilities: f.clone(),
                ..Principal::user(&self.login, Role::Manager)
            },
        }
    }

    /// Admins only; anyone else gets a 403 page, and the refusal is logged.
    /// A posted form of an admins-only action: its CSRF token checked first, then the role.
    pub(crate) fn admin_form(&self, body: &[u8], what: &str) -> Result<Form, WebError> {
        let f = Form::checked(body, self)?;
        self.admin(what)?;
        Ok(f)
    }

    pub(crate) fn admin(&self, what: &str) -> Result<(), WebError> {
        if self.is_admin() {
            Ok(())
        } else {
            keel_limits::refused!(WARN, login = %self.login, %what, "web: refused (not an admin)");
            Err(WebError::Forbidden(format!("{what} is for admins (group root)")))
        }
    }

    pub(crate) fn nav(&self) -> Nav {
        Nav {
            login: self.login.clone(),
            admin: self.is_admin(),
            csrf: self.csrf.clone(),
        }
    }
}

impl FromRequestParts<WebState> for Me {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &WebState) -> Result<Self, Response> {
        if let Some(me) = st.web_sessions.session_of(st, &parts.headers, st.web.idle).await {
            return Ok(me);
        }
        if !st.web.vouching_proxies().is_empty() {
            if let Some(me) = auth::from_sso(parts, st).await {
                return Ok(me);
            }
        }
        let next = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let target = if parts.method == axum::http::Method::GET && next.starts_with('/') {
            format!(
                "/login?next={}",
                form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            )
        } else {
            "/login".to_owned()
        };
        Err(Redirect::to(&target).into_response())
    }
}

/// What the layout needs: who is logged in, their CSRF token (for the logout form).
#[derive(Debug, Clone, Default)]
pub(crate) struct Nav {
    pub login: String,
    pub admin: bool,
    pub csrf: String,
}

/// A page's failure, as an HTML page.
#[derive(Debug)]
pub(crate) enum WebError {
    Forbidden(String),
    NotFound(String),
    /// A form without (or with a wrong) CSRF token.
    Csrf,
    Internal(String),
}

#[derive(Template)]
#[template(path = "web/error.html")]
struct ErrorPage {
    nav: Nav,
    title: String,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            Self::Csrf => {
                keel_limits::refused!(WARN, "web: form refused: missing or wrong CSRF token");
                (
                    StatusCode::FORBIDDEN,
                    "Form refused",
                    "This form is out of date or did not come from keel's pages (CSRF token missing or wrong). \
                     Go back, reload the page and try again."
                        .to_owned(),
                )
            }
            Self::Internal(detail) => {
                tracing::error!(%detail, "web: internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Error",
                    "Something went wrong; it is logged.".to_owned(),
                )
            }
        };
        let page = ErrorPage {
            nav: Nav::default(),
            title: title.to_owned(),
            message,
        };
        (status, html(&page)).into_response()
    }
}

impl From<keel_store::StoreError> for WebError {
    fn from(e: keel_store::StoreError) -> Self {
        match e {
            keel_store::StoreError::NotFound(w) => Self::NotFound(w),
            keel_store::StoreError::Forbidden(w) => Self::Forbidden(w),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// A rendered page (never cached: pages show live state and CSRF tokens).
pub(crate) fn html(t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => {
            let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.headers_mut()
                .insert("x-frame-options", HeaderValue::from_static("DENY"));
            r.headers_mut().insert(
                "content-security-policy",
                HeaderValue::from_static("default-src 'self'; style-src 'self'; frame-ancestors 'none'"),
            );
            r
        }
        Err(e) => {
            tracing::error!(%e, "web: a template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    }
}

/// A submitted form: its fields in order (a field may repeat: checkboxes).
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    pub(crate) fn parse(body: &[u8]) -> Self {
        Self(form_urlencoded::parse(body).into_owned().collect())
    }

    /// The last value of `name` (a checkbox after its hidden default wins), trimmed.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.trim())
    }

    /// The record version the form was read at (the lost-update guard).
    pub(crate) fn version(&self) -> u64 {
        self.get("version").and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Checks the CSRF token first: a form without the session's token changes nothing.
    pub(crate) fn checked(body: &[u8], me: &Me) -> Result<Self, WebError> {
        let f = Self::parse(body);
        match f.get("csrf") {
            Some(t) if auth::same(t, &me.csrf) => Ok(f),
            _ => Err(WebError::Csrf),
        }
    }

    /// The named fields that are not empty, as a JSON object for the model's `Fields`.
    pub(crate) fn json(&self, names: &[&str]) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for n in names {
            if let Some(v) = self.get(n).filter(|v| !v.is_empty()) {
                m.insert((*n).to_owned(), serde_json::Value::String(v.to_owned()));
            }
        }
        serde_json::Value::Object(m)
    }
}

/// One text input of a record form.
pub(crate) struct TextField {
    pub id: &'static str,
    pub label: &'static str,
    pub value: String,
    pub hint: &'static str,
}

impl TextField {
    pub(crate) fn new(id: &'static str, label: &'static str, value: &str, hint: &'static str) -> Self {
        Self {
            id,
            label,
            value: value.to_owned(),
            hint,
        }
    }
}

/// Field errors to show next to their fields.
#[derive(Debug, Default, Clone)]
pub(crate) struct Errors(pub HashMap<String, String>);

impl Errors {
    pub(crate) fn of(e: &keel_store::StoreError) -> Option<Self> {
        use keel_store::StoreError as E;
        let mut m = HashMap::new();
        match e {
            E::Invalid(v) => {
                m.insert(v.field.clone(), v.message.clone());
            }
            E::InvalidMany(vs) => {
                for v in &vs.0 {
                    m.entry(v.field.clone()).or_insert_with(|| v.message.clone());
                }
            }
            E::VersionMismatch { .. } => {
                m.insert(
                    "form".into(),
                    "Someone else saved this record since you opened it: your changes were not saved. \
                     Reload it to see theirs, then edit again."
                        .into(),
                );
            }
            E::Conflict(w) => {
                m.insert("form".into(), format!("Conflict: {w}"));
            }
            _ => return None,
        }
        Some(Self(m))
    }

    pub(crate) fn one(field: &str, message: impl Into<String>) -> Self {
        Self(HashMap::from([(field.to_owned(), message.into())]))
    }

    /// The message for `field`, or "" (templates test `!is_empty()`).
    pub(crate) fn get(&self, field: &str) -> &str {
        self.0.get(field).map_or("", String::as_str)
    }

    pub(crate) fn any(&self) -> bool {
        !self.0.is_empty()
    }
}

/// After a save: on success, a redirect to where `ok` says; on field errors, the form again
/// (`again`) with them beside their fields; anything else is an error page.
pub(crate) fn saved<T>(
    result: Result<T, keel_store::StoreError>,
    ok: impl FnOnce(T) -> String,
    again: impl FnOnce(Errors) -> Response,
) -> Result<Response, WebError> {
    match result {
        Ok(t) => Ok(Redirect::to(&ok(t)).into_response()),
        Err(e) => match Errors::of(&e) {
            Some(errors) => Ok(again(errors)),
            None => Err(e.into()),
        },
    }
}

#[cfg(test)]
mod tests_web;

#[cfg(test)]
mod tests_matrix;

#[cfg(test)]
mod tests_netboot;
