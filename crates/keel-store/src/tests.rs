//! The store's behaviour against a real SQLite file.

use std::sync::Arc;

use keel_model::input::{Fields, Strictness};
use keel_model::{Kind, MachinePatch, Pools, Principal};
use serde_json::{json, Value};

use crate::{build_snapshot, records_of, replay_log, Db, PgStore, SqliteStore, Store, StoreError, Write};

/// Where a test's database lives: every store test runs on both backends.
pub(crate) enum Backend {
    Sqlite(tempfile::TempDir),
    /// A database of its own on the test binary's PostgreSQL cluster: its URL.
    Pg(String),
}

impl Backend {
    fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A new database on the test binary's PostgreSQL cluster (Debian's postgresql; a missing
    /// one fails the test, which is ignored where the probe did not find it).
    fn postgres() -> Self {
        let pg = keel_testkit::TestPg::shared().unwrap_or_else(|e| panic!("{e}"));
        Self::Pg(pg.fresh_database().unwrap_or_else(|e| panic!("{e}")))
    }

    /// A new store on this database (as a server starting, or a second server).
    async fn store(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(dir) => Arc::new(SqliteStore::open(&dir.path().join("keel.db")).await.unwrap()),
            Self::Pg(url) => Arc::new(PgStore::open(url).await.unwrap()),
        }
    }
}

async fn open(b: &Backend) -> Db {
    Db::open(b.store().await, Pools::default()).await.unwrap()
}

/// Runs each named test (an `async fn(Backend)`) once on SQLite and once on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Backend::sqlite()).await
            }
            #[tokio::test]
            #[cfg_attr(not(has_initdb), ignore = "needs PostgreSQL, not installed here (.ci/run installs it)")]
            async fn postgres() {
                super::$name(super::Backend::postgres()).await
            }
        }
    )*};
}

on_both_backends!(
    seqs_versions_and_ids_come_from_the_counter,
    the_database_refuses_a_duplicate_the_snapshot_did_not_see,
    a_refused_large_commit_leaves_nothing_and_the_store_goes_on,
    import_is_all_or_nothing_and_names_every_line,
    reopening_rebuilds_the_same_snapshot_as_the_log_replayed,
    trimming_keeps_the_newest_changes,
    freed_addresses_are_reused_lowest_first,
    live_snapshot_equals_stored_rows,
    concurrent_writes_commit_gap_free_and_a_failing_one_is_undone_alone,
    a_cancelled_write_leaves_nothing_and_blocks_nobody,
    web_sessions_and_secrets_are_shared_by_every_server,
    login_failures_are_counted_by_every_server,
);

fn patch(v: Value) -> MachinePatch {
    MachinePatch::from_fields(Fields::new(v, Strictness::Strict).unwrap()).unwrap()
}

fn machine(i: u8) -> MachinePatch {
    patch(json!({"hostname": format!("h{i}"), "mac": format!("02:00:00:00:00:{i:02x}"), "mtype": "user"}))
}

async fn seqs_versions_and_ids_come_from_the_counter(dir: Backend) {
    let db = open(&dir).await;
    let who = Principal::system();
    let a = db.create_machine(&who, machine(1)).await.unwrap();
    let b = db.create_machine(&who, machine(2)).await.unwrap();
    assert_eq!((a.id, a.version, b.id, b.version), (1, 1, 2, 2));
    assert_eq!(b.ip.to_string(), "192.168.0.2");
    let a2 = db
        .edit_machine(&who, "h1", 1, patch(json!({"room": "alt"})))
        .await
        .unwrap();
    assert_eq!((a2.id, a2.version), (1, 3));
    let err = db
        .edit_machine(&who, "h1", 1, patch(json!({"room": "x"})))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::VersionMismatch {
            expected: 1,
            current: 3
        }
    ));
    let changes = db.store().changes_since(0, 100).await.unwrap();
    assert_eq!(changes.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(changes[2].before.as_ref().unwrap()["room"], "other");
    assert_eq!(db.snapshot().seq(), 3);
}

async fn the_database_refuses_a_duplicate_the_snapshot_did_not_see(dir: Backend) {
    let db = open(&dir).await;
    let who = Principal::system();
    let a = db.create_machine(&who, machine(1)).await.unwrap();
    // Bypass the Snapshot check: write a second machine claiming the same MAC directly.
    let mut twin = a.clone();
    twin.id = 0;
    twin.hostname = "other".to_owned().try_into().unwrap();
    twin.ip = "192.168.0.9".parse().unwrap();
    let w = Write::put(&twin, Some(0), true).unwrap();
    let err = db.store().commit("test", vec![w]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("mac")), "{err}");
    // Nothing of the failed commit remains, not even its seq.
    let b = db.create_machine(&who, machine(2)).await.unwrap();
    assert_eq!(b.version, 2);
}

