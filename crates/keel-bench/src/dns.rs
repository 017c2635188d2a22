//! `keel bench dns`: dnsperf (Debian package `dnsperf`) against the built-in DNS of a server
//! holding `machines` machines. A mix of A queries for hostnames (90%), PTR (5%) and names that
//! do not exist (5%); dnsperf shares the machine's cores with keel.

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context};
use keel_client::Client;

use crate::output::table;
use crate::server::{fill, start_server};

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct DnsReport {
    pub machines: u32,
    pub seconds: u64,
    pub queries_per_s: f64,
    pub lost: u64,
    pub avg_latency_ms: f64,
    /// GEN of the `dns` zones and the `dhcp` config for all the machines (median of 20).
    pub gen_dns_dhcp_ms: f64,
    /// Authoritative answers one at a time, alone and with forwards hanging on a dead upstream.
    pub dead_upstream: DeadUpstream,
}

/// Latency of authoritative answers (one query at a time, `QUERIES` of them), first with no
/// forward in flight, then with `in_flight` queries for outside names held by an upstream that
/// never answers (each waits its 2 s; they are renewed as they time out).
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct DeadUpstream {
    pub in_flight: usize,
    pub alone_p50_ms: f64,
    pub alone_p99_ms: f64,
    pub hanging_p50_ms: f64,
    pub hanging_p99_ms: f64,
    pub hanging_max_ms: f64,
    /// Outside queries the dead upstream received during the measure (they were in flight).
    pub forwards_seen: u64,
}

const QUERIES: usize = 20_000;

pub(crate) async fn run(dir: &Path, machines: u32, seconds: u64) -> anyhow::Result<DnsReport> {
    std::fs::create_dir_all(dir)?;
    let dead_upstream = tokio::task::spawn_blocking({
        let dir = dir.join("dead-upstream");
        move || dead_upstream(&dir, 50)
    })
    .await??;
    let server = start_server(dir)?;
    let client = Client::new(&server.url, Some(server.token.clone()))?;
    eprintln!("bench: filling to {machines} machines");
    fill(&client, 0, machines).await?;
    anyhow::ensure!(!server.dns.is_empty(), "the server's DNS did not start");
    let (host, port) = server.dns.rsplit_once(':').context("dns.addr")?;
    let queries = dir.join("queries.txt");
    let mut text = String::new();
    for i in 0..machines {
        match i % 20 {
            0 => text.push_str(&format!("{}.{}.0.10.in-addr.arpa PTR\n", i % 250 + 1, i / 250 % 256)),
            1 => text.push_str(&format!("nosuch{i}.bench A\n")),
            _ => text.push_str(&format!("fill{i}.bench A\n")),
        }
    }
    std::fs::write(&queries, text)?;
    eprintln!("bench: dnsperf for {seconds} s");
    let out = Command::new("dnsperf")
        .args(["-s", host, "-p", port, "-d"])
        .arg(&queries)
        .args(["-l", &seconds.to_string(), "-c", "8", "-T", "1", "-q", "500"])
        .output()
        .context("dnsperf (Debian package dnsperf) must be installed")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "dnsperf failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |key: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let gen_dns_dhcp_ms = gen_ms(machines)?;
    Ok(DnsReport {
        gen_dns_dhcp_ms,
        dead_upstream,
        machines,
        seconds,
        queries_per_s: field("Queries per second:").context("no qps in dnsperf's output")?,
        lost: field("Queries lost:").unwrap_or(0.0) as u64,
        avg_latency_ms: field("Average Latency (s):").unwrap_or(0.0) * 1000.0,
    })
}

