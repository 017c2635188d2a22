//! `keel-bench`: measures keel on this machine. Each suite starts its own `keel serve` (the `keel`
//! binary beside this one) on loopback, with its own data directory; every load is bounded in
//! count and time and stops by itself. `keel bench …` runs this binary.
//!
//! The benchmarks live in their own crate so that the `keel` binary carries none of their
//! harnesses (a throwaway PostgreSQL, an sshd, epoll readers) or dependencies.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

mod data;
mod dns;
mod flood;
mod mdb;
mod memory;
mod output;
mod pg;
mod presence;
mod propagation;
mod scale;
mod server;
mod watch;
mod web;

use output::print_json;

/// jemalloc, as in `keel`: its statistics count the bytes a record costs (`bench scale`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Measure keel on this machine: starts its own servers on loopback; bounded in time.
#[derive(Debug, Parser)]
#[command(name = "keel-bench", version)]
struct Cli {
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    args: BenchArgs,
}

/// Which measurements to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Suite {
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
    /// Fair shares: one source floods each pooled resource (HTTP connections, /poll streams,
    /// DNS over TCP, TLS handshakes) for `--duration` s; another's /healthz, /sso, presence
    /// login, DNS and admin watch latencies.
    Flood,
    /// Growth with the site: single writes and lookups, imports, snapshots and RSS at 1k, 10k and
    /// 100k users (`--users`, machines in proportion to `--machines`), on SQLite and PostgreSQL.
    /// Not part of `all` (it takes minutes).
    Scale,
    /// All of them but `scale`.
    All,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// What to measure.
    #[arg(value_enum, default_value = "mdb")]
    suite: Suite,
    /// Watch subscribers for the latency and memory measurements.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Sequential registrations to time.
    #[arg(long, default_value_t = 2000)]
    registrations: u32,
    /// Machines for the large full-query measurement [default: 10,000; scale: 20,000].
    #[arg(long)]
    machines: Option<u32>,
    /// Users for the propagation measurements [default: 10,000; scale: 100,000].
    #[arg(long)]
    users: Option<usize>,
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
    /// One ssh process per send, as `[propagation.ssh] streams = false` does (and keel did before
    /// streams): to compare with one kept session per destination.
    #[arg(long)]
    no_streams: bool,
    /// Logins for the presence measurement (a LAN event's size; the contestants' uid pool holds 999).
    #[arg(long, default_value_t = 500)]
    logins: usize,
    /// Seconds of query(mac=) load (and of /sso load).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Keep-alive connections for the query(mac=) load (all from one client thread).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Databases for `scale`: sqlite, postgres or both.
    #[arg(long, value_enum, default_value = "both")]
    backends: scale::Backends,
    /// Directory for the bench database (default: ./keel-bench-PID, removed at the end). Use a real
    /// disk: on tmpfs the fsync figures mean nothing.
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl BenchArgs {
    /// `--machines`, or the contest's size.
    fn machines(&self) -> u32 {
        self.machines.unwrap_or(10_000)
    }

    /// `--users`, or the contest's size.
    fn users(&self) -> usize {
        self.users.unwrap_or(10_000)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keel-bench: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&cli.args, cli.json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &BenchArgs, json: bool) -> anyhow::Result<()> {
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
        let report = crate::mdb::run(&dir.join("mdb"), args).await?;
        if !json {
            crate::mdb::print(&report, args);
        }
        out.insert("mdb".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.suite, Suite::Watch | Suite::All) {
        let report = crate::watch::run(&dir.join("watch"), args.subscribers).await?;
        if !json {
            crate::watch::print(&report, args.subscribers);
        }
        out.insert("watch".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.suite, Suite::Dns | Suite::All) {
        let report = crate::dns::run(&dir.join("dns"), args.machines(), args.duration).await?;
        if !json {
            crate::dns::print(&report);
        }
        out.insert("dns".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.suite, Suite::Propagation | Suite::All) {
        let report = crate::propagation::run(
            &dir.join("propagation"),
            args.users(),
            args.destinations,
            args.remote_command.as_deref(),
            if args.plain_tar {
                keel_bundle::Encoding::Tar
            } else {
                keel_bundle::Encoding::Zstd
            },
            !args.no_streams,
        )
        .await?;
        if !json {
            crate::propagation::print(&report);
        }
        out.insert("propagation".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.suite, Suite::Postgres | Suite::All) {
        let report = crate::pg::run(&dir.join("postgres"), args.duration).await?;
        if !json {
            crate::pg::print(&report);
        }
        out.insert("postgres".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.suite, Suite::Web | Suite::All) {
        let report = crate::web::run(&dir.join("web"), args.machines()).await?;
        if !json {
            crate::web::print(&report);
        }
        out.insert("web".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.suite, Suite::Presence | Suite::All) {
        let report = crate::presence::run(&dir.join("presence"), args.logins, args.duration).await?;
        if !json {
            crate::presence::print(&report);
        }
        out.insert("presence".into(), serde_json::to_value(&report)?);
    }
    if matches!(args.suite, Suite::Flood | Suite::All) {
        let report = crate::flood::run(&dir.join("flood"), args.duration).await?;
        if !json {
            crate::flood::print(&report);
        }
        out.insert("flood".into(), serde_json::to_value(&report)?);
    }
    if args.suite == Suite::Scale {
        let users = u32::try_from(args.users.unwrap_or(100_000))?;
        let machines = args.machines.unwrap_or(20_000);
        let report = crate::scale::run(&dir.join("scale"), users, machines, args.backends).await?;
        if !json {
            crate::scale::print(&report);
        }
        out.insert("scale".into(), serde_json::to_value(&report)?);
    }
    if json {
        print_json(&out)?;
    }
    Ok(())
}
