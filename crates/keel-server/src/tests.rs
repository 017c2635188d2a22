//! Handler tests through `oneshot`: no socket, a real SQLite store in a temp dir.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use keel_model::input::{Fields, Strictness};
use keel_model::{MachinePatch, Pools, Principal};
use keel_store::{Db, SqliteStore};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{app, AppState, ServerConfig};

async fn state(dir: &tempfile::TempDir) -> AppState {
    let store = SqliteStore::open(&dir.path().join("keel.db")).await.unwrap();
    let db = Arc::new(Db::open(Arc::new(store), Pools::default()).await.unwrap());
    let patch = |v: Value| MachinePatch::from_fields(Fields::new(v, Strictness::Strict).unwrap()).unwrap();
    let who = Principal::system();
    db.create_machine(
        &who,
        patch(json!({"hostname": "gw", "mac": "02:00:00:00:00:01", "mtype": "service", "aliases": ["mdb"]})),
    )
    .await
    .unwrap();
    AppState::new(
        db,
        ServerConfig {
            open_reads: false,
            data_dir: dir.path().to_owned(),
            ..ServerConfig::default()
        },
    )
}

async fn send(st: &AppState, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app(st.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn get(uri: &str, host: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, host)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn rpc_is_routed_by_host_and_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    for (uri, host, status, kind) in [
        ("/call/query", "mdb.prolo", 200, "result"),
        ("/call/query", "localhost:8080", 200, "result"),
        ("/call/query", "udb.prolo", 200, "result"),
        ("/call/register", "udb.prolo", 404, "exception"),
        ("/mdb/call/query", "udb.prolo", 200, "result"),
        ("/udb/call/query", "mdb", 200, "result"),
        ("/udb/call/switches", "mdb", 404, "exception"),
        ("/call/nosuch", "mdb", 404, "exception"),
        ("/call/query?colour=red", "mdb", 400, "exception"),
    ] {
        let (got, body) = send(&st, get(uri, host)).await;
        assert_eq!(
            (got.as_u16(), body["type"].as_str()),
            (status, Some(kind)),
            "{uri} Host: {host} → {body}"
        );
    }
}

#[tokio::test]
async fn rpc_query_by_mac_accepts_any_notation() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    for mac in ["02:00:00:00:00:01", "02-00-00-00-00-01", "0200.0000.0001"] {
        let (_, body) = send(&st, get(&format!("/call/query?mac={mac}"), "mdb")).await;
        assert_eq!(body["data"][0]["hostname"], "gw", "{mac}");
    }
    let body = Body::from(json!({"args": [], "kwargs": {"aliases__contains": "mdb"}, "hmac": "x"}).to_string());
    let req = Request::post("/call/query")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap();
    let (status, body) = send(&st, req).await;
    assert_eq!(
        (status, body["data"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );
}

#[tokio::test]
async fn rest_refuses_anonymous_writes_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    let req = Request::post("/api/v1/machines").body(Body::from("{}")).unwrap();
    let resp = app(st.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(
        send(&st, get("/api/v1/machines", "x")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(&st, get("/api/v1/nothing", "x")).await.0, StatusCode::NOT_FOUND);
    let (status, body) = send(&st, get("/healthz", "x")).await;
    assert_eq!((status, body["machines"].as_u64()), (StatusCode::OK, Some(1)));
}

#[tokio::test]
async fn metrics_count_requests_by_route() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    send(&st, get("/call/query", "mdb")).await;
    let resp = app(st.clone()).oneshot(get("/metrics", "x")).await.unwrap();
    // What the encoder writes is OpenMetrics (it ends with `# EOF`), and says so.
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains(&format!(
            "keel_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    st.metrics.dns_answered(3);
    st.metrics.tftp_ended("sent");
    let resp = app(st.clone()).oneshot(get("/metrics", "x")).await.unwrap();
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    assert!(text.contains("keel_dns_answers_total{rcode=\"NXDOMAIN\"} 1"), "{text}");
    assert!(text.contains("keel_tftp_transfers_total{outcome=\"sent\"} 1"), "{text}");
    assert!(
        text.contains("keel_http_requests_total{route=\"/call/{method}\",method=\"GET\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("keel_machines 1"));
    assert!(text.contains("keel_last_seq 1"));
    assert!(text.contains("keel_http_request_duration_seconds_bucket"));
}

/// Issue 19: invented HTTP methods all count as `other`: they cannot make new metric series.
#[tokio::test]
async fn metric_labels_come_from_a_closed_set() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    for i in 0..30 {
        let req = Request::builder()
            .method(format!("BREW{i}").as_str())
            .uri("/call/query")
            .header(header::HOST, "mdb")
            .body(Body::empty())
            .unwrap();
        send(&st, req).await;
    }
    let resp = app(st.clone()).oneshot(get("/metrics", "x")).await.unwrap();
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    assert!(!text.contains("BREW"), "{text}");
    let other: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("method=\"other\"") && l.starts_with("keel_http_requests_total"))
        .collect();
    assert_eq!(other.len(), 1, "{text}");
    assert!(other[0].ends_with(" 30"), "{other:?}");
}

/// Wrong passwords for a login are throttled: after five, even the right one must wait.
#[tokio::test]
async fn password_guessing_is_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    let hash = keel_password::hash("Right-pass-1").unwrap();
    let patch = keel_model::UserPatch::from_fields(
        Fields::new(
            json!({"login": "alice", "group": "user", "password_hash": hash}),
            Strictness::Strict,
        )
        .unwrap(),
    )
    .unwrap();
    st.db.create_user(&Principal::system(), patch).await.unwrap();
    let try_pw = |old: &str| {
        let new = keel_password::hash("New-pass-22").unwrap();
        let body = json!({"login": "alice", "old_password": old, "new_password_hash": new}).to_string();
        Request::post("/api/v1/passwd")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    for _ in 0..5 {
        assert_eq!(send(&st, try_pw("wrong")).await.0, StatusCode::UNAUTHORIZED);
    }
    let resp = app(st.clone()).oneshot(try_pw("Right-pass-1")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key(header::RETRY_AFTER));
}

/// `TS:hex(HMAC-SHA256(secret, signed))`: a timeauth-shaped token over any text.
fn hmac_token(secret: &[u8], signed: &str, ts: i64) -> String {
    use hmac::Mac as _;
    let mut h = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    h.update(signed.as_bytes());
    format!("{ts}:{}", hex::encode(h.finalize().into_bytes()))
}

/// A token as prologin's `timeauth.generate_token(secret, message)` builds it: the message, then
/// the timestamp, under HMAC-SHA256; written from that format, not from keel's checker.
fn prologin_token(secret: &[u8], message: &str, ts: i64) -> String {
    hmac_token(secret, &format!("{message}{ts}"), ts)
}

/// Regression: the configuration structs derive `Debug`, and printed the presence, RPC and sync
/// secrets in clear; a `{:?}` of the configuration now shows none of them.
#[test]
fn config_debug_never_shows_secrets() {
    let mut config = crate::ServerConfig::default();
    config.presence.secret = Some("presence-s3cret".into());
    config.watch.subscriber_secret = Some("sync-s3cret".into());
    config.rpc_secret = Some(crate::rpc::RpcSecret {
        secret: "rpc-s3cret".into(),
        principal: Principal::system(),
    });
    let shown = format!("{config:?} {config:#?}");
    assert!(shown.contains("presence") && shown.contains("<redacted>"), "{shown}");
    for secret in ["presence-s3cret", "sync-s3cret", "rpc-s3cret"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

/// prologin's signed calls: a valid `hmac` (timestamp:HMAC-SHA256) acts as the configured principal;
/// a wrong, malformed or stale one is refused; none is an anonymous call as before.
#[tokio::test]
async fn rpc_hmac_signed_calls_act_as_the_configured_principal() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = state(&dir).await;
    let mut config = (*st.config).clone();
    config.rpc_secret = Some(crate::rpc::RpcSecret {
        secret: "s3cret".into(),
        principal: Principal {
            name: "netboot".into(),
            ..Principal::system()
        },
    });
    st.config = Arc::new(config);
    let sign = |ts: i64, msg: &str| prologin_token(b"s3cret", msg, ts);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let call = |hmac: String, host: &str| {
        let body = json!({"args": [host, "02:00:00:00:00:77", 1, 1, "alt", "user"], "kwargs": {}, "hmac": hmac});
        Request::post("/call/register")
            .header(header::HOST, "mdb.prolo")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    // Self-registration is off: unsigned is refused, wrongly signed too.
    assert_eq!(send(&st, call(String::new(), "r1")).await.0, StatusCode::UNAUTHORIZED);
    for bad in [
        sign(now, "register") + "00",
        format!("{now}:zz"),
        // Stale: prologin's window is 120 s.
        sign(now - 150, "register"),
        // Another method's token, keel's old timestamp-only form, the timestamp before the method.
        sign(now, "query"),
        sign(now, ""),
        hmac_token(b"s3cret", &format!("{now}register"), now),
        "nonsense".into(),
    ] {
        let (status, body) = send(&st, call(bad.clone(), "r1")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{bad}: {body}");
    }
    // prologin's form verifies, within its window (a token 100 s old still does).
    let (status, body) = send(&st, call(sign(now, "register"), "r1")).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (StatusCode::OK, Some("result")),
        "{body}"
    );
    let (status, _) = send(&st, call(sign(now - 100, "register"), "r1")).await;
    assert_eq!(status, StatusCode::OK, "the same machine again answers it");
    let logged = st.db.store().changes_since(0, 100).await.unwrap();
    assert_eq!(logged.last().unwrap().principal, "netboot");
}

/// Self-registration, while open, is limited per source address: a hostile machine cannot fill
/// the pools; other addresses are not affected.
#[tokio::test]
async fn self_registration_is_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    st.db
        .set_setting(&Principal::system(), "allow_self_registration", json!(true), Some(0))
        .await
        .unwrap();
    let call = |i: u32, peer: [u8; 4]| {
        let body = json!({"args": [format!("self{i}"), format!("02:00:00:00:09:{i:02x}"), 1, 1, "alt", "user"]});
        let mut r = Request::post("/call/register")
            .header(header::HOST, "mdb.prolo")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        r.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((peer, 4000))));
        r
    };
    for i in 0..crate::REGISTRATIONS_PER_MINUTE {
        assert_eq!(send(&st, call(i, [10, 0, 0, 66])).await.0, StatusCode::OK);
    }
    let (status, body) = send(&st, call(99, [10, 0, 0, 66])).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(
        send(&st, call(98, [10, 0, 0, 67])).await.0,
        StatusCode::OK,
        "another address"
    );
}

/// Issue 19: an anonymous machine registering itself (RPC `register`; keel-web's tests do the
/// iPXE form's `/register`) gets a `user` machine with one plain name, whatever it asks for. The
/// same request without the hostile part is taken.
#[tokio::test]
async fn self_registration_chooses_no_rights() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    st.db
        .set_setting(&Principal::system(), "allow_self_registration", json!(true), Some(0))
        .await
        .unwrap();
    let rpc = |kwargs: Value| {
        Request::post("/call/register")
            .header(header::HOST, "mdb.prolo")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"kwargs": kwargs}).to_string()))
            .unwrap()
    };
    let ok = json!({"hostname": "r01p01", "mac": "02:00:00:00:09:01", "rfs": 1, "hfs": 1, "room": "alt"});
    let (status, body) = send(&st, rpc(ok)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        st.db.snapshot().machine_by_name("r01p01").unwrap().mtype.as_str(),
        "user"
    );
    for (i, (field, value)) in [
        ("mtype", json!("orga")),
        ("aliases", json!("wpad")),
        ("aliases", json!("gw.prolo")),
        ("hostname", json!("evil.prolo")),
        ("is_faulty", json!(true)),
        ("boot", json!("local")),
    ]
    .into_iter()
    .enumerate()
    {
        let mut hostile =
            json!({"hostname": format!("r02p0{i}"), "mac": format!("02:00:00:00:0a:0{i}"), "room": "alt"});
        hostile[field] = value.clone();
        let (status, body) = send(&st, rpc(hostile)).await;
        assert_ne!(status, StatusCode::OK, "{field}={value}: {body}");
        assert_eq!(body["type"], "exception", "{field}={value}: {body}");
    }
}

