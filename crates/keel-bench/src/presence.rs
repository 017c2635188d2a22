//! `keel bench presence`: `/sso` under wrk (Debian package `wrk`), presence logins/s, and the
//! time from a login to its address in the firewall set applied by the real `nft` (in a network
//! namespace this bench creates: needs root or user namespaces, `nft`, `nsenter`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use keel_client::{Client, Records};
use serde_json::{json, Value};

use crate::output::table;
use crate::server::{fill, percentile, start_server_with, Server};

/// The shipped firewall hooks, as an agent on the gateway runs them.
const HOOKS: [(&str, &str); 3] = [
    (
        "pre_10_nft_check",
        include_str!("../../../contrib/agent.d/firewall.d/pre_10_nft_check"),
    ),
    (
        "mid_10_nft_apply",
        include_str!("../../../contrib/agent.d/firewall.d/mid_10_nft_apply"),
    ),
    (
        "post_10_conntrack_cut",
        include_str!("../../../contrib/agent.d/firewall.d/post_10_conntrack_cut"),
    ),
];

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct PresenceReport {
    pub sso_per_s: f64,
    pub sso_p50_ms: f64,
    pub sso_p99_ms: f64,
    /// The same with `keel serve --workers 1` (wrk then has a core of its own).
    pub sso_1_worker_per_s: f64,
    pub sso_1_worker_p50_ms: f64,
    pub sso_1_worker_p99_ms: f64,
    pub logins: usize,
    pub logins_per_s: f64,
    pub login_p50_ms: f64,
    pub login_p99_ms: f64,
    /// Login answered → its address in the applied nft set.
    pub firewall_samples: usize,
    pub firewall_p50_ms: f64,
    pub firewall_max_ms: f64,
    /// Why the firewall figure is missing, if it is.
    pub firewall_skipped: Option<String>,
}

pub(crate) async fn run(dir: &Path, logins: usize, seconds: u64) -> anyhow::Result<PresenceReport> {
    std::fs::create_dir_all(dir)?;
    let mut r = PresenceReport {
        logins,
        ..PresenceReport::default()
    };
    let server = start_server_with(dir, "", &[])?;
    let client = Client::new(&server.url, Some(server.token.clone()))?;
    eprintln!("bench: {logins} machines and users");
    seat_people(&client, logins).await?;
    eprintln!("bench: {logins} logins, 16 at a time");
    (r.logins_per_s, r.login_p50_ms, r.login_p99_ms) = login_all(&client, 0..logins).await?;
    eprintln!("bench: /sso with wrk -t1 -c16 for {seconds} s");
    (r.sso_per_s, r.sso_p50_ms, r.sso_p99_ms) = wrk_sso(&server, seconds)?;
    drop(server);
    eprintln!("bench: the same with `keel serve --workers 1`");
    let one = dir.join("one-worker");
    std::fs::create_dir_all(&one)?;
    let server = start_server_with(&one, "", &["--workers", "1"])?;
    seat_people(&Client::new(&server.url, Some(server.token.clone()))?, 1).await?;
    let c = Client::new(&server.url, Some(server.token.clone()))?;
    login_all(&c, 0..1).await?;
    (r.sso_1_worker_per_s, r.sso_1_worker_p50_ms, r.sso_1_worker_p99_ms) = wrk_sso(&server, seconds)?;
    drop(server);
    match firewall(&dir.join("firewall"), 30).await {
        Ok(samples) => {
            r.firewall_samples = samples.len();
            r.firewall_p50_ms = percentile(&samples, 0.5);
            r.firewall_max_ms = samples.iter().copied().fold(0.0, f64::max);
        }
        Err(e) => r.firewall_skipped = Some(format!("{e:#}")),
    }
    Ok(r)
}

/// `n` user machines (fill0…) and `n` contestants (bench0…).
async fn seat_people(c: &Client, n: usize) -> anyhow::Result<()> {
    fill(c, 0, u32::try_from(n)?).await?;
    let users: Vec<Value> = (0..n)
        .map(|i| json!({"login": format!("bench{i}"), "group": "user"}))
        .collect();
    c.import_users(&json!({"users": users})).await?;
    Ok(())
}

/// Logs `bench{i}` in on `fill{i}` for each i, 16 requests in flight; (per s, p50 ms, p99 ms).
async fn login_all(c: &Client, range: std::ops::Range<usize>) -> anyhow::Result<(f64, f64, f64)> {
    let n = range.len();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(range.start));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (c, next, end) = (c.clone(), next.clone(), range.end);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let body = json!({"login": format!("bench{i}"), "hostname": format!("fill{i}")});
                let t = Instant::now();
                c.open_session(&body).await?;
                lat.push(crate::server::ms(t));
            }
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok((
        n as f64 / start.elapsed().as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    ))
}

