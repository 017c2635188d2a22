//! `/api/v1/hosts`, `/facilities`, `/destinations` and `/propagation/*`: propagation's records
//! and the engine's status and controls. Admins and facility managers write here; the store
//! decides what a manager may touch (inside the write), so the handlers only authenticate.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_model::{Destination, Facility, Host, Principal, Record, Role};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::rest::{if_match, to_json, with_etag};
use crate::{json_body as body, ApiError, AppState};

type ApiResult = Result<Response, ApiError>;

/// Admins and managers may ask; the store decides what a manager may change.
fn writer(caller: &Caller) -> Result<&Principal, ApiError> {
    let p = caller.authenticated()?;
    match p.role {
        Role::Admin | Role::Manager => Ok(p),
        _ => Err(ApiError::Forbidden(format!(
            "{} ({}) may not change propagation; an admin or manager token is needed",
            p.name, p.role
        ))),
    }
}

fn engine(st: &AppState) -> Result<&keel_propagate::Engine, ApiError> {
    st.engine().ok_or_else(|| {
        ApiError::Unavailable("propagation is disabled on this server ([propagation] enabled = false)".into())
    })
}

/// Service names the records may use: the engine's, or the built-ins when it is off.
fn services(st: &AppState) -> BTreeSet<String> {
    st.engine().map_or_else(
        || keel_gen::BuiltIn::ALL.iter().map(|b| b.name().to_owned()).collect(),
        keel_propagate::Engine::service_names,
    )
}

/// A record with its version as ETag, or a 404 naming it.
fn one<R: Record>(r: Option<&R>, what: impl FnOnce() -> String) -> ApiResult {
    let r = r.ok_or_else(|| ApiError::NotFound(what()))?;
    written(StatusCode::OK, r)
}

/// A record just written (or read), with its version as ETag.
fn written<R: Record>(status: StatusCode, r: &R) -> ApiResult {
    Ok(with_etag(status, r.version(), to_json(r)?))
}

fn same_name(path: &str, body: &str) -> Result<(), ApiError> {
    if path == body {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name",
            format!("is {body:?} in the body but {path:?} in the URL"),
        ))
    }
}

// ---- hosts ----

#[utoipa::path(get, path = "/hosts", tag = "hosts", responses((status = 200, description = "the records", body = Vec<keel_model::propagation::Host>)))]
pub(crate) async fn list_hosts(State(st): State<AppState>, caller: Caller) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    Ok(Json(to_json(&st.db.snapshot().hosts().collect::<Vec<_>>())?).into_response())
}

#[utoipa::path(get, path = "/hosts/{name}", tag = "hosts", params(("name" = String, Path)), responses((status = 200, description = "the record", body = keel_model::propagation::Host)))]
pub(crate) async fn get_host(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    one(st.db.snapshot().host(&name), || format!("host {name}"))
}

#[utoipa::path(post, path = "/hosts", tag = "hosts", responses((status = 201, description = "created", body = keel_model::propagation::Host)))]
pub(crate) async fn create_host(State(st): State<AppState>, caller: Caller, b: Bytes) -> ApiResult {
    let who = writer(&caller)?;
    let h: Host = body(&b)?;
    let h = st.db.put_host(who, h, 0).await?;
    written(StatusCode::CREATED, &h)
}

#[utoipa::path(put, path = "/hosts/{name}", tag = "hosts", params(("name" = String, Path)), responses((status = 200, description = "the record", body = keel_model::propagation::Host)))]
pub(crate) async fn put_host(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    b: Bytes,
) -> ApiResult {
    let who = writer(&caller)?;
    let h: Host = body(&b)?;
    same_name(&name, &h.name)?;
    let h = st.db.put_host(who, h, if_match(&headers)?).await?;
    written(StatusCode::OK, &h)
}

