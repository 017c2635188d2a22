//! `keel bench scale`: how keel's costs grow with the site. One server (SQLite, then PostgreSQL
//! started by the bench) is filled step by step to `--users` users and `--machines` machines; at
//! each size (1,000, 10,000, 100,000 users, machines in proportion) it times single writes and
//! lookups, a new watch subscriber's snapshot, `/poll`, and reads the server's RSS. The fill itself
//! is made of 10,000-user imports, each timed; a fresh server gives the empty-database import.
//!
//! Every record differs as real ones do (see [`crate::data`]); single-record figures are taken on
//! the filled, running server, never right after a restart.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, ensure};
use keel_client::{Client, Records};
use reqwest::Method;
use serde_json::{json, Value};

use crate::data;
use crate::output::table;
use crate::server::{fill_with, ms, percentile, register, rss_mb, start_server_with, Server};

/// Users per timed import (and per fill step).
const IMPORT: u32 = 10_000;
/// Single operations timed at each size.
const SINGLES: u32 = 300;
/// Untimed requests before the timed ones of a read.
const WARMUP: u32 = 50;

/// Which databases to fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Backends {
    Sqlite,
    Postgres,
    Both,
}

/// The server's config for the bench: a uid pool and address pools large enough, nothing pushed.
const CONFIG: &str = "[pools.uids.user]\nfirst = 100000\nlast = 999999\n[propagation]\nenabled = false\n";

/// The figures at one size.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Point {
    pub users: u32,
    pub machines: u32,
    pub create_user_p50_ms: f64,
    pub register_p50_ms: f64,
    pub query_mac_p50_ms: f64,
    pub watch_snapshot_secs: f64,
    pub poll_users_secs: f64,
    pub poll_machines_secs: f64,
    pub rss_mb: f64,
    /// RSS once the server has been idle long enough to give freed memory back (stable for 2 s).
    pub rss_idle_mb: f64,
}

/// One backend's run.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct BackendReport {
    pub backend: &'static str,
    /// 10,000 users into an empty database (a fresh server).
    pub import_empty_secs: f64,
    /// Each timed 10,000-user import: (users before it, seconds).
    pub imports: Vec<(u32, f64)>,
    pub points: Vec<Point>,
}

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct ScaleReport {
    /// Bytes per record in the Snapshot, counted by the allocator (at `--users` records).
    pub records: crate::memory::RecordBytes,
    pub runs: Vec<BackendReport>,
}

pub(crate) async fn run(dir: &Path, users: u32, machines: u32, backends: Backends) -> anyhow::Result<ScaleReport> {
    ensure!(users >= 1000, "--users must be at least 1,000");
    ensure!(machines >= 100, "--machines must be at least 100");
    std::fs::create_dir_all(dir)?;
    let mut r = ScaleReport::default();
    eprintln!("bench scale: bytes per record in the Snapshot, {users} of each");
    r.records = crate::memory::measure(users)?;
    if backends != Backends::Postgres {
        r.runs
            .push(run_backend(&dir.join("sqlite"), "sqlite", None, users, machines).await?);
    }
    if backends != Backends::Sqlite {
        let pg = keel_testkit::TestPg::start()?;
        let urls = (pg.database("empty")?, pg.database("scale")?);
        r.runs
            .push(run_backend(&dir.join("postgres"), "postgres", Some(urls), users, machines).await?);
    }
    Ok(r)
}

/// The sizes measured: 1,000, 10,000, 100,000… up to `users`, and `users` itself.
fn sizes(users: u32) -> Vec<u32> {
    let mut s: Vec<u32> = std::iter::successors(Some(1000u32), |n| n.checked_mul(10))
        .take_while(|n| *n < users)
        .collect();
    s.push(users);
    s
}

async fn run_backend(
    dir: &Path,
    backend: &'static str,
    pg: Option<(String, String)>,
    users: u32,
    machines: u32,
) -> anyhow::Result<BackendReport> {
    let mut r = BackendReport {
        backend,
        ..BackendReport::default()
    };
    let start = |sub: &str, url: Option<&String>| -> anyhow::Result<Server> {
        // A data directory left by an earlier run (with --dir) would change every figure.
        let _ = std::fs::remove_dir_all(dir.join(sub));
        std::fs::create_dir_all(dir.join(sub))?;
        let args: Vec<&str> = url.map(|u| vec!["--database", u.as_str()]).unwrap_or_default();
        start_server_with(&dir.join(sub), CONFIG, &args)
    };
    eprintln!("bench scale ({backend}): {IMPORT} users into an empty database");
    {
        let empty = start("empty", pg.as_ref().map(|p| &p.0))?;
        let c = client(&empty)?;
        r.import_empty_secs = import_users(&c, 3, 0, IMPORT).await?;
    }
    let server = start("scale", pg.as_ref().map(|p| &p.1))?;
    let c = client(&server)?;
    let mut fill = Fill::default();
    for size in sizes(users) {
        let want_machines = u32::try_from(u64::from(machines) * u64::from(size) / u64::from(users))?;
        eprintln!("bench scale ({backend}): filling to {size} users, {want_machines} machines");
        while fill.users < size {
            let n = IMPORT.min(size - fill.users);
            let at = fill.users_total();
            let secs = import_users(&c, 0, fill.users, n).await?;
            if n == IMPORT {
                r.imports.push((at, secs));
            }
            fill.users += n;
        }
        fill.machines(&c, want_machines).await?;
        eprintln!("bench scale ({backend}): timing at {} users", fill.users_total());
        r.points.push(measure(&server, &c, &mut fill).await?);
    }
    let at = fill.users_total();
    eprintln!("bench scale ({backend}): {IMPORT} users more at {at}");
    r.imports.push((at, import_users(&c, 1, 0, IMPORT).await?));
    Ok(r)
}

