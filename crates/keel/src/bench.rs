//! `keel bench`: measures this machine — disk fsync, sequential registration, full queries at 1,000
//! and 10,000 machines, `query(mac=)` under keep-alive load, server RSS. Loopback only, bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keel_client::Client;
use reqwest::Method;
use serde_json::{json, Value};

use crate::output::{print_json, table};

/// Which measurements to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// The machine database: fsync, register, full query, query(mac=), RSS.
    Mdb,
    /// The watch stream: fan-out latency to 1,000 subscribers, bulk fan-out, memory per subscriber.
    Watch,
    /// Propagation: passwd for many users to many ssh destinations (starts its own sshd).
    Propagation,
    /// The built-in DNS under dnsperf, at `--machines` machines.
    Dns,
    /// Presence and SSO: /sso under wrk, logins/s, login → address in the applied nft set.
    Presence,
    /// The administration pages: search, filter and paging at `--machines` machines.
    Web,
    /// Two servers on one PostgreSQL (started by the bench): writes/s, commit → other server's
    /// watch; SQLite beside it.
    Postgres,
    /// All of them.
    All,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum, default_value = "mdb")]
    suite: Suite,
    /// Watch subscribers for the latency and memory measurements.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Sequential registrations to time.
    #[arg(long, default_value_t = 2000)]
    registrations: u32,
    /// Machines for the large full-query measurement.
    #[arg(long, default_value_t = 10_000)]
    machines: u32,
    /// Users for the propagation measurements.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// ssh destinations for the propagation measurements.
    #[arg(long, default_value_t = 200)]
    destinations: usize,
    /// Run this on the destinations instead of `keel-agent apply` (e.g. `cat >/dev/null`: what
    /// the transfer alone costs).
    #[arg(long)]
    remote_command: Option<String>,
    /// Send plain tars, as `[propagation] compress = false` does (to see what compression gains).
    #[arg(long)]
    plain_tar: bool,
    /// Logins for the presence measurement (a LAN event's size; the contestants' uid pool holds 999).
    #[arg(long, default_value_t = 500)]
    logins: usize,
    /// Seconds of query(mac=) load (and of /sso load).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Keep-alive connections for the query(mac=) load (all from one client thread).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Directory for the bench database (default: ./keel-bench-PID, removed at the end). Use a real
    /// disk: on tmpfs the fsync figures mean nothing.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The server under test; killed when dropped, whatever happens.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) data: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    fsync_mean_ms: f64,
    fsync_p99_ms: f64,
    fsync_bound_per_s: f64,
    register_per_s: f64,
    register_p50_ms: f64,
    register_p99_ms: f64,
    query_all_1k_p50_ms: f64,
    query_all_10k_p50_ms: f64,
    query_mac_per_s: f64,
    query_mac_p50_ms: f64,
    query_mac_p99_ms: f64,
    rss_10k_mb: f64,
}

