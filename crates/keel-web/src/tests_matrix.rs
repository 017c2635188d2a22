//! The authorization matrix (invariant 11): every path the router serves, with every
//! method, asked by every actor that holds a credential of HTTP, against the table of
//! `docs/security.md`. The paths come from the router itself (`app_with_paths`): a new route
//! without a line there fails this test, which prints the line to add.
//!
//! A cell is `yes` (the actor gets past authorization: any answer but 401, 403 or a redirect to
//! the login page), `no` (refused), or `-` (the answer depends on data, not on the actor: checked
//! elsewhere). Methods a path does not serve (405) need no line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use keel_model::input::{Fields, Strictness};
use keel_model::{Facility, MachinePatch, Pools, Principal, Role, UserPatch};
use keel_store::{Db, NewToken, SqliteStore};
use tower::ServiceExt;

use keel_server::presence::{PresenceConfig, SECRET_HEADER};
use keel_server::{AppState, ServerConfig};

use crate::{app_with_paths, WebState};

const SECURITY_MD: &str = include_str!("../../../docs/security.md");
const SECRET: &str = "0123456789abcdef0123";
const METHODS: [Method; 5] = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
const ACTORS: [&str; 6] = ["anonymous", "machine", "readonly", "agent", "manager", "admin"];

/// A concrete URI for a route's path: each `{param}` replaced by a value that exists.
fn sample(path: &str) -> String {
    path.replace("{name}", "gw")
        .replace("{login}", "alice")
        .replace("{key}", "contest_mode")
        .replace("{role}", "gateway")
        .replace("{id}", "nosuch")
        .replace("{facility}", "a")
        .replace("{service}", "passwd")
        .replace("{destination}", "a1.example.org")
        .replace("{method}", "query")
        .replace("{mac}", "52:54:00:00:01:fe")
        .replace("{*rest}", "x")
}

async fn site(dir: &tempfile::TempDir) -> (WebState, BTreeMap<&'static str, String>) {
    let store = SqliteStore::open(&dir.path().join("keel.db")).await.unwrap();
    let db = Arc::new(Db::open(Arc::new(store), Pools::default()).await.unwrap());
    let system = Principal::system();
    let fields = |v: serde_json::Value| Fields::new(v, Strictness::Strict).unwrap();
    let gw = serde_json::json!({"hostname": "gw", "mac": "52:54:00:00:01:fe", "mtype": "service"});
    db.create_machine(&system, MachinePatch::from_fields(fields(gw)).unwrap())
        .await
        .unwrap();
    let alice = serde_json::json!({"login": "alice", "group": "user"});
    db.create_user(&system, UserPatch::from_fields(fields(alice)).unwrap())
        .await
        .unwrap();
    let services = ["passwd".to_string()].into();
    let a = Facility {
        name: "a".into(),
        managers: vec![keel_model::ManagerName::Token("mgr-a".into())],
        services: vec!["passwd".into()],
        ..Facility::default()
    };
    db.put_facility(&system, a, 0, &services).await.unwrap();
    let mut tokens = BTreeMap::new();
    for (actor, role, host) in [
        ("readonly", Role::Readonly, None),
        ("agent", Role::Agent, Some("a1.example.org".to_owned())),
        ("manager", Role::Manager, None),
        ("admin", Role::Admin, None),
    ] {
        let name = if actor == "manager" {
            "mgr-a".into()
        } else {
            actor.to_owned()
        };
        let new = NewToken {
            name,
            role,
            facilities: Vec::new(),
            host,
            expires: None,
        };
        tokens.insert(actor, db.create_token(new).await.unwrap().0);
    }
    let config = ServerConfig {
        data_dir: dir.path().to_owned(),
        presence: PresenceConfig {
            secret: Some(SECRET.into()),
            // docs/security.md's rows show /map closed (its default opens it to anyone).
            map_public: false,
            ..PresenceConfig::default()
        },
        ..ServerConfig::default()
    };
    (
        WebState::new(AppState::new(db, config), crate::Config::default()),
        tokens,
    )
}

