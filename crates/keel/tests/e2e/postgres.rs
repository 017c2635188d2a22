//! Several keel servers on one real PostgreSQL (started by the test, on a free port): writes on
//! both, a watcher on each sees the same gap-free sequence; `kill -9` of one loses no acknowledged
//! write and the other takes over propagation; `keel migrate-db` round-trips a 10,000-machine,
//! 10,000-user site exactly.

use std::time::Duration;

use keel_client::data_dir as files;
use keel_client::{WatchEvent, WatchOptions};
use reqwest::Method;
use serde_json::{json, Value};

use crate::propagation::api;
use crate::support::eventually;
use crate::support::{machine_rows, req, Keel};
use keel_testkit::TestPg;

/// A new database on the test binary's PostgreSQL cluster.
fn pg() -> String {
    let pg = TestPg::shared().unwrap_or_else(|e| panic!("{e}"));
    pg.fresh_database().unwrap_or_else(|e| panic!("{e}"))
}

/// Collects a watcher's change seqs (after its snapshot) until it has seen `until`.
async fn watch_until(k: &Keel, until: u64) -> Vec<u64> {
    let mut w = k.admin().watch(WatchOptions {
        since: Some(0),
        reconnect: true,
        ..WatchOptions::default()
    });
    let mut seqs = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), w.next())
            .await
            .expect("the watcher stalled")
            .unwrap();
        if let WatchEvent::Change { seq, .. } = ev {
            seqs.push(seq);
            if seq >= until {
                return seqs;
            }
        }
    }
}

async fn engine_here(k: &Keel) -> bool {
    req(k, Some(&k.token), Method::GET, "/api/v1/propagation", None, &[])
        .await
        .0
        == 200
}

#[tokio::test]
#[cfg_attr(
    not(has_initdb),
    ignore = "needs PostgreSQL, not installed here (.ci/run installs it)"
)]
async fn two_servers_share_one_database_and_one_propagation_engine() {
    let url = pg();
    let a = Keel::start(&["--database", &url]);
    let b = Keel::start_sharing(&["--database", &url], &a.token);
    // Writes on both, at once.
    let rows_a = machine_rows("a", 1, 0..40);
    let rows_b = machine_rows("b", 2, 0..40);
    let write = |k: &Keel, rows: Vec<Value>| {
        let c = k.admin();
        async move {
            for r in rows {
                c.call::<Value>(Method::POST, "/api/v1/machines", Some(&r), None)
                    .await
                    .unwrap();
            }
        }
    };
    tokio::join!(write(&a, rows_a), write(&b, rows_b));
    let last = b.seq().await.max(a.seq().await);
    assert_eq!(last, 80, "every write has its seq");
    // A watcher on each sees the same ordered, gap-free sequence.
    let (on_a, on_b) = tokio::join!(watch_until(&a, last), watch_until(&b, last));
    assert_eq!(on_a, (1..=80).collect::<Vec<_>>());
    assert_eq!(on_a, on_b);
    // Each server answers what the other wrote (its Snapshot follows the log).
    eventually(5, "a1 visible on b", async || {
        req(&b, Some(&b.token), Method::GET, "/api/v1/machines/a1", None, &[])
            .await
            .0
            == 200
    })
    .await;
    // Exactly one runs propagation.
    eventually(10, "one engine", async || {
        engine_here(&a).await != engine_here(&b).await
    })
    .await;
    let mut servers = [a, b];
    let leader = usize::from(!engine_here(&servers[0]).await);
    // kill -9 of the leader: nothing acknowledged is lost, and the other takes over propagation.
    servers[leader].kill9();
    let other = &servers[1 - leader];
    let all = api(other, Method::GET, "/api/v1/machines", None).await;
    assert_eq!(all.as_array().unwrap().len(), 80);
    eventually(15, "the survivor takes over propagation", async || {
        engine_here(other).await
    })
    .await;
    api(
        other,
        Method::POST,
        "/api/v1/machines",
        Some(json!({"hostname": "after", "mac": "02:99:00:00:00:01", "mtype": "user"})),
    )
    .await;
    assert_eq!(other.seq().await, 81);
}

