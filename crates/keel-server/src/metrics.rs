//! Prometheus metrics: requests by route and status, latency, and state gauges read at scrape time.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, State};
use axum::http::{header, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    machines: Gauge,
    last_seq: Gauge,
    pub(crate) watch_subscribers: Gauge,
    pub(crate) watch_events: Counter,
    pub(crate) watch_cut: Counter,
    presence_logins: Counter,
    presence_refusals: Counter,
    presence_expired: Counter,
    sso: Family<SsoLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SsoLabels {
    status: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keel");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
        });
        let machines = Gauge::default();
        let last_seq = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register("machines", "Machines in the database", machines.clone());
        registry.register(
            "last_seq",
            "Sequence number of the last committed change",
            last_seq.clone(),
        );
        let (watch_subscribers, watch_events, watch_cut) = (Gauge::default(), Counter::default(), Counter::default());
        registry.register("watch_subscribers", "Open watch streams", watch_subscribers.clone());
        registry.register("watch_events", "Lines sent on watch streams", watch_events.clone());
        registry.register(
            "watch_disconnects",
            "Watch streams cut (too slow, or changes no longer available)",
            watch_cut.clone(),
        );
        let (presence_logins, presence_refusals, presence_expired) =
            (Counter::default(), Counter::default(), Counter::default());
        registry.register("presence_logins", "Sessions opened", presence_logins.clone());
        registry.register("presence_refusals", "Logins refused (423)", presence_refusals.clone());
        registry.register(
            "presence_expired",
            "Sessions closed for lack of heartbeat",
            presence_expired.clone(),
        );
        let sso = Family::<SsoLabels, Counter>::default();
        registry.register("sso_answers", "SSO answers by X-SSO-Status", sso.clone());
        Self {
            registry,
            presence_logins,
            presence_refusals,
            presence_expired,
            sso,
            requests,
            latency,
            machines,
            last_seq,
            watch_subscribers,
            watch_events,
            watch_cut,
        }
    }
}

impl Metrics {
    pub(crate) fn presence_login(&self) {
        self.presence_logins.inc();
    }

    pub(crate) fn presence_refused(&self) {
        self.presence_refusals.inc();
    }

    pub(crate) fn presence_expired(&self, n: usize) {
        self.presence_expired.inc_by(n as u64);
    }

    pub(crate) fn sso(&self, status: &'static str) {
        self.sso.get_or_create(&SsoLabels { status }).inc();
    }

    fn observe(&self, route: &str, method: &str, status: u16, started: Instant) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Counts and times every request; logs every 5xx.
pub(crate) async fn track(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = method_label(req.method()).to_owned();
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_server_error() {
        tracing::error!(%route, %method, status = status.as_u16(), "request failed");
    }
    state.metrics.observe(&route, &method, status.as_u16(), started);
    resp
}

/// A request method as a metric label, from a closed set: an invented method (HTTP allows any
/// token) must not make a new series that lives as long as the server.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [(Method, &str); 7] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::OPTIONS, "OPTIONS"),
    ];
    KNOWN.iter().find(|(k, _)| k == m).map_or("other", |(_, name)| name)
}

/// `GET /metrics` in the Prometheus text format.
pub(crate) async fn render(State(state): State<AppState>) -> Response {
    let snap = state.db.snapshot();
    let m: &Arc<Metrics> = &state.metrics;
    m.machines.set(i64::try_from(snap.machine_count()).unwrap_or(i64::MAX));
    m.last_seq.set(i64::try_from(snap.seq()).unwrap_or(i64::MAX));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &m.registry) {
        return crate::ApiError::Internal(e.to_string()).into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response()
}