/// Issue 19: a contestant's new hash carried shadow lines (`rounds=` was skipped unchecked) and
/// every host applied an `admin1` entry with no password. With the right old password the same
/// call with a plain hash is taken; the injected one is a 400 naming the field, nothing changed.
#[tokio::test]
async fn r19_a_contestants_new_hash_cannot_carry_shadow_lines() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    let hash = keel_password::hash("Right-pass-1").unwrap();
    let v = json!({"login": "zoe", "group": "user", "password_hash": hash});
    let patch = keel_model::UserPatch::from_fields(Fields::new(v, Strictness::Strict).unwrap()).unwrap();
    st.db.create_user(&Principal::system(), patch).await.unwrap();
    let change = |new: &str| {
        let body = json!({"login": "zoe", "old_password": "Right-pass-1", "new_password_hash": new});
        Request::post("/api/v1/passwd")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let tail = "$saltsalt$W8/of8d2LyqjgMBUekC8rz9KqwXuk/zM2UFVSqjBrgi3iOHzUpki1KXdE9sy4UjXzKwFKfQDgDGi8qHdDVLoh/";
    let injected = format!("$6$rounds=5000:::::::\nadmin1::19000:0:99999:7:::\nzz:{tail}");
    let (status, body) = send(&st, change(&injected)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("new_password_hash"), "{body}");
    assert_eq!(
        st.db.snapshot().user("zoe").unwrap().password_hash,
        hash,
        "nothing changed"
    );
    let plain = format!("$6$rounds=5000{tail}");
    assert_eq!(send(&st, change(&plain)).await.0, StatusCode::NO_CONTENT);
    assert_eq!(st.db.snapshot().user("zoe").unwrap().password_hash, plain);
}

