//! REST `/api/v1/...`: strict JSON, bearer tokens, versions as ETags, `If-Match` on every change.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_model::input::{Fields, Strictness};
use keel_model::query::parse_filters;
use keel_model::{Machine, MachinePatch, Role, ValidationError};
use keel_store::NewToken;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::Caller;
use crate::{ApiError, AppState};

type ApiResult = Result<Response, ApiError>;

/// Parses a body as strict JSON: a syntax error names the body, a shape error names the field.
fn json_fields(body: &[u8]) -> Result<Fields, ApiError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid("body", format!("is not valid JSON: {e}")))?;
    Ok(Fields::new(v, Strictness::Strict)?)
}

/// The version an `If-Match` header names: required, a number, never `*`.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<u64, ApiError> {
    let raw = headers.get(header::IF_MATCH).ok_or(ApiError::PreconditionRequired)?;
    let s = raw
        .to_str()
        .map_err(|_| ApiError::invalid("If-Match", "is not ASCII"))?
        .trim();
    let s = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
    if s == "*" {
        return Err(ApiError::PreconditionRequired);
    }
    s.parse()
        .map_err(|_| ApiError::invalid("If-Match", format!("must be a version number as in ETag, got {s:?}")))
}

/// An admin's guarded change: who makes it, and the version their `If-Match` names.
pub(crate) struct Guarded {
    who: keel_model::Principal,
    version: u64,
}

impl axum::extract::FromRequestParts<AppState> for Guarded {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, st: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, st).await?;
        let who = caller.admin()?.clone();
        Ok(Self {
            who,
            version: if_match(&parts.headers)?,
        })
    }
}

/// A JSON answer carrying the record's version as its ETag.
pub(crate) fn with_etag(status: StatusCode, version: u64, body: Value) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(e.to_string()))
}

fn filters_of(query: Option<&str>) -> Map<String, Value> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

// ---- machines ----

/// The machines, filtered Django-style; `outside_pools=true` keeps those whose address is not
/// one their type's pool hands out today (the pools changed since: `keel machine renumber`).
#[utoipa::path(get, path = "/machines", tag = "machines", responses((status = 200, description = "the records", body = Vec<keel_model::Machine>)))]
pub(crate) async fn list_machines(State(st): State<AppState>, caller: Caller, RawQuery(q): RawQuery) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    let mut query = filters_of(q.as_deref());
    let outside = match query.remove("outside_pools") {
        None => false,
        Some(Value::String(v)) => match v.as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            other => {
                return Err(ApiError::invalid(
                    "outside_pools",
                    format!("must be true or false (got {other:?})"),
                ))
            }
        },
        Some(_) => return Err(ApiError::invalid("outside_pools", "must be true or false")),
    };
    let filters = parse_filters::<Machine>(query)?;
    let snap = st.db.snapshot();
    let pools = st.db.pools();
    let list: Vec<&Machine> = snap
        .machines()
        .filter(|m| !outside || !pools.of(m.mtype).admits(m.ip))
        .filter(|m| filters.iter().all(|f| f.matches(*m)))
        .collect();
    Ok(Json(to_json(&list)?).into_response())
}

/// `POST /api/v1/machines/renumber`: `{"machines": [names]}` (default: every machine outside
/// today's pools) and `"dry_run"`; each moves to the lowest free address of its type's pool, all
/// in one commit or none.
#[utoipa::path(post, path = "/machines/renumber", tag = "machines")]
pub(crate) async fn renumber_machines(State(st): State<AppState>, caller: Caller, body: Bytes) -> ApiResult {
    let who = caller.admin()?;
    let mut fields = json_fields(&body)?;
    let names = match fields.take_value("machines") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => Some(
            list.iter()
                .map(|v| {
                    let s = v
                        .as_str()
                        .ok_or_else(|| ApiError::invalid("machines", "must be a list of hostnames"))?;
                    Ok(keel_model::Hostname::parse("machines", s)?)
                })
                .collect::<Result<Vec<_>, ApiError>>()?,
        ),
        Some(_) => return Err(ApiError::invalid("machines", "must be a list of hostnames")),
    };
    let dry_run = fields.opt_bool("dry_run")?.unwrap_or(false);
    fields.finish()?;
    let moved = st.db.renumber_machines(who, names, dry_run).await?;
    let moved: Vec<Value> = moved
        .iter()
        .map(|(m, from)| json!({"hostname": m.hostname, "mtype": m.mtype, "from": from, "to": m.ip}))
        .collect();
    Ok(Json(json!({ "dry_run": dry_run, "moved": moved })).into_response())
}

