//! `keel bench mdb`: the machine database — disk fsync, sequential registration, full queries at
//! 1,000 and 10,000 machines, `query(mac=)` under keep-alive load, server RSS.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use keel_client::Client;

use crate::output::table;
use crate::server::{fill, mac_of, mean, ms, percentile, register, rss_mb, start_server};
use crate::BenchArgs;

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Report {
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

pub(crate) async fn run(dir: &Path, args: &BenchArgs) -> anyhow::Result<Report> {
    std::fs::create_dir_all(dir)?;
    let mut r = Report::default();
    eprintln!("bench: fsync latency of {}", dir.display());
    let fs = fsync_latency(dir, 200)?;
    (r.fsync_mean_ms, r.fsync_p99_ms) = (mean(&fs), percentile(&fs, 0.99));
    r.fsync_bound_per_s = 1000.0 / r.fsync_mean_ms;
    let server = start_server(dir)?;
    let client = Client::new(&server.url, Some(server.token.clone()))?;
    eprintln!("bench: {} sequential registrations", args.registrations);
    let (rate, lat) = sequential_registrations(&client, args.registrations).await?;
    (r.register_per_s, r.register_p50_ms, r.register_p99_ms) = (rate, percentile(&lat, 0.5), percentile(&lat, 0.99));
    fill(&client, args.registrations, 1000).await?;
    r.query_all_1k_p50_ms = full_query(&server.url, 30).await?;
    eprintln!("bench: filling to {} machines", args.machines());
    fill(&client, args.registrations.max(1000), args.machines()).await?;
    r.query_all_10k_p50_ms = full_query(&server.url, 30).await?;
    r.rss_10k_mb = rss_mb(server.pid())?;
    eprintln!(
        "bench: query(mac=) with {} connections for {} s",
        args.connections, args.duration
    );
    let (rate, lat) = query_mac_load(
        &server.url,
        args.machines(),
        args.connections,
        Duration::from_secs(args.duration),
    )?;
    (r.query_mac_per_s, r.query_mac_p50_ms, r.query_mac_p99_ms) = (rate, percentile(&lat, 0.5), percentile(&lat, 0.99));
    Ok(r)
}

pub(crate) fn print(r: &Report, args: &BenchArgs) {
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
            format!("full query, {} machines", args.machines()),
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
            format!("server RSS at {} machines", args.machines()),
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
        out.push(ms(t));
    }
    drop(f);
    std::fs::remove_file(path)?;
    Ok(out)
}

async fn sequential_registrations(c: &Client, n: u32) -> anyhow::Result<(f64, Vec<f64>)> {
    let bar = indicatif::ProgressBar::new(u64::from(n));
    let mut lat = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 0..n {
        let (hostname, mac) = (format!("reg{i}"), mac_of(i));
        let t = Instant::now();
        register(c, &hostname, &mac).await?;
        lat.push(ms(t));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((f64::from(n) / start.elapsed().as_secs_f64(), lat))
}

/// p50 of `n` full `query` calls, body fully read.
async fn full_query(url: &str, n: usize) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let body = http.get(format!("{url}/call/query")).send().await?.bytes().await?;
        lat.push(ms(t));
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
                        lat.push(ms(t));
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
