//! RPC compatible with the prologin SADM services: `GET|POST /call/<method>`.
//!
//! Arguments come as a query string, a form, or JSON `{"args": [...], "kwargs": {...}, "hmac": …}`;
//! answers are `{"type":"result","data":…}` or `{"type":"exception",…}`. Lenient like the original.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method};
use axum::response::{IntoResponse, Response};

use keel_model::input::{Fields, Strictness};
use keel_model::query::{parse_filters, Filter};
use keel_model::wire::{MachineWire, Queryable, SwitchRecord};
use keel_model::{Mac, Machine, MachinePatch, Principal, Snapshot};
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::{ApiError, AppState};

/// Which database a `/call/*` request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Mdb,
    Udb,
}

/// Positional parameter names, so `args` can be given as in the original clients.
const REGISTER_PARAMS: &[&str] = &["hostname", "mac", "rfs", "hfs", "room", "mtype"];

/// `/call/<method>`, `/mdb/call/<method>` and `/udb/call/<method>`.
pub(crate) async fn call(
    State(state): State<AppState>,
    Caller(who): Caller,
    crate::presence::Peer(peer): crate::presence::Peer,
    Path(method): Path<String>,
    request: axum::http::request::Parts,
    body: Bytes,
) -> Response {
    let service = service_of(request.uri.path(), &request.headers);
    let query = request.uri.query();
    let result = async {
        let args = Args::parse(&request.headers, &request.method, query, &body)?;
        let who = match (&who, &state.config.rpc_secret, args.hmac.as_deref()) {
            // prologin's scheme: a valid hmac acts as the principal configured for the secret.
            (None, Some(s), Some(token)) if !token.is_empty() => Some(s.check(token, &method)?),
            _ => who,
        };
        match (service, method.as_str()) {
            (Service::Mdb, "query") => query_machines(state.db.snapshot(), args.named(&[])?).await,
            (Service::Mdb, "switches") => {
                let (snap, named) = (state.db.snapshot(), args.named(&[])?);
                off_io(move || query_switches(&snap, named)).await
            }
            (Service::Mdb, "register") => {
                let anonymous = who.as_ref().is_none_or(|p| !p.is_admin());
                if anonymous && !state.allow_registration(peer, &request.headers) {
                    return Err(ApiError::RateLimited(60));
                }
                register(&state, who.as_ref(), args.named(REGISTER_PARAMS)?).await
            }
            (Service::Udb, "query") => {
                let (snap, named) = (state.db.snapshot(), args.named(&[])?);
                off_io(move || query_users(&snap, named)).await
            }
            (Service::Udb, "query_private") => {
                // prologin's authenticated clients (signed calls act as the `[rpc]` principal),
                // admins, and facility managers for the users their facilities receive (whose
                // hashes they already get in those facilities' passwd bundles).
                let reader = match who {
                    Some(p) if p.is_admin() || p.role == keel_model::Role::Manager => p,
                    Some(p) => return Err(ApiError::Forbidden(format!("{} may not read private records", p.name))),
                    None => {
                        return Err(ApiError::Unauthorized(
                            "query_private needs a signed call, an admin token or a facility manager's token",
                        ))
                    }
                };
                let (snap, named) = (state.db.snapshot(), args.named(&[])?);
                off_io(move || query_users_private(&snap, named, &reader)).await
            }
            (Service::Mdb, "ansible") => {
                let snap = state.db.snapshot();
                off_io(move || Reply::serialize(&ansible_inventory(&snap))).await
            }
            (Service::Udb, _) => Err(ApiError::NotFound(format!("udb method {method:?}"))),
            (Service::Mdb, _) => Err(ApiError::NotFound(format!("mdb method {method:?}"))),
        }
    }
    .await;
    match result {
        Ok(reply) => reply.into_response(),
        Err(e) => e.into_rpc_response(),
    }
}

/// A successful RPC answer, its `data` already serialized.
pub(crate) struct Reply(Vec<u8>);

impl Reply {
    fn serialize<T: serde::Serialize>(data: &T) -> Result<Self, ApiError> {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(br#"{"type":"result","data":"#);
        serde_json::to_writer(&mut out, data).map_err(|e| ApiError::Internal(e.to_string()))?;
        out.push(b'}');
        Ok(Self(out))
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], self.0).into_response()
    }
}

