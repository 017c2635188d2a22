//! Presence and SSO handlers through `oneshot`, with the peer address set as a connection would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use keel_model::input::{Fields, Strictness};
use keel_model::{MachinePatch, Pools, Principal, ProofPolicy, UserPatch};
use keel_store::{Db, SqliteStore};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::presence::PresenceConfig;
use crate::{app, AppState, ServerConfig};

const SECRET: &str = "0123456789abcdef0123";

/// Each user's password on the test site: `pw-<login>`.
fn password(login: &str) -> String {
    format!("pw-{login}")
}

/// A site under the default `[presence] proof` (required): users have passwords.
async fn site(dir: &tempfile::TempDir, recovery: Duration) -> AppState {
    site_with(dir, recovery, ProofPolicy::Required).await
}

async fn site_with(dir: &tempfile::TempDir, recovery: Duration, proof: ProofPolicy) -> AppState {
    let store = SqliteStore::open(&dir.path().join("keel.db")).await.unwrap();
    let db = Arc::new(Db::open(Arc::new(store), Pools::default()).await.unwrap());
    let who = Principal::system();
    for (i, (name, t)) in [
        ("pc1", "user"),
        ("pc2", "user"),
        ("pc3", "user"),
        ("staff1", "orga"),
        ("screen", "service"),
    ]
    .iter()
    .enumerate()
    {
        let v = json!({"hostname": name, "mac": format!("02:00:00:00:01:0{i}"), "mtype": t, "room": "r1"});
        let patch = MachinePatch::from_fields(Fields::new(v, Strictness::Strict).unwrap()).unwrap();
        db.create_machine(&who, patch).await.unwrap();
    }
    for (login, group) in [("alice", "user"), ("bob", "user"), ("carol", "orga")] {
        let hash = keel_password::hash(&password(login)).unwrap();
        let v = json!({"login": login, "group": group, "password_hash": hash});
        let patch = UserPatch::from_fields(Fields::new(v, Strictness::Strict).unwrap()).unwrap();
        db.create_user(&who, patch).await.unwrap();
    }
    let mut config = ServerConfig {
        data_dir: dir.path().to_owned(),
        presence: PresenceConfig {
            recovery: Some(recovery),
            secret: Some(SECRET.into()),
            proof,
            ..PresenceConfig::default()
        },
        ..ServerConfig::default()
    };
    config.sso.overrides.insert("screen".into(), "carol".into());
    AppState::new(db, config)
}

fn ip(st: &AppState, host: &str) -> String {
    st.db.snapshot().machine_by_name(host).unwrap().ip.to_string()
}

fn from(peer: &str, mut req: Request<Body>) -> Request<Body> {
    let addr = SocketAddr::new(peer.parse().unwrap(), 40000);
    req.extensions_mut().insert(ConnectInfo(addr));
    req
}