#[utoipa::path(get, path = "/machines/{name}", tag = "machines", params(("name" = String, Path)), responses((status = 200, description = "the record", body = keel_model::Machine)))]
pub(crate) async fn get_machine(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    let snap = st.db.snapshot();
    let m = snap
        .machine_by_name(&name)
        .ok_or_else(|| ApiError::NotFound(format!("machine {name}")))?;
    Ok(with_etag(StatusCode::OK, m.version, to_json(m)?))
}

#[utoipa::path(post, path = "/machines", tag = "machines", responses((status = 201, description = "created", body = keel_model::Machine)))]
pub(crate) async fn create_machine(State(st): State<AppState>, caller: Caller, body: Bytes) -> ApiResult {
    let who = caller.admin()?;
    let patch = MachinePatch::from_fields(json_fields(&body)?)?;
    let m = st.db.create_machine(who, patch).await?;
    let mut resp = with_etag(StatusCode::CREATED, m.version, to_json(&m)?);
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/machines/{}", m.hostname)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

#[utoipa::path(patch, path = "/machines/{name}", tag = "machines", params(("name" = String, Path)), responses((status = 200, description = "the record", body = keel_model::Machine)))]
pub(crate) async fn patch_machine(
    State(st): State<AppState>,
    g: Guarded,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let patch = MachinePatch::from_fields(json_fields(&body)?)?;
    let m = st.db.edit_machine(&g.who, &name, g.version, patch).await?;
    Ok(with_etag(StatusCode::OK, m.version, to_json(&m)?))
}

/// PUT replaces: the required fields must all be there.
#[utoipa::path(put, path = "/machines/{name}", tag = "machines", params(("name" = String, Path)), responses((status = 200, description = "the record", body = keel_model::Machine)))]
pub(crate) async fn put_machine(st: State<AppState>, g: Guarded, name: Path<String>, body: Bytes) -> ApiResult {
    let probe = MachinePatch::from_fields(json_fields(&body)?)?;
    for (field, given) in [
        ("hostname", probe.hostname.is_some()),
        ("mac", probe.mac.is_some()),
        ("mtype", probe.mtype.is_some()),
    ] {
        if !given {
            return Err(ValidationError::new(field, "is required with PUT (use PATCH to change some fields)").into());
        }
    }
    patch_machine(st, g, name, body).await
}

#[utoipa::path(delete, path = "/machines/{name}", tag = "machines", params(("name" = String, Path)), responses((status = 204, description = "deleted")))]
pub(crate) async fn delete_machine(State(st): State<AppState>, g: Guarded, Path(name): Path<String>) -> ApiResult {
    st.db.delete_machine(&g.who, &name, g.version).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The rows of an import body, each read by `parse` and numbered by its `line` field (else its
/// position): a bad row is kept as its error, so the import can name every bad line at once.
type Numbered<T> = Vec<(usize, Result<T, ValidationError>)>;

fn numbered_rows<T>(
    rows: Vec<Value>,
    parse: fn(Fields) -> Result<T, ValidationError>,
) -> Result<Numbered<T>, ValidationError> {
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut f = Fields::new(row, Strictness::Strict).map_err(|e| e.at_line(i + 1))?;
            let line = f.opt_u32("line").ok().flatten().map_or(i + 1, |l| l as usize);
            Ok((line, parse(f).map_err(|e| e.at_line(line))))
        })
        .collect()
}

/// `POST /api/v1/machines/import`: `{"machines": [{"line": N, ...fields}, ...]}`, all or nothing.
#[utoipa::path(post, path = "/machines/import", tag = "machines")]
pub(crate) async fn import_machines(State(st): State<AppState>, caller: Caller, body: Bytes) -> ApiResult {
    let who = caller.admin()?;
    let mut fields = json_fields(&body)?;
    let rows = match fields.take_value("machines") {
        Some(Value::Array(rows)) => rows,
        _ => return Err(ApiError::invalid("machines", "must be a list of machine objects")),
    };
    let dry_run = fields.opt_bool("dry_run")?.unwrap_or(false);
    fields.finish()?;
    let rows = numbered_rows(rows, MachinePatch::from_fields)?;
    let created = st.db.import_machines(who, rows, dry_run).await?;
    // A dry run is planned against the live state exactly as the import would be; nothing is
    // committed or logged.
    let status = if dry_run { StatusCode::OK } else { StatusCode::CREATED };
    Ok((
        status,
        Json(json!({ "created": created.len(), "machines": created, "dry_run": dry_run })),
    )
        .into_response())
}

// ---- switches ----

#[utoipa::path(get, path = "/switches", tag = "switches", responses((status = 200, description = "the records", body = Vec<keel_model::Switch>)))]
pub(crate) async fn list_switches(State(st): State<AppState>, caller: Caller) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    let snap = st.db.snapshot();
    Ok(Json(to_json(&snap.switches().collect::<Vec<_>>())?).into_response())
}