/// `n` new machines like `model`, numbered from `from` (names, MACs and addresses of their own):
/// written as `Write`s, as an import of more than the address pool holds.
fn machines_like(model: &keel_model::Machine, from: u16, n: u16) -> Vec<Write> {
    (from..from + n)
        .map(|i| {
            let mut m = model.clone();
            m.id = 0;
            m.hostname = format!("m{i}").try_into().unwrap();
            m.mac = format!("02:00:00:01:{:02x}:{:02x}", i >> 8, i & 0xff)
                .try_into()
                .unwrap();
            m.ip = format!("10.0.{}.{}", i >> 8, i & 0xff).parse().unwrap();
            Write::put(&m, Some(0), true).unwrap()
        })
        .collect()
}

/// A commit of more records than one statement batch (the path of a large import) that the
/// database refuses, in its last batch, leaves nothing and keeps the store usable.
async fn a_refused_large_commit_leaves_nothing_and_the_store_goes_on(dir: Backend) {
    let db = open(&dir).await;
    let who = Principal::system();
    let first = db.create_machine(&who, machine(1)).await.unwrap();
    db.write(&who, |_, _| Ok(machines_like(&first, 0, 1_100)))
        .await
        .unwrap();
    let seq = db.snapshot().seq();
    // The last record claims a MAC already held, then one given earlier in the same commit.
    let first_of_commit = "02:00:00:01:08:98".to_owned().try_into().unwrap();
    for mac in [first.mac, first_of_commit] {
        let mut writes = machines_like(&first, 2_200, 1_100);
        let mut last: keel_model::Machine = serde_json::from_value(writes[1_099].after.clone().unwrap()).unwrap();
        last.mac = mac;
        writes[1_099] = Write::put(&last, Some(0), true).unwrap();
        let err = db.write(&who, |_, _| Ok(writes)).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("mac")), "{err}");
        assert_eq!(db.snapshot().seq(), seq);
        assert_consistent(&db, seq).await;
    }
    let next = db.create_machine(&who, machine(2)).await.unwrap();
    assert_eq!(next.version, seq + 1);
    assert_eq!(db.snapshot().machine_count(), 1_102);
}

async fn import_is_all_or_nothing_and_names_every_line(dir: Backend) {
    let db = open(&dir).await;
    let who = Principal::system();
    let rows = vec![
        (2, Ok(machine(1))),
        (3, Ok(machine(1))),
        (4, Err(keel_model::ValidationError::new("mac", "bad"))),
        (5, Ok(machine(5))),
    ];
    let err = db.import_machines(&who, rows, false).await.unwrap_err();
    let StoreError::InvalidMany(errs) = err else {
        panic!("expected many errors, got {err}")
    };
    assert_eq!(
        errs.0.iter().map(|e| (e.line, e.field.as_str())).collect::<Vec<_>>(),
        [(Some(3), "hostname"), (Some(4), "mac")]
    );
    assert_eq!(db.snapshot().seq(), 0);
    let ok = db
        .import_machines(&who, vec![(1, Ok(machine(1))), (2, Ok(machine(2)))], false)
        .await
        .unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!(db.snapshot().machine_count(), 2);
}

async fn reopening_rebuilds_the_same_snapshot_as_the_log_replayed(dir: Backend) {
    let who = Principal::system();
    {
        let db = open(&dir).await;
        for i in 1..=20 {
            db.create_machine(&who, machine(i)).await.unwrap();
        }
        db.delete_machine(&who, "h3", 3).await.unwrap();
        db.set_setting(&who, "contest_mode", json!(true), Some(0))
            .await
            .unwrap();
    }
    let store = dir.store().await;
    let (built, _) = build_snapshot(store.as_ref()).await.unwrap();
    let replayed = replay_log(store.as_ref()).await.unwrap().unwrap();
    assert_eq!(built.seq(), 22);
    assert_eq!(built.machine_count(), 19);
    for kind in Kind::ALL {
        assert_eq!(records_of(&built, kind), records_of(&replayed, kind));
    }
    assert!(built.flag("contest_mode"));
}

