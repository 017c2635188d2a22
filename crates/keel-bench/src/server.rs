//! The server under test: `keel serve` started from the `keel` binary beside this one, on
//! loopback with its own config and data directory, and what the suites share to fill it and read
//! their figures.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use keel_client::Client;
use keel_testkit::{KeelCommand, KeelProcess};
use serde_json::{json, Value};

/// A binary built beside this one (`keel`, `keel-agent`), with an error that says how to build
/// it when it is missing.
pub(crate) fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it beside keel-bench (cargo build --release -p {name})",
            path.display()
        );
    }
    Ok(path)
}

/// The server under test; killed when dropped, whatever happens.
pub(crate) type Server = KeelProcess;

pub(crate) fn start_server(dir: &Path) -> anyhow::Result<Server> {
    start_server_with(dir, "", &[])
}

/// A bench server whose config also holds `extra` (TOML tables), with `args` to `keel serve`.
pub(crate) fn start_server_with(dir: &Path, extra: &str, args: &[&str]) -> anyhow::Result<Server> {
    start_server_dns(dir, "", extra, args)
}

/// As [`start_server_with`], with `dns` (TOML keys) in the `[dns]` table.
pub(crate) fn start_server_dns(dir: &Path, dns: &str, extra: &str, args_extra: &[&str]) -> anyhow::Result<Server> {
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
    let mut args: Vec<OsString> = vec!["--config".into(), cfg.into_os_string()];
    args.extend(args_extra.iter().map(OsString::from));
    let command = KeelCommand {
        keel: sibling("keel")?,
        args,
        data: dir.join("data"),
        log: dir.join("server.log"),
        env: Vec::new(),
    };
    Ok(KeelProcess::start(&command)?)
}

pub(crate) fn mac_of(i: u32) -> String {
    let b = i.to_be_bytes();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// Adds machines `from..to` through the import endpoint, in batches.
pub(crate) async fn fill(c: &Client, from: u32, to: u32) -> anyhow::Result<()> {
    fill_with(c, from, to, |k| {
        json!({"hostname": format!("fill{k}"), "mac": mac_of(k), "mtype": "user", "room": "pasteur", "rfs": 1, "hfs": 1})
    })
    .await
}

/// Adds machines `from..to`, each the import row `row` makes of its number, 2,000 per commit.
pub(crate) async fn fill_with(c: &Client, from: u32, to: u32, row: impl Fn(u32) -> Value) -> anyhow::Result<()> {
    let mut i = from;
    while i < to {
        let end = (i + 2000).min(to);
        import(c, (i..end).map(&row).collect()).await?;
        i = end;
    }
    Ok(())
}

/// Registers one machine through the mdb `register` call, as a booting machine does.
pub(crate) async fn register(c: &Client, hostname: &str, mac: &str) -> anyhow::Result<()> {
    let body = json!({"args": [hostname, mac, 1, 1, "pasteur", "user"]});
    let reply: Value = c
        .call(reqwest::Method::POST, "/call/register", Some(&body), None)
        .await?
        .value;
    if reply["type"] != "result" {
        bail!("register failed: {reply}");
    }
    Ok(())
}

/// Milliseconds since `t`.
pub(crate) fn ms(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Adds machines through the import endpoint, in one commit.
pub(crate) async fn import(c: &Client, rows: Vec<Value>) -> anyhow::Result<()> {
    c.import_machines(rows, false).await?;
    Ok(())
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
