//! Metrics in the OpenMetrics text format: requests by route and status, latency, watch, presence,
//! SSO, DNS answers by rcode, TFTP transfers by outcome, and gauges read at scrape time (the
//! database, propagation tasks and destinations).

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
    dns_answers: Family<RcodeLabels, Counter>,
    tftp_transfers: Family<OutcomeLabels, Counter>,
    propagation: PropagationMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SsoLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RcodeLabels {
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestLabels {
    facility: String,
    service: String,
    destination: String,
}

/// What propagation looks like at scrape time (read from the engine, not counted).
#[derive(Default)]
struct PropagationMetrics {
    tasks: Family<StateLabels, Gauge>,
    last_success: Family<DestLabels, Gauge>,
    failures: Family<DestLabels, Gauge>,
    bytes_sent: Counter,
}

impl PropagationMetrics {
    fn register(&self, r: &mut Registry) {
        r.register("propagation_tasks", "Propagation tasks by state", self.tasks.clone());
        r.register(
            "propagation_destination_last_success_timestamp_seconds",
            "When each destination last applied its bundle (Unix time; 0: never)",
            self.last_success.clone(),
        );
        r.register(
            "propagation_destination_consecutive_failures",
            "Failures in a row at each destination",
            self.failures.clone(),
        );
        r.register(
            "propagation_sent_bytes",
            "Bundle bytes handed to destinations' agents",
            self.bytes_sent.clone(),
        );
    }

    /// Reads the engine's tasks into the gauges (a destination gone is gone from them too).
    fn update(&self, engine: &keel_propagate::Engine) {
        let tasks = engine.status(None);
        self.tasks.clear();
        for state in keel_propagate::TaskState::ALL {
            let n = tasks.iter().filter(|t| t.state == state).count();
            self.tasks
                .get_or_create(&StateLabels { state: state.as_str() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.last_success.clear();
        self.failures.clear();
        for t in &tasks {
            for (dest, r) in &t.results {
                let labels = DestLabels {
                    facility: t.facility.clone(),
                    service: t.service.clone(),
                    destination: dest.clone(),
                };
                let at = r
                    .last_success
                    .as_deref()
                    .and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
                    .map_or(0, time::OffsetDateTime::unix_timestamp);
                self.last_success.get_or_create(&labels).set(at);
                self.failures.get_or_create(&labels).set(i64::from(r.failures));
            }
        }
        let sent = engine.bytes_sent();
        let counted = self.bytes_sent.get();
        if sent > counted {
            self.bytes_sent.inc_by(sent - counted);
        }
    }
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
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "keel's version (the value is always 1)", build);
        let dns_answers = Family::<RcodeLabels, Counter>::default();
        registry.register(
            "dns_answers",
            "Answers of the built-in DNS by RCODE",
            dns_answers.clone(),
        );
        let tftp_transfers = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "tftp_transfers",
            "TFTP requests by outcome (sent, refused, busy, failed)",
            tftp_transfers.clone(),
        );
        let propagation = PropagationMetrics::default();
        propagation.register(&mut registry);
        Self {
            dns_answers,
            tftp_transfers,
            propagation,
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

    /// One DNS answer sent with this RCODE (RFC 1035/2136 names; a closed set of labels).
    pub fn dns_answered(&self, rcode: u8) {
        let rcode = match rcode {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            _ => "other",
        };
        self.dns_answers.get_or_create(&RcodeLabels { rcode }).inc();
    }

    /// One TFTP request ended so (keel-tftp's `Outcome::as_str`).
    pub fn tftp_ended(&self, outcome: &'static str) {
        self.tftp_transfers.get_or_create(&OutcomeLabels { outcome }).inc();
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

/// Counts and times every request; logs every 5xx, and every request with `[log] access`.
pub(crate) async fn track(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = method_label(req.method()).to_owned();
    // The path only: a query string may carry a signature (`/poll?hmac=`) or a password field.
    let access = state.config.access_log.then(|| {
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let client = state.config.client_addr.client(peer, req.headers());
        (client, req.uri().path().to_owned())
    });
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_server_error() {
        tracing::error!(%route, %method, status = status.as_u16(), "request failed");
    }
    if let Some((client, path)) = access {
        let client = client.map_or_else(|| "-".to_owned(), |c| c.to_string());
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(target: "keel::access", %client, %method, %path, status = status.as_u16(), ms, "request");
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

/// The content type of what `prometheus_client`'s text encoder writes (it ends with `# EOF`).
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics` in the OpenMetrics text format.
pub(crate) async fn render(State(state): State<AppState>) -> Response {
    let snap = state.db.snapshot();
    let m: &Arc<Metrics> = &state.metrics;
    m.machines.set(i64::try_from(snap.machine_count()).unwrap_or(i64::MAX));
    m.last_seq.set(i64::try_from(snap.seq()).unwrap_or(i64::MAX));
    if let Some(engine) = state.engine() {
        m.propagation.update(engine);
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &m.registry) {
        return crate::ApiError::Internal(e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, OPENMETRICS)], out).into_response()
}
