//! keel's HTTP API: the prologin-compatible RPC, the REST API, watch and `/poll`, presence, SSO,
//! health and metrics.
//!
//! [`routes`] are its routes with their state; [`finish`] wraps them — and the pages keel-web adds
//! beside them — in the layers every route shares. `app(state)` is the API alone; it opens no
//! socket, so handlers are tested with `oneshot`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get};
use axum::{middleware, Json, Router};
use keel_store::Db;
use serde_json::json;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub mod auth;
mod error;
pub mod homes;
mod metrics;
mod openapi;
pub mod presence;
mod proof;
mod propagation;
mod rest;
pub mod routes;
pub mod rpc;
mod secret;
pub mod sso;
mod watch;

pub use auth::Caller;

/// What a machine registering itself (no token) may ask for on this site.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The type it gets ([`keel_model::MachinePatch::self_registered`]; `[netboot]
    /// self_registration_type`).
    pub machine_type: keel_model::MachineType,
    /// Names it may not take, besides keel-model's reserved ones: the site's own (`[dns] ns`),
    /// and prefixes (the DHCP range's dynamic names, `dhcp-…`).
    pub reserved_names: Vec<String>,
    pub reserved_prefixes: Vec<String>,
}

impl Default for Registration {
    fn default() -> Self {
        Self {
            machine_type: keel_model::MachineType::User,
            reserved_names: Vec::new(),
            reserved_prefixes: Vec::new(),
        }
    }
}

impl Registration {
    /// `patch` as an anonymous machine may have it, or why not.
    pub fn admit(
        &self,
        patch: keel_model::MachinePatch,
    ) -> Result<keel_model::MachinePatch, keel_model::ValidationError> {
        let patch = patch.self_registered(self.machine_type)?;
        if let Some(h) = &patch.hostname {
            let name = h.as_str();
            if self.reserved_names.iter().any(|r| r == name)
                || self.reserved_prefixes.iter().any(|p| name.starts_with(p.as_str()))
            {
                return Err(keel_model::ValidationError::new(
                    "hostname",
                    format!("{name} is one of this site's own names: only an organiser may give it"),
                ));
            }
        }
        Ok(patch)
    }
}

/// A request extension: the request came over keel's own TLS listener (web cookies are then
/// `Secure` whatever `[web] secure_cookies` says).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;
pub use error::ApiError;
pub use metrics::Metrics;
pub use openapi::description as openapi_description;
pub use secret::Secret;
pub use watch::WatchConfig;

/// Self-registrations accepted per source address and minute (a machine registers once).
pub const REGISTRATIONS_PER_MINUTE: u32 = 10;

/// Largest request body accepted, except imports.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Largest import body (a 10,000-machine file is about 2 MB as JSON).
pub const IMPORT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// What the server needs besides the database.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Serve REST reads without a token (the RPC `query` is always open, as in the original).
    pub open_reads: bool,
    /// Where temporary files (backups in transit) go.
    pub data_dir: PathBuf,
    pub watch: WatchConfig,
    /// What a machine registering itself may ask for (RPC `register`, iPXE menu).
    pub registration: Registration,
    pub presence: presence::PresenceConfig,
    /// Where a request's client address is read from when it comes through a proxy (SSO, presence).
    pub client_addr: presence::ClientAddrConfig,
    pub sso: sso::SsoConfig,
    /// prologin's RPC shared secret (`hmac` field), if configured.
    pub rpc_secret: Option<rpc::RpcSecret>,
    /// Homes on home file servers.
    pub homes: homes::HomesConfig,
    /// A line per request at info level, target `keel::access` (`[log] access`).
    pub access_log: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let sso = sso::SsoConfig::default();
        Self {
            open_reads: false,
            data_dir: PathBuf::new(),
            watch: WatchConfig::default(),
            registration: Registration::default(),
            presence: presence::PresenceConfig::default(),
            client_addr: sso.client_addr(),
            sso,
            rpc_secret: None,
            homes: homes::HomesConfig::default(),
            access_log: false,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub db: Arc<Db>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ServerConfig>,
    watch_lines: Arc<watch::LineCache>,
    /// Self-registrations per source address and minute.
    register_limit: Arc<keel_limits::RateLimit>,
    /// Open watch and `/poll` streams, at most `watch.max_subscribers`, shared out between
    /// streams with a credential and anonymous ones (`watch::StreamSlots`).
    stream_slots: Arc<watch::StreamSlots>,
    /// Becomes true when the server stops: open streams end (with a reason line) so that the
    /// graceful shutdown does not wait on them forever.
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// The propagation engine, once this server runs it (never, if switched off; on a shared
    /// database, when this server holds the propagation lock).
    engine_slot: Arc<std::sync::OnceLock<keel_propagate::Engine>>,
    pub presence: Arc<presence::Presence>,
}

