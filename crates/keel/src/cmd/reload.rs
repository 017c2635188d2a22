//! `keel reload`: the running server reads its config file again — checked here first, then
//! signalled (SIGHUP), then its own outcome waited for and printed. The unit's `ExecReload=`, so
//! that `systemctl reload keel` fails, visibly, when the file is refused.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use keel_client::data_dir as files;

use crate::config::{self, Flags};
use crate::outln;
use crate::serve::reload::Report;

#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    /// The server's process id (systemd gives `$MAINPID`); default: the one holding the data
    /// directory's lock, as written in DATA_DIR/keel.lock.
    #[arg(long)]
    pid: Option<i32>,
    /// How long to wait for the server's answer.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
}

/// Exits 0 when the server applied the file, 1 when the file (or the server) refused it.
pub fn run(flags: &Flags, args: &ReloadArgs, json: bool) -> anyhow::Result<bool> {
    let cfg = match config::load(flags) {
        Ok(c) => c,
        Err(errors) => {
            let report = Report {
                errors: errors.0.iter().map(ToString::to_string).collect(),
                ..Report::default()
            };
            print(&report, json, "not sent: the running keel keeps its configuration")?;
            return Ok(false);
        }
    };
    let pid = match args.pid {
        Some(p) => p,
        None => server_pid(&cfg.data_dir)?,
    };
    let before = Report::read(&cfg.data_dir)
        .filter(|r| i64::from(r.pid) == i64::from(pid))
        .map_or(0, |r| r.generation);
    let target = rustix::process::Pid::from_raw(pid).context("--pid must be a process id above 0")?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP)
        .with_context(|| format!("cannot signal keel (pid {pid})"))?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    loop {
        if let Some(r) = Report::read(&cfg.data_dir) {
            if i64::from(r.pid) == i64::from(pid) && r.generation > before {
                let ok = r.ok;
                print(&r, json, "")?;
                return Ok(ok);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "keel (pid {pid}) did not answer within {} s (see its log)",
            args.timeout_secs
        );
        // sleep-ok: polling the server's answer file, bounded by the deadline above.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid `keel serve` wrote in the lock file it holds.
fn server_pid(data_dir: &Path) -> anyhow::Result<i32> {
    let path = data_dir.join(files::LOCK);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (is keel serving from {}? give --pid or --config)",
            path.display(),
            data_dir.display()
        )
    })?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds no process id: is keel running?", path.display()))
}

fn print(r: &Report, json: bool, why: &str) -> anyhow::Result<()> {
    if json {
        return crate::output::print_json(r);
    }
    if r.errors.is_empty() {
        outln!("keel: configuration reloaded")?;
    } else {
        eprintln!(
            "keel: reload refused{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            }
        );
        for e in &r.errors {
            eprintln!("  {e}");
        }
    }
    for a in &r.applied {
        outln!("  applied: {a}")?;
    }
    for k in &r.kept {
        outln!("  changed, applies at the next restart: {k}")?;
    }
    Ok(())
}