/// The actor's verdict for one request: `Some(true)` past authorization, `Some(false)` refused,
/// `None` the path does not serve this method.
async fn ask(st: &WebState, tokens: &BTreeMap<&str, String>, actor: &str, method: &Method, uri: &str) -> Option<bool> {
    // Every actor speaks from the machine gw's address (a machine speaks only for itself).
    let gw = SocketAddr::new(st.app.db.snapshot().machine_by_name("gw").unwrap().ip.into(), 40000);
    let mut req = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header(header::HOST, "mdb")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = tokens.get(actor) {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if actor == "machine" {
        req = req.header(SECRET_HEADER, SECRET);
    }
    let body = if *method == Method::GET || *method == Method::DELETE {
        Body::empty()
    } else {
        Body::from("{}")
    };
    let mut req = req.body(body).unwrap();
    req.extensions_mut().insert(ConnectInfo(gw));
    let (router, _) = app_with_paths(st.clone());
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return None;
    }
    let to_login = status.is_redirection()
        && resp
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .is_some_and(|l| l.starts_with("/login"));
    Some(!(status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN || to_login))
}

/// The table of `docs/security.md`'s "Route matrix": (method, path) → a cell per actor.
fn documented() -> BTreeMap<(String, String), Vec<String>> {
    let section = SECURITY_MD
        .split("## Route matrix")
        .nth(1)
        .expect("docs/security.md has a '## Route matrix' section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`').to_owned())
            .collect();
        if cells.len() < 2 + ACTORS.len() || !METHODS.iter().any(|m| m.as_str() == cells[0]) {
            continue; // the header, its rule, or prose
        }
        let key = (cells[0].clone(), cells[1].clone());
        assert!(
            rows.insert(key.clone(), cells[2..2 + ACTORS.len()].to_vec()).is_none(),
            "{key:?} twice"
        );
    }
    rows
}

#[tokio::test]
async fn every_route_answers_each_actor_as_docs_security_md_says() {
    let dir = tempfile::tempdir().unwrap();
    let (st, tokens) = site(&dir).await;
    let doc = documented();
    let (_, paths) = app_with_paths(st.clone());
    assert!(paths.len() > 50, "the router lists its paths: {paths:?}");
    let mut problems = Vec::new();
    let mut served = std::collections::BTreeSet::new();
    for path in &paths {
        for method in &METHODS {
            let mut got = Vec::new();
            // The admin last: what it does must not change what the others are asked.
            for actor in ACTORS {
                got.push(ask(&st, &tokens, actor, method, &sample(path)).await);
            }
            if got.iter().all(Option::is_none) {
                continue;
            }
            let key = (method.to_string(), path.clone());
            served.insert(key.clone());
            let cells: Vec<&str> = got
                .iter()
                .map(|g| if *g == Some(true) { "yes" } else { "no" })
                .collect();
            let Some(want) = doc.get(&key) else {
                problems.push(format!(
                    "no line for this route; add: | {} | `{}` | {} | |",
                    key.0,
                    key.1,
                    cells.join(" | ")
                ));
                continue;
            };
            for ((actor, want), got) in ACTORS.iter().zip(want).zip(&cells) {
                if want != "-" && want != got {
                    problems.push(format!(
                        "{} {}: {actor} is {got}, docs/security.md says {want}",
                        key.0, key.1
                    ));
                }
            }
        }
    }
    for key in doc.keys().filter(|k| !served.contains(*k)) {
        problems.push(format!(
            "docs/security.md lists {} {}, which the router does not serve",
            key.0, key.1
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `/api/v1` rows of docs/security.md's matrix are exactly the operations of the OpenAPI
/// description, which is made from the handlers themselves: a route cannot be served, described
/// or secured without the other two.
#[test]
fn the_api_rows_of_the_matrix_are_the_openapi_descriptions_operations() {
    let doc: serde_json::Value = serde_json::from_str(keel_server::openapi_description()).unwrap();
    assert_eq!(
        doc["openapi"].as_str().map(|v| v.starts_with("3.1")),
        Some(true),
        "{doc}"
    );
    let mut described = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            described.insert((method.to_uppercase(), format!("/api/v1{path}")));
        }
    }
    assert!(described.len() > 50, "{described:?}");
    let in_matrix: std::collections::BTreeSet<(String, String)> = documented()
        .into_keys()
        .filter(|(_, p)| p.starts_with("/api/v1/"))
        .collect();
    let missing: Vec<_> = described.difference(&in_matrix).collect();
    let extra: Vec<_> = in_matrix.difference(&described).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "described but not in docs/security.md: {missing:?}\nin docs/security.md but not described: {extra:?}"
    );
}