fn client(s: &Server) -> anyhow::Result<Client> {
    Ok(Client::new(&s.url, Some(s.token.clone()))?)
}

/// What the bench has put into the scale server.
#[derive(Debug, Default)]
struct Fill {
    /// Users of the fill series (0).
    users: u32,
    /// Users created one by one (series 2).
    singles: u32,
    machines: u32,
    registered: u32,
}

impl Fill {
    fn users_total(&self) -> u32 {
        self.users + self.singles
    }

    /// Imports machines up to `want`.
    async fn machines(&mut self, c: &Client, want: u32) -> anyhow::Result<()> {
        fill_with(c, self.machines, want, machine_row).await?;
        self.machines = self.machines.max(want);
        Ok(())
    }
}

fn machine_row(k: u32) -> Value {
    json!({"hostname": data::hostname(k), "mac": data::mac(k), "mtype": "user", "room": "pasteur",
           "rfs": 1 + k % 4, "hfs": 1 + k % 8})
}

fn user_row(series: u8, i: u32) -> Value {
    let (first, last) = data::names(i);
    json!({"login": data::login(series, i), "firstname": first, "lastname": last, "group": "user",
           "password_hash": data::fake_hash(i as usize * 4 + usize::from(series))})
}

/// Imports users `from..from+n` of `series` in one commit: seconds, the request included.
async fn import_users(c: &Client, series: u8, from: u32, n: u32) -> anyhow::Result<f64> {
    let rows: Vec<Value> = (from..from + n).map(|i| user_row(series, i)).collect();
    let body = json!({"users": rows});
    let t = Instant::now();
    let reply = c.import_users(&body).await?;
    let secs = t.elapsed().as_secs_f64();
    let created = reply["created"].as_array().map_or(0, Vec::len);
    ensure!(created == n as usize, "the import created {created} users, not {n}");
    Ok(secs)
}

/// The single-record and whole-set figures at the server's present size.
async fn measure(server: &Server, c: &Client, fill: &mut Fill) -> anyhow::Result<Point> {
    let mut p = Point {
        users: fill.users_total(),
        machines: fill.machines + fill.registered,
        ..Point::default()
    };
    let mut lat = Vec::new();
    for _ in 0..SINGLES {
        let body = user_row(2, fill.singles);
        let t = Instant::now();
        c.create::<Value>(Records::Users, &body).await?;
        lat.push(ms(t));
        fill.singles += 1;
    }
    p.create_user_p50_ms = percentile(&lat, 0.5);
    lat.clear();
    for _ in 0..SINGLES {
        let k = 1 << 30 | fill.registered; // beyond the fill's numbers
        let (hostname, mac) = (data::hostname(k), data::mac(k));
        let t = Instant::now();
        register(c, &hostname, &mac).await?;
        lat.push(ms(t));
        fill.registered += 1;
    }
    p.register_p50_ms = percentile(&lat, 0.5);
    p.query_mac_p50_ms = query_mac(c, fill.machines).await?;
    p.watch_snapshot_secs = watch_snapshot(server).await?;
    p.poll_users_secs = first_line(server, "/udb/poll").await?;
    p.poll_machines_secs = first_line(server, "/mdb/poll").await?;
    p.rss_mb = rss_mb(server.pid())?;
    p.rss_idle_mb = idle_rss(server.pid()).await?;
    Ok(p)
}

/// The server's RSS once it stops falling: sampled every 500 ms until four samples in a row are
/// within 1 MB (at most 30 s; jemalloc purges about 10 s after a free).
async fn idle_rss(pid: u32) -> anyhow::Result<f64> {
    let mut samples = vec![rss_mb(pid)?];
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        samples.push(rss_mb(pid)?);
        let last = &samples[samples.len().saturating_sub(4)..];
        let spread = last.iter().copied().fold(f64::MIN, f64::max) - last.iter().copied().fold(f64::MAX, f64::min);
        if last.len() == 4 && spread < 1.0 {
            break;
        }
    }
    Ok(samples.last().copied().unwrap_or_default())
}

