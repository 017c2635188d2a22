//! `keel bench postgres`: two servers writing concurrently on one PostgreSQL (started by the
//! bench: Debian's postgresql, as root it runs as the `postgres` user), the time from a commit on
//! server A to server B's watch stream, and the same write load on SQLite (one server) beside it.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use keel_client::{Client, Records, WatchEvent, WatchOptions};
use serde_json::{json, Value};

use crate::output::table;
use crate::server::{percentile, start_server_with, Server};
use keel_testkit::TestPg;

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct PgReport {
    pub seconds: u64,
    pub sqlite_writes_per_s: f64,
    pub pg_two_servers_writes_per_s: f64,
    pub a_to_b_watch_p50_ms: f64,
    pub a_to_b_watch_p99_ms: f64,
}

/// `writers` tasks per server add switches for `secs`; the total per second.
async fn write_load(servers: &[&Server], writers: usize, secs: u64) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (s, server) in servers.iter().enumerate() {
        for w in 0..writers {
            let c = Client::new(&server.url, Some(server.token.clone()))?;
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < end {
                    let body = json!({"name": format!("load-{s}-{w}-{i}")});
                    c.create::<Value>(Records::Switches, &body).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
    }
    let start = Instant::now();
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// A commit on `a` until `b`'s watch stream shows it, `n` times; latencies in ms.
async fn a_to_b(a: &Server, b: &Server, n: usize) -> anyhow::Result<Vec<f64>> {
    let ca = Client::new(&a.url, Some(a.token.clone()))?;
    let cb = Client::new(&b.url, Some(b.token.clone()))?;
    let since: Value = cb.get("/healthz").await?;
    let mut watch = cb.watch(WatchOptions {
        since: since["seq"].as_u64(),
        reconnect: true,
        ..WatchOptions::default()
    });
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let sw: Value = ca
            .create::<Value>(Records::Switches, &json!({"name": format!("seen-{i}")}))
            .await?;
        let seq = sw["version"].as_u64().context("no version")?;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), watch.next()).await??;
            if matches!(ev, WatchEvent::Change { seq: s, .. } if s >= seq) {
                break;
            }
        }
        lat.push(crate::server::ms(t));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(lat)
}

pub(crate) async fn run(dir: &Path, secs: u64) -> anyhow::Result<PgReport> {
    for sub in ["sqlite", "a", "b/data"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let mut r = PgReport {
        seconds: secs,
        ..PgReport::default()
    };
    eprintln!("bench: SQLite, one server, 16 writers for {secs} s");
    let sqlite = start_server_with(&dir.join("sqlite"), "[propagation]\nenabled = false\n", &[])?;
    r.sqlite_writes_per_s = write_load(&[&sqlite], 16, secs).await?;
    drop(sqlite);
    let pg = TestPg::start()?;
    let url = pg.database("bench")?;
    let args = ["--database", url.as_str()];
    let a = start_server_with(&dir.join("a"), "", &args)?;
    // The second server finds the admin token in the database; it is given the first's file.
    std::fs::write(dir.join("b/data/admin.token"), &a.token)?;
    let b = start_server_with(&dir.join("b"), "", &args)?;
    eprintln!("bench: PostgreSQL, two servers, 8 writers each for {secs} s");
    r.pg_two_servers_writes_per_s = write_load(&[&a, &b], 8, secs).await?;
    eprintln!("bench: a commit on A → B's watch stream, 100 times");
    let lat = a_to_b(&a, &b, 100).await?;
    (r.a_to_b_watch_p50_ms, r.a_to_b_watch_p99_ms) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    Ok(r)
}

pub(crate) fn print(r: &PgReport) {
    let rows = vec![
        vec![
            format!("writes/s, two servers on PostgreSQL, 16 writers, {} s", r.seconds),
            format!("{:.0}/s", r.pg_two_servers_writes_per_s),
            "≥ 1,000/s".into(),
        ],
        vec![
            "commit on A → B's watch stream".into(),
            format!(
                "p50 {:.1} ms, p99 {:.1} ms",
                r.a_to_b_watch_p50_ms, r.a_to_b_watch_p99_ms
            ),
            "p99 < 100 ms".into(),
        ],
        vec![
            format!("beside it: writes/s, one server on SQLite, 16 writers, {} s", r.seconds),
            format!("{:.0}/s", r.sqlite_writes_per_s),
            String::new(),
        ],
    ];
    println!("{}", table(&["measure", "result", "target"], rows));
}