fn post(peer: &str, uri: &str, body: Value, secret: &str) -> Request<Body> {
    from(
        peer,
        Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-keel-presence-secret", secret)
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
}

async fn send(st: &AppState, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app(st.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// What the PAM `auth` line does: the person's password for a proof (`None` if refused).
async fn prove(st: &AppState, login: &str, host: &str, pw: &str) -> Option<String> {
    let body = json!({"login": login, "hostname": host, "password": pw});
    let (status, body) = send(st, post(&ip(st, host), "/api/v1/proofs", body, SECRET)).await;
    (status == StatusCode::CREATED).then(|| body["proof"].as_str().unwrap().to_owned())
}

/// A login as a machine's PAM lines make it: `auth` (a proof, when the password is right),
/// then `session` with that proof.
async fn login(st: &AppState, login: &str, host: &str) -> (StatusCode, Value) {
    let proof = prove(st, login, host, &password(login)).await;
    let body = json!({"login": login, "hostname": host, "proof": proof});
    send(st, post(&ip(st, host), "/api/v1/sessions", body, SECRET)).await
}

/// A login with the machine secret alone, as keel took them before proofs.
async fn login_unproven(st: &AppState, login: &str, host: &str) -> (StatusCode, Value) {
    let body = json!({"login": login, "hostname": host});
    send(st, post(&ip(st, host), "/api/v1/sessions", body, SECRET)).await
}

#[tokio::test]
async fn each_refusal_is_a_423_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, Duration::ZERO).await;
    assert_eq!(login(&st, "alice", "pc1").await.0, StatusCode::CREATED);
    assert_eq!(login(&st, "alice", "pc1").await.0, StatusCode::OK, "a second terminal");
    for (who, host, reason) in [
        ("alice", "pc2", "logged_in_elsewhere"),
        ("bob", "pc1", "machine_in_use"),
        ("zed", "pc2", "unknown_user"),
        ("bob", "staff1", "not_a_user_machine"),
    ] {
        let (status, body) = login(&st, who, host).await;
        assert_eq!(status, StatusCode::LOCKED, "{who}@{host}: {body}");
        assert_eq!(body["reason"], reason, "{body}");
        assert!(body["error"].as_str().unwrap().len() > 10);
    }
    let (status, body) = send(
        &st,
        post(
            "10.9.9.9",
            "/api/v1/sessions",
            json!({"login": "bob", "hostname": "nope"}),
            SECRET,
        ),
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::LOCKED, Some("unknown_machine"))
    );
    // Staff may sit at a staff machine; the seat is then taken.
    assert_eq!(login(&st, "carol", "staff1").await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn a_machine_speaks_only_for_itself_and_with_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, Duration::ZERO).await;
    let body = json!({"login": "alice", "hostname": "pc1"});
    let pc2 = ip(&st, "pc2");
    let (status, _) = send(&st, post(&pc2, "/api/v1/sessions", body.clone(), SECRET)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "pc2 may not log someone in on pc1");
    let pc1 = ip(&st, "pc1");
    let (status, _) = send(&st, post(&pc1, "/api/v1/sessions", body.clone(), "wrong-secret-wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(login(&st, "alice", "pc1").await.0, StatusCode::CREATED);
    // pc2 cannot log alice out of pc1; pc1 can.
    let del = |peer: &str| {
        from(
            peer,
            Request::delete("/api/v1/sessions/alice")
                .header("x-keel-presence-secret", SECRET)
                .body(Body::empty())
                .unwrap(),
        )
    };
    assert_eq!(send(&st, del(&pc2)).await.0, StatusCode::FORBIDDEN);
    assert!(st.db.snapshot().session("alice").is_some());
    assert_eq!(send(&st, del(&pc1)).await.0, StatusCode::NO_CONTENT);
    assert!(st.db.snapshot().session("alice").is_none());
    assert_eq!(send(&st, del(&pc1)).await.0, StatusCode::NO_CONTENT, "twice is fine");
    assert_eq!(
        send(&st, del("10.9.9.9")).await.0,
        StatusCode::FORBIDDEN,
        "not a machine"
    );
    let anonymous = from(
        &pc1,
        Request::delete("/api/v1/sessions/alice").body(Body::empty()).unwrap(),
    );
    assert_eq!(send(&st, anonymous).await.0, StatusCode::UNAUTHORIZED, "no secret");
    // Hostile logins in the path: refused or harmless, never a 5xx.
    for login in ["..%2F..%2Fetc", "%C3%A9l%C3%A8ve", "a%00b"] {
        let req = from(
            &pc1,
            Request::delete(format!("/api/v1/sessions/{login}"))
                .header("x-keel-presence-secret", SECRET)
                .body(Body::empty())
                .unwrap(),
        );
        assert_eq!(send(&st, req).await.0, StatusCode::NO_CONTENT, "{login}");
    }
    // A body over the limit is refused before it is read.
    let huge = json!({"login": "alice", "hostname": "x".repeat(2 << 20)});
    assert_eq!(
        send(&st, post(&pc1, "/api/v1/sessions", huge, SECRET)).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Hostile bodies: unknown fields, wrong types, garbage.
    for bad in [
        json!({"login": "alice", "hostname": "pc1", "admin": true}),
        json!({"login": 3, "hostname": "pc1"}),
        json!("x"),
    ] {
        assert_eq!(
            send(&st, post(&pc1, "/api/v1/sessions", bad, SECRET)).await.0,
            StatusCode::BAD_REQUEST
        );
    }
}

#[tokio::test]
async fn concurrent_logins_are_decided_once() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, Duration::ZERO).await;
    // One user on three machines, and three users on one machine, all at once.
    let mut tasks = Vec::new();
    for (who, host) in [("alice", "pc1"), ("alice", "pc2"), ("alice", "pc3")] {
        let st = st.clone();
        tasks.push(tokio::spawn(async move { login(&st, who, host).await.0 }));
    }
    let created = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .filter(|s| *s.as_ref().unwrap() == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1);
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, Duration::ZERO).await;
    let mut tasks = Vec::new();
    for who in ["bob", "carol"] {
        let st = st.clone();
        tasks.push(tokio::spawn(async move { login(&st, who, "pc3").await.0 }));
    }
    let statuses: Vec<_> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::CREATED).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::LOCKED).count(),
        1,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn recovery_rebuilds_from_heartbeats_and_holds_logins() {
    let dir = tempfile::tempdir().unwrap();
    // Rebuilding takes the machine's word alone: only where proofs are off.
    let st = site_with(&dir, Duration::from_secs(60), ProofPolicy::Off).await;
    let (status, body) = login(&st, "alice", "pc1").await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::LOCKED, Some("recovering"))
    );
    let pc1 = ip(&st, "pc1");
    let hb = json!({"hostname": "pc1", "logins": ["alice", "bob"]});
    let (status, body) = send(&st, post(&pc1, "/api/v1/sessions/heartbeat", hb, SECRET)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rebuilt"], json!(["alice"]), "{body}");
    assert_eq!(body["refused"][0]["reason"], "machine_in_use", "{body}");
    assert_eq!(st.db.snapshot().session("alice").unwrap().hostname.as_str(), "pc1");
}

