//! `keel bench flood`: one source (127.0.0.2) floods each resource keel pools — idle HTTP
//! connections, anonymous `/poll` streams, DNS-over-TCP connections that never read, TLS
//! handshakes that never finish — while another client (127.0.0.1) probes what everyone needs:
//! `/healthz`, nginx's `/sso`, a presence login, DNS over UDP and TCP, an admin's watch. Each
//! flood lasts `--duration` seconds; the probes' latencies and failures are the figures (the
//! hostile end-to-end test asserts only that they answer). keel runs on its default limits.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use keel_client::{Client, Records};
use keel_testkit::flood::{self, Flood, Probe, Target};
use serde_json::{json, Value};

use crate::output::table;
use crate::server::{percentile, start_server_with};

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct FloodReport {
    pub seconds_per_flood: u64,
    pub rows: Vec<Row>,
}

#[derive(Debug, serde::Serialize)]
pub(crate) struct Row {
    pub flood: String,
    /// Connections the flooder tried.
    pub tried: usize,
    /// Those that connected (for `/poll`, that answered 200). keel closes those past the
    /// source's share soon after: a connection counted here is not one keel kept.
    pub connected: usize,
    pub probe: String,
    pub probes: usize,
    pub failed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The first failure's reason, if any.
    pub error: Option<String>,
}

/// The floods, each larger than the pool it aims at (`[http] max_connections` 4,096 with 256 per
/// address, `[watch] max_subscribers` 2,048 with 16 per anonymous address, `[dns] max_tcp` 128).
const FLOODS: [Option<Flood>; 5] = [
    None,
    Some(Flood::IdleHttp(5000)),
    Some(Flood::AnonymousPolls(200)),
    Some(Flood::DnsNonReaders(300)),
    Some(Flood::StalledTls(1000)),
];

pub(crate) async fn run(dir: &Path, seconds: u64) -> anyhow::Result<FloodReport> {
    std::fs::create_dir_all(dir)?;
    flood::raise_open_file_limit(16_384)?;
    let server = start_server_with(dir, "[tls]\nlisten = \"127.0.0.1:0\"\n", &[])?;
    let https = keel_testkit::wait_for_file(
        &server.data.join(keel_client::data_dir::TLS_ADDR),
        Duration::from_secs(30),
        || false,
    )
    .context("keel did not write its HTTPS address")?;
    let client = Client::new(&server.url, Some(server.token.clone()))?;
    let pc = json!({"hostname": "probe-pc", "mac": "02:00:00:00:00:01", "mtype": "user", "room": "pasteur"});
    client.create::<Value>(Records::Machines, &pc).await?;
    client
        .create::<Value>(Records::Users, &json!({"login": "prober", "group": "user"}))
        .await?;
    let target = Target {
        http: server.url.trim_start_matches("http://").parse()?,
        https: Some(https.trim().parse()?),
        dns: server.dns.parse()?,
        token: server.token.clone(),
        login: "prober".into(),
        hostname: "probe-pc".into(),
        name: "probe-pc.bench".into(),
    };
    let mut report = FloodReport {
        seconds_per_flood: seconds,
        rows: Vec::new(),
    };
    for f in FLOODS {
        let name = f.map_or("none (baseline)", Flood::name);
        eprintln!("bench: flood: {name}, {seconds} s");
        let held = match f {
            Some(f) => Some(flood::start(f, [127, 0, 0, 2], &target).await),
            None => None,
        };
        let connected = held.as_ref().map_or(0, |h| h.streams.len());
        let tried = held.as_ref().map_or(0, |h| h.streams.len() + h.refused);
        let times = probe_for(&target, Duration::from_secs(seconds)).await;
        drop(held);
        for (p, (ok, errors)) in Probe::ALL.iter().zip(times) {
            report.rows.push(Row {
                flood: name.into(),
                tried,
                connected,
                probe: p.name().into(),
                probes: ok.len() + errors.len(),
                failed: errors.len(),
                p50_ms: percentile(&ok, 0.5),
                p99_ms: percentile(&ok, 0.99),
                max_ms: ok.iter().copied().fold(0.0, f64::max),
                error: errors.into_iter().next(),
            });
        }
    }
    Ok(report)
}

/// Every probe in turn from 127.0.0.1 for `length`: per probe, the times (ms) of those that
/// answered and the reasons of those that did not.
async fn probe_for(t: &Target, length: Duration) -> Vec<(Vec<f64>, Vec<String>)> {
    let mut out: Vec<(Vec<f64>, Vec<String>)> = Probe::ALL.iter().map(|_| (Vec::new(), Vec::new())).collect();
    let started = Instant::now();
    while started.elapsed() < length {
        for (p, slot) in Probe::ALL.iter().zip(out.iter_mut()) {
            match flood::probe(*p, [127, 0, 0, 1], t).await {
                Ok(d) => slot.0.push(d.as_secs_f64() * 1000.0),
                Err(e) => slot.1.push(e),
            }
        }
    }
    out
}

pub(crate) fn print(r: &FloodReport) {
    println!(
        "\nflood: one source (127.0.0.2) floods, another (127.0.0.1) probes, {} s each",
        r.seconds_per_flood
    );
    let rows = r
        .rows
        .iter()
        .map(|x| {
            vec![
                x.flood.clone(),
                format!("{}/{}", x.connected, x.tried),
                x.probe.clone(),
                format!("{}/{}", x.probes - x.failed, x.probes),
                format!("{:.2}", x.p50_ms),
                format!("{:.2}", x.p99_ms),
                format!("{:.2}", x.max_ms),
                x.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "flood",
                "connected",
                "probe",
                "answered",
                "p50 ms",
                "p99 ms",
                "max ms",
                "first failure"
            ],
            rows
        )
    );
}
