//! The web pages through `oneshot`: the login dance (double-submit token, session cookie), roles,
//! CSRF, nginx's SSO when trusted, redirects that stay on keel.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use keel_model::input::{Fields, Strictness};
use keel_model::{Facility, Pools, Principal, UserPatch};
use keel_store::{Db, SqliteStore};
use serde_json::json;
use tower::ServiceExt;

use keel_server::{AppState, ServerConfig};

use crate::{app, Config, WebConfig, WebState};

async fn site(dir: &tempfile::TempDir, trust_sso: bool) -> WebState {
    let store = SqliteStore::open(&dir.path().join("keel.db")).await.unwrap();
    let db = Arc::new(Db::open(Arc::new(store), Pools::default()).await.unwrap());
    let who = Principal::system();
    let hash = keel_password::hash("Pass-word-1").unwrap();
    for (login, group) in [("root1", "root"), ("mgr", "orga"), ("zoe", "user")] {
        let v = json!({"login": login, "group": group, "password_hash": hash});
        let patch = UserPatch::from_fields(Fields::new(v, Strictness::Strict).unwrap()).unwrap();
        db.create_user(&who, patch).await.unwrap();
    }
    let services = keel_gen::BuiltIn::ALL.iter().map(|b| b.name().to_owned()).collect();
    for (name, managers) in [("fa", vec!["user:mgr".parse().unwrap()]), ("fb", vec![])] {
        let f = Facility {
            name: name.into(),
            managers,
            groups: Vec::new(),
            members: Vec::new(),
            services: vec!["hosts".into()],
            blocked: Vec::new(),
            hfs: None,
            version: 0,
        };
        db.put_facility(&who, f, 0, &services).await.unwrap();
    }
    state_on(dir, db, trust_sso)
}

/// Another server (or the same one restarted) on the site's database.
async fn reopened(dir: &tempfile::TempDir, trust_sso: bool) -> WebState {
    let store = SqliteStore::open(&dir.path().join("keel.db")).await.unwrap();
    let db = Arc::new(Db::open(Arc::new(store), Pools::default()).await.unwrap());
    state_on(dir, db, trust_sso)
}

fn state_on(dir: &tempfile::TempDir, db: Arc<Db>, trust_sso: bool) -> WebState {
    let config = ServerConfig {
        data_dir: dir.path().to_owned(),
        ..ServerConfig::default()
    };
    let pages = Config {
        web: WebConfig {
            trust_sso,
            sso_proxies: vec!["127.0.0.1/32".parse().unwrap()],
            ..WebConfig::default()
        },
        ..Config::default()
    };
    WebState::new(AppState::new(db, config), pages)
}

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    location: String,
    cookies: Vec<String>,
    body: String,
}

async fn send(st: &WebState, req: Request<Body>) -> Resp {
    let resp = app(st.clone()).oneshot(req).await.unwrap();
    let h = |n| {
        resp.headers()
            .get(n)
            .map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let location = h(header::LOCATION).unwrap_or_default();
    let cookies = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    Resp {
        status,
        location,
        cookies,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn get(uri: &str, cookie: &str) -> Request<Body> {
    let mut r = Request::get(uri)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    r.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 5000))));
    r
}

fn post(uri: &str, cookie: &str, form: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .unwrap()
}

/// `r` as nginx's SSO passes it on: the login in `X-SSO-User`, from `peer`.
fn via_sso(mut r: Request<Body>, login: &str, peer: [u8; 4]) -> Request<Body> {
    r.headers_mut().insert("x-sso-user", login.parse().unwrap());
    r.extensions_mut().insert(ConnectInfo(SocketAddr::from((peer, 5000))));
    r
}

fn cookie_value(cookies: &[String], name: &str) -> String {
    cookies
        .iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap().to_owned())
        .unwrap_or_default()
}