/// Issue 19: guesses sent at once are each counted before they are checked: of 20 parallel
/// wrong tries, no more than the 5 free ones reach the password check.
#[tokio::test]
async fn parallel_guesses_are_counted_before_they_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    let hash = keel_password::hash("Right-pass-1").unwrap();
    let v = json!({"login": "alice", "group": "user", "password_hash": hash});
    let patch = keel_model::UserPatch::from_fields(Fields::new(v, Strictness::Strict).unwrap()).unwrap();
    st.db.create_user(&Principal::system(), patch).await.unwrap();
    let new = keel_password::hash("New-pass-22").unwrap();
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (st, new) = (st.clone(), new.clone());
        guesses.spawn(async move {
            let body = json!({"login": "alice", "old_password": format!("guess{i}"), "new_password_hash": new});
            let req = Request::post("/api/v1/passwd")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            send(&st, req).await.0
        });
    }
    let statuses = guesses.join_all().await;
    let checked = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let throttled = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((checked, throttled), (5, 15), "{statuses:?}");
}

/// With `[sync] subscriber_secret_file`, `/poll` wants prologin's timeauth token in `hmac`: the
/// text `None` (Python's `str(None)`: sync clients sign no message) then the timestamp, under
/// HMAC-SHA256, as prologin's timeauth.generate_token(secret) builds it.
#[tokio::test]
async fn poll_checks_the_subscriber_signature_when_a_secret_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    let open = app(st.clone()).oneshot(get("/poll", "mdb")).await.unwrap();
    assert_eq!(open.status(), StatusCode::OK, "no secret configured: open, as before");
    let mut config = (*st.config).clone();
    config.watch.subscriber_secret = Some("sync-s3cret".into());
    let st = AppState::new(st.db.clone(), config);
    let sign = |ts: i64, msg: &str| prologin_token(b"sync-s3cret", msg, ts);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let poll = |hmac: &str| {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("hmac", hmac)
            .finish();
        get(&format!("/poll?{q}"), "mdb")
    };
    let good = app(st.clone()).oneshot(poll(&sign(now, "None"))).await.unwrap();
    assert_eq!(good.status(), StatusCode::OK);
    drop(good);
    for bad in [
        String::new(),
        sign(now, ""),
        sign(now, "poll"),
        sign(now - 150, "None"),
        "x:y".into(),
    ] {
        let r = app(st.clone()).oneshot(poll(&bad)).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{bad:?}");
    }
    let unsigned = app(st.clone()).oneshot(get("/poll", "mdb")).await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::FORBIDDEN);
}