async fn trimming_keeps_the_newest_changes(dir: Backend) {
    let db = open(&dir).await;
    let who = Principal::system();
    for i in 1..=10 {
        db.create_machine(&who, machine(i)).await.unwrap();
    }
    assert_eq!(db.store().trim_log(3, None).await.unwrap(), 7);
    assert_eq!(db.store().first_seq().await.unwrap(), 8);
    // Age: everything older than far future, except the newest change.
    assert_eq!(
        db.store()
            .trim_log(1_000, Some("9999-01-01T00:00:00.000000Z"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(db.store().first_seq().await.unwrap(), 10);
    assert!(
        replay_log(db.store()).await.unwrap().is_none(),
        "a trimmed log cannot be replayed from the start"
    );
}

/// Allocation takes the lowest free address, including one freed by a delete or an edit.
async fn freed_addresses_are_reused_lowest_first(dir: Backend) {
    let db = open(&dir).await;
    let who = Principal::system();
    for i in 1..=5 {
        db.create_machine(&who, machine(i)).await.unwrap();
    }
    let h2 = db.snapshot().machine_by_name("h2").unwrap().clone();
    db.delete_machine(&who, "h2", h2.version).await.unwrap();
    let a = db.create_machine(&who, machine(6)).await.unwrap();
    assert_eq!(
        a.ip.to_string(),
        "192.168.0.2",
        "the deleted machine's address is reused"
    );
    let h3 = db.snapshot().machine_by_name("h3").unwrap().clone();
    db.edit_machine(&who, "h3", h3.version, patch(json!({"ip": "192.168.0.50"})))
        .await
        .unwrap();
    let b = db.create_machine(&who, machine(7)).await.unwrap();
    assert_eq!(b.ip.to_string(), "192.168.0.3", "an address left by an edit is reused");
    let c = db.create_machine(&who, machine(8)).await.unwrap();
    assert_eq!(c.ip.to_string(), "192.168.0.6");
}

/// The live Snapshot (built from the Changes a commit returns) equals the one the stored rows give:
/// the SQL that stamps versions and ids agrees with the Rust that reports them.
async fn live_snapshot_equals_stored_rows(dir: Backend) {
    let db = open(&dir).await;
    let who = Principal::system();
    db.create_machine(
        &who,
        patch(json!({"hostname": "a", "mac": "02:00:00:00:01:01", "mtype": "user", "aliases": ["x", "y"]})),
    )
    .await
    .unwrap();
    let rows = (2..40u8).map(|i| (usize::from(i), Ok(machine(i)))).collect();
    db.import_machines(&who, rows, false).await.unwrap();
    db.edit_machine(
        &who,
        "h3",
        3,
        patch(json!({"room": "alt", "faulty_reason": "é \"quoted\""})),
    )
    .await
    .unwrap();
    let (stored, _) = build_snapshot(db.store()).await.unwrap();
    let live = db.snapshot();
    assert_eq!(stored.seq(), live.seq());
    for kind in Kind::ALL {
        assert_eq!(records_of(&stored, kind), records_of(&live, kind), "{kind}");
    }
    let logged = db.store().changes_since(0, 1000).await.unwrap();
    let replayed = replay_log(db.store()).await.unwrap().unwrap();
    assert_eq!(records_of(&replayed, Kind::Machine), records_of(&live, Kind::Machine));
    assert_eq!(
        logged.iter().map(|c| c.seq).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
}

/// The live Snapshot is the stored rows' and the log's, and the log is 1..=`last` without a gap.
async fn assert_consistent(db: &Db, last: u64) {
    let (stored, _) = build_snapshot(db.store()).await.unwrap();
    let live = db.snapshot();
    assert_eq!((stored.seq(), live.seq()), (last, last));
    for kind in Kind::ALL {
        assert_eq!(records_of(&stored, kind), records_of(&live, kind), "{kind}");
    }
    let replayed = replay_log(db.store()).await.unwrap().unwrap();
    for kind in Kind::ALL {
        assert_eq!(records_of(&replayed, kind), records_of(&live, kind), "{kind}");
    }
    let seqs: Vec<u64> = db
        .store()
        .changes_since(0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
}

/// On PostgreSQL, writers queued together share one transaction (group commit): each plans
/// against the ones before it, and one the database refuses is undone alone.
async fn concurrent_writes_commit_gap_free_and_a_failing_one_is_undone_alone(dir: Backend) {
    let db = Arc::new(open(&dir).await);
    let who = Principal::system();
    let first = db.create_machine(&who, machine(1)).await.unwrap();
    let writers = (2..=60u8).map(|i| {
        let (db, who, first) = (db.clone(), who.clone(), first.clone());
        tokio::spawn(async move {
            if i % 10 == 0 {
                // A duplicate MAC the Snapshot check does not see: the database refuses it.
                let mut twin = first.clone();
                twin.id = 0;
                twin.hostname = format!("twin{i}").try_into().unwrap();
                twin.ip = format!("192.168.1.{i}").parse().unwrap();
                return db
                    .write(&who, |_, _| Ok(vec![Write::put(&twin, Some(0), true)?]))
                    .await
                    .map(|_| ());
            }
            db.create_machine(&who, machine(i)).await.map(|_| ())
        })
    });
    let mut results = Vec::new();
    for w in writers.collect::<Vec<_>>() {
        results.push(w.await.unwrap());
    }
    let refused = results
        .into_iter()
        .filter(|r| match r {
            Err(StoreError::Conflict(m)) => m.contains("mac"),
            Err(e) => panic!("{e}"),
            Ok(()) => false,
        })
        .count();
    assert_eq!(refused, 6);
    assert_eq!(db.snapshot().machine_count(), 54);
    // Every address allocated is distinct, and the lowest ones are used: none leaked to a refusal.
    let mut ips: Vec<_> = db.snapshot().machines().map(|m| m.ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 54);
    assert_eq!(ips.last().unwrap().to_string(), "192.168.0.54");
    assert_consistent(&db, 54).await;
}

/// A request dropped mid-write (its client went away) takes its write with it and leaves the
/// writer lock free for the next.
async fn a_cancelled_write_leaves_nothing_and_blocks_nobody(dir: Backend) {
    let pools = Pools {
        user: keel_model::Pool::new("10.0.0.0/16".parse().unwrap()),
        ..Pools::default()
    };
    let db = Db::open(dir.store().await, pools).await.unwrap();
    let who = Principal::system();
    db.create_machine(&who, machine(1)).await.unwrap();
    let big = |from: u16| {
        (from..from + 3000)
            .map(|i| {
                let p = patch(json!({"hostname": format!("big{i}"), "mac": format!("02:00:00:00:{:02x}:{:02x}", i >> 8, i & 0xff), "mtype": "user"}));
                (usize::from(i), Ok(p))
            })
            .collect::<Vec<_>>()
    };
    // The import stops inside its transaction (writer lock held, rows read); then its caller
    // goes away.
    let reached = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut import = Box::pin(crate::fault::hold_commits(
        reached.clone(),
        db.import_machines(&who, big(256), false),
    ));
    tokio::select! {
        _ = &mut import => panic!("the import committed: its commit was not held"),
        () = reached.notified() => {}
    }
    drop(import);
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), db.create_machine(&who, machine(2)))
        .await
        .expect("the writer lock is free again")
        .unwrap();
    assert_eq!(next.hostname.as_str(), "h2");
    assert_consistent(&db, 2).await;
}

async fn web_sessions_and_secrets_are_shared_by_every_server(dir: Backend) {
    let (a, b) = (dir.store().await, dir.store().await);
    let s = crate::WebSession {
        id: "ab".repeat(32),
        login: "alice".into(),
        role: "admin".into(),
        last_ms: 1_000,
    };
    a.put_web_session(&s).await.unwrap();
    assert_eq!(b.web_session(&s.id).await.unwrap(), Some(s.clone()));
    // A use is recorded; an older one never moves it back.
    b.touch_web_session(&s.id, 5_000).await.unwrap();
    a.touch_web_session(&s.id, 2_000).await.unwrap();
    assert_eq!(a.web_session(&s.id).await.unwrap().unwrap().last_ms, 5_000);
    let other = crate::WebSession {
        id: "cd".repeat(32),
        last_ms: 100,
        ..s.clone()
    };
    a.put_web_session(&other).await.unwrap();
    // Pruning ends the unused one only; logging out ends its own.
    assert_eq!(b.end_web_sessions(None, 1_000).await.unwrap(), 1);
    assert_eq!(a.web_session(&other.id).await.unwrap(), None);
    assert_eq!(b.end_web_sessions(Some(&s.id), 0).await.unwrap(), 1);
    assert_eq!(a.web_session(&s.id).await.unwrap(), None);
    // One secret for every server; no other key of meta is handed out.
    let key = a.meta_secret(crate::WEB_SSO_KEY).await.unwrap();
    assert_eq!(key.len(), 48);
    assert_eq!(b.meta_secret(crate::WEB_SSO_KEY).await.unwrap(), key);
    assert!(a.meta_secret("db_id").await.is_err());
}

async fn login_failures_are_counted_by_every_server(dir: Backend) {
    let (a, b) = (dir.store().await, dir.store().await);
    let n = a.login_attempt("alice", 1_000, 0).await.unwrap();
    assert_eq!((n.count, n.prev_ms), (1, 0));
    let n = b.login_attempt("alice", 2_000, 0).await.unwrap();
    assert_eq!((n.count, n.prev_ms), (2, 1_000));
    b.login_attempt("mallory", 2_500, 0).await.unwrap();
    // A right password starts alice's count again; mallory's is forgotten once old.
    a.login_succeeded("alice").await.unwrap();
    let n = a.login_attempt("alice", 9_000, 3_000).await.unwrap();
    assert_eq!((n.count, n.prev_ms), (1, 0));
    assert_eq!(b.login_attempt("mallory", 9_500, 3_000).await.unwrap().count, 1);
    // Tries at once each get their own count: none passes between a check and a count.
    let mut tries = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tries.spawn(async move { store.login_attempt("carol", 10_000 + i, 0).await.unwrap().count });
    }
    let mut counts = tries.join_all().await;
    counts.sort_unstable();
    assert_eq!(counts, (1..=20).collect::<Vec<_>>());
}

mod propagation_rights {
    use std::collections::BTreeSet;

    use keel_model::{Channel, Destination, Facility, Host, Principal, Role};

    use super::{open, Backend};
    use crate::StoreError;

    fn manager(name: &str) -> Principal {
        Principal::token(name, Role::Manager)
    }

    fn facility(name: &str, manager: &str) -> Facility {
        Facility {
            name: name.into(),
            managers: vec![keel_model::ManagerName::Token(manager.into())],
            groups: Vec::new(),
            members: Vec::new(),
            services: vec!["passwd".into()],
            blocked: Vec::new(),
            hfs: None,
            version: 0,
        }
    }

    fn host(name: &str, facility: &str, aliases: &[&str]) -> Host {
        Host {
            name: name.into(),
            facility: facility.into(),
            machine: None,
            aliases: aliases.iter().map(|a| (*a).into()).collect(),
            version: 0,
        }
    }

    fn dest(facility: &str, d: &str) -> Destination {
        Destination {
            facility: facility.into(),
            service: "passwd".into(),
            destination: d.into(),
            channel: Channel::Ssh,
            blocked: false,
            claimed_by: None,
            version: 0,
        }
    }

    on_both_backends!(
        a_manager_cannot_claim_a_name_of_another_facility,
        a_host_name_is_one_host_s_only
    );

    /// A name or alias of one host is refused to another, even the admin's (found through the claim
    /// index, not a pass over every host); the same host keeps its own names on a rewrite.
    async fn a_host_name_is_one_host_s_only(dir: Backend) {
        let db = open(&dir).await;
        let admin = Principal::system();
        let services: BTreeSet<String> = ["passwd".to_string()].into();
        db.put_facility(&admin, facility("a", "alice"), 0, &services)
            .await
            .unwrap();
        let b1 = db
            .put_host(&admin, host("b1.example.org", "a", &["www.example.org"]), 0)
            .await
            .unwrap();
        db.put_host(&admin, host("b2.example.org", "a", &["b2"]), 0)
            .await
            .unwrap();
        db.put_host(&admin, b1.clone(), b1.version).await.unwrap();
        for (name, aliases) in [
            ("www.example.org", &[][..]),
            ("b3.example.org", &["b1.example.org"][..]),
            ("b3.example.org", &["b2"][..]),
        ] {
            let e = db.put_host(&admin, host(name, "a", aliases), 0).await.unwrap_err();
            assert!(
                matches!(e, StoreError::Invalid(ref v) if v.message.contains("is already a name of host")),
                "{name} {aliases:?}: {e}"
            );
        }
        // A first label alone is no name of theirs: b1 may be another host's alias.
        db.put_host(&admin, host("b3.example.org", "a", &["b1"]), 0)
            .await
            .unwrap();
    }

    async fn a_manager_cannot_claim_a_name_of_another_facility(dir: Backend) {
        let db = open(&dir).await;
        let admin = Principal::system();
        let services: BTreeSet<String> = ["passwd".to_string()].into();
        db.put_facility(&admin, facility("a", "alice"), 0, &services)
            .await
            .unwrap();
        db.put_facility(&admin, facility("b", "bob"), 0, &services)
            .await
            .unwrap();
        db.put_host(&admin, host("b1.example.org", "b", &["www.example.org"]), 0)
            .await
            .unwrap();
        let alice = manager("alice");
        // The seed's scenario: A's manager adds an alias of a host of B.
        for d in ["www.example.org", "root@WWW.example.org.:22", "b1.example.org"] {
            let e = db
                .put_destination(&alice, dest("a", d), 0, &services)
                .await
                .unwrap_err();
            assert!(matches!(e, StoreError::Forbidden(_)), "{d}: {e}");
        }
        let e = db
            .put_host(&alice, host("a1.example.org", "a", &["www.example.org"]), 0)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Forbidden(_)), "{e}");
        // Outside their facility, and managers of facilities, are refused too.
        let e = db
            .put_destination(&alice, dest("b", "new.example.org"), 0, &services)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Forbidden(_)), "{e}");
        let e = db
            .put_facility(&alice, facility("c", "alice"), 0, &services)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Forbidden(_)), "{e}");
        // Free names and their own names are fine.
        db.put_host(&alice, host("a1.example.org", "a", &[]), 0).await.unwrap();
        db.put_destination(&alice, dest("a", "root@a1.example.org"), 0, &services)
            .await
            .unwrap();
        db.put_destination(&alice, dest("a", "fresh.example.org"), 0, &services)
            .await
            .unwrap();
        // And once B's manager has it, A's manager still cannot take it.
        let bob = manager("bob");
        let e = db
            .put_destination(&bob, dest("b", "fresh.example.org"), 0, &services)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Forbidden(_)), "{e}");
        // An admin may do all of it.
        db.put_destination(&admin, dest("a", "www.example.org"), 0, &services)
            .await
            .unwrap();
        let e = db.delete_facility(&admin, "a", 1).await.unwrap_err();
        assert!(
            matches!(e, StoreError::Conflict(_) | StoreError::VersionMismatch { .. }),
            "{e}"
        );
    }
}