/// Logs in; the session cookie, or the login page's answer when refused.
async fn login(st: &WebState, who: &str, next: &str) -> Result<(String, String), Resp> {
    let page = send(st, get("/login", "")).await;
    let token = cookie_value(&page.cookies, "keel_login");
    assert!(page.body.contains(&token));
    let form = format!("csrf={token}&login={who}&password=Pass-word-1&next={next}");
    let r = send(st, post("/login", &format!("keel_login={token}"), &form)).await;
    if r.status != StatusCode::SEE_OTHER {
        return Err(r);
    }
    let session = cookie_value(&r.cookies, "keel_session");
    assert!(r
        .cookies
        .iter()
        .any(|c| c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure")));
    Ok((format!("keel_session={session}"), r.location))
}

fn csrf_of(body: &str) -> String {
    body.split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

/// Issue 32: self-registration turned on from the settings page for some hours holds its end time
/// and shows it; contest_mode has no such choice.
#[tokio::test]
async fn self_registration_is_turned_on_for_hours_from_the_settings_page() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, false).await;
    let (cookie, _) = login(&st, "root1", "/").await.unwrap();
    let page = send(&st, get("/settings", &cookie)).await;
    assert_eq!(page.body.matches("name=\"for_hours\"").count(), 1, "{}", page.body);
    let csrf = csrf_of(&page.body);
    let form = format!("csrf={csrf}&key=allow_self_registration&version=0&value=on&for_hours=2");
    assert_eq!(
        send(&st, post("/settings", &cookie, &form)).await.status,
        StatusCode::SEE_OTHER
    );
    let s = st.app.db.snapshot().setting("allow_self_registration").unwrap();
    let end = s.until().unwrap().to_owned();
    assert!(s.on_at(&keel_store::now_rfc3339()));
    let hours = |t: &str| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap();
    let left = hours(&end) - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::minutes(119) && left <= time::Duration::hours(2),
        "{left}"
    );
    let page = send(&st, get("/settings", &cookie)).await;
    assert!(
        page.body
            .contains(&format!("until {} {} UTC", &end[..10], &end[11..16])),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn managers_see_and_act_on_their_facilities_only() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, false).await;
    let (cookie, to) = login(&st, "mgr", "%2Fmachines").await.unwrap();
    assert_eq!(to, "/machines");
    assert_eq!(send(&st, get("/machines", &cookie)).await.status, StatusCode::FORBIDDEN);
    let page = send(&st, get("/propagation", &cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Force all of fa") && !page.body.contains("Force all of fb"));
    let csrf = csrf_of(&page.body);
    let r = send(
        &st,
        post("/propagation/force", &cookie, &format!("csrf={csrf}&facility=fb")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &st,
        post(
            "/propagation/block",
            &cookie,
            &format!("csrf={csrf}&facility=fa&service=hosts&blocked=on"),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(st
        .app
        .db
        .snapshot()
        .facility("fa")
        .unwrap()
        .blocked
        .contains(&"hosts".to_owned()));
    // Without the token, nothing happens.
    let r = send(&st, post("/propagation/block", &cookie, "facility=fa&service=hosts")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(st
        .app
        .db
        .snapshot()
        .facility("fa")
        .unwrap()
        .blocked
        .contains(&"hosts".to_owned()));
}

#[tokio::test]
async fn contestants_and_strangers_are_refused_and_redirects_stay_on_keel() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, false).await;
    let refused = login(&st, "zoe", "%2F").await.unwrap_err();
    assert_eq!(refused.status, StatusCode::OK);
    assert!(refused.body.contains("for admins and facility managers"));
    for evil in [
        "%2F%2Fevil.example",
        "%2F%09%2Fevil.example",
        "%2F%5Cevil.example",
        "https%3A%2F%2Fevil.example",
    ] {
        let (_, to) = login(&st, "root1", evil).await.unwrap();
        assert_eq!(to, "/", "{evil}: an open redirect would send root elsewhere");
    }
    // No session: the login page, remembering where to go.
    let r = send(&st, get("/users?q=a", "")).await;
    assert_eq!(
        (r.status, r.location.as_str()),
        (StatusCode::SEE_OTHER, "/login?next=%2Fusers%3Fq%3Da")
    );
    // A forged or stale session cookie is no session.
    let r = send(&st, get("/users", "keel_session=0123456789")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    // The login form itself needs its token.
    let r = send(&st, post("/login", "", "login=root1&password=Pass-word-1")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn nginx_sso_login_is_taken_only_when_trusted_and_from_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, true).await;
    let sso = |login: &str, peer: [u8; 4]| via_sso(get("/users", ""), login, peer);
    let page = send(&st, sso("root1", [127, 0, 0, 1])).await;
    assert_eq!(page.status, StatusCode::OK);
    // Its forms work with the derived token, and only with it.
    let csrf = csrf_of(&page.body);
    let ok = post("/users/new", "", &format!("csrf={csrf}&login=newbie&group=user"));
    assert_eq!(
        send(&st, via_sso(ok, "root1", [127, 0, 0, 1])).await.status,
        StatusCode::SEE_OTHER
    );
    assert!(st.app.db.snapshot().user("newbie").is_some());
    assert_eq!(
        send(&st, sso("root1", [10, 0, 0, 9])).await.status,
        StatusCode::SEE_OTHER,
        "not from the proxy"
    );
    assert_eq!(
        send(&st, sso("zoe", [127, 0, 0, 1])).await.status,
        StatusCode::SEE_OTHER,
        "not an admin"
    );
}

#[tokio::test]
async fn wrong_passwords_are_throttled_on_the_login_page() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, false).await;
    let page = send(&st, get("/login", "")).await;
    let token = cookie_value(&page.cookies, "keel_login");
    for _ in 0..5 {
        let r = send(
            &st,
            post(
                "/login",
                &format!("keel_login={token}"),
                &format!("csrf={token}&login=root1&password=x"),
            ),
        )
        .await;
        assert!(r.body.contains("Wrong login or password."));
    }
    let form = format!("csrf={token}&login=root1&password=Pass-word-1");
    let r = send(&st, post("/login", &format!("keel_login={token}"), &form)).await;
    assert!(r.body.contains("Too many wrong passwords"), "{}", r.body);
    // The count is the database's: a restarted server (or another one on it) keeps it.
    let other = reopened(&dir, false).await;
    let r = send(&other, post("/login", &format!("keel_login={token}"), &form)).await;
    assert!(r.body.contains("Too many wrong passwords"), "{}", r.body);
}

/// Sessions live in the database: a restart (or another server on it) knows them, logging out on
/// one ends them on all, and SSO forms check out whichever server serves the page and the form.
#[tokio::test]
async fn sessions_outlive_a_restart_and_end_everywhere_at_logout() {
    let dir = tempfile::tempdir().unwrap();
    let a = site(&dir, true).await;
    let (cookie, _) = login(&a, "root1", "/users").await.unwrap();
    let b = reopened(&dir, true).await;
    let page = send(&b, get("/users", &cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // The database holds only the secret's digest: presenting that is no session.
    let secret = cookie.trim_start_matches("keel_session=");
    let stored = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(secret.as_bytes()))
    };
    assert!(a.app.db.store().web_session(&stored).await.unwrap().is_some());
    let forged = send(&a, get("/users", &format!("keel_session={stored}"))).await;
    assert_eq!(forged.status, StatusCode::SEE_OTHER);
    assert_eq!(
        send(&a, get("/users", "keel_session=")).await.status,
        StatusCode::SEE_OTHER
    );
    // Log out on b: a forgets the session too.
    let csrf = csrf_of(&page.body);
    let out = send(&b, post("/logout", &cookie, &format!("csrf={csrf}"))).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(send(&a, get("/users", &cookie)).await.status, StatusCode::SEE_OTHER);
    // nginx's SSO: the page from a, its form posted to b.
    let page = send(&a, via_sso(get("/users", ""), "root1", [127, 0, 0, 1])).await;
    let csrf = csrf_of(&page.body);
    let form = post("/users/new", "", &format!("csrf={csrf}&login=viab&group=user"));
    assert_eq!(
        send(&b, via_sso(form, "root1", [127, 0, 0, 1])).await.status,
        StatusCode::SEE_OTHER
    );
    assert!(b.app.db.snapshot().user("viab").is_some());
}

/// Issue 19: a web session holds no role of its own: the user's is read on every request, so a
/// deleted admin, or a manager no facility names any more, is out at their next click.
#[tokio::test]
async fn a_session_loses_its_rights_with_its_user() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, false).await;
    let (root, _) = login(&st, "root1", "/users").await.unwrap();
    let (mgr, _) = login(&st, "mgr", "/propagation").await.unwrap();
    assert_eq!(send(&st, get("/users", &root)).await.status, StatusCode::OK);
    assert_eq!(send(&st, get("/propagation", &mgr)).await.status, StatusCode::OK);
    let who = Principal::system();
    let v = st.app.db.snapshot().user("root1").unwrap().version;
    st.app.db.delete_user(&who, "root1", v).await.unwrap();
    assert_eq!(send(&st, get("/users", &root)).await.status, StatusCode::SEE_OTHER);
    let mut fa = st.app.db.snapshot().facility("fa").unwrap().clone();
    let v = fa.version;
    fa.managers.clear();
    let services = keel_gen::BuiltIn::ALL.iter().map(|b| b.name().to_owned()).collect();
    st.app.db.put_facility(&who, fa, v, &services).await.unwrap();
    assert_eq!(send(&st, get("/propagation", &mgr)).await.status, StatusCode::SEE_OTHER);
}

/// Issue 31: one principal namespace. A facility that lists the *token* `mgr` (`token:mgr`, or a
/// bare `mgr` as facilities listed tokens before) does not make the *user* `mgr` its manager on
/// these pages; `user:mgr` does.
#[tokio::test]
async fn r31_a_login_spelled_like_a_managers_token_manages_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, false).await;
    assert!(login(&st, "mgr", "/propagation").await.is_ok(), "user:mgr manages fa");
    let who = Principal::system();
    let services: std::collections::BTreeSet<String> =
        keel_gen::BuiltIn::ALL.iter().map(|b| b.name().to_owned()).collect();
    for spelled in ["token:mgr", "mgr"] {
        let mut fa = st.app.db.snapshot().facility("fa").unwrap().clone();
        let v = fa.version;
        fa.managers = vec![spelled.parse().unwrap()];
        st.app.db.put_facility(&who, fa, v, &services).await.unwrap();
        let refused = login(&st, "mgr", "/propagation").await.unwrap_err();
        assert!(refused.body.contains("for admins and facility managers"), "{spelled}");
    }
    // The facility's record says which namespace each manager is in.
    let stored = serde_json::to_value(st.app.db.snapshot().facility("fa").unwrap()).unwrap();
    assert_eq!(stored["managers"], json!(["token:mgr"]));
}