#[tokio::test]
async fn heartbeat_refreshes_only_existing_sessions_after_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, Duration::ZERO).await;
    assert_eq!(login(&st, "alice", "pc1").await.0, StatusCode::CREATED);
    let pc1 = ip(&st, "pc1");
    let hb = json!({"hostname": "pc1", "logins": ["alice", "bob"]});
    let (_, body) = send(&st, post(&pc1, "/api/v1/sessions/heartbeat", hb, SECRET)).await;
    assert_eq!(body["refreshed"], json!(["alice"]));
    assert_eq!(body["ignored"], json!(["bob"]));
    assert!(st.db.snapshot().session("bob").is_none());
}

fn sso_req(peer: &str, real_ip: Option<&str>, forged: bool) -> Request<Body> {
    let mut r = Request::get("/sso");
    if let Some(ip) = real_ip {
        r = r.header("x-real-ip", ip);
    }
    if forged {
        r = r.header("x-sso-user", "root");
    }
    from(peer, r.body(Body::empty()).unwrap())
}

async fn sso(st: &AppState, req: Request<Body>) -> (String, Option<String>) {
    let resp = app(st.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = |n: &str| resp.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    (h("x-sso-status").unwrap(), h("x-sso-user"))
}

#[tokio::test]
async fn sso_answers_each_status() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, Duration::ZERO).await;
    let pc1 = ip(&st, "pc1");
    let s = |x: &str| x.to_owned();
    assert_eq!(
        sso(&st, sso_req("127.0.0.1", None, false)).await,
        (s("missing header"), None)
    );
    // The header from an untrusted peer is not believed.
    assert_eq!(
        sso(&st, sso_req("10.1.1.1", Some(&pc1), false)).await,
        (s("missing header"), None)
    );
    assert_eq!(
        sso(&st, sso_req("127.0.0.1", Some("10.250.0.1"), false)).await,
        (s("unknown IP"), None)
    );
    assert_eq!(
        sso(&st, sso_req("127.0.0.1", Some("garbage"), false)).await,
        (s("missing header"), None)
    );
    assert_eq!(
        sso(&st, sso_req("127.0.0.1", Some(&pc1), true)).await,
        (s("logged-out machine"), None)
    );
    login(&st, "alice", "pc1").await;
    assert_eq!(
        sso(&st, sso_req("::1", Some(&pc1), true)).await,
        (s("authenticated"), Some(s("alice")))
    );
    let screen = ip(&st, "screen");
    assert_eq!(
        sso(&st, sso_req("127.0.0.1", Some(&screen), false)).await,
        (s("authenticated"), Some(s("carol")))
    );
}

