//! Users in the database: REST, the prologin udb RPC and feeds — hashes only, never shown.

use keel_client::data_dir as files;
use keel_client::{WatchEvent, WatchOptions};
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{req, Keel};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh3w1q3rDqB3sRrcB8xQ3W8N4Ckj0m0jbUuv5a1J6PB alice@laptop";

async fn add(k: &Keel, body: Value) -> (u16, Value) {
    req(k, Some(&k.token), Method::POST, "/api/v1/users", Some(body), &[]).await
}

/// uids come from the group's pool and are never given twice, even after a delete and a restart.
#[tokio::test]
async fn uids_are_allocated_and_never_reused() {
    let mut k = Keel::start(&[]);
    let hash = keel_password::hash("s3cret-Pass").unwrap();
    let (s, a) = add(&k, json!({"login": "alice", "firstname": "Alice", "lastname": "Liddell", "group": "user", "password_hash": hash, "ssh_keys": [KEY]})).await;
    assert_eq!((s, a["uid"].as_u64()), (201, Some(10001)), "{a}");
    assert_eq!(a["has_password"], true);
    assert!(a.get("password_hash").is_none());
    let (_, b) = add(&k, json!({"login": "bob", "group": "user"})).await;
    assert_eq!(b["uid"], 10002);
    let (_, r) = add(&k, json!({"login": "rooty", "group": "root"})).await;
    assert_eq!(r["uid"], 12001);
    let v = b["version"].to_string();
    assert_eq!(
        req(
            &k,
            Some(&k.token),
            Method::DELETE,
            "/api/v1/users/bob",
            None,
            &[("If-Match", &v)]
        )
        .await
        .0,
        204
    );
    let (_, c) = add(&k, json!({"login": "carol", "group": "user"})).await;
    assert_eq!(c["uid"], 10003, "bob's uid is not given again");
    k.restart(&[]);
    let (_, d) = add(&k, json!({"login": "dave", "group": "user"})).await;
    assert_eq!(d["uid"], 10004, "the high-water mark survives a restart");
}

/// Bad users are refused by field; a plaintext password is refused outright.
#[tokio::test]
async fn bad_users_are_refused_by_field() {
    let k = Keel::start(&[]);
    let seq = k.seq().await;
    for (body, field) in [
        (
            json!({"login": "eve", "group": "user", "password": "plaintext"}),
            "password",
        ),
        (
            json!({"login": "eve", "group": "user", "password_hash": "$1$md5$nope"}),
            "password_hash",
        ),
        (json!({"login": "Eve", "group": "user"}), "login"),
        (json!({"login": "1eve", "group": "user"}), "login"),
        (json!({"login": "eve", "group": "wizard"}), "group"),
        (
            json!({"login": "eve", "group": "user", "ssh_keys": ["ssh-rsa AAAA"]}),
            "ssh_keys",
        ),
        (json!({"login": "eve", "group": "user", "shell": "bash"}), "shell"),
        (json!({"group": "user"}), "login"),
    ] {
        let (status, answer) = add(&k, body.clone()).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (400, Some(field)),
            "{body} → {answer}"
        );
    }
    assert_eq!(add(&k, json!({"login": "eve", "group": "user"})).await.0, 201);
    assert_eq!(
        add(&k, json!({"login": "eve", "group": "orga"})).await.0,
        400,
        "a login is unique"
    );
    assert_eq!(k.seq().await, seq + 2, "only eve and her group's counter were written");
}

/// No read path shows a password hash, and the plaintext is nowhere: not in the database file,
/// not in the log, not in any answer.
#[tokio::test]
async fn hashes_never_leave_through_reads() {
    let k = Keel::start(&[]);
    let plain = "Correct-Horse-9";
    let hash = keel_password::hash(plain).unwrap();
    let salted = hash.rsplit('$').next().unwrap().to_owned();
    let mut w = k.admin().watch(WatchOptions {
        reconnect: false,
        ..WatchOptions::default()
    });
    assert!(matches!(w.next().await.unwrap(), WatchEvent::SnapshotBegin { .. }));
    add(
        &k,
        json!({"login": "alice", "group": "user", "password_hash": hash, "ssh_keys": KEY}),
    )
    .await;
    let mut seen = Vec::new();
    for path in [
        "/api/v1/users",
        "/api/v1/users/alice",
        "/api/v1/changes",
        "/udb/call/query",
        "/udb/call/query?login=alice",
    ] {
        let (status, body) = req(&k, Some(&k.token), Method::GET, path, None, &[]).await;
        assert_eq!(status, 200, "{path}");
        seen.push(body.to_string());
    }
    let (_, by_host) = req(&k, None, Method::GET, "/call/query", None, &[("Host", "udb.prolo")]).await;
    assert_eq!(by_host["data"][0]["login"], "alice");
    assert_eq!(by_host["data"][0]["uid"], 10001);
    assert_eq!(by_host["data"][0]["ssh_key"], KEY);
    seen.push(by_host.to_string());
    loop {
        match w.next().await.unwrap() {
            WatchEvent::Change {
                kind: keel_model::Kind::User,
                data,
                ..
            } => {
                assert_eq!(data["has_password"], true);
                seen.push(data.to_string());
                break;
            }
            WatchEvent::Change { kind, .. } => assert_ne!(kind, keel_model::Kind::Counter, "counters are internal"),
            _ => {}
        }
    }
    for s in &seen {
        assert!(
            !s.contains(&salted) && !s.contains("password_hash") && !s.contains(plain),
            "a hash leaked: {s}"
        );
    }
    let db = std::fs::read(k.data().join(files::DB)).unwrap();
    let wal = std::fs::read(k.data().join("keel.db-wal")).unwrap_or_default();
    let needle = plain.as_bytes();
    assert!(
        !db.windows(needle.len())
            .chain(wal.windows(needle.len()))
            .any(|w| w == needle),
        "plaintext on disk"
    );
    assert!(!k.log().contains(plain) && !k.log().contains(&salted));
}