#[utoipa::path(delete, path = "/hosts/{name}", tag = "hosts", params(("name" = String, Path)), responses((status = 204, description = "deleted")))]
pub(crate) async fn delete_host(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    st.db.delete_host(writer(&caller)?, &name, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- facilities ----

#[utoipa::path(get, path = "/facilities", tag = "facilities", responses((status = 200, description = "the records", body = Vec<keel_model::propagation::Facility>)))]
pub(crate) async fn list_facilities(State(st): State<AppState>, caller: Caller) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    Ok(Json(to_json(&st.db.snapshot().facilities().collect::<Vec<_>>())?).into_response())
}

#[utoipa::path(get, path = "/facilities/{name}", tag = "facilities", params(("name" = String, Path)), responses((status = 200, description = "the record", body = keel_model::propagation::Facility)))]
pub(crate) async fn get_facility(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    one(st.db.snapshot().facility(&name), || format!("facility {name}"))
}

#[utoipa::path(post, path = "/facilities", tag = "facilities", responses((status = 201, description = "created", body = keel_model::propagation::Facility)))]
pub(crate) async fn create_facility(State(st): State<AppState>, caller: Caller, b: Bytes) -> ApiResult {
    let who = writer(&caller)?;
    let f: Facility = body(&b)?;
    let f = st.db.put_facility(who, f, 0, &services(&st)).await?;
    written(StatusCode::CREATED, &f)
}

#[utoipa::path(put, path = "/facilities/{name}", tag = "facilities", params(("name" = String, Path)), responses((status = 200, description = "the record", body = keel_model::propagation::Facility)))]
pub(crate) async fn put_facility(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    b: Bytes,
) -> ApiResult {
    let who = writer(&caller)?;
    let f: Facility = body(&b)?;
    same_name(&name, &f.name)?;
    let f = st.db.put_facility(who, f, if_match(&headers)?, &services(&st)).await?;
    written(StatusCode::OK, &f)
}

#[utoipa::path(delete, path = "/facilities/{name}", tag = "facilities", params(("name" = String, Path)), responses((status = 204, description = "deleted")))]
pub(crate) async fn delete_facility(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    st.db
        .delete_facility(writer(&caller)?, &name, if_match(&headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- destinations ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DestFilter {
    facility: Option<String>,
    service: Option<String>,
}

#[utoipa::path(get, path = "/destinations", tag = "destinations", responses((status = 200, description = "the records", body = Vec<keel_model::propagation::Destination>)))]
pub(crate) async fn list_destinations(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<DestFilter>,
) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    let snap = st.db.snapshot();
    let of_facility: Box<dyn Iterator<Item = &Destination>> = match &q.facility {
        Some(f) => Box::new(snap.destinations_in(f)),
        None => Box::new(snap.destinations()),
    };
    let list: Vec<&Destination> = of_facility
        .filter(|d| q.service.as_ref().is_none_or(|s| &d.service == s))
        .collect();
    Ok(Json(to_json(&list)?).into_response())
}

#[utoipa::path(get, path = "/destinations/{facility}/{service}/{destination}", tag = "destinations", params(("facility" = String, Path), ("service" = String, Path), ("destination" = String, Path)), responses((status = 200, description = "the record", body = keel_model::propagation::Destination)))]
pub(crate) async fn get_destination(
    State(st): State<AppState>,
    caller: Caller,
    Path((facility, service, destination)): Path<(String, String, String)>,
) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    let key = format!("{facility}/{service}/{destination}");
    one(st.db.snapshot().destination(&key), || format!("destination {key}"))
}

#[utoipa::path(post, path = "/destinations", tag = "destinations", responses((status = 201, description = "created", body = keel_model::propagation::Destination)))]
pub(crate) async fn create_destination(State(st): State<AppState>, caller: Caller, b: Bytes) -> ApiResult {
    let who = writer(&caller)?;
    let d: Destination = body(&b)?;
    let d = st.db.put_destination(who, d, 0, &services(&st)).await?;
    written(StatusCode::CREATED, &d)
}

#[utoipa::path(delete, path = "/destinations/{facility}/{service}/{destination}", tag = "destinations", params(("facility" = String, Path), ("service" = String, Path), ("destination" = String, Path)), responses((status = 204, description = "deleted")))]
pub(crate) async fn delete_destination(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((facility, service, destination)): Path<(String, String, String)>,
) -> ApiResult {
    let key = format!("{facility}/{service}/{destination}");
    st.db
        .delete_destination(writer(&caller)?, &key, if_match(&headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- the engine ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusQuery {
    facility: Option<String>,
}

#[utoipa::path(get, path = "/propagation", operation_id = "propagation_status", tag = "propagation")]
pub(crate) async fn status(State(st): State<AppState>, caller: Caller, Query(q): Query<StatusQuery>) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    let engine = engine(&st)?;
    let tasks = engine.status(q.facility.as_deref());
    // `caught_up`: the engine has planned for every change committed so far (`keel propagation
    // wait` needs it: right after a write, the tasks may not show it yet).
    let body = json!({"idle": engine.is_idle(), "caught_up": engine.has_seen_all(), "tasks": to_json(&tasks)?});
    Ok(Json(body).into_response())
}

/// `who` runs `facility`: an admin, or one of its managers.
fn may_run(st: &AppState, who: &Principal, facility: &str) -> Result<(), ApiError> {
    let snap = st.db.snapshot();
    let f = snap
        .facility(facility)
        .ok_or_else(|| ApiError::NotFound(format!("facility {facility}")))?;
    if f.is_run_by(who) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{} does not manage facility {facility}",
            who.name
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForceBody {
    facility: String,
    service: Option<String>,
}

#[utoipa::path(
    post,
    path = "/propagation/force",
    operation_id = "force_propagation",
    tag = "propagation"
)]
pub(crate) async fn force(State(st): State<AppState>, caller: Caller, b: Bytes) -> ApiResult {
    let who = writer(&caller)?;
    let req: ForceBody = body(&b)?;
    may_run(&st, who, &req.facility)?;
    let planned = engine(&st)?
        .force(&req.facility, req.service.as_deref())
        .map_err(engine_error)?;
    tracing::info!(who = %who.name, facility = %req.facility, ?planned, "propagation forced");
    Ok((StatusCode::ACCEPTED, Json(json!({"planned": planned}))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BlockBody {
    facility: String,
    service: String,
    /// Block one destination only; without it, the service on the whole facility.
    destination: Option<String>,
    /// false unblocks.
    #[serde(default = "yes")]
    blocked: bool,
}

fn yes() -> bool {
    true
}

#[utoipa::path(
    post,
    path = "/propagation/block",
    operation_id = "block_propagation",
    tag = "propagation"
)]
pub(crate) async fn block(State(st): State<AppState>, caller: Caller, b: Bytes) -> ApiResult {
    let who = writer(&caller)?;
    let req: BlockBody = body(&b)?;
    let snap = st.db.snapshot();
    let result: Value = match &req.destination {
        Some(d) => {
            let key = format!("{}/{}/{d}", req.facility, req.service);
            let mut dest = snap
                .destination(&key)
                .cloned()
                .ok_or_else(|| ApiError::NotFound(format!("destination {key}")))?;
            let version = dest.version;
            dest.blocked = req.blocked;
            to_json(&st.db.put_destination(who, dest, version, &services(&st)).await?)?
        }
        None => {
            let mut f = snap
                .facility(&req.facility)
                .cloned()
                .ok_or_else(|| ApiError::NotFound(format!("facility {}", req.facility)))?;
            let version = f.version;
            f.blocked.retain(|s| s != &req.service);
            if req.blocked {
                f.blocked.push(req.service.clone());
            }
            to_json(&st.db.put_facility(who, f, version, &services(&st)).await?)?
        }
    };
    Ok(Json(result).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenQuery {
    service: String,
    facility: String,
    destination: String,
}

/// The signed bundle GEN would send, as a tar. A manager gets one only for a destination of
/// their own facility: a signed bundle names its destination, and one made out for any other
/// name is a credential for whichever host answers to it.
#[utoipa::path(get, path = "/propagation/bundle", operation_id = "get_bundle", tag = "propagation", responses((status = 200, description = "the signed bundle", content_type = "application/x-tar")))]
pub(crate) async fn gen_bundle(
    State(st): State<AppState>,
    caller: Caller,
    q: Result<Query<GenQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let who = writer(&caller)?;
    // Read after the caller is known: an anonymous request is a 401, whatever its query.
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    may_run(&st, who, &q.facility)?;
    if !who.is_admin() {
        let key = format!("{}/{}/{}", q.facility, q.service, q.destination);
        if st.db.snapshot().destination(&key).is_none() {
            keel_limits::refused!(WARN, principal = %who.name, facility = %q.facility, service = %q.service, "bundle refused: not a destination of the facility");
            return Err(ApiError::Forbidden(format!(
                "{} may fetch a bundle only for a destination of facility {} for service {} (no destination {:?})",
                who.name, q.facility, q.service, q.destination
            )));
        }
    }
    let tar = engine(&st)?
        .gen_bundle(&q.service, &q.facility, &q.destination)
        .await
        .map_err(engine_error)?;
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], tar).into_response())
}

#[utoipa::path(
    get,
    path = "/propagation/key",
    operation_id = "get_signing_key",
    tag = "propagation"
)]
pub(crate) async fn public_key(State(st): State<AppState>) -> ApiResult {
    Ok(Json(json!({"public_key": engine(&st)?.public_key().to_string()})).into_response())
}

fn engine_error(e: keel_propagate::EngineError) -> ApiError {
    match e {
        keel_propagate::EngineError::NotFound(w) => ApiError::NotFound(w),
        keel_propagate::EngineError::Invalid(m) => ApiError::invalid("service", m),
        keel_propagate::EngineError::Gen(e) => ApiError::Failed(e.to_string()),
        keel_propagate::EngineError::Timeout(m) => ApiError::Failed(m),
        keel_propagate::EngineError::Store(s) => s.into(),
    }
}