/// Issue 31: with `[presence] proof`, the machine secret and address alone open no session — a
/// contestant who read the secret from the NFS root cannot log someone else in on their seat.
#[tokio::test]
async fn r31_the_machine_secret_alone_cannot_open_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, Duration::ZERO).await;
    let (status, body) = login_unproven(&st, "alice", "pc1").await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::LOCKED, Some("proof_needed")),
        "{body}"
    );
    // A wrong password gets no proof; an unknown login neither, with the same answer.
    assert!(prove(&st, "alice", "pc1", "not-her-password").await.is_none());
    assert!(prove(&st, "zed", "pc1", "pw-zed").await.is_none());
    // A proof is for its login and its machine, once.
    let proof = prove(&st, "alice", "pc1", &password("alice")).await.unwrap();
    let with = |login: &str, host: &str, proof: &str| {
        let body = json!({"login": login, "hostname": host, "proof": proof});
        post(&ip(&st, host), "/api/v1/sessions", body, SECRET)
    };
    let (status, body) = send(&st, with("bob", "pc1", &proof)).await;
    assert_eq!(
        body["reason"], "proof_needed",
        "alice's proof is not bob's: {status} {body}"
    );
    let (status, body) = send(&st, with("alice", "pc2", &proof)).await;
    assert_eq!(
        body["reason"], "proof_needed",
        "nor for another machine: {status} {body}"
    );
    // Its last hex digit changed (to another digit: one in sixteen ends in 0 already).
    let last = if proof.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &proof[..proof.len() - 1]);
    assert_ne!(forged, proof);
    let (status, body) = send(&st, with("alice", "pc1", &forged)).await;
    assert_eq!(
        body["reason"], "proof_needed",
        "a changed proof is nobody's: {status} {body}"
    );
    assert_eq!(send(&st, with("alice", "pc1", &proof)).await.0, StatusCode::CREATED);
    assert!(st.db.snapshot().session("alice").unwrap().proven);
    // Taken once: after a logout, the same proof opens nothing.
    let pc1 = ip(&st, "pc1");
    let del = from(
        &pc1,
        Request::delete("/api/v1/sessions/alice")
            .header("x-keel-presence-secret", SECRET)
            .body(Body::empty())
            .unwrap(),
    );
    assert_eq!(send(&st, del).await.0, StatusCode::NO_CONTENT);
    let (status, body) = send(&st, with("alice", "pc1", &proof)).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::LOCKED, Some("proof_needed"))
    );
    // Another machine cannot ask for a proof for pc1, even with the right password.
    let body = json!({"login": "alice", "hostname": "pc1", "password": password("alice")});
    let (status, _) = send(&st, post(&ip(&st, "pc2"), "/api/v1/proofs", body, SECRET)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Sessions opened on the machine's word alone (before `[presence] proof` was turned on) are
/// neither kept by heartbeats nor vouched for by the SSO; a proven login on the same seat
/// proves them.
#[tokio::test]
async fn heartbeats_and_sso_keep_only_proven_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let st = site_with(&dir, Duration::ZERO, ProofPolicy::Off).await;
    assert_eq!(login_unproven(&st, "alice", "pc1").await.0, StatusCode::CREATED);
    let pc1 = ip(&st, "pc1");
    assert_eq!(
        sso(&st, sso_req("127.0.0.1", Some(&pc1), false)).await.0,
        "authenticated"
    );
    st.presence.reconfigure(PresenceConfig {
        proof: ProofPolicy::Required,
        ..(*st.presence.config()).clone()
    });
    let hb = json!({"hostname": "pc1", "logins": ["alice"]});
    let (_, body) = send(&st, post(&pc1, "/api/v1/sessions/heartbeat", hb.clone(), SECRET)).await;
    assert_eq!(
        (body["refreshed"].clone(), body["unproven"].clone()),
        (json!([]), json!(["alice"])),
        "{body}"
    );
    assert_eq!(
        sso(&st, sso_req("127.0.0.1", Some(&pc1), false)).await.0,
        "logged-out machine"
    );
    assert_eq!(
        login(&st, "alice", "pc1").await.0,
        StatusCode::OK,
        "the same seat, now proven"
    );
    let (_, body) = send(&st, post(&pc1, "/api/v1/sessions/heartbeat", hb, SECRET)).await;
    assert_eq!(body["refreshed"], json!(["alice"]), "{body}");
    assert_eq!(
        sso(&st, sso_req("127.0.0.1", Some(&pc1), false)).await.0,
        "authenticated"
    );
}