#[tokio::test]
#[cfg_attr(
    not(has_initdb),
    ignore = "needs PostgreSQL, not installed here (.ci/run installs it)"
)]
async fn migrate_db_round_trips_a_large_site_exactly() {
    let toml = format!(
        "{}[pools.uids.user]\nfirst = 100000\nlast = 199999\n[pools.uids.orga]\nfirst = 11001\nlast = 11999\n\
         [pools.uids.root]\nfirst = 12001\nlast = 12999\n",
        crate::support::BIG_POOLS
    );
    let mut k = Keel::start_with_config(&toml, &[]);
    let machines: Vec<Value> = machine_rows("m", 3, 0..10_000);
    api(
        &k,
        Method::POST,
        "/api/v1/machines/import",
        Some(json!({"machines": machines})),
    )
    .await;
    let users: Vec<Value> = (0..10_000)
        .map(|i| json!({"login": format!("u{i}"), "group": "user"}))
        .collect();
    api(&k, Method::POST, "/api/v1/users/import", Some(json!({"users": users}))).await;
    let before_machines = api(&k, Method::GET, "/api/v1/machines", None).await;
    let before_seq = k.seq().await;
    k.stop();
    let url = pg();
    let db = k.data().join(files::DB);
    let out = k.cli(&["--json", "migrate-db", "--from", db.to_str().unwrap(), "--to", &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["verified"], true);
    // And back into a new SQLite file: the same rows again.
    let back = k.dir.path().join("back.db");
    let out = k.cli(&["--json", "migrate-db", "--from", &url, "--to", back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A second copy into a non-empty database is refused and changes nothing.
    let out = k.cli(&["migrate-db", "--from", db.to_str().unwrap(), "--to", &url]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    // A server on PostgreSQL serves the same site.
    let on_pg = Keel::start_sharing(&["--config", k.config_arg(), "--database", &url], &k.token);
    assert_eq!(on_pg.seq().await, before_seq);
    assert_eq!(
        api(&on_pg, Method::GET, "/api/v1/machines", None).await,
        before_machines
    );
}

/// A machine's heartbeats may reach either server: neither closes a session the other hears from.
#[tokio::test]
#[cfg_attr(
    not(has_initdb),
    ignore = "needs PostgreSQL, not installed here (.ci/run installs it)"
)]
async fn heartbeats_to_one_server_keep_sessions_alive_on_both() {
    use crate::presence::{add_machine, add_user, heartbeat, login, presence_toml, LOOPBACK_POOLS};
    let url = pg();
    let pools = LOOPBACK_POOLS.replace("127.0.5.0/24", "127.0.0.0/24");
    // The site's one presence secret, shared by both servers (docs/postgres.md).
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("presence.secret");
    std::fs::write(&secret, "one-secret-for-the-whole-site\n").unwrap();
    let toml = format!(
        "{pools}[presence]\ntimeout_secs = 2\nrecovery_secs = 0\nsecret_file = \"{}\"\n",
        secret.display()
    );
    let a = Keel::start_with_config(&toml, &["--database", &url]);
    let b = Keel::start_sharing(&["--config", a.config_arg(), "--database", &url], &a.token);
    add_machine(&a, "pc1", "user", "127.0.0.1").await;
    add_user(&a, "alice", "user").await;
    assert_eq!(login(&a, "alice", "pc1").await.0, 201);
    // pc1 reports to B only.
    let cfg = presence_toml(&b, tmp.path(), "pc1");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap().replace(
            &b.data()
                .join(keel_server::presence::PresenceConfig::default().secret_file)
                .display()
                .to_string(),
            &secret.display().to_string(),
        ),
    )
    .unwrap();
    let me = std::process::id() as i32;
    std::fs::write(
        tmp.path().join("utmp"),
        keel_agent::utmp::record(keel_agent::utmp::USER_PROCESS_TYPE, me, "tty1", "alice"),
    )
    .unwrap();
    for _ in 0..10 {
        let (ok, answer) = heartbeat(&cfg);
        assert!(ok, "{answer}");
        // sleep-ok: time itself is under test — the sessions must outlive their timeout while
        // heartbeats come every half second.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let on_a = api(&a, Method::GET, "/api/v1/sessions", None).await;
    assert_eq!(
        on_a.as_array().unwrap().len(),
        1,
        "A kept the session B hears from: {on_a}"
    );
    // Silence: it expires (on whichever server notices first), once.
    eventually(10, "alice's session expired", async || {
        api(&a, Method::GET, "/api/v1/sessions", None)
            .await
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
}
