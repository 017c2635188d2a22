//! `keel bench dns`: dnsperf (Debian package `dnsperf`) against the built-in DNS of a server
//! holding `machines` machines. A mix of A queries for hostnames (90%), PTR (5%) and names that
//! do not exist (5%); dnsperf shares the machine's cores with keel.

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context};
use keel_client::Client;

use crate::bench::{fill, start_server};
use crate::output::table;

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct DnsReport {
    pub machines: u32,
    pub seconds: u64,
    pub queries_per_s: f64,
    pub lost: u64,
    pub avg_latency_ms: f64,
    /// GEN of the `dns` zones and the `dhcp` config for all the machines (median of 20).
    pub gen_dns_dhcp_ms: f64,
}

pub(crate) async fn run(dir: &Path, machines: u32, seconds: u64) -> anyhow::Result<DnsReport> {
    std::fs::create_dir_all(dir)?;
    let server = start_server(dir)?;
    let client = Client::new(&server.url, Some(server.token.clone()))?;
    eprintln!("bench: filling to {machines} machines");
    fill(&client, 0, machines).await?;
    let addr = std::fs::read_to_string(server.data.join("dns.addr")).context("the server's DNS did not start")?;
    let (host, port) = addr.trim().rsplit_once(':').context("dns.addr")?;
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
                mac: keel_model::Mac::parse("mac", &crate::bench::mac_of(i))?,
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
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    Ok(crate::bench::percentile(&times, 0.5))
}

pub(crate) fn print(r: &DnsReport) {
    let rows = vec![
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