impl AppState {
    pub fn new(db: Arc<Db>, config: ServerConfig) -> Self {
        Self::with_shutdown(db, config, tokio::sync::watch::channel(false).1)
    }

    /// The same state with a propagation engine.
    #[must_use]
    pub fn with_engine(self, engine: keel_propagate::Engine) -> Self {
        self.set_engine(engine);
        self
    }

    /// Installs the engine later (a server that takes over propagation); only the first counts.
    pub fn set_engine(&self, engine: keel_propagate::Engine) {
        let _ = self.engine_slot.set(engine);
    }

    /// The engine, if this server runs one.
    pub fn engine(&self) -> Option<&keel_propagate::Engine> {
        self.engine_slot.get()
    }

    /// A state whose streams end when `shutdown` turns true.
    pub fn with_shutdown(db: Arc<Db>, config: ServerConfig, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            db,
            metrics: Arc::new(Metrics::default()),
            presence: Arc::new(presence::Presence::new(config.presence.clone())),
            stream_slots: Arc::new(watch::StreamSlots::new(config.watch.max_subscribers)),
            config: Arc::new(config),
            watch_lines: Arc::new(watch::LineCache::default()),
            register_limit: Arc::new(keel_limits::RateLimit::per_minute(REGISTRATIONS_PER_MINUTE)),
            shutdown,
            engine_slot: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Counts a self-registration from the client that sent it (behind nginx, the address the
    /// trusted proxy gives, not nginx's); false, with a warning, once it is over the limit.
    pub fn allow_registration(&self, peer: Option<std::net::IpAddr>, headers: &axum::http::HeaderMap) -> bool {
        let client = self.config.client_addr.client(peer, headers);
        let allowed = client.is_none_or(|ip| self.register_limit.allow(ip));
        if !allowed {
            keel_limits::refused!(WARN, ?client, "self-registration refused: too many from this address");
        }
        allowed
    }

    /// Resolves when the server is stopping (never, if nothing will stop it).
    pub async fn stopping(&self) {
        let mut rx = self.shutdown.clone();
        if rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The API alone, in its layers (keel-web's `app` adds the pages beside it).
pub fn app(state: AppState) -> Router {
    finish(&state, routes(&state)).0
}

/// The REST API (under `/api/v1` once nested) and its OpenAPI description, both made from the
/// handlers' `#[utoipa::path]`: a route is described where it is served, once.
fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(rest::list_machines, rest::create_machine))
        .routes(routes!(rest::import_machines).layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT)))
        .routes(routes!(rest::renumber_machines))
        .routes(routes!(
            rest::get_machine,
            rest::patch_machine,
            rest::put_machine,
            rest::delete_machine
        ))
        .routes(routes!(rest::list_switches, rest::create_switch))
        .routes(routes!(rest::get_switch, rest::patch_switch, rest::delete_switch))
        .routes(routes!(rest::list_users, rest::create_user))
        .routes(routes!(rest::import_users).layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT)))
        .routes(routes!(rest::get_user, rest::patch_user, rest::delete_user))
        .routes(routes!(homes::move_home))
        .routes(routes!(rest::passwd))
        .routes(routes!(rest::list_roles))
        .routes(routes!(rest::get_role, rest::put_role, rest::delete_role))
        .routes(routes!(rest::list_settings))
        .routes(routes!(rest::get_setting, rest::put_setting))
        .routes(routes!(rest::list_changes))
        .routes(routes!(rest::list_tokens, rest::create_token))
        .routes(routes!(rest::revoke_token))
        .routes(routes!(rest::backup))
        .routes(routes!(watch::watch))
        .routes(routes!(propagation::list_hosts, propagation::create_host))
        .routes(routes!(
            propagation::get_host,
            propagation::put_host,
            propagation::delete_host
        ))
        .routes(routes!(propagation::list_facilities, propagation::create_facility))
        .routes(routes!(
            propagation::get_facility,
            propagation::put_facility,
            propagation::delete_facility
        ))
        .routes(routes!(propagation::list_destinations, propagation::create_destination))
        .routes(routes!(propagation::get_destination, propagation::delete_destination))
        .routes(routes!(presence::list, presence::login))
        .routes(routes!(presence::heartbeat, presence::logout_heartbeat_user))
        .routes(routes!(presence::issue_proof))
        .routes(routes!(presence::logout))
        .routes(routes!(propagation::status))
        .routes(routes!(propagation::force))
        .routes(routes!(propagation::block))
        .routes(routes!(propagation::gen_bundle))
        .routes(routes!(propagation::public_key))
        .routes(routes!(openapi::openapi_json))
        .split_for_parts();
    let doc = openapi::complete(doc);
    let router = router.fallback(|| async { ApiError::NotFound("API route".into()) });
    (router, doc)
}