#[utoipa::path(get, path = "/switches/{name}", tag = "switches", params(("name" = String, Path)), responses((status = 200, description = "the record", body = keel_model::Switch)))]
pub(crate) async fn get_switch(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    let snap = st.db.snapshot();
    let s = snap
        .switch(&name)
        .ok_or_else(|| ApiError::NotFound(format!("switch {name}")))?;
    Ok(with_etag(StatusCode::OK, s.version, to_json(s)?))
}

#[utoipa::path(post, path = "/switches", tag = "switches", responses((status = 201, description = "created", body = keel_model::Switch)))]
pub(crate) async fn create_switch(State(st): State<AppState>, caller: Caller, body: Bytes) -> ApiResult {
    let who = caller.admin()?;
    let s = st.db.create_switch(who, json_fields(&body)?).await?;
    Ok(with_etag(StatusCode::CREATED, s.version, to_json(&s)?))
}

#[utoipa::path(patch, path = "/switches/{name}", tag = "switches", params(("name" = String, Path)), responses((status = 200, description = "the record", body = keel_model::Switch)))]
pub(crate) async fn patch_switch(
    State(st): State<AppState>,
    g: Guarded,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let s = st.db.edit_switch(&g.who, &name, g.version, json_fields(&body)?).await?;
    Ok(with_etag(StatusCode::OK, s.version, to_json(&s)?))
}

#[utoipa::path(delete, path = "/switches/{name}", tag = "switches", params(("name" = String, Path)), responses((status = 204, description = "deleted")))]
pub(crate) async fn delete_switch(State(st): State<AppState>, g: Guarded, Path(name): Path<String>) -> ApiResult {
    st.db.delete_switch(&g.who, &name, g.version).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- settings ----

#[utoipa::path(get, path = "/settings", tag = "settings")]
pub(crate) async fn list_settings(State(st): State<AppState>, caller: Caller) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    let list: Vec<Value> = st
        .db
        .snapshot()
        .settings()
        .into_iter()
        .map(|s| {
            let help = keel_model::Setting::spec(&s.key).map(|sp| sp.help).unwrap_or("");
            json!({"key": s.key, "value": s.value, "version": s.version, "help": help})
        })
        .collect();
    Ok(Json(Value::Array(list)).into_response())
}