/// Issue 19: a manager of A reaches no host of B (nor keel's own) through any spelling of its
/// name, and cannot change which users A receives (that is whose hashes A's hosts get).
mod manager_reach {
    use std::collections::BTreeSet;

    use keel_model::{Channel, Destination, Facility, Group, Host, Principal, Role};

    use super::{machine, open, Backend};
    use crate::StoreError;

    fn who(name: &str) -> Principal {
        Principal::token(name, Role::Manager)
    }

    fn dest(d: &str) -> Destination {
        Destination {
            facility: "a".into(),
            service: "passwd".into(),
            destination: d.into(),
            channel: Channel::Ssh,
            blocked: false,
            claimed_by: None,
            version: 0,
        }
    }

    #[tokio::test]
    async fn through_no_name_and_no_group() {
        let dir = Backend::sqlite();
        let db = open(&dir).await;
        let admin = Principal::system();
        let services: BTreeSet<String> = ["passwd".to_string()].into();
        for (name, m) in [("a", "alice"), ("b", "bob")] {
            let f = Facility {
                name: name.into(),
                managers: vec![keel_model::ManagerName::Token(m.into())],
                services: vec!["passwd".into()],
                ..Facility::default()
            };
            db.put_facility(&admin, f, 0, &services).await.unwrap();
        }
        // h1 (192.168.0.1) is B's host through its machine; h2 is a site machine of nobody's
        // (as the gateway keel runs on is).
        db.create_machine(&admin, machine(1)).await.unwrap();
        db.create_machine(&admin, machine(2)).await.unwrap();
        let b1 = Host {
            name: "b1.example.org".into(),
            facility: "b".into(),
            machine: Some("h1".into()),
            aliases: Vec::new(),
            version: 0,
        };
        db.put_host(&admin, b1, 0).await.unwrap();
        let alice = who("alice");
        // What is free is hers: the same request without the hostile part succeeds.
        db.put_destination(&alice, dest("a1.example.org"), 0, &services)
            .await
            .unwrap();
        for d in [
            "b1",
            "root@B1.:22",
            "h1",
            "h1.prolo",
            "192.168.0.1",
            "[::ffff:192.168.0.1]:22",
            "h2",
            "192.168.0.2",
            "localhost",
            "127.0.0.1",
            "[::1]",
        ] {
            let e = db.put_destination(&alice, dest(d), 0, &services).await.unwrap_err();
            assert!(matches!(e, StoreError::Forbidden(_)), "{d}: {e}");
        }
        // Groups and members: admins only; the services stay the manager's.
        let a = db.snapshot().facility("a").unwrap().clone();
        let mut more = a.clone();
        more.services = Vec::new();
        let a = db.put_facility(&alice, more, a.version, &services).await.unwrap();
        for change in [
            |f: &mut Facility| f.groups = vec![Group::Root],
            |f: &mut Facility| f.members = vec![keel_model::Login::parse("login", "carol").unwrap()],
        ] {
            let mut f = a.clone();
            change(&mut f);
            let e = db.put_facility(&alice, f, a.version, &services).await.unwrap_err();
            assert!(matches!(e, StoreError::Forbidden(_)), "{e}");
        }
    }