/// GEN of `dns` and `dhcp` for `n` machines in 10.0.0.0/16: the median of 20 runs, in ms.
fn gen_ms(n: u32) -> anyhow::Result<f64> {
    let machines = (0..n)
        .map(|i| {
            let [_, _, hi, lo] = (i + 1).to_be_bytes();
            Ok(keel_model::Machine {
                id: u64::from(i) + 1,
                hostname: keel_model::Hostname::parse("hostname", &format!("fill{i}"))?,
                aliases: Vec::new(),
                ip: std::net::Ipv4Addr::new(10, 0, hi, lo),
                mac: keel_model::Mac::parse("mac", &crate::server::mac_of(i))?,
                mtype: keel_model::MachineType::User,
                room: "pasteur".into(),
                rfs: 1,
                hfs: 1,
                is_faulty: false,
                faulty_reason: String::new(),
                boot: None,
                version: u64::from(i) + 1,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let net: ipnet::Ipv4Net = "10.0.0.0/16".parse()?;
    let input = keel_gen::Input {
        machines: machines.iter().collect(),
        reverse_zones: vec![keel_model::reverse_zone(net)],
        networks: vec![net],
        serial: u64::from(n),
        ..Default::default()
    };
    let opts = keel_gen::Options::default();
    let times: Vec<f64> = (0..20)
        .map(|_| {
            let t = std::time::Instant::now();
            std::hint::black_box((keel_gen::dns(&input, &opts).ok(), keel_gen::dhcp(&input, &opts).ok()));
            crate::server::ms(t)
        })
        .collect();
    Ok(crate::server::percentile(&times, 0.5))
}

/// `QUERIES` authoritative queries one after the other: each one's time in ms.
fn time_answers(sock: &std::net::UdpSocket, server: &str) -> anyhow::Result<Vec<f64>> {
    let mut buf = [0u8; 1500];
    let mut times = Vec::with_capacity(QUERIES);
    for i in 0..QUERIES {
        let id = u16::try_from(i % 60_000).unwrap_or(0);
        let started = std::time::Instant::now();
        // The zone's apex: an authoritative answer (SOA, no A) from the Snapshot.
        sock.send_to(&keel_testkit::dns_query(id, "bench"), server)?;
        loop {
            let n = sock.recv(&mut buf).context("an authoritative answer timed out")?;
            if n >= 2 && buf[..2] == id.to_be_bytes() {
                break;
            }
        }
        times.push(crate::server::ms(started));
    }
    Ok(times)
}

fn dead_upstream(dir: &Path, in_flight: usize) -> anyhow::Result<DeadUpstream> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    std::fs::create_dir_all(dir)?;
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let dns = format!(
        "upstream = [\"{}\"]\nforward_per_minute = 1000000\nmax_forwards = {}\n",
        dead.local_addr()?,
        in_flight * 2
    );
    let server = crate::server::start_server_dns(dir, &dns, "", &[])?;
    anyhow::ensure!(!server.dns.is_empty(), "the server's DNS did not start");
    let addr = server.dns.clone();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    eprintln!("bench: {QUERIES} authoritative queries alone, then with {in_flight} forwards hanging");
    let alone = time_answers(&sock, &addr)?;
    // The dead upstream counts what reaches it; a sender keeps `in_flight` forwards waiting.
    let (stop, seen) = (AtomicBool::new(false), AtomicU64::new(0));
    dead.set_read_timeout(Some(std::time::Duration::from_millis(100)))?;
    let hanging = std::thread::scope(|s| -> anyhow::Result<Vec<f64>> {
        s.spawn(|| {
            let mut buf = [0u8; 1500];
            while !stop.load(Relaxed) {
                if dead.recv(&mut buf).is_ok() {
                    seen.fetch_add(1, Relaxed);
                }
            }
        });
        s.spawn(|| -> anyhow::Result<()> {
            let out = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let mut n = 0u32;
            while !stop.load(Relaxed) {
                for _ in 0..in_flight {
                    n = n.wrapping_add(1);
                    out.send_to(&keel_testkit::dns_query(0, &format!("h{n}.outside.test")), &addr)?;
                }
                // Each forward waits 2 s for the dead upstream: renew them as they give up.
                for _ in 0..20 {
                    if stop.load(Relaxed) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
            Ok(())
        });
        while seen.load(Relaxed) < in_flight as u64 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let times = time_answers(&sock, &addr);
        stop.store(true, Relaxed);
        times
    })?;
    let p = crate::server::percentile;
    Ok(DeadUpstream {
        in_flight,
        alone_p50_ms: p(&alone, 0.5),
        alone_p99_ms: p(&alone, 0.99),
        hanging_p50_ms: p(&hanging, 0.5),
        hanging_p99_ms: p(&hanging, 0.99),
        hanging_max_ms: p(&hanging, 1.0),
        forwards_seen: seen.load(Relaxed),
    })
}

pub(crate) fn print(r: &DnsReport) {
    let d = &r.dead_upstream;
    let rows = vec![
        vec![
            format!("authoritative, one at a time, {QUERIES} queries"),
            format!("p50 {:.2} ms, p99 {:.2} ms", d.alone_p50_ms, d.alone_p99_ms),
            String::new(),
        ],
        vec![
            format!(
                "  the same with {} forwards hanging on a dead upstream ({} reached it)",
                d.in_flight, d.forwards_seen
            ),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                d.hanging_p50_ms, d.hanging_p99_ms, d.hanging_max_ms
            ),
            "p99 < 10 ms".into(),
        ],
        vec![
            format!("GEN dns zones + dhcpd.conf, {} machines", r.machines),
            format!("{:.2} ms (median of 20)", r.gen_dns_dhcp_ms),
            "< 20 ms".into(),
        ],
        vec![
            format!("dnsperf, {} machines, {} s", r.machines, r.seconds),
            format!(
                "{:.0} queries/s, {} lost, average latency {:.2} ms",
                r.queries_per_s, r.lost, r.avg_latency_ms
            ),
            "≥ 25,000 qps".into(),
        ],
    ];
    println!("{}", table(&["measure", "result", "target"], rows));
}