/// Issue 19: watch and `/poll` streams are bounded by `[watch] max_subscribers`: beyond it a new
/// one is a 503 at once; a closed one gives its slot back. Issue 31: anonymous streams fill
/// their half, never the streams with a token.
#[tokio::test]
async fn streams_beyond_max_subscribers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = state(&dir).await;
    let mut config = (*st.config).clone();
    config.watch.max_subscribers = 4;
    st = AppState::new(st.db.clone(), config);
    let poll = || get("/poll", "mdb");
    let first = app(st.clone()).oneshot(poll()).await.unwrap();
    let second = app(st.clone()).oneshot(poll()).await.unwrap();
    assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
    let third = app(st.clone()).oneshot(poll()).await.unwrap();
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (secret, _) = st
        .db
        .create_token(keel_store::NewToken {
            name: "watcher".into(),
            role: keel_model::Role::Readonly,
            facilities: vec![],
            host: None,
            expires: None,
        })
        .await
        .unwrap();
    let watch = Request::get("/api/v1/watch")
        .header(header::AUTHORIZATION, format!("Bearer {secret}"))
        .body(Body::empty())
        .unwrap();
    let with_token = app(st.clone()).oneshot(watch).await.unwrap();
    assert_eq!(
        with_token.status(),
        StatusCode::OK,
        "a stream with a token has its own share"
    );
    // Read the first stream's snapshot, so its task is past its first send and waits for
    // changes; then the client goes: its slot comes back without any change happening.
    let mut body = first.into_body().into_data_stream();
    futures_util::StreamExt::next(&mut body).await.unwrap().unwrap();
    drop(body);
    keel_testkit::eventually(10, "the closed stream's slot came back", async || {
        app(st.clone()).oneshot(poll()).await.unwrap().status() == StatusCode::OK
    })
    .await;
    drop(second);
}