/// The fuzz tests' generator: `PROPTEST_CASES` values of `strategy` (without shrinking: a failure
/// prints the value).
fn fuzz_values<S: proptest::strategy::Strategy>(strategy: S) -> impl Iterator<Item = S::Value> {
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::default();
    (0..runner.config().cases).map(move |_| strategy.new_tree(&mut runner).unwrap().current())
}

/// Issue 31: every field a user or an API client sets, shown on the pages, is escaped. Each case
/// writes a value — a unique marker, then markup (`<>"'&`, spaces, `=`, `/`) — into the first
/// name, last name or shell of a user, or the name of the token that made the change; the pages
/// that show them must hold its escaped form and never the raw one.
#[tokio::test]
async fn fuzz_web_fields_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, false).await;
    let (cookie, _) = login(&st, "root1", "/").await.unwrap();
    // Ends with a letter: a value ending in `&` would be a prefix of its own escaped form.
    let markup = "[<>\"'&][<>\"'& a-z=/]{0,24}z";
    for (i, (field, markup)) in fuzz_values((0u8..4, markup)).enumerate() {
        let marker = format!("fz{i}q");
        let value = match field {
            2 => format!("/{marker}{}", markup.replace(' ', "")),
            // The model trims names: what it stores is what the pages must show.
            _ => format!("{marker}{}", markup.trim_end()),
        };
        let mut who = Principal::token("fuzz", keel_model::Role::Admin);
        let mut patch = UserPatch::default();
        match field {
            0 => patch.firstname = Some(value.clone()),
            1 => patch.lastname = Some(value.clone()),
            2 => patch.shell = Some(value.clone()),
            _ => {
                who.name.clone_from(&value);
                // Something else changes, so that there is a change to log (its name without the
                // marker, which the markup of the page around it would follow).
                patch.firstname = Some(format!("n{i}"));
            }
        }
        let version = st.app.db.snapshot().user("zoe").unwrap().version;
        st.app.db.edit_user(&who, "zoe", version, patch).await.unwrap();
        let escaped = askama::filters::escape(&value, askama::filters::Html)
            .unwrap()
            .to_string();
        let mut shown = false;
        // The page that shows the field, and every page every 16th case (the change log is the
        // costly one).
        let pages: &[&str] = match (i % 16, field) {
            (0, _) => &["/users/zoe", "/users", "/log"],
            (_, 3) => &["/log"],
            _ => &["/users/zoe"],
        };
        for page in pages {
            let body = send(&st, get(page, &cookie)).await.body;
            if let Some(at) = body.find(&value) {
                let around = &body[at.saturating_sub(200)..(at + 200).min(body.len())];
                panic!("{page} shows {value:?} raw: …{around}…");
            }
            shown |= body.contains(&escaped);
        }
        assert!(shown, "{value:?} is shown, escaped, on some page");
    }
}