/// p50 of `query(mac=)` for machines spread over the fill, one keep-alive connection. The first
/// 50 are not timed: a 0.1 ms request after the bench's pauses measures how fast parked threads
/// wake (0.09–0.15 ms at any size), not the lookup.
async fn query_mac(c: &Client, machines: u32) -> anyhow::Result<f64> {
    let mut lat = Vec::new();
    for i in 0..SINGLES + WARMUP {
        let k = (i.wrapping_mul(7919)) % machines.max(1);
        let path = format!("/call/query?mac={}", data::mac(k));
        let t = Instant::now();
        let reply: Value = c.call(Method::GET, &path, None, None).await?.value;
        if i >= WARMUP {
            lat.push(ms(t));
        }
        let found = reply["data"].as_array().map_or(0, Vec::len);
        ensure!(
            found == 1,
            "query(mac=) found {found} machines for machine {k}: {reply}"
        );
    }
    Ok(percentile(&lat, 0.5))
}

/// A new watch subscriber: from the request until the snapshot's end line has arrived.
async fn watch_snapshot(server: &Server) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let t = Instant::now();
    let mut resp = http
        .get(format!("{}/api/v1/watch", server.url))
        .bearer_auth(&server.token)
        .send()
        .await?
        .error_for_status()?;
    let mut tail: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        // The end line may straddle two chunks: look at the last line's start onwards.
        tail.extend_from_slice(&chunk);
        if contains(&tail, b"\"type\":\"snapshot_end\"") {
            return Ok(t.elapsed().as_secs_f64());
        }
        let keep = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        tail.drain(..keep);
    }
    bail!("the watch stream ended before its snapshot did")
}

/// A new `/poll` subscriber: from the request until its first line (the whole set) has arrived.
async fn first_line(server: &Server, path: &str) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let t = Instant::now();
    let mut resp = http
        .get(format!("{}{path}", server.url))
        .send()
        .await?
        .error_for_status()?;
    let mut bytes = 0usize;
    while let Some(chunk) = resp.chunk().await? {
        bytes += chunk.len();
        if chunk.contains(&b'\n') {
            ensure!(bytes > 100, "{path} answered an empty set");
            return Ok(t.elapsed().as_secs_f64());
        }
    }
    bail!("{path} ended before its first line")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub(crate) fn print(r: &ScaleReport) {
    let m = &r.records;
    let rows = vec![
        vec!["user".into(), format!("{:.0} B", m.snapshot_per_user)],
        vec!["machine".into(), format!("{:.0} B", m.snapshot_per_machine)],
        vec!["session".into(), format!("{:.0} B", m.snapshot_per_session)],
        vec![
            "a user's change, as broadcast".into(),
            format!("{:.0} B", m.change_per_user),
        ],
    ];
    println!(
        "bytes per record in the Snapshot (allocator's count, {} of each)",
        m.records
    );
    println!("{}", table(&["record", "bytes"], rows));
    for run in &r.runs {
        print_run(run);
    }
}

fn print_run(run: &BackendReport) {
    let mut header = vec!["measure".to_owned()];
    header.extend(
        run.points
            .iter()
            .map(|p| format!("{} users / {} machines", p.users, p.machines)),
    );
    header.push("last ÷ first".into());
    let row = |name: &str, unit: &str, f: &dyn Fn(&Point) -> f64| {
        let mut row = vec![name.to_owned()];
        row.extend(run.points.iter().map(|p| format!("{:.2} {unit}", f(p))));
        let (first, last) = (run.points.first().map_or(0.0, f), run.points.last().map_or(0.0, f));
        row.push(format!("{:.2}×", last / first.max(1e-9)));
        row
    };
    let rows = vec![
        row("create one user, p50", "ms", &|p| p.create_user_p50_ms),
        row("register one machine, p50", "ms", &|p| p.register_p50_ms),
        row("query(mac=), p50", "ms", &|p| p.query_mac_p50_ms),
        row("new watch subscriber: snapshot", "s", &|p| p.watch_snapshot_secs),
        row("/udb/poll: first line (every user)", "s", &|p| p.poll_users_secs),
        row("/mdb/poll: first line (every machine)", "s", &|p| p.poll_machines_secs),
        row("server RSS, just after", "MB", &|p| p.rss_mb),
        row("server RSS, idle", "MB", &|p| p.rss_idle_mb),
    ];
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    println!("{} — single operations ×{SINGLES} at each size", run.backend);
    println!("{}", table(&header, rows));
    let mut rows = vec![vec![
        format!("{IMPORT} users into an empty database"),
        format!("{:.2} s", run.import_empty_secs),
        "1.00×".into(),
    ]];
    rows.extend(run.imports.iter().map(|(at, secs)| {
        vec![
            format!("{IMPORT} users at {at} existing"),
            format!("{secs:.2} s"),
            format!("{:.2}×", secs / run.import_empty_secs.max(1e-9)),
        ]
    }));
    println!("{}", table(&["import", "time", "÷ empty"], rows));
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_grow_tenfold_up_to_the_fill() {
        assert_eq!(super::sizes(100_000), vec![1000, 10_000, 100_000]);
        assert_eq!(super::sizes(25_000), vec![1000, 10_000, 25_000]);
        assert_eq!(super::sizes(1000), vec![1000]);
    }
}