    /// Self-registration through the store itself: whatever route calls it, a non-admin gets a
    /// plain machine (no aliases, one label), and only with the type said.
    #[tokio::test]
    async fn a_machine_registering_itself_chooses_no_rights() {
        let dir = Backend::sqlite();
        let db = open(&dir).await;
        let anon = Principal::anonymous();
        let plain =
            super::patch(serde_json::json!({"hostname": "r01p01", "mac": "02:00:00:00:01:01", "mtype": "user"}));
        db.create_machine(&anon, plain).await.unwrap();
        for bad in [
            serde_json::json!({"hostname": "r01p02", "mac": "02:00:00:00:01:02", "mtype": "user", "aliases": "wpad"}),
            serde_json::json!({"hostname": "evil.prolo", "mac": "02:00:00:00:01:03", "mtype": "user"}),
            serde_json::json!({"hostname": "r01p04", "mac": "02:00:00:00:01:04"}),
            serde_json::json!({"hostname": "r01p05", "mac": "02:00:00:00:01:05", "mtype": "user", "ip": "192.168.0.200"}),
        ] {
            assert!(
                db.create_machine(&anon, super::patch(bad.clone())).await.is_err(),
                "{bad}"
            );
        }
    }
}

/// A database migrated by a newer keel is refused clearly, not half-used.
#[tokio::test]
#[cfg_attr(
    not(has_initdb),
    ignore = "needs PostgreSQL, not installed here (.ci/run installs it)"
)]
async fn a_server_older_than_the_schema_refuses_to_start() {
    let b = Backend::postgres();
    let Backend::Pg(url) = &b else { unreachable!() };
    let store = PgStore::open(url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let e = PgStore::open(url).await.err().expect("refused");
    assert!(e.to_string().contains("newer than this keel knows"), "{e}");
}

/// A session follows its machine: renamed, it moves with it; deleted, it ends with it.
#[tokio::test]
async fn sessions_follow_their_machine_through_rename_and_delete() {
    // Kept for the whole test: dropping it deletes the database directory, and a connection the
    // pool opens later then fails ("unable to open database file").
    let dir = Backend::sqlite();
    let db = open(&dir).await;
    let who = Principal::system();
    db.create_machine(&who, machine(1)).await.unwrap();
    let alice = keel_model::UserPatch::from_fields(
        Fields::new(json!({"login": "alice", "group": "user"}), Strictness::Strict).unwrap(),
    )
    .unwrap();
    db.create_user(&who, alice).await.unwrap();
    db.open_session(&who, "alice", "h1", true, keel_model::ProofPolicy::Required)
        .await
        .unwrap();
    let m = db.snapshot().machine_by_name("h1").unwrap().clone();
    let renamed = db
        .edit_machine(&who, "h1", m.version, patch(json!({"hostname": "h1b"})))
        .await
        .unwrap();
    assert_eq!(renamed.hostname.as_str(), "h1b");
    let snap = db.snapshot();
    assert_eq!(snap.session("alice").unwrap().hostname.as_str(), "h1b");
    assert_eq!(snap.login_at(renamed.ip).unwrap().1.unwrap().login.as_str(), "alice");
    let gone = db.delete_machine(&who, "h1b", renamed.version).await.unwrap();
    assert_eq!(gone.hostname.as_str(), "h1b");
    assert!(db.snapshot().session("alice").is_none());
}

/// A database from before records moved to a rowid table (migration 7) keeps every record and
/// takes new writes after it.
#[tokio::test]
async fn records_survive_the_move_to_a_rowid_table() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    let who = Principal::system();
    let current = Backend::sqlite();
    let db = open(&current).await;
    for i in 1..=3 {
        db.create_machine(&who, machine(i)).await.unwrap();
    }
    let want = records_of(&db.snapshot(), Kind::Machine);
    assert_eq!(want.len(), 3);
    drop(db);
    let Backend::Sqlite(dir) = &current else { unreachable!() };
    let old_dir = tempfile::tempdir().unwrap();
    let old_path = old_dir.path().join("keel.db");
    let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&old_path).create_if_missing(true))
        .await
        .unwrap();
    let before_7 = sqlx::migrate::Migrator {
        migrations: crate::migrations::sqlite()
            .iter()
            .filter(|m| m.version < 7)
            .cloned()
            .collect(),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    before_7.run(&pool).await.unwrap();
    let copy = format!(
        "ATTACH DATABASE '{}' AS src; \
         INSERT INTO objects SELECT kind, key, version, data FROM src.objects; \
         INSERT INTO uniques SELECT * FROM src.uniques; INSERT INTO changes SELECT * FROM src.changes; \
         UPDATE counter SET seq = (SELECT seq FROM src.counter); DETACH DATABASE src;",
        dir.path().join("keel.db").display()
    );
    sqlx::raw_sql(&copy).execute(&pool).await.unwrap();
    pool.close().await;
    let store = SqliteStore::open(&old_path).await.unwrap();
    let db = Db::open(Arc::new(store), Pools::default()).await.unwrap();
    assert_eq!(records_of(&db.snapshot(), Kind::Machine), want);
    db.create_machine(&who, machine(4)).await.unwrap();
    assert_eq!(db.snapshot().machine_count(), 4);
}