#[utoipa::path(get, path = "/settings/{key}", tag = "settings", params(("key" = String, Path)))]
pub(crate) async fn get_setting(State(st): State<AppState>, caller: Caller, Path(key): Path<String>) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    let s = st
        .db
        .snapshot()
        .setting(&key)
        .map_err(|e| ApiError::NotFound(e.message))?;
    Ok(with_etag(StatusCode::OK, s.version, to_json(&s)?))
}

#[utoipa::path(put, path = "/settings/{key}", tag = "settings", params(("key" = String, Path)))]
pub(crate) async fn put_setting(
    State(st): State<AppState>,
    g: Guarded,
    Path(key): Path<String>,
    body: Bytes,
) -> ApiResult {
    let mut f = json_fields(&body)?;
    let value = f
        .take_value("value")
        .ok_or_else(|| ApiError::invalid("value", "is required"))?;
    let for_secs = f.opt_u32("for_secs")?;
    f.finish()?;
    let value = match for_secs {
        None => value,
        Some(secs) => open_for(&key, &value, secs)?,
    };
    let s = st.db.set_setting(&g.who, &key, value, Some(g.version)).await?;
    Ok(with_etag(StatusCode::OK, s.version, to_json(&s)?))
}

/// The longest a setting may be turned on for at once (`for_secs`): 30 days.
const MAX_FOR_SECS: u32 = 30 * 24 * 3600;

/// `{"value": true, "for_secs": N}`: on until N seconds from now by this server's clock (the one
/// that decides), stored as that end time.
fn open_for(key: &str, value: &Value, secs: u32) -> Result<Value, ApiError> {
    if value != &Value::Bool(true) {
        return Err(ApiError::invalid("for_secs", "goes only with \"value\": true"));
    }
    if !keel_model::Setting::spec(key).is_ok_and(|s| s.until) {
        return Err(ApiError::invalid("for_secs", format!("{key} has no end time")));
    }
    if !(1..=MAX_FOR_SECS).contains(&secs) {
        return Err(ApiError::invalid(
            "for_secs",
            format!("must be between 1 and {MAX_FOR_SECS}"),
        ));
    }
    let end = time::OffsetDateTime::now_utc() + time::Duration::seconds(i64::from(secs));
    Ok(Value::String(keel_model::rfc3339(end)))
}

// ---- roles ----

/// A role as the API shows it: the machine by its hostname too.
fn role_json(snap: &keel_model::Snapshot, r: &keel_model::RoleRecord) -> Value {
    json!({
        "role": r.role,
        "machine": snap.machine(r.machine).map(|m| m.hostname.to_string()),
        "machine_id": r.machine,
        "version": r.version,
    })
}

fn parse_role(s: &str) -> Result<keel_model::MachineRole, ApiError> {
    Ok(keel_model::MachineRole::parse("role", s)?)
}

#[utoipa::path(get, path = "/roles", tag = "roles")]
pub(crate) async fn list_roles(State(st): State<AppState>, caller: Caller) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    let snap = st.db.snapshot();
    let list: Vec<Value> = snap.roles().map(|r| role_json(&snap, r)).collect();
    Ok(Json(list).into_response())
}

#[utoipa::path(get, path = "/roles/{role}", tag = "roles", params(("role" = String, Path)))]
pub(crate) async fn get_role(State(st): State<AppState>, caller: Caller, Path(role): Path<String>) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    let role = parse_role(&role)?;
    let snap = st.db.snapshot();
    let r = snap
        .role(&role)
        .ok_or_else(|| ApiError::NotFound(format!("role {role} (no machine has it)")))?;
    Ok(with_etag(StatusCode::OK, r.version, role_json(&snap, r)))
}

