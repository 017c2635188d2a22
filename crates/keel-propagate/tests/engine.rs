//! The engine against a real SQLite store and real child processes (`true` and `sh` stand in for
//! the agent: what is tested here is scheduling, not applying).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keel_bundle::SecretKey;
use keel_model::{Channel, Destination, Facility, Group, Pools, Principal, UserPatch};
use keel_propagate::{registry, CustomService, Engine, EngineConfig, Senders, TaskState};
use keel_store::{Db, SqliteStore};

async fn db(dir: &tempfile::TempDir) -> Arc<Db> {
    let store = SqliteStore::open(&dir.path().join("keel.db")).await.unwrap();
    Arc::new(Db::open(Arc::new(store), Pools::default()).await.unwrap())
}

/// Waits until the engine has planned for every committed change and finished: no guess of how
/// long a change takes to reach it.
async fn settle(e: &Engine) {
    keel_testkit::eventually(20, "the engine settled", async || e.is_settled()).await;
}

fn serials(e: &Engine) -> BTreeMap<String, u64> {
    e.status(None).into_iter().map(|t| (t.service, t.serial)).collect()
}

async fn setup(db: &Db, services: &[&str], custom: &BTreeMap<String, CustomService>) {
    let who = Principal::system();
    let known = registry(custom).unwrap().keys().cloned().collect();
    let f = Facility {
        name: "lan".into(),
        managers: Vec::new(),
        groups: vec![Group::User],
        members: Vec::new(),
        services: services.iter().map(|s| (*s).to_owned()).collect(),
        blocked: Vec::new(),
        hfs: None,
        version: 0,
    };
    db.put_facility(&who, f, 0, &known).await.unwrap();
    for s in services {
        let d = Destination {
            facility: "lan".into(),
            service: (*s).to_owned(),
            destination: "local".into(),
            channel: Channel::Local,
            blocked: false,
            claimed_by: None,
            version: 0,
        };
        db.put_destination(&who, d, 0, &known).await.unwrap();
    }
}

async fn engine(db: &Arc<Db>, local: &[&str], custom: &BTreeMap<String, CustomService>) -> Engine {
    engine_with(db, local, custom, Duration::from_millis(300)).await
}

async fn engine_with(
    db: &Arc<Db>,
    local: &[&str],
    custom: &BTreeMap<String, CustomService>,
    debounce: Duration,
) -> Engine {
    let cfg = EngineConfig {
        debounce,
        ..EngineConfig::default()
    };
    let senders = Senders {
        ssh: keel_propagate::SshConfig::default(),
        local: local.iter().map(|s| (*s).to_owned()).collect(),
    };
    Engine::start(
        db.clone(),
        cfg,
        SecretKey::generate().unwrap(),
        Arc::new(senders),
        registry(custom).unwrap(),
    )
    .await
    .unwrap()
}

fn user(login: &str) -> UserPatch {
    let v = serde_json::json!({"login": login, "group": "user"});
    UserPatch::from_fields(keel_model::input::Fields::new(v, keel_model::input::Strictness::Strict).unwrap()).unwrap()
}

#[tokio::test]
async fn a_new_user_schedules_the_user_services_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = db(&dir).await;
    setup(&db, &["passwd", "homes", "hosts"], &BTreeMap::new()).await;
    // A debounce no burst outlasts, however loaded the machine: the window is closed by hand
    // below, once the engine has seen every change (a timed window made this test flaky).
    let e = engine_with(&db, &["true"], &BTreeMap::new(), Duration::from_secs(3600)).await;
    settle(&e).await;
    let before = serials(&e);
    assert!(before.values().all(|s| *s == 1), "{before:?}");
    // A burst of changes within the debounce is one run.
    for i in 0..20 {
        db.create_user(&Principal::system(), user(&format!("u{i}")))
            .await
            .unwrap();
    }
    keel_testkit::eventually(20, "the engine saw the burst", async || e.has_seen_all()).await;
    let state = |s: &str| e.status(None).into_iter().find(|t| t.service == s).unwrap().state;
    assert_eq!(state("passwd"), TaskState::Planned);
    assert_eq!(state("hosts"), TaskState::Done, "hosts does not depend on users");
    // `homes` keeps its own short debounce (a first login waits on it): it runs by itself, once
    // or more as the burst's commits come (regression: this test asserted it still planned, which
    // a loaded machine's slower commits outlasted).
    keel_testkit::eventually(20, "homes ran on its own debounce", async || serials(&e)["homes"] >= 2).await;
    // The window ends now: the planned task runs once for the whole burst.
    e.schedule("lan", Some("passwd"), false).unwrap();
    settle(&e).await;
    let after = serials(&e);
    assert_eq!(after["passwd"], 2, "{after:?}");
    assert_eq!(after["hosts"], 1, "hosts does not depend on users: {after:?}");
    assert!(e.status(None).iter().all(|t| t.state == TaskState::Done));
}