/// udb `query_private` (prologin's authenticated clients): the public record and the hash, for
/// an admin token or a signed call only; mdb `ansible`: the inventory groups and hostvars.
#[tokio::test]
async fn query_private_is_for_admins_and_signed_calls_and_ansible_groups_the_machines() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    let who = Principal::system();
    let hash = keel_password::hash("alice-Pass-1").unwrap();
    let v = json!({"login": "alice", "group": "user", "password_hash": hash});
    let patch = keel_model::UserPatch::from_fields(Fields::new(v, Strictness::Strict).unwrap()).unwrap();
    st.db.create_user(&who, patch).await.unwrap();
    let token = |role: keel_model::Role| {
        let db = st.db.clone();
        async move {
            let new = keel_store::NewToken {
                name: format!("{role:?}"),
                role,
                facilities: vec![],
                host: None,
                expires: None,
            };
            db.create_token(new).await.unwrap().0
        }
    };
    let (admin, readonly) = (
        token(keel_model::Role::Admin).await,
        token(keel_model::Role::Readonly).await,
    );
    let call = |bearer: Option<&str>, hmac: Option<String>| {
        let body = json!({"args": [], "kwargs": {"login": "alice"}, "hmac": hmac});
        let mut r = Request::post("/call/query_private")
            .header(header::HOST, "udb.prolo")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(b) = bearer {
            r = r.header(header::AUTHORIZATION, format!("Bearer {b}"));
        }
        r.body(Body::from(body.to_string())).unwrap()
    };
    let (status, body) = send(&st, call(Some(&admin), None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rec = &body["data"][0];
    assert_eq!(rec["login"], "alice");
    assert!(rec["password_hash"].as_str().unwrap().starts_with("$6$"), "{rec}");
    assert!(rec.get("password").is_none(), "never a plaintext");
    assert_eq!(send(&st, call(None, None)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&st, call(Some(&readonly), None)).await.0, StatusCode::FORBIDDEN);
    // A facility's manager (a web application's sync) reads the hashes of the users its facility
    // receives, and no one else's: bob (orga) is not in `web`.
    let bob = json!({"login": "bob", "group": "orga", "password_hash": keel_password::hash("bob-Pass-1").unwrap()});
    let patch = keel_model::UserPatch::from_fields(Fields::new(bob, Strictness::Strict).unwrap()).unwrap();
    st.db.create_user(&who, patch).await.unwrap();
    let web = keel_model::Facility {
        name: "web".into(),
        managers: vec![keel_model::ManagerName::Token("Manager".into())],
        groups: vec![keel_model::Group::User],
        ..keel_model::Facility::default()
    };
    st.db.put_facility(&who, web, 0, &Default::default()).await.unwrap();
    let manager = token(keel_model::Role::Manager).await;
    let every = |bearer: String| {
        let mut r = call(Some(&bearer), None);
        *r.body_mut() = Body::from(json!({"args": [], "kwargs": {}}).to_string());
        r
    };
    let (status, body) = send(&st, every(manager)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let logins: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["login"].as_str())
        .collect();
    assert_eq!(logins, ["alice"]);
    assert!(body["data"][0]["password_hash"].as_str().unwrap().starts_with("$6$"));
    let (_, body) = send(&st, every(admin.clone())).await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2), "an admin reads both");
    // The public query never carries the hash.
    let (_, public) = send(&st, get("/call/query?login=alice", "udb.prolo")).await;
    assert!(public["data"][0].get("password_hash").is_none(), "{public}");
    // A call signed as prologin's clients sign it acts as the [rpc] principal (an admin).
    let mut config = (*st.config).clone();
    config.rpc_secret = Some(crate::rpc::RpcSecret {
        secret: "s3cret".into(),
        principal: Principal {
            name: "prologin-rpc".into(),
            ..Principal::system()
        },
    });
    let st = AppState::new(st.db.clone(), config);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let signed = prologin_token(b"s3cret", "query_private", now);
    let (status, body) = send(&st, call(None, Some(signed))).await;
    assert_eq!(
        (status, body["data"][0]["login"].as_str()),
        (StatusCode::OK, Some("alice"))
    );
    // ansible: groups per type, room, rfs and hfs; every machine's fields in hostvars.
    let (status, inv) = send(&st, get("/call/ansible", "mdb.prolo")).await;
    assert_eq!(status, StatusCode::OK);
    let inv = &inv["data"];
    assert_eq!(inv["all"]["hosts"], json!(["gw"]));
    assert_eq!(inv["service"]["hosts"], json!(["gw"]));
    assert!(inv.get("rfs_0").is_some() && inv.get("hfs_0").is_some(), "{inv}");
    assert_eq!(inv["_meta"]["hostvars"]["gw"]["mtype"], "service");
    assert_eq!(inv["_meta"]["hostvars"]["gw"]["aliases"], json!(["mdb"]));
}