/// A large commit wakes the background checkpointer, which copies the WAL into the database file
/// without a later commit (SQLite's own checkpoint would wait for 64 MiB of WAL and run inside a
/// COMMIT).
#[tokio::test]
async fn a_large_commit_is_checkpointed_in_the_background() {
    let dir = Backend::sqlite();
    let db = open(&dir).await;
    let Backend::Sqlite(path) = &dir else { unreachable!() };
    let file = path.path().join("keel.db");
    let size = || std::fs::metadata(&file).unwrap().len();
    let before = size();
    let who = Principal::system();
    let first = db.create_machine(&who, machine(1)).await.unwrap();
    db.write(&who, |_, _| Ok(machines_like(&first, 0, 1_100)))
        .await
        .unwrap();
    keel_testkit::eventually(20, "the WAL checkpointed into the database file", async || {
        size() > before
    })
    .await;
}

/// Issue 31: roles became records. A database from before (machines, no roles) is marked by the
/// migration and its machines named rfsN, hfsN, gw or after a service get those roles once; a
/// database made since is never marked, so no name ever gives a role again.
#[tokio::test]
async fn names_give_roles_once_and_only_on_a_database_from_before_roles() {
    use keel_model::MachineRole;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    let who = Principal::system();
    let named = |name: &str, n: u8| {
        let mut p = machine(n);
        p.hostname = Some(keel_model::Hostname::parse("hostname", name).unwrap());
        p
    };
    // A database made now: names are names.
    let fresh = Backend::sqlite();
    let db = open(&fresh).await;
    db.create_machine(&who, named("rfs2", 1)).await.unwrap();
    assert_eq!(db.migrate_roles().await.unwrap(), 0);
    // Likewise presence proofs (migration 9): required on a database made now…
    assert_eq!(
        db.default_proof_policy().await.unwrap(),
        keel_model::ProofPolicy::Required
    );
    assert!(db.snapshot().machine_with(&MachineRole::Rfs(2)).is_none());
    drop(db);

    // A database from before roles: the migrations up to 7, machines, then the rest.
    let old_dir = tempfile::tempdir().unwrap();
    let old_path = old_dir.path().join("keel.db");
    let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&old_path).create_if_missing(true))
        .await
        .unwrap();
    let before_8 = sqlx::migrate::Migrator {
        migrations: crate::migrations::sqlite()
            .iter()
            .filter(|m| m.version < 8)
            .cloned()
            .collect(),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    before_8.run(&pool).await.unwrap();
    let Backend::Sqlite(dir) = &fresh else { unreachable!() };
    let copy = format!(
        "ATTACH DATABASE '{}' AS src; \
         INSERT INTO objects (kind, key, version, data) SELECT kind, key, version, data FROM src.objects; \
         INSERT INTO uniques SELECT * FROM src.uniques; INSERT INTO changes SELECT * FROM src.changes; \
         UPDATE counter SET seq = (SELECT seq FROM src.counter); DETACH DATABASE src;",
        dir.path().join("keel.db").display()
    );
    sqlx::raw_sql(&copy).execute(&pool).await.unwrap();
    pool.close().await;
    let open_old = || async {
        let store = SqliteStore::open(&old_path).await.unwrap();
        Db::open(Arc::new(store), Pools::default()).await.unwrap()
    };
    let db = open_old().await;
    // …off on one from before, whose machines have no PAM auth line yet.
    assert_eq!(db.default_proof_policy().await.unwrap(), keel_model::ProofPolicy::Off);
    assert_eq!(db.migrate_roles().await.unwrap(), 1, "rfs2 becomes RFS 2, in the log");
    let rfs = db
        .snapshot()
        .machine_with(&MachineRole::Rfs(2))
        .map(|m| m.hostname.to_string());
    assert_eq!(rfs.as_deref(), Some("rfs2"));
    let role = db.snapshot().role(&MachineRole::Rfs(2)).cloned().unwrap();
    db.remove_role(&who, &MachineRole::Rfs(2), role.version).await.unwrap();
    drop(db);
    let db = open_old().await;
    assert_eq!(db.migrate_roles().await.unwrap(), 0, "once: a role taken back stays so");
    assert!(db.snapshot().machine_with(&MachineRole::Rfs(2)).is_none());
}
