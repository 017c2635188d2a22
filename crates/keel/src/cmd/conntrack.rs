//! `keel conntrack-log`: the attributed connection log (see `crate::conntrack`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keel_client::{Client, WatchEvent, WatchOptions};
use keel_model::{Kind, Op};
use parking_lot::Mutex;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::conntrack::{self, Entry, Rotating, Seats};

#[derive(Debug, clap::Args)]
pub struct ConntrackArgs {
    /// Read events from this file ("-": stdin) instead of running the command; stops at its end.
    #[arg(long)]
    input: Option<PathBuf>,
    /// The event source, run on the gateway (needs CAP_NET_ADMIN; package conntrack).
    #[arg(long, default_value = "conntrack -E -e NEW -o timestamp", value_name = "COMMAND")]
    command: String,
    /// Where the daily files go.
    #[arg(long, default_value = "/var/log/keel/conntrack")]
    dir: PathBuf,
    /// Rotate a day's file when it would pass this many MiB.
    #[arg(long, default_value_t = 100)]
    max_mib: u64,
}

pub async fn run(c: &Client, args: &ConntrackArgs) -> anyhow::Result<()> {
    let seats = Arc::new(Mutex::new(Seats::default()));
    let (ready_tx, mut ready) = tokio::sync::watch::channel(false);
    tokio::spawn(follow(c.clone(), seats.clone(), ready_tx));
    if tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
        .await
        .is_err()
    {
        tracing::warn!("keel's state is not loaded yet: flows are logged without hostname and login until it is");
    }
    let mut out = Rotating::new(&args.dir, args.max_mib.saturating_mul(1024 * 1024))
        .with_context(|| format!("cannot write to {}", args.dir.display()))?;
    let (logged, skipped) = match &args.input {
        Some(p) if p.as_os_str() == "-" => {
            copy(tokio::io::BufReader::new(tokio::io::stdin()), &seats, &mut out).await?
        }
        Some(p) => {
            let f = tokio::fs::File::open(p)
                .await
                .with_context(|| format!("cannot read {}", p.display()))?;
            copy(tokio::io::BufReader::new(f), &seats, &mut out).await?
        }
        None => {
            let words: Vec<&str> = args.command.split_whitespace().collect();
            let (prog, rest) = words.split_first().context("--command is empty")?;
            let mut child = tokio::process::Command::new(prog)
                .args(rest)
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot run {prog}"))?;
            let stdout = child.stdout.take().context("no stdout")?;
            let counts = copy(tokio::io::BufReader::new(stdout), &seats, &mut out).await?;
            let status = child.wait().await?;
            anyhow::ensure!(status.success(), "{} ended: {status}", args.command);
            counts
        }
    };
    eprintln!("keel conntrack-log: {logged} flow(s) logged, {skipped} line(s) skipped");
    Ok(())
}

/// Keeps `seats` current from the watch stream (reconnecting); `ready` once a snapshot is in.
async fn follow(c: Client, seats: Arc<Mutex<Seats>>, ready: tokio::sync::watch::Sender<bool>) {
    let mut watch = c.watch(WatchOptions {
        kinds: Some(vec![Kind::Machine, Kind::Session]),
        reconnect: true,
        ..WatchOptions::default()
    });
    loop {
        let ev = match watch.next().await {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(%e, "watch stream failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut s = seats.lock();
        match ev {
            WatchEvent::SnapshotBegin { .. } => s.clear(),
            WatchEvent::Record { kind, data } => s.apply(kind, false, &data),
            WatchEvent::SnapshotEnd { .. } => {
                let _ = ready.send(true);
            }
            WatchEvent::Change { kind, op, data, .. } => s.apply(kind, op == Op::Delete, &data),
        }
    }
}

/// Every line of `input`, parsed, attributed and written; (logged, skipped).
async fn copy(
    input: impl AsyncBufRead + Unpin,
    seats: &Mutex<Seats>,
    out: &mut Rotating,
) -> anyhow::Result<(u64, u64)> {
    let mut lines = input.lines();
    let (mut n, mut logged, mut skipped) = (0u64, 0u64, 0u64);
    while let Some(line) = lines.next_line().await? {
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        let flow = match conntrack::parse(&line) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(line = n, %e, "not a conntrack event; skipped");
                skipped += 1;
                continue;
            }
        };
        let t = flow
            .epoch
            .and_then(|e| time::OffsetDateTime::from_unix_timestamp_nanos(e).ok())
            .unwrap_or_else(time::OffsetDateTime::now_utc);
        let time = keel_store::rfc3339(t);
        let text = {
            let s = seats.lock();
            let (hostname, login) = s.at(&flow.src);
            serde_json::to_string(&Entry {
                time: time.clone(),
                flow: &flow,
                hostname,
                login,
            })?
        };
        out.write(&time[..10], &text)?;
        logged += 1;
    }
    Ok((logged, skipped))
}