/// prologin's RPC wire formats, each as its clients read it (prologin.rpc.client: a JSON object
/// with `type` "result" and the value in `data`, served as `application/json`; mdb's machine and
/// udb's user records as dicts with these keys; mdb's switches likewise). A key removed or
/// renamed here breaks a client that reads it; keel's extra keys (`faulty_reason`, `version`,
/// `hfs`) are ignored by them.
#[tokio::test]
async fn prologin_rpc_replies_keep_their_content_type_and_record_keys() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    let who = Principal::system();
    let v = json!({"login": "alice", "group": "user"});
    let patch = keel_model::UserPatch::from_fields(Fields::new(v, Strictness::Strict).unwrap()).unwrap();
    st.db.create_user(&who, patch).await.unwrap();
    let sw = json!({"name": "sw-a", "chassis": "00:1b:21:00:00:01", "room": "pasteur", "rfs": 1, "hfs": 2});
    st.db
        .create_switch(&who, Fields::new(sw, Strictness::Strict).unwrap())
        .await
        .unwrap();
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    for (uri, host, want) in [
        (
            "/call/query?hostname=gw",
            "mdb.prolo",
            vec![
                "aliases",
                "faulty_reason",
                "hfs",
                "hostname",
                "ip",
                "is_faulty",
                "is_faulty_details",
                "mac",
                "mtype",
                "rfs",
                "room",
                "version",
            ],
        ),
        (
            "/call/query?login=alice",
            "udb.prolo",
            vec![
                "firstname",
                "group",
                "hfs",
                "lastname",
                "login",
                "shell",
                "ssh_key",
                "uid",
            ],
        ),
        (
            "/call/switches",
            "mdb.prolo",
            vec!["chassis", "hfs", "name", "rfs", "room", "version"],
        ),
    ] {
        let resp = app(st.clone()).oneshot(get(uri, host)).await.unwrap();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json", "{uri}");
        let body: Value =
            serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap()).unwrap();
        assert_eq!(body["type"], "result", "{uri}: {body}");
        assert_eq!(keys(&body["data"][0]), want, "{uri}: {body}");
    }
    // An error is an `exception` object, as prologin's server raised it to the client.
    let (status, body) = send(&st, get("/call/nosuch", "mdb.prolo")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["type"], "exception", "{body}");
}