/// `password`: a user with no password (keys, Kerberos) is logged in on the machine's word; a
/// user with one needs its proof. Heartbeats never rebuild a session that needs a proof.
#[tokio::test]
async fn the_password_policy_asks_proof_of_users_who_have_one() {
    let dir = tempfile::tempdir().unwrap();
    let st = site_with(&dir, Duration::from_secs(60), ProofPolicy::Password).await;
    let who = Principal::system();
    let v = json!({"login": "dan", "group": "orga"});
    let patch = UserPatch::from_fields(Fields::new(v, Strictness::Strict).unwrap()).unwrap();
    st.db.create_user(&who, patch).await.unwrap();
    let pc1 = ip(&st, "pc1");
    let hb = json!({"hostname": "pc1", "logins": ["alice"]});
    let (_, body) = send(&st, post(&pc1, "/api/v1/sessions/heartbeat", hb, SECRET)).await;
    assert_eq!(body["refused"][0]["reason"], "proof_needed", "{body}");
    let staff1 = ip(&st, "staff1");
    let hb = json!({"hostname": "staff1", "logins": ["dan"]});
    let (_, body) = send(&st, post(&staff1, "/api/v1/sessions/heartbeat", hb, SECRET)).await;
    assert_eq!(body["rebuilt"], json!(["dan"]), "{body}");
}

/// A login may be `heartbeat`: its logout is not eaten by the heartbeat's route (405 before).
#[tokio::test]
async fn r31_a_user_named_heartbeat_can_be_logged_out() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, Duration::ZERO).await;
    let who = Principal::system();
    let hash = keel_password::hash(&password("heartbeat")).unwrap();
    let v = json!({"login": "heartbeat", "group": "orga", "password_hash": hash});
    let patch = UserPatch::from_fields(Fields::new(v, Strictness::Strict).unwrap()).unwrap();
    st.db.create_user(&who, patch).await.unwrap();
    assert_eq!(login(&st, "heartbeat", "staff1").await.0, StatusCode::CREATED);
    let del = from(
        &ip(&st, "staff1"),
        Request::delete("/api/v1/sessions/heartbeat")
            .header("x-keel-presence-secret", SECRET)
            .body(Body::empty())
            .unwrap(),
    );
    assert_eq!(send(&st, del).await.0, StatusCode::NO_CONTENT);
    assert!(st.db.snapshot().session("heartbeat").is_none());
}

/// Issue 31: loopback is `[sso]`'s proxy (nginx on keel's host), not presence's: a local user on
/// keel's host with the presence secret and an `X-Real-IP` header is no machine, unless
/// `[presence] trusted_proxies` lists them.
#[tokio::test]
async fn r31_loopback_speaks_for_no_machine_unless_presence_trusts_it() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, Duration::ZERO).await;
    let pc1 = ip(&st, "pc1");
    let through = |peer: &str| {
        let body = json!({"login": "alice", "hostname": "pc1", "password": password("alice")});
        let mut req = post(peer, "/api/v1/proofs", body, SECRET);
        req.headers_mut().insert("x-real-ip", pc1.parse().unwrap());
        req
    };
    assert_eq!(send(&st, through("127.0.0.1")).await.0, StatusCode::FORBIDDEN);
    st.presence.reconfigure(PresenceConfig {
        client_addr: crate::presence::ClientAddrConfig {
            trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
            ..crate::sso::SsoConfig::default().client_addr()
        },
        ..(*st.presence.config()).clone()
    });
    assert_eq!(
        send(&st, through("127.0.0.1")).await.0,
        StatusCode::CREATED,
        "a listed proxy"
    );
    assert_eq!(
        send(&st, through("127.0.0.2")).await.0,
        StatusCode::FORBIDDEN,
        "and only it"
    );
}