/// A deleted facility's tasks leave the status; made again under its name, its serials go on
/// (its destinations' agents refuse a serial they have seen).
#[tokio::test]
async fn a_facility_deleted_and_made_again_keeps_counting_serials() {
    let dir = tempfile::tempdir().unwrap();
    let db = db(&dir).await;
    setup(&db, &["hosts"], &BTreeMap::new()).await;
    let e = engine(&db, &["true"], &BTreeMap::new()).await;
    settle(&e).await;
    assert_eq!(serials(&e)["hosts"], 1);
    let who = Principal::system();
    let dest = db.snapshot().destination("lan/hosts/local").unwrap().version;
    db.delete_destination(&who, "lan/hosts/local", dest).await.unwrap();
    let version = db.snapshot().facility("lan").unwrap().version;
    db.delete_facility(&who, "lan", version).await.unwrap();
    settle(&e).await;
    assert!(e.status(None).is_empty(), "{:?}", e.status(None));
    setup(&db, &["hosts"], &BTreeMap::new()).await;
    settle(&e).await;
    assert_eq!(serials(&e)["hosts"], 2);
    assert!(e.status(None).iter().all(|t| t.state == TaskState::Done));
}

#[tokio::test]
async fn a_custom_generator_gets_the_facility_as_json_and_its_files_are_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let db = db(&dir).await;
    db.create_user(&Principal::system(), user("alice")).await.unwrap();
    let custom: BTreeMap<String, CustomService> = toml::from_str(
        r#"
        [motd]
        command = ["sh", "-c", "cat > \"$1/facility.json\"; echo welcome > \"$1/motd\"", "gen"]
        version = "2.1"
        kinds = ["user"]
        [broken]
        command = ["sh", "-c", "echo 'no template' >&2; exit 3"]
        "#,
    )
    .unwrap();
    setup(&db, &["motd", "broken"], &custom).await;
    let out = dir.path().join("received.tar");
    // The "agent" keeps what it receives.
    let keep = format!("cat > {}", out.display());
    let e = engine(&db, &["sh", "-c", &keep], &custom).await;
    // The broken generator is retried forever: wait for both outcomes, not for idleness.
    let both = |tasks: &[keel_propagate::Task]| {
        tasks.iter().any(|t| t.state == TaskState::Done) && tasks.iter().any(|t| t.state == TaskState::Generror)
    };
    keel_testkit::eventually(20, "one task done, one GENERROR", async || both(&e.status(None))).await;
    let tasks = e.status(None);
    let motd = tasks.iter().find(|t| t.service == "motd").unwrap();
    assert_eq!(motd.state, TaskState::Done, "{motd:?}");
    let broken = tasks.iter().find(|t| t.service == "broken").unwrap();
    assert_eq!(broken.state, TaskState::Generror);
    assert!(broken.error.as_deref().unwrap().contains("no template"), "{broken:?}");
    let tar = std::fs::read(&out).unwrap();
    // The bundle verifies with the engine's key and holds the generator's files.
    let b = keel_bundle::Bundle::open(&tar, &[e.public_key()], keel_bundle::Limits::default()).unwrap();
    assert_eq!(b.manifest.version.to_string(), "2.1");
    assert_eq!(&b.files["motd"][..], b"welcome\n");
    let json: serde_json::Value = serde_json::from_slice(&b.files["facility.json"]).unwrap();
    assert_eq!(json["users"][0]["login"], "alice");
    assert!(
        json["users"][0].get("password_hash").is_none(),
        "generators never see hashes"
    );
}