/// `GET /api/v1/destinations?facility=` reads one facility's range of keys: exactly its
/// destinations, not those of a facility whose name starts the same.
#[tokio::test]
async fn destinations_of_one_facility_are_exactly_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = state(&dir).await;
    let mut config = (*st.config).clone();
    config.open_reads = true;
    st.config = Arc::new(config);
    let who = Principal::system();
    let services = ["passwd".to_string()].into();
    for f in ["a", "ab", "b"] {
        let facility = keel_model::Facility {
            name: f.into(),
            services: vec!["passwd".into()],
            ..keel_model::Facility::default()
        };
        st.db.put_facility(&who, facility, 0, &services).await.unwrap();
        for h in ["h1", "h2"] {
            let d = keel_model::Destination {
                facility: f.into(),
                service: "passwd".into(),
                destination: format!("root@{h}.{f}.example.org"),
                channel: keel_model::Channel::Ssh,
                blocked: false,
                claimed_by: None,
                version: 0,
            };
            st.db.put_destination(&who, d, 0, &services).await.unwrap();
        }
    }
    let listed = |body: Value| -> Vec<String> {
        let list = body.as_array().cloned().unwrap_or_default();
        list.iter()
            .map(|d| d["destination"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let (status, all) = send(&st, get("/api/v1/destinations", "keel")).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(listed(all).len(), 6);
    let (status, a) = send(&st, get("/api/v1/destinations?facility=a&service=passwd", "keel")).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(listed(a), ["root@h1.a.example.org", "root@h2.a.example.org"]);
    let (_, none) = send(&st, get("/api/v1/destinations?facility=a&service=hosts", "keel")).await;
    assert!(listed(none).is_empty());
}

/// docs/api.md and the OpenAPI description name the same REST routes: each described path is in
/// docs/api.md (the REST table, or a section of its own), and each path of the REST table is
/// described.
#[test]
fn docs_api_md_names_every_described_route_and_no_other() {
    const API_MD: &str = include_str!("../../../docs/api.md");
    let doc: Value = serde_json::from_str(crate::openapi_description()).unwrap();
    let described: std::collections::BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let named = |p: &str| {
        [
            format!("`{p}`"),
            format!("`{p}?"),
            format!("/api/v1{p}`"),
            format!("/api/v1{p}?"),
            format!("/api/v1{p} "),
        ]
        .iter()
        .any(|s| API_MD.contains(s.as_str()))
    };
    let missing: Vec<&String> = described.iter().filter(|p| !named(p)).collect();
    assert!(missing.is_empty(), "described but not in docs/api.md: {missing:?}");
    let table = API_MD
        .split("| route | methods |")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    let in_table: Vec<String> = table
        .lines()
        .filter_map(|l| l.split('|').nth(1))
        .flat_map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(|t| t.split('?').next().unwrap_or(t).to_owned())
        })
        .filter(|t| t.starts_with('/'))
        .collect();
    let unknown: Vec<&String> = in_table.iter().filter(|p| !described.contains(*p)).collect();
    assert!(unknown.is_empty(), "in docs/api.md's table but not served: {unknown:?}");
}