/// Which database a call is for: by path prefix, else by the first label of `Host` (mdb and udb
/// share an address in prologin's setup).
pub(crate) fn service_of(path: &str, headers: &HeaderMap) -> Service {
    if path.starts_with("/mdb/") || path == "/mdb" {
        return Service::Mdb;
    }
    if path.starts_with("/udb/") {
        return Service::Udb;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if host.split('.').next().is_some_and(|l| l.starts_with("udb")) {
        Service::Udb
    } else {
        Service::Mdb
    }
}

/// The arguments of one call.
struct Args {
    positional: Vec<Value>,
    named: Map<String, Value>,
    /// prologin's `hmac` field (older clients call it `token`).
    hmac: Option<String>,
}

/// The shared secret of prologin's RPC clients, and who a call signed with it acts as.
#[derive(Debug, Clone)]
pub struct RpcSecret {
    pub secret: crate::Secret,
    pub principal: Principal,
}

impl RpcSecret {
    /// Checks a prologin timeauth token for a call of `method` (see [`check_timeauth`]).
    fn check(&self, token: &str, method: &str) -> Result<Principal, ApiError> {
        if check_timeauth(self.secret.expose(), token, method) {
            Ok(self.principal.clone())
        } else {
            keel_limits::refused!(WARN, %method, "RPC call with a bad or expired hmac refused");
            Err(ApiError::Forbidden("BadToken: the hmac is wrong or has expired".into()))
        }
    }
}

/// How old (or, for a clock ahead of ours, how new) a signed timestamp may be: prologin's
/// timeauth accepts tokens up to 120 s old.
const TIMEAUTH_WINDOW_SECS: i64 = 120;

/// prologin's timeauth: a token is `TIMESTAMP:HEX` where HEX is HMAC-SHA256 under the shared
/// secret of the message followed by TIMESTAMP (the decimal Unix time the client signed at). The
/// message is the RPC method's name for calls, and the text `None` for `/poll` (Python's
/// `str(None)`: the sync clients sign no message). Compared in constant time.
pub(crate) fn check_timeauth(secret: &str, token: &str, message: &str) -> bool {
    use hmac::Mac as _;
    let Some((ts, mac)) = token.split_once(':') else {
        return false;
    };
    let Ok(at) = ts.parse::<i64>() else {
        return false;
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if (now - at).abs() > TIMEAUTH_WINDOW_SECS {
        return false;
    }
    let (Ok(given), Ok(mut h)) = (
        hex::decode(mac),
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()),
    ) else {
        return false;
    };
    h.update(message.as_bytes());
    h.update(ts.as_bytes());
    h.verify_slice(&given).is_ok()
}

impl Args {
    fn parse(headers: &HeaderMap, verb: &Method, query: Option<&str>, body: &[u8]) -> Result<Self, ApiError> {
        let mut named = Map::new();
        for (k, v) in form_pairs(query.unwrap_or("")) {
            named.insert(k, Value::String(v));
        }
        let mut positional = Vec::new();
        let mut hmac = None;
        let ctype = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .unwrap_or("");
        let trimmed = body
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map_or(&body[..0], |i| &body[i..]);
        if *verb == Method::POST && !trimmed.is_empty() {
            if ctype.starts_with("application/x-www-form-urlencoded") && !trimmed.starts_with(b"{") {
                let text = std::str::from_utf8(trimmed).map_err(|_| ApiError::invalid("body", "is not UTF-8"))?;
                for (k, v) in form_pairs(text) {
                    named.insert(k, Value::String(v));
                }
            } else {
                let v: Value = serde_json::from_slice(trimmed)
                    .map_err(|e| ApiError::invalid("body", format!("is not valid JSON: {e}")))?;
                let Value::Object(mut obj) = v else {
                    return Err(ApiError::invalid("body", "must be a JSON object"));
                };
                // prologin clients sign calls in `hmac` (older ones in `token`).
                for field in ["hmac", "token"] {
                    if let Some(Value::String(h)) = obj.remove(field) {
                        hmac = Some(h);
                    }
                }
                match (obj.remove("args"), obj.remove("kwargs")) {
                    (None, None) => named.extend(obj),
                    (args, kwargs) => {
                        match args {
                            Some(Value::Array(a)) => positional = a,
                            None | Some(Value::Null) => {}
                            Some(_) => return Err(ApiError::invalid("args", "must be a list")),
                        }
                        match kwargs {
                            Some(Value::Object(k)) => named.extend(k),
                            None | Some(Value::Null) => {}
                            Some(_) => return Err(ApiError::invalid("kwargs", "must be an object")),
                        }
                    }
                }
            }
        }
        // Also when it came as a query or form field.
        if let Some(Value::String(h)) = named.remove("hmac") {
            hmac = Some(h);
        }
        Ok(Self {
            positional,
            named,
            hmac,
        })
    }

    /// All arguments by name, positional ones named after `params`.
    fn named(self, params: &[&str]) -> Result<Map<String, Value>, ApiError> {
        if self.positional.len() > params.len() {
            return Err(ApiError::invalid(
                "args",
                format!("at most {} positional arguments", params.len()),
            ));
        }
        let mut named = self.named;
        for (name, v) in params.iter().zip(self.positional) {
            if named.insert((*name).to_owned(), v).is_some() {
                return Err(ApiError::invalid(name, "given both by position and by name"));
            }
        }
        Ok(named)
    }
}

pub(crate) fn form_pairs(s: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(s.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `query(**filters)`: machines matching every filter; no filter = all. Uses the indexes when a
/// filter pins `mac`, `hostname` or `ip` to one value, so lookups never scan. Serialized straight
/// from the Snapshot into the reply.
/// A query that passes over every record runs on the blocking pool: however costly its filters
/// (a long `__icontains` over every record), it never holds a thread where other requests, DNS
/// answers and nginx's `/sso` are served.
async fn off_io(f: impl FnOnce() -> Result<Reply, ApiError> + Send + 'static) -> Result<Reply, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("query task: {e}")))?
}

/// mdb `query`: an index lookup (`mac=`, `hostname=`, …) is answered at once; a scan goes
/// [`off_io`].
pub(crate) async fn query_machines(snap: Arc<Snapshot>, named: Map<String, Value>) -> Result<Reply, ApiError> {
    let filters = parse_filters::<Machine>(named)?;
    if let Some(candidate) = pinned_machine(&snap, &filters) {
        let records: Vec<MachineWire<'_>> = candidate
            .into_iter()
            .filter(|m| matches_all(&filters, *m))
            .map(MachineWire)
            .collect();
        return Reply::serialize(&records);
    }
    off_io(move || {
        let records: Vec<MachineWire<'_>> = snap
            .machines()
            .filter(|m| matches_all(&filters, *m))
            .map(MachineWire)
            .collect();
        Reply::serialize(&records)
    })
    .await
}

/// `Some(candidates)` when an index answers the query; `None` when a scan is needed.
fn pinned_machine<'s>(snap: &'s Snapshot, filters: &[Filter]) -> Option<Option<&'s Machine>> {
    filters.iter().find_map(|f| {
        if let Some(v) = f.exact("mac") {
            return Some(Mac::parse("mac", v).ok().and_then(|m| snap.machine_by_mac(&m)));
        }
        if let Some(v) = f.exact("hostname") {
            return Some(snap.machine_by_name(v).filter(|m| m.hostname.as_str() == v));
        }
        f.exact("ip")
            .map(|v| v.parse().ok().and_then(|ip| snap.machine_by_ip(ip)))
    })
}

fn matches_all<R: Queryable>(filters: &[Filter], r: &R) -> bool {
    filters.iter().all(|f| f.matches(r))
}

/// udb `query(**filters)`: users in prologin's shape — never a password or its hash.
fn query_users(snap: &Snapshot, named: Map<String, Value>) -> Result<Reply, ApiError> {
    users_as::<keel_model::wire::UserRecord>(snap, named, |_| true)
}

/// udb `query_private`: the public record and the password's SHA-512-crypt hash (keel never has
/// the plaintext prologin's udb kept; docs/api.md says what its clients get instead). An admin
/// reads every user; a manager only those a facility it runs receives.
fn query_users_private(snap: &Snapshot, named: Map<String, Value>, reader: &Principal) -> Result<Reply, ApiError> {
    users_as::<keel_model::wire::UserPrivateRecord>(snap, named, |u| {
        reader.is_admin() || snap.facilities().any(|f| f.is_run_by(reader) && f.receives(u))
    })
}

/// The `visible` users that match the filters in `named`, each as an `R` record.
fn users_as<R>(
    snap: &Snapshot,
    named: Map<String, Value>,
    visible: impl Fn(&keel_model::User) -> bool,
) -> Result<Reply, ApiError>
where
    R: serde::Serialize + for<'u> From<&'u keel_model::User>,
{
    let filters = parse_filters::<keel_model::User>(named)?;
    let records: Vec<R> = snap
        .users()
        .filter(|u| visible(u) && matches_all(&filters, *u))
        .map(R::from)
        .collect();
    Reply::serialize(&records)
}

/// mdb `ansible`: the machines as an Ansible dynamic inventory — a group per type (`user`,
/// `orga`, `cluster`, `service`), per room (`room_NAME`), per RFS and HFS (`rfs_N`, `hfs_N`), and
/// every machine's fields in `_meta.hostvars` (so Ansible asks nothing per host).
fn ansible_inventory(snap: &Snapshot) -> Value {
    use std::collections::BTreeMap;
    let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut hostvars = Map::new();
    for m in snap.machines() {
        let host = m.hostname.as_str();
        for group in [
            m.mtype.to_string(),
            format!("room_{}", m.room),
            format!("rfs_{}", m.rfs),
            format!("hfs_{}", m.hfs),
        ] {
            groups.entry(group).or_default().push(host);
        }
        hostvars.insert(
            host.to_owned(),
            serde_json::json!({
                "ip": m.ip.to_string(),
                "mac": m.mac.to_string(),
                "mtype": m.mtype.as_str(),
                "room": m.room,
                "rfs": m.rfs,
                "hfs": m.hfs,
                "aliases": m.aliases.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "is_faulty": m.is_faulty,
            }),
        );
    }
    let mut out = Map::new();
    out.insert(
        "all".into(),
        serde_json::json!({ "hosts": hostvars.keys().collect::<Vec<_>>() }),
    );
    for (group, hosts) in groups {
        out.insert(group, serde_json::json!({ "hosts": hosts }));
    }
    out.insert("_meta".into(), serde_json::json!({ "hostvars": hostvars }));
    Value::Object(out)
}

fn query_switches(snap: &Snapshot, named: Map<String, Value>) -> Result<Reply, ApiError> {
    let filters = parse_filters::<keel_model::Switch>(named)?;
    let records: Vec<SwitchRecord> = snap
        .switches()
        .filter(|s| matches_all(&filters, *s))
        .map(SwitchRecord::from)
        .collect();
    Reply::serialize(&records)
}

/// `register(hostname, mac, rfs, hfs, room, mtype)`: adds a machine with an address from its pool.
/// Without an admin token, only while `allow_self_registration` is on. Registering the same
/// (hostname, MAC) again answers the existing machine, so a rebooting machine may retry. The
/// answer is the machine's IP address as a string, as prologin's mdb answered (its netboot
/// script reads it); the REST API answers the whole record.
async fn register(state: &AppState, who: Option<&Principal>, named: Map<String, Value>) -> Result<Reply, ApiError> {
    let snap = state.db.snapshot();
    let principal = match who {
        Some(p) if p.is_admin() => p.clone(),
        Some(p) if snap.registration_open(&keel_store::now_rfc3339()) => p.clone(),
        None if snap.registration_open(&keel_store::now_rfc3339()) => Principal::anonymous(),
        Some(p) => return Err(ApiError::Forbidden(format!("{} may not register machines", p.name))),
        None => {
            return Err(ApiError::Unauthorized(
                "self-registration is closed (allow_self_registration is off)",
            ))
        }
    };
    let mut named = named;
    named.remove("ip"); // the pool decides the address of a registered machine
    let mut patch = MachinePatch::from_fields(Fields::from_map(named, Strictness::Lenient))?;
    if !principal.is_admin() {
        patch = state.config.registration.admit(patch)?;
    }
    if let (Some(h), Some(mac)) = (&patch.hostname, &patch.mac) {
        if let Some(m) = snap.machine_by_mac(mac).filter(|m| &m.hostname == h) {
            return Reply::serialize(&m.ip.to_string());
        }
    }
    let m = state.db.create_machine(&principal, patch).await?;
    Reply::serialize(&m.ip.to_string())
}

/// Issue 19: RPC arguments and filters on any input (`fuzz_*`, see docs/security.md): no panic;
/// what parses is bounded.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn fuzz_rpc_arguments_and_filters(
            query in prop_oneof![any::<String>(), "([a-z_]{1,20}=[a-z0-9%,]{0,20}&?){0,5}"],
            body in prop_oneof![any::<Vec<u8>>(), "\\{\"(args|kwargs|hmac)\": ?[\\[\\]{}\"a-z0-9:, ]{0,40}\\}".prop_map(String::into_bytes)],
            json_body in any::<bool>(),
        ) {
            let mut headers = HeaderMap::new();
            if json_body {
                headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            }
            for verb in [Method::GET, Method::POST] {
                let Ok(args) = Args::parse(&headers, &verb, Some(&query), &body) else { continue };
                let Ok(named) = args.named(&[]) else { continue };
                if let Ok(filters) = parse_filters::<Machine>(named) {
                    for f in filters {
                        prop_assert!(f.values.len() <= keel_model::query::MAX_IN);
                        prop_assert!(f.values.iter().all(|v| v.len() <= keel_model::query::MAX_VALUE));
                    }
                }
            }
        }
    }
}
