//! The iPXE menus through `oneshot`: prologin's `/bootstrap`, the registration menu, `/register`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use keel_model::input::{Fields, Strictness};
use keel_model::{MachinePatch, Pools, Principal};
use keel_server::{AppState, ServerConfig};
use keel_store::{Db, SqliteStore};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{app, WebState};

async fn state(dir: &tempfile::TempDir) -> WebState {
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
    let config = ServerConfig {
        data_dir: dir.path().to_owned(),
        ..ServerConfig::default()
    };
    WebState::new(AppState::new(db, config), crate::Config::default())
}

async fn send(st: &WebState, req: Request<Body>) -> (StatusCode, Value) {
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

/// Issue 19: a machine registering itself through the iPXE form's `/register` gets a `user`
/// machine with one plain name, whatever it asks for; the same request without `mtype` is taken.
#[tokio::test]
async fn self_registration_through_the_menu_chooses_no_rights() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    st.app
        .db
        .set_setting(&Principal::system(), "allow_self_registration", json!(true), Some(0))
        .await
        .unwrap();
    let page = |q: &str| {
        get(
            &format!("/register?mac=02:00:00:00:0b:01&hostname=r03p01&room=alt&rfs=1&hfs=1{q}"),
            "gw",
        )
    };
    let resp = app(st.clone()).oneshot(page("&mtype=orga")).await.unwrap();
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    assert!(text.contains("mtype"), "{text}");
    assert!(st.app.db.snapshot().machine_by_name("r03p01").is_none());
    let resp = app(st.clone()).oneshot(page("")).await.unwrap();
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    assert!(text.contains("registered r03p01"), "{text}");
    assert!(st
        .app
        .db
        .snapshot()
        .machine_by_name("r03p01")
        .unwrap()
        .aliases
        .is_empty());
}

/// prologin's iPXE image chains to `/bootstrap` and reads an iPXE script: the switch table in its
/// setting names (`set sw_name_N CHASSIS`, `sw_room_N`, `sw_rfs_N`, `sw_hfs_N`, from 0), then the
/// machine's own script. JSON stays there for a caller that asks for it.
#[tokio::test]
async fn bootstrap_is_prologins_ipxe_switch_table_and_json_by_accept() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    let who = Principal::system();
    for sw in [
        json!({"name": "sw-a", "chassis": "00:1b:21:00:00:01", "room": "pasteur", "rfs": 1, "hfs": 2}),
        // No chassis id: no machine can hear it, so it is not in the table (and leaves no gap).
        json!({"name": "sw-b", "room": "alt"}),
        json!({"name": "sw-c", "chassis": "sw-c.lan", "room": "alt", "rfs": 3, "hfs": 4}),
    ] {
        st.app
            .db
            .create_switch(&who, Fields::new(sw, Strictness::Strict).unwrap())
            .await
            .unwrap();
    }
    let resp = app(st.clone())
        .oneshot(get("/bootstrap", "netboot:8080"))
        .await
        .unwrap();
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let script = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    let sets: Vec<&str> = script.lines().filter(|l| l.starts_with("set sw_")).collect();
    assert_eq!(
        sets,
        [
            "set sw_name_0 00:1b:21:00:00:01",
            "set sw_room_0 pasteur",
            "set sw_rfs_0 1",
            "set sw_hfs_0 2",
            "set sw_name_1 sw-c.lan",
            "set sw_room_1 alt",
            "set sw_rfs_1 3",
            "set sw_hfs_1 4",
        ]
    );
    assert!(
        script.contains("chain http://netboot:8080/boot/${netX/mac}"),
        "{script}"
    );
    // The JSON, by Accept (among others, with parameters).
    let req = Request::get("/bootstrap")
        .header(header::ACCEPT, "text/html;q=0.9, application/json; q=1")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&st, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().map(Vec::len), Some(3), "{body}");
}

/// An unknown machine, registration open: the menu reads the same table, so a machine behind a
/// known switch registers with its room, RFS and HFS.
#[tokio::test]
async fn the_registration_script_carries_the_switch_table_and_the_lldp_menu() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(&dir).await;
    let who = Principal::system();
    let sw = json!({"name": "sw-a", "chassis": "00:1b:21:00:00:01", "room": "pasteur", "rfs": 1, "hfs": 2});
    st.app
        .db
        .create_switch(&who, Fields::new(sw, Strictness::Strict).unwrap())
        .await
        .unwrap();
    st.app
        .db
        .set_setting(&who, "allow_self_registration", json!(true), None)
        .await
        .unwrap();
    let resp = app(st.clone())
        .oneshot(get("/boot/52:54:00:00:00:99", "netboot"))
        .await
        .unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let script = String::from_utf8(bytes.to_vec()).unwrap();
    for want in [
        "set sw_name_0 00:1b:21:00:00:01",
        "set keel_chassis ${netX.lldp/chassisid}",
        "iseq ${sw_name_${keel_sw}} ${keel_chassis}",
        "item lldp",
        "chain http://netboot/register?mac=52:54:00:00:00:99&",
    ] {
        assert!(script.contains(want), "{want:?} in:\n{script}");
    }
}