pub async fn run(args: &BenchArgs, json: bool) -> anyhow::Result<()> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("keel-bench-{}", std::process::id())));
    let owned = args.dir.is_none();
    std::fs::create_dir_all(&dir)?;
    let result = run_suites(&dir, args, json).await;
    if owned {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_suites(dir: &Path, args: &BenchArgs, json: bool) -> anyhow::Result<()> {
    let mut out = serde_json::Map::new();
    if matches!(args.suite, Suite::Mdb | Suite::All) {
        let report = bench_in(&dir.join("mdb"), args).await?;
        if !json {
            print_report(&report, args);
        }
        out.insert("mdb".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.suite, Suite::Watch | Suite::All) {
        let report = crate::bench_watch::run(&dir.join("watch"), args.subscribers).await?;
        if !json {
            crate::bench_watch::print(&report, args.subscribers);
        }
        out.insert("watch".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.suite, Suite::Dns | Suite::All) {
        let report = crate::bench_dns::run(&dir.join("dns"), args.machines, args.duration).await?;
        if !json {
            crate::bench_dns::print(&report);
        }
        out.insert("dns".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.suite, Suite::Propagation | Suite::All) {
        let report = crate::bench_propagation::run(
            &dir.join("propagation"),
            args.users,
            args.destinations,
            args.remote_command.as_deref(),
            if args.plain_tar {
                keel_bundle::Encoding::Tar
            } else {
                keel_bundle::Encoding::Zstd
            },
        )
        .await?;
        if !json {
            crate::bench_propagation::print(&report);
        }
        out.insert("propagation".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.suite, Suite::Postgres | Suite::All) {
        let report = crate::bench_pg::run(&dir.join("postgres"), args.duration).await?;
        if !json {
            crate::bench_pg::print(&report);
        }
        out.insert("postgres".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.suite, Suite::Web | Suite::All) {
        let report = crate::bench_web::run(&dir.join("web"), args.machines).await?;
        if !json {
            crate::bench_web::print(&report);
        }
        out.insert("web".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.suite, Suite::Presence | Suite::All) {
        let report = crate::bench_presence::run(&dir.join("presence"), args.logins, args.duration).await?;
        if !json {
            crate::bench_presence::print(&report);
        }
        out.insert("presence".into(), serde_json::to_value(&report)?);
    }
    if json {
        print_json(&out)?;
    }
    Ok(())
}

async fn bench_in(dir: &Path, args: &BenchArgs) -> anyhow::Result<Report> {
    std::fs::create_dir_all(dir)?;
    let mut r = Report::default();
    eprintln!("bench: fsync latency of {}", dir.display());
    let fs = fsync_latency(dir, 200)?;
    (r.fsync_mean_ms, r.fsync_p99_ms) = (mean(&fs), percentile(&fs, 0.99));
    r.fsync_bound_per_s = 1000.0 / r.fsync_mean_ms;
    let server = start_server(dir)?;
    let client = Client::new(&server.url, Some(server.token.clone()))?;
    eprintln!("bench: {} sequential registrations", args.registrations);
    let (rate, lat) = register(&client, args.registrations).await?;
    (r.register_per_s, r.register_p50_ms, r.register_p99_ms) = (rate, percentile(&lat, 0.5), percentile(&lat, 0.99));
    fill(&client, args.registrations, 1000).await?;
    r.query_all_1k_p50_ms = full_query(&server.url, 30).await?;
    eprintln!("bench: filling to {} machines", args.machines);
    fill(&client, args.registrations.max(1000), args.machines).await?;
    r.query_all_10k_p50_ms = full_query(&server.url, 30).await?;
    r.rss_10k_mb = rss_mb(server.child.id())?;
    eprintln!(
        "bench: query(mac=) with {} connections for {} s",
        args.connections, args.duration
    );
    let (rate, lat) = query_mac_load(
        &server.url,
        args.machines,
        args.connections,
        Duration::from_secs(args.duration),
    )?;
    (r.query_mac_per_s, r.query_mac_p50_ms, r.query_mac_p99_ms) = (rate, percentile(&lat, 0.5), percentile(&lat, 0.99));
    Ok(r)
}

fn print_report(r: &Report, args: &BenchArgs) {
    let f = |v: f64| format!("{v:.2}");
    let rows = vec![
        vec![
            "fsync latency (4 KiB + fdatasync)".into(),
            format!("mean {} ms, p99 {} ms", f(r.fsync_mean_ms), f(r.fsync_p99_ms)),
            format!("bound {:.0} durable writes/s", r.fsync_bound_per_s),
        ],
        vec![
            format!("register, sequential ×{}", args.registrations),
            format!(
                "{:.0}/s (p50 {} ms, p99 {} ms)",
                r.register_per_s,
                f(r.register_p50_ms),
                f(r.register_p99_ms)
            ),
            "≥ 2,000/s or ≥ bound/1.5".into(),
        ],
        vec![
            "full query, 1,000 machines".into(),
            format!("p50 {} ms", f(r.query_all_1k_p50_ms)),
            String::new(),
        ],
        vec![
            format!("full query, {} machines", args.machines),
            format!("p50 {} ms", f(r.query_all_10k_p50_ms)),
            "< 20 ms".into(),
        ],
        vec![
            format!("query(mac=), {} conns, {} s", args.connections, args.duration),
            format!(
                "{:.0} req/s (p50 {} ms, p99 {} ms)",
                r.query_mac_per_s,
                f(r.query_mac_p50_ms),
                f(r.query_mac_p99_ms)
            ),
            "≥ 25,000 req/s".into(),
        ],
        vec![
            format!("server RSS at {} machines", args.machines),
            format!("{:.1} MB", r.rss_10k_mb),
            "< 80 MB".into(),
        ],
    ];
    println!("{}", table(&["measure", "result", "target"], rows));
}

fn fsync_latency(dir: &Path, n: usize) -> anyhow::Result<Vec<f64>> {
    use std::io::Write;
    let path = dir.join("fsync.probe");
    let mut f = std::fs::File::create(&path)?;
    let block = vec![0x5au8; 4096];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(f);
    std::fs::remove_file(path)?;
    Ok(out)
}

pub(crate) fn start_server(dir: &Path) -> anyhow::Result<Server> {
    start_server_with(dir, "", &[])
}

/// A bench server whose config also holds `extra` (TOML tables), with `args` to `keel serve`.
pub(crate) fn start_server_with(dir: &Path, extra: &str, args: &[&str]) -> anyhow::Result<Server> {
    start_server_dns(dir, "", extra, args)
}

/// As [`start_server_with`], with `dns` (TOML keys) in the `[dns]` table.
pub(crate) fn start_server_dns(dir: &Path, dns: &str, extra: &str, args: &[&str]) -> anyhow::Result<Server> {
    let cfg = dir.join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\n[dns]\nlisten = \"127.0.0.1:0\"\nzone = \"bench\"\n{dns}\
             [pools.user]\nnetwork = \"10.0.0.0/16\"\n[pools.orga]\nnetwork = \"10.1.0.0/16\"\n\
             [pools.cluster]\nnetwork = \"10.2.0.0/16\"\n[pools.service]\nnetwork = \"10.3.0.0/16\"\n\
             [presence]\nrecovery_secs = 0\n[tftp]\nlisten = \"127.0.0.1:0\"\n{extra}"
        ),
    )?;
    let data = dir.join("data");
    let log = std::fs::File::create(dir.join("server.log"))?;
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start keel serve")?;
    let mut server = Server {
        child,
        url: String::new(),
        token: String::new(),
        data: data.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let (Ok(addr), Ok(tok)) = (
            std::fs::read_to_string(data.join("listen.addr")),
            std::fs::read_to_string(data.join("admin.token")),
        ) {
            server.url = format!("http://{}", addr.trim());
            server.token = tok.trim().to_owned();
            return Ok(server);
        }
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "keel serve exited with {status}; see {}",
                dir.join("server.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("keel serve did not start within 30 s")
}

pub(crate) fn mac_of(i: u32) -> String {
    let b = i.to_be_bytes();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

async fn register(c: &Client, n: u32) -> anyhow::Result<(f64, Vec<f64>)> {
    let bar = indicatif::ProgressBar::new(u64::from(n));
    let mut lat = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 0..n {
        let body = json!({"args": [format!("reg{i}"), mac_of(i), 1, 1, "pasteur", "user"]});
        let t = Instant::now();
        let reply: Value = c.call(Method::POST, "/call/register", Some(&body), None).await?.value;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        if reply["type"] != "result" {
            bail!("register failed: {reply}");
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((f64::from(n) / start.elapsed().as_secs_f64(), lat))
}

/// Adds machines `from..to` through the import endpoint, in batches.
pub(crate) async fn fill(c: &Client, from: u32, to: u32) -> anyhow::Result<()> {
    let mut i = from;
    while i < to {
        let end = (i + 2000).min(to);
        let rows: Vec<Value> = (i..end)
            .map(|k| json!({"hostname": format!("fill{k}"), "mac": mac_of(k), "mtype": "user", "room": "pasteur", "rfs": 1, "hfs": 1}))
            .collect();
        import(c, rows).await?;
        i = end;
    }
    Ok(())
}

/// Adds machines through the import endpoint, in one commit.
pub(crate) async fn import(c: &Client, rows: Vec<Value>) -> anyhow::Result<()> {
    c.call::<Value>(
        Method::POST,
        "/api/v1/machines/import",
        Some(&json!({ "machines": rows })),
        None,
    )
    .await?;
    Ok(())
}

/// p50 of `n` full `query` calls, body fully read.
async fn full_query(url: &str, n: usize) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let body = http.get(format!("{url}/call/query")).send().await?.bytes().await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        if body.len() < 10 {
            bail!("full query answered almost nothing");
        }
    }
    Ok(percentile(&lat, 0.5))
}

/// `connections` keep-alive connections driven from one client thread until `duration` passes.
fn query_mac_load(url: &str, machines: u32, connections: usize, duration: Duration) -> anyhow::Result<(f64, Vec<f64>)> {
    let url = url.to_owned();
    std::thread::spawn(move || -> anyhow::Result<(f64, Vec<f64>)> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let start = Instant::now();
            let deadline = start + duration;
            let mut tasks = Vec::new();
            for k in 0..connections {
                // One client per task: each holds exactly one keep-alive connection.
                let http = reqwest::Client::builder().pool_max_idle_per_host(1).build()?;
                let url = url.clone();
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = k as u32;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let r = http
                            .get(format!("{url}/call/query?mac={}", mac_of(i % machines)))
                            .send()
                            .await;
                        if let Ok(resp) = r {
                            let _ = resp.bytes().await;
                        }
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        i = i.wrapping_add(connections as u32);
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await?);
            }
            Ok((all.len() as f64 / start.elapsed().as_secs_f64(), all))
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load thread panicked"))?
}

pub(crate) fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc")?;
    Ok(kb / 1024.0)
}

pub(crate) fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub(crate) fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(((s.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}