/// What the refusal page of a form without its token says.
const CSRF_REFUSED: &str = "CSRF token missing or wrong";

/// Issue 31: every form of the pages needs its own CSRF token. Each case posts a form of random
/// fields to one of the pages' forms with a session cookie (or, for the login and password
/// forms, the login cookie) and a token that is not the form's — absent, empty, random, another
/// session's, the right one cut, changed or lengthened: 403, and nothing changes. The same forms
/// with the right token get past the check.
#[tokio::test]
async fn fuzz_web_forms_need_their_token() {
    use proptest::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let st = site(&dir, false).await;
    let who = Principal::system();
    let m = json!({"hostname": "pc1", "mac": "02:00:00:00:00:01", "mtype": "user", "room": "r1"});
    let patch = keel_model::MachinePatch::from_fields(Fields::new(m, Strictness::Strict).unwrap()).unwrap();
    st.app.db.create_machine(&who, patch).await.unwrap();
    let (cookie, _) = login(&st, "root1", "/").await.unwrap();
    let (other, _) = login(&st, "root1", "/").await.unwrap();
    let token_of = |cookie: &str| {
        let st = st.clone();
        let cookie = cookie.to_owned();
        async move { csrf_of(&send(&st, get("/users/new", &cookie)).await.body) }
    };
    let (right, others) = (token_of(&cookie).await, token_of(&other).await);
    assert_ne!(right, others);
    let page = send(&st, get("/login", "")).await;
    let login_token = cookie_value(&page.cookies, "keel_login");
    let forms = [
        "/machines/new",
        "/machines/bulk",
        "/machines/pc1",
        "/machines/pc1/delete",
        "/users/new",
        "/users/zoe",
        "/users/zoe/reset",
        "/switches/new",
        "/switches/sw1",
        "/settings",
        "/propagation/force",
        "/propagation/block",
        "/logout",
        "/login",
        "/password",
    ];
    let field = "csrf|login|password|new|again|old|hostname|mac|room|mtype|firstname|group|key|value|facility|service|blocked|[a-z]{1,6}";
    let fields = proptest::collection::vec((field, ".{0,12}"), 0..6);
    let bad_token = |right: &str, others: &str| {
        let (right, others) = (right.to_owned(), others.to_owned());
        prop_oneof![
            Just(None),
            Just(Some(String::new())),
            "[0-9a-f]{0,80}".prop_map(Some),
            Just(Some(others)),
            (0..right.len()).prop_map({
                let r = right.clone();
                move |n| Some(r[..n].to_owned())
            }),
            (0..right.len(), "[g-z]").prop_map({
                let r = right.clone();
                move |(i, c)| Some(format!("{}{c}{}", &r[..i], &r[i + 1..]))
            }),
            "[0-9a-f]{1,4}".prop_map(move |s| Some(format!("{right}{s}"))),
        ]
    };
    let seq = st.app.db.snapshot().seq();
    let cases = (
        0..forms.len(),
        fields,
        bad_token(&right, &others),
        bad_token(&login_token, &others),
    );
    for (form, fields, bad, bad_login) in fuzz_values(cases) {
        let path = forms[form];
        let (cookies, token) = match path {
            "/login" | "/password" => (format!("keel_login={login_token}"), bad_login),
            _ => (cookie.clone(), bad),
        };
        let mut body = form_urlencoded::Serializer::new(String::new());
        if let Some(t) = &token {
            body.append_pair("csrf", t);
        }
        for (k, v) in fields.iter().filter(|(k, _)| k != "csrf") {
            body.append_pair(k, v);
        }
        let r = send(&st, post(path, &cookies, &body.finish())).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path} with {token:?}: {}", r.body);
        assert!(
            r.body.contains(CSRF_REFUSED),
            "{path}: refused, but not for its token: {}",
            r.body
        );
    }
    assert_eq!(st.app.db.snapshot().seq(), seq, "a refused form changed something");
    // With the form's own token, each form gets past the check (the logout last: it ends the
    // session).
    for path in forms {
        let (cookies, token) = match path {
            "/login" | "/password" => (format!("keel_login={login_token}"), &login_token),
            _ => (cookie.clone(), &right),
        };
        let r = send(&st, post(path, &cookies, &format!("csrf={token}"))).await;
        assert!(!r.body.contains(CSRF_REFUSED), "{path} with its token: {}", r.body);
    }
}