/// keel-server's routes, their state given: the REST API under `/api/v1`, the RPC and `/poll`
/// under prologin's three prefixes, `/healthz` and `/metrics`.
pub fn routes(state: &AppState) -> routes::Recorded<()> {
    let (api, doc) = api();
    routes::Recorded::new("")
        .nest_documented("/api/v1", api, &doc)
        .route("/call/{method}", any(rpc::call))
        .route("/mdb/call/{method}", any(rpc::call))
        .route("/udb/call/{method}", any(rpc::call))
        .route("/poll", get(watch::poll))
        .route("/mdb/poll", get(watch::poll))
        .route("/udb/poll", get(watch::poll))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::render))
        .with_state(state.clone())
}

/// The whole application around `routes` (keel-server's and any beside them): the body limit,
/// `Secure` cookies over TLS and the request metrics on each; then `/sso`, outside the metrics.
/// Returns every path it serves (each `{param}` as written), for the authorization matrix test.
pub fn finish(state: &AppState, routes: routes::Recorded<()>) -> (Router, Vec<String>) {
    routes
        .map(|r| {
            r.layer(DefaultBodyLimit::max(BODY_LIMIT))
                .layer(middleware::from_fn(secure_cookies_over_tls))
                .layer(middleware::from_fn_with_state(state.clone(), metrics::track))
        })
        // nginx asks /sso on every request of every SSO site: it skips the per-route request
        // metrics (its answers are counted by status in `keel_sso_answers`) to keep its tail short.
        .merge(
            routes::Recorded::new("")
                .route("/sso", get(sso::sso))
                .route("/sso/protect", get(sso::protect))
                .with_state(state.clone()),
        )
        .into_parts()
}

/// A cookie set on a request that came over keel's TLS listener is `Secure`, whatever
/// `[web] secure_cookies` says (that setting is for plain HTTP behind a TLS proxy, or a LAN).
async fn secure_cookies_over_tls(req: axum::extract::Request, next: middleware::Next) -> axum::response::Response {
    let over_tls = req.extensions().get::<OverTls>().is_some();
    let mut resp = next.run(req).await;
    if over_tls {
        let set = axum::http::header::SET_COOKIE;
        let cookies: Vec<_> = resp.headers().get_all(&set).iter().cloned().collect();
        resp.headers_mut().remove(&set);
        for v in cookies {
            let text = v.to_str().unwrap_or_default();
            let secure = text.split(';').any(|p| p.trim().eq_ignore_ascii_case("secure"));
            let v = if secure {
                v
            } else {
                axum::http::HeaderValue::from_str(&format!("{text}; Secure")).unwrap_or(v)
            };
            resp.headers_mut().append(&set, v);
        }
    }
    resp
}

/// A JSON body as `T` (strict: unknown fields are refused where `T` says so).
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(b).map_err(|e| ApiError::invalid("body", e.to_string()))
}

async fn healthz(axum::extract::State(st): axum::extract::State<AppState>) -> Json<serde_json::Value> {
    let snap = st.db.snapshot();
    Json(json!({"status": "ok", "seq": snap.seq(), "machines": snap.machine_count(), "db_id": st.db.db_id()}))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_presence;