/// `PUT /api/v1/roles/{role}` `{"machine": NAME}`, with `If-Match` (`"0"` for a role not given
/// yet): gives the role to that machine.
#[utoipa::path(put, path = "/roles/{role}", tag = "roles", params(("role" = String, Path)))]
pub(crate) async fn put_role(
    State(st): State<AppState>,
    g: Guarded,
    Path(role): Path<String>,
    body: Bytes,
) -> ApiResult {
    let role = parse_role(&role)?;
    let mut f = json_fields(&body)?;
    let machine = f
        .opt_str("machine")?
        .ok_or_else(|| ApiError::invalid("machine", "is required"))?;
    f.finish()?;
    let r = st.db.set_role(&g.who, &role, &machine, Some(g.version)).await?;
    Ok(with_etag(StatusCode::OK, r.version, role_json(&st.db.snapshot(), &r)))
}

#[utoipa::path(delete, path = "/roles/{role}", tag = "roles", params(("role" = String, Path)))]
pub(crate) async fn delete_role(State(st): State<AppState>, g: Guarded, Path(role): Path<String>) -> ApiResult {
    let role = parse_role(&role)?;
    st.db.remove_role(&g.who, &role, g.version).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- users ----

#[utoipa::path(get, path = "/users", tag = "users", responses((status = 200, description = "the records", body = Vec<keel_model::wire::PublicUser>)))]
pub(crate) async fn list_users(State(st): State<AppState>, caller: Caller, RawQuery(q): RawQuery) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    let filters = parse_filters::<keel_model::User>(filters_of(q.as_deref()))?;
    let snap = st.db.snapshot();
    let list: Vec<Value> = snap
        .users()
        .filter(|u| filters.iter().all(|f| f.matches(*u)))
        .map(keel_model::User::public_json)
        .collect();
    Ok(Json(list).into_response())
}

#[utoipa::path(get, path = "/users/{login}", tag = "users", params(("login" = String, Path)), responses((status = 200, description = "the record", body = keel_model::wire::PublicUser)))]
pub(crate) async fn get_user(State(st): State<AppState>, caller: Caller, Path(login): Path<String>) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    let snap = st.db.snapshot();
    let u = snap
        .user(&login)
        .ok_or_else(|| ApiError::NotFound(format!("user {login}")))?;
    Ok(with_etag(StatusCode::OK, u.version, u.public_json()))
}

/// `POST /api/v1/users`: a password is accepted only as its SHA-512-crypt hash.
#[utoipa::path(post, path = "/users", tag = "users", responses((status = 201, description = "created", body = keel_model::wire::PublicUser)))]
pub(crate) async fn create_user(State(st): State<AppState>, caller: Caller, body: Bytes) -> ApiResult {
    let who = caller.admin()?;
    let patch = keel_model::UserPatch::from_fields(json_fields(&body)?)?;
    let u = st.db.create_user(who, patch).await?;
    Ok(with_etag(StatusCode::CREATED, u.version, u.public_json()))
}

#[utoipa::path(patch, path = "/users/{login}", tag = "users", params(("login" = String, Path)), responses((status = 200, description = "the record", body = keel_model::wire::PublicUser)))]
pub(crate) async fn patch_user(
    State(st): State<AppState>,
    g: Guarded,
    Path(login): Path<String>,
    body: Bytes,
) -> ApiResult {
    let patch = keel_model::UserPatch::from_fields(json_fields(&body)?)?;
    let u = st.db.edit_user(&g.who, &login, g.version, patch).await?;
    Ok(with_etag(StatusCode::OK, u.version, u.public_json()))
}