/// wrk on `/sso` as nginx calls it (X-Real-IP of a logged-in machine); (req/s, p50 ms, p99 ms).
fn wrk_sso(server: &Server, seconds: u64) -> anyhow::Result<(f64, f64, f64)> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c16",
            "--latency",
            "-d",
            &format!("{seconds}s"),
            "-H",
            "X-Real-IP: 10.0.0.1",
        ])
        .arg(format!("{}/sso", server.url))
        .output()
        .context("wrk (Debian package wrk) must be installed")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Requests/sec in wrk's output")?;
    let pct = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .and_then(|v| wrk_ms(v.trim()))
            .unwrap_or(f64::NAN)
    };
    Ok((rate, pct("50%"), pct("99%")))
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.00s`.
fn wrk_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

/// A network namespace held by a sleeping child; killed when dropped.
struct Netns(std::process::Child);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Netns {
    fn new() -> anyhow::Result<Self> {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "300"])
            .stderr(Stdio::null())
            .spawn()
            .context("unshare -n (root or user namespaces)")?;
        std::thread::sleep(Duration::from_millis(100));
        Ok(Self(child))
    }

    fn nft_set(&self) -> String {
        Command::new("nsenter")
            .args([
                "-t",
                &self.0.id().to_string(),
                "-n",
                "nft",
                "list",
                "set",
                "inet",
                "keel",
                "internet",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// keel with a `firewall` facility applied in a namespace by the built-in agent and the shipped
/// hooks; `samples` logins timed until their address is in the kernel's set.
async fn firewall(dir: &Path, samples: usize) -> anyhow::Result<Vec<f64>> {
    std::fs::create_dir_all(dir.join("hooks/firewall.d"))?;
    let ns = Netns::new()?;
    ensure!(
        Command::new("nsenter")
            .args(["-t", &ns.0.id().to_string(), "-n", "nft", "list", "tables"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "nft in a network namespace is not available here (root, nftables and nsenter are needed)"
    );
    for (name, text) in HOOKS {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("hooks/firewall.d").join(name);
        std::fs::write(&p, text)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    }
    let agent_cfg = dir.join("agent.toml");
    let exe = crate::server::sibling("keel")?;
    let local = [
        "nsenter".to_owned(),
        "-t".into(),
        ns.0.id().to_string(),
        "-n".into(),
        exe.display().to_string(),
        "agent".into(),
        "--config".into(),
        agent_cfg.display().to_string(),
        "apply".into(),
    ];
    let quoted: Vec<String> = local.iter().map(|s| format!("{s:?}")).collect();
    let server = start_server_with(
        dir,
        &format!("[propagation]\nlocal_command = [{}]\n", quoted.join(", ")),
        &[],
    )?;
    let client = Client::new(&server.url, Some(server.token.clone()))?;
    let key: Value = client.propagation_key().await?;
    std::fs::write(
        &agent_cfg,
        format!(
            "fqdn = \"gw\"\ntrusted_keys = [{:?}]\ndns_alias_whitelist = [\"local\"]\nroot_dir = \"{}\"\nhooks_dir = \"{}\"\n",
            key["public_key"].as_str().unwrap_or_default(),
            dir.join("root").display(),
            dir.join("hooks").display()
        ),
    )?;
    seat_people(&client, samples).await?;
    let facility = json!({"name": "gw", "services": ["firewall"]});
    client.create::<Value>(Records::Facilities, &facility).await?;
    let dest = json!({"facility": "gw", "service": "firewall", "destination": "local", "channel": "local"});
    client.create::<Value>(Records::Destinations, &dest).await?;
    eprintln!("bench: {samples} logins → address in the applied nft set");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ns.nft_set().contains("set internet") {
        ensure!(
            Instant::now() < deadline,
            "the firewall never applied; see {}",
            dir.join("server.log").display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        let body = json!({"login": format!("bench{i}"), "hostname": format!("fill{i}")});
        let s: Value = client.open_session(&body).await?;
        let t = Instant::now();
        let m: Value = client
            .show(Records::Machines, &[s["hostname"].as_str().unwrap_or("")])
            .await?;
        let ip = m["ip"].as_str().unwrap_or("?").to_owned();
        while !ns.nft_set().contains(&ip) {
            ensure!(t.elapsed() < Duration::from_secs(10), "{ip} never reached the set");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lat.push(crate::server::ms(t));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(lat)
}

pub(crate) fn print(r: &PresenceReport) {
    let f = |v: f64| format!("{v:.2}");
    let firewall = match &r.firewall_skipped {
        Some(why) => format!("not measured: {why}"),
        None => format!(
            "p50 {} ms, max {} ms ({} logins)",
            f(r.firewall_p50_ms),
            f(r.firewall_max_ms),
            r.firewall_samples
        ),
    };
    let rows = vec![
        vec![
            "/sso, wrk -t1 -c16".into(),
            format!(
                "{:.0} req/s (p50 {} ms, p99 {} ms)",
                r.sso_per_s,
                f(r.sso_p50_ms),
                f(r.sso_p99_ms)
            ),
            "≥ 40,000 req/s, p99 < 2 ms".into(),
        ],
        vec![
            "/sso, the same, keel serve --workers 1".into(),
            format!(
                "{:.0} req/s (p50 {} ms, p99 {} ms)",
                r.sso_1_worker_per_s,
                f(r.sso_1_worker_p50_ms),
                f(r.sso_1_worker_p99_ms)
            ),
            "≥ 40,000 req/s, p99 < 2 ms".into(),
        ],
        vec![
            format!("presence logins ×{}, 16 in flight", r.logins),
            format!(
                "{:.0}/s (p50 {} ms, p99 {} ms)",
                r.logins_per_s,
                f(r.login_p50_ms),
                f(r.login_p99_ms)
            ),
            String::new(),
        ],
        vec![
            "login → address in the applied nft set".into(),
            firewall,
            "< 500 ms".into(),
        ],
    ];
    println!("{}", table(&["measure", "result", "target"], rows));
}