#[utoipa::path(delete, path = "/users/{login}", tag = "users", params(("login" = String, Path)), responses((status = 204, description = "deleted")))]
pub(crate) async fn delete_user(State(st): State<AppState>, g: Guarded, Path(login): Path<String>) -> ApiResult {
    st.db.delete_user(&g.who, &login, g.version).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/users/import`: `{"on_existing": "refuse|update|ignore", "dry_run": bool,
/// "users": [{"line": N, …fields}]}` — all or nothing, every bad line named.
#[utoipa::path(post, path = "/users/import", tag = "users")]
pub(crate) async fn import_users(State(st): State<AppState>, caller: Caller, body: Bytes) -> ApiResult {
    let who = caller.admin()?;
    let mut fields = json_fields(&body)?;
    let on_existing = match fields.opt_str("on_existing")?.as_deref() {
        None | Some("refuse") => keel_store::OnExisting::Refuse,
        Some("update") => keel_store::OnExisting::Update,
        Some("ignore") => keel_store::OnExisting::Ignore,
        Some(other) => {
            return Err(ApiError::invalid(
                "on_existing",
                format!("must be refuse, update or ignore, not {other:?}"),
            ))
        }
    };
    let dry_run = fields.opt_bool("dry_run")?.unwrap_or(false);
    let rows = match fields.take_value("users") {
        Some(Value::Array(rows)) => rows,
        _ => return Err(ApiError::invalid("users", "must be a list of user objects")),
    };
    fields.finish()?;
    let rows = numbered_rows(rows, keel_model::UserPatch::from_fields)?;
    let report = st.db.import_users(who, rows, on_existing, dry_run).await?;
    let public = |list: &[keel_model::User]| list.iter().map(keel_model::User::public_json).collect::<Vec<_>>();
    let body = json!({
        "dry_run": dry_run,
        "created": public(&report.created),
        "updated": public(&report.updated),
        "ignored": report.ignored,
    });
    Ok((if dry_run { StatusCode::OK } else { StatusCode::CREATED }, Json(body)).into_response())
}

/// `POST /api/v1/passwd {"login","old_password","new_password_hash"}`: a user changes their own
/// password. The old one is checked against its hash (never stored nor logged); the new one
/// arrives hashed. No token: knowing the old password is the authentication.
#[utoipa::path(post, path = "/passwd", operation_id = "change_password", tag = "passwd")]
pub(crate) async fn passwd(State(st): State<AppState>, body: Bytes) -> ApiResult {
    let mut f = json_fields(&body)?;
    let login = f
        .opt_str("login")?
        .ok_or_else(|| ApiError::invalid("login", "is required"))?;
    let old = f
        .opt_str("old_password")?
        .ok_or_else(|| ApiError::invalid("old_password", "is required"))?;
    let new_hash = f
        .opt_str("new_password_hash")?
        .ok_or_else(|| ApiError::invalid("new_password_hash", "is required"))?;
    f.finish()?;
    if !keel_model::is_sha512_crypt(&new_hash) {
        return Err(ApiError::invalid(
            "new_password_hash",
            "must be a SHA-512-crypt hash ($6$salt$…)",
        ));
    }
    match crate::auth::check_password(&st, &login, old).await {
        crate::auth::PasswordCheck::Right => {}
        crate::auth::PasswordCheck::Wait(wait) => {
            keel_limits::refused!(WARN, login = %crate::auth::shown(&login), "password change refused: too many tries");
            return Err(ApiError::TooManyAttempts(wait.as_secs() + 1));
        }
        crate::auth::PasswordCheck::Wrong => {
            keel_limits::refused!(WARN, login = %crate::auth::shown(&login), "password change refused: wrong login or password");
            return Err(ApiError::Unauthorized("wrong login or password"));
        }
    }
    let Some(user) = st.db.snapshot().user(&login).cloned() else {
        return Err(ApiError::Unauthorized("wrong login or password"));
    };
    let patch = keel_model::UserPatch {
        password_hash: Some(new_hash),
        password_changed: Some(true),
        ..Default::default()
    };
    let who = keel_model::Principal {
        name: format!("user:{login}"),
        ..keel_model::Principal::anonymous()
    };
    st.db.edit_user(&who, &login, user.version, patch).await?;
    tracing::info!(%login, "password changed by its user");
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- change log ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangesQuery {
    #[serde(default)]
    since: u64,
    #[serde(default = "default_limit")]
    limit: u32,
    /// `asc` (default: from `since` on) or `desc` (the newest first, before `before`).
    #[serde(default)]
    order: Order,
    before: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Order {
    #[default]
    Asc,
    Desc,
}

fn default_limit() -> u32 {
    100
}

#[utoipa::path(get, path = "/changes", tag = "changes")]
pub(crate) async fn list_changes(
    State(st): State<AppState>,
    caller: Caller,
    q: Result<Query<ChangesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    caller.reader(st.config.open_reads)?;
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = q.limit.clamp(1, 10_000);
    let mut changes = match q.order {
        Order::Asc => st.db.store().changes_since(q.since, limit).await?,
        Order::Desc => st.db.store().newest_changes(q.before, limit).await?,
    };
    // The log is readable with any token: password hashes never leave through it.
    for c in &mut changes {
        for rec in [&mut c.before, &mut c.after].into_iter().flatten() {
            *rec = keel_model::wire::public_record(c.kind, rec);
        }
    }
    Ok(Json(to_json(&changes)?).into_response())
}

// ---- tokens ----

#[utoipa::path(get, path = "/tokens", tag = "tokens")]
pub(crate) async fn list_tokens(State(st): State<AppState>, caller: Caller) -> ApiResult {
    caller.admin()?;
    Ok(Json(to_json(&st.db.store().tokens().await?)?).into_response())
}

#[utoipa::path(post, path = "/tokens", tag = "tokens")]
pub(crate) async fn create_token(State(st): State<AppState>, caller: Caller, body: Bytes) -> ApiResult {
    caller.admin()?;
    let mut f = json_fields(&body)?;
    let name = f
        .opt_str("name")?
        .ok_or_else(|| ApiError::invalid("name", "is required"))?;
    let name = keel_model::input::check_text("name", name.trim(), 64)?;
    if name.is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    let role: Role = f
        .opt_str("role")?
        .ok_or_else(|| ApiError::invalid("role", "is required"))?
        .parse()?;
    let facilities = f.opt_str_list("facilities")?.unwrap_or_default();
    let host = f.opt_str("host")?;
    let expires = f
        .opt_str("expires")?
        .map(|e| {
            time::OffsetDateTime::parse(&e, &time::format_description::well_known::Rfc3339)
                .map_err(|_| ApiError::invalid("expires", format!("must be an RFC 3339 time, got {e:?}")))
        })
        .transpose()?;
    f.finish()?;
    let (secret, row) = st
        .db
        .create_token(NewToken {
            name,
            role,
            facilities,
            host,
            expires,
        })
        .await?;
    let mut body = to_json(&row)?;
    body["token"] = Value::String(secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", params(("id" = String, Path)))]
pub(crate) async fn revoke_token(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    caller.admin()?;
    if st.db.revoke_token(&id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound(format!("token {id}")))
    }
}

// ---- backup ----

/// `GET /api/v1/backup`: a consistent copy of the live database, as an SQLite file.
#[utoipa::path(get, path = "/backup", operation_id = "get_backup", tag = "backup", responses((status = 200, description = "a consistent SQLite copy of the database", content_type = "application/octet-stream")))]
pub(crate) async fn backup(State(st): State<AppState>, caller: Caller) -> ApiResult {
    caller.admin()?;
    let dir = st.config.data_dir.join("backups.tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let path = dir.join(format!("backup-{}.db", uuid::Uuid::new_v4()));
    let result = async {
        st.db.store().backup(&path).await?;
        tokio::fs::read(&path)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))
    }
    .await;
    let _ = tokio::fs::remove_file(&path).await;
    let bytes = result?;
    Ok(([(header::CONTENT_TYPE, "application/vnd.sqlite3")], Body::from(bytes)).into_response())
}
