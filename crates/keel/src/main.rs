//! `keel`: the server and its admin CLI in one binary.
// A binary exports nothing: `pub` here only means "visible to the other modules".
#![allow(unreachable_pub)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// jemalloc, with a background thread in the server that gives freed pages back to the system:
/// with glibc's malloc, more than half of the server's RSS after a few large imports was memory
/// already freed and kept in per-thread arenas (see [`purge_in_background`]).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod client_target;
mod cmd;
mod config;
mod conntrack;
mod man;
mod output;
mod private_file;
mod serve;
mod sheet;

use config::{FileConfig, ServeConfig, DEFAULT_DATA_DIR, DEFAULT_DNS_LISTEN, DEFAULT_LISTEN, DEFAULT_TFTP_LISTEN};

/// keel: one source of truth for a site's machines, users and sessions, pushed live to everything
/// that depends on it.
///
/// Run `keel serve --example-site` to start a server with a small example site, then use the other
/// commands (they talk to the server over HTTP, as any client does).
#[derive(Debug, Parser)]
#[command(name = "keel", version, propagate_version = true, arg_required_else_help = true)]
struct Cli {
    /// keel's URL, for client commands. Default: `url` of ~/.config/keel/cli.toml, else where the
    /// server's config file says it listens, else http://127.0.0.1:8080.
    #[arg(long, global = true, env = "KEEL_URL")]
    url: Option<String>,
    /// Bearer token for client commands. Default: `token_file` of ~/.config/keel/cli.toml, else
    /// the admin token in the data directory (the server's `data_dir` when its config is readable).
    #[arg(long, global = true, env = "KEEL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// keel's data directory (database, lock, first admin token).
    #[arg(long, global = true, env = "KEEL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// For an https:// URL: the site CA's PEM file to trust (`ca_file` in ~/.config/keel/cli.toml).
    #[arg(long, global = true, env = "KEEL_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// For an https:// URL: trust exactly the certificate with this SHA-256 fingerprint
    /// (`sha256:…`, as `keel serve` prints it; `pin` in cli.toml).
    #[arg(long, global = true, env = "KEEL_PIN")]
    pin: Option<String>,
    /// The server's config file (TOML), read by `serve` and, for the URL and data directory, by
    /// client commands. Default: /etc/keel/keel.toml if it exists.
    #[arg(long, global = true, env = "KEEL_CONFIG")]
    config: Option<PathBuf>,
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the keel server.
    Serve(ServeArgs),
    /// Machines: list, show, add, edit, remove, import.
    #[command(subcommand, alias = "machines")]
    Machine(cmd::machine::MachineCmd),
    /// Switches: list, show, add, edit, remove.
    #[command(subcommand, alias = "switches")]
    Switch(cmd::switch::SwitchCmd),
    /// Users: list, show, remove, import (with password sheets).
    #[command(subcommand, alias = "user")]
    Users(cmd::users::UsersCmd),
    /// Change your password (the current one is checked), or, as an admin, reset one.
    Passwd(cmd::passwd::PasswdArgs),
    /// Site-wide settings (contest_mode, allow_self_registration).
    #[command(subcommand, alias = "settings")]
    Setting(cmd::setting::SettingCmd),
    /// Propagation hosts: list, show, add, remove.
    #[command(subcommand, alias = "hosts")]
    Host(cmd::propagation::HostCmd),
    /// Facilities: the hosts, users and services propagated together.
    #[command(subcommand, alias = "facilities")]
    Facility(cmd::propagation::FacilityCmd),
    /// Where each facility's services are sent (ssh hosts, or `local`).
    #[command(subcommand, alias = "destinations")]
    Destination(cmd::propagation::DestinationCmd),
    /// Propagation status, force, block, inspect a bundle, the signing key.
    #[command(subcommand)]
    Propagation(cmd::propagation::PropagationCmd),
    /// The destination side, built in: apply a propagation bundle read on stdin (as keel-agent).
    Agent(keel_agent::cli::AgentArgs),
    /// Show the change log: who changed what, when.
    Log(cmd::log::LogArgs),
    /// Print the current state, then every change as it happens (resumes across disconnects).
    Watch(cmd::watch::WatchArgs),
    /// Log every new flow through the gateway with the machine and login behind its source
    /// (conntrack events → daily JSON-lines files).
    ConntrackLog(cmd::conntrack::ConntrackArgs),
    /// API tokens: create, list, revoke.
    #[command(subcommand, alias = "tokens")]
    Token(cmd::token::TokenCmd),
    /// Write a consistent copy of the live database to FILE (the server keeps serving).
    Backup(cmd::backup::BackupArgs),
    /// Replace the database with a backup (the server must be stopped).
    Restore(cmd::backup::RestoreArgs),
    /// Move the site to another database (SQLite ↔ PostgreSQL), verified row for row.
    MigrateDb(cmd::migrate::MigrateArgs),
    /// Measure keel on this machine: runs `keel-bench` (installed beside keel) with these
    /// arguments; `keel bench --help` lists the suites.
    #[command(disable_help_flag = true)]
    Bench {
        /// The suite and its options, as `keel-bench` takes them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Write the manual pages (keel(1) and one per command, keel-agent(8), keel.toml(5)) into DIR.
    #[command(hide = true)]
    Man { dir: PathBuf },
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on for HTTP (port 0 picks a free port, written to DATA_DIR/listen.addr).
    #[arg(long, env = "KEEL_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Address of the built-in DNS, UDP and TCP (port 0: a free port, written to
    /// DATA_DIR/dns.addr). Default 127.0.0.1:5353.
    #[arg(long, env = "KEEL_DNS_LISTEN")]
    dns_listen: Option<std::net::SocketAddr>,
    /// Address of the read-only TFTP server (port 0: a free port, written to DATA_DIR/tftp.addr).
    /// Default 127.0.0.1:6969.
    #[arg(long, env = "KEEL_TFTP_LISTEN")]
    tftp_listen: Option<std::net::SocketAddr>,
    /// Load a small example site into an empty database.
    #[arg(long)]
    example_site: bool,
    /// Serve REST reads without a token (the RPC query is always open).
    #[arg(long, env = "KEEL_OPEN_READS")]
    open_reads: bool,
    /// The database: a PostgreSQL URL (`postgres://user@host/db`) for several servers on one
    /// database; default: SQLite in the data directory.
    #[arg(long, env = "KEEL_DATABASE_URL")]
    database: Option<String>,
    /// Worker threads of keel's runtime (default: one per core). On a 2-core gateway that also
    /// runs nginx, 1 leaves it a core (see the README's SSO figures).
    #[arg(long, env = "KEEL_WORKERS")]
    workers: Option<usize>,
}

impl Cli {
    fn data_dir(&self, file: Option<&FileConfig>) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| file.and_then(|f| f.data_dir.clone()))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    fn serve_config(&self, args: &ServeArgs) -> anyhow::Result<ServeConfig> {
        let file = FileConfig::load(self.config.as_deref())?;
        Ok(ServeConfig {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().unwrap_or_else(|_| unreachable!())),
            data_dir: self.data_dir(Some(&file)),
            open_reads: args.open_reads || file.open_reads.unwrap_or(false),
            pools: file.pools.clone().unwrap_or_default(),
            example_site: args.example_site,
            watch: file.watch.config(),
            keep_changes: file.log.keep_changes.unwrap_or(1_000_000),
            keep_days: file.log.keep_days,
            access_log: file.log.access.unwrap_or(false),
            propagation: file.propagation.clone(),
            dns_explicit: args.dns_listen.is_some() || file.dns.listen.is_some(),
            dns_listen: args
                .dns_listen
                .or(file.dns.listen)
                .unwrap_or_else(|| DEFAULT_DNS_LISTEN.parse().unwrap_or_else(|_| unreachable!())),
            dns: file.dns.clone(),
            tftp_explicit: args.tftp_listen.is_some() || file.tftp.listen.is_some(),
            tftp_listen: args
                .tftp_listen
                .or(file.tftp.listen)
                .unwrap_or_else(|| DEFAULT_TFTP_LISTEN.parse().unwrap_or_else(|_| unreachable!())),
            tftp: file.tftp.clone(),
            netboot: file.netboot.clone(),
            presence: file.presence.clone(),
            sso: file.sso.clone(),
            web: file.web.clone(),
            rpc: file.rpc.clone(),
            sync: file.sync.clone(),
            homes: file.homes.clone(),
            tls: file.tls.clone(),
            workers: args.workers.or(file.workers),
            database: args.database.clone().or(file.database.clone()),
            http: file.http.limits(),
        })
    }

    /// The API client for client commands (see [`client_target`] for where URL and token come from).
    fn client(&self) -> anyhow::Result<keel_client::Client> {
        let target = client_target::resolve(&client_target::Given {
            url: self.url.as_deref(),
            token: self.token.as_deref(),
            data_dir: self.data_dir.as_deref(),
            ca_file: self.ca_file.as_deref(),
            pin: self.pin.as_deref(),
            config: self.config.as_deref(),
            cli_file: None,
        })?;
        Ok(keel_client::Client::with_trust(
            &target.url,
            target.token,
            target.trust.as_ref(),
        )?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Agent(a) = &cli.command {
        // The agent's exit codes mean something to keel (DENIED, replay…): keep them.
        return keel_agent::cli::run(a);
    }
    if let Command::Bench { args } = &cli.command {
        return bench(args, cli.json);
    }
    // Everything keel itself creates (database, WAL, backups, tokens, secrets, sheets) is
    // private from its creation; files meant for others get their mode explicitly.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    init_tracing(matches!(cli.command, Command::Serve(_)));
    if matches!(cli.command, Command::Serve(_)) {
        purge_in_background();
    }
    let serve = match &cli.command {
        Command::Serve(args) => match cli.serve_config(args) {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                output::print_error(&e);
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = serve.as_ref().and_then(|c| c.workers) {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keel: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, serve)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::print_error(&e);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, serve: Option<config::ServeConfig>) -> anyhow::Result<()> {
    let json = cli.json;
    match &cli.command {
        Command::Serve(_) => serve::run(anyhow::Context::context(serve, "no serve configuration")?).await,
        Command::Machine(c) => cmd::machine::run(&cli.client()?, c, json).await,
        Command::Switch(c) => cmd::switch::run(&cli.client()?, c, json).await,
        Command::Agent(_) => Ok(()), // run by main(), outside the runtime, with its own exit codes
        Command::Host(c) => cmd::propagation::host(&cli.client()?, c, json).await,
        Command::Facility(c) => cmd::propagation::facility(&cli.client()?, c, json).await,
        Command::Destination(c) => cmd::propagation::destination(&cli.client()?, c, json).await,
        Command::Propagation(c) => cmd::propagation::propagation(&cli.client()?, c, json).await,
        Command::Setting(c) => cmd::setting::run(&cli.client()?, c, json).await,
        Command::Users(c) => cmd::users::run(&cli.client()?, c, json).await,
        Command::Passwd(a) => cmd::passwd::run(&cli.client()?, a, json).await,
        Command::Log(a) => cmd::log::run(&cli.client()?, a, json).await,
        Command::Token(c) => cmd::token::run(&cli.client()?, c, json).await,
        Command::Watch(a) => cmd::watch::run(&cli.client()?, a, json).await,
        Command::ConntrackLog(a) => cmd::conntrack::run(&cli.client()?, a).await,
        Command::Backup(a) => cmd::backup::backup(&cli.client()?, a, json).await,
        Command::Restore(a) => {
            let file = client_target::server_file(cli.config.as_deref())?;
            cmd::backup::restore(&cli.data_dir(file.as_ref()), a, json).await
        }
        Command::Bench { .. } => Ok(()), // run by main(): it becomes keel-bench
        Command::MigrateDb(a) => cmd::migrate::run(a, json).await,
        Command::Man { dir } => man::run(dir),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "keel", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// `keel bench …` becomes `keel-bench …`: the benchmarks are a binary of their own so that keel
/// carries none of their harnesses (a throwaway PostgreSQL, an sshd, epoll readers).
fn bench(args: &[std::ffi::OsString], json: bool) -> ExitCode {
    use std::os::unix::process::CommandExt as _;
    let path = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("keel-bench"),
        Err(e) => {
            eprintln!("keel: error: cannot find keel's own path: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cmd = std::process::Command::new(&path);
    cmd.args(args);
    if json {
        cmd.arg("--json");
    }
    // exec only returns on failure.
    let e = cmd.exec();
    eprintln!(
        "keel: error: cannot run {}: {e} (build it beside keel: cargo build --release -p keel-bench)",
        path.display()
    );
    ExitCode::FAILURE
}

/// A long-running server frees the peaks of imports and snapshots while idle: jemalloc purges
/// only on allocator activity unless its background thread does it (about 10 s after a free).
fn purge_in_background() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc's background purge could not start: freed memory is returned more slowly");
    }
}

/// Logs go to stderr; the server logs at info, client commands only at warn (RUST_LOG overrides).
fn init_tracing(server: bool) {
    let default = if server { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// `keel serve`'s configuration: a flag (or its `KEEL_*` variable, read by clap the same
    /// way) over the config file over the defaults.
    #[test]
    fn serve_config_takes_flags_over_the_file_over_defaults() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keel.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9001\"\ndata_dir = \"/srv/from-file\"\n[dns]\nlisten = \"127.0.0.1:9053\"\n[http]\nmax_connections = 7\n",
        )
        .unwrap();
        let serve = |extra: &[&str]| {
            let mut argv = vec!["keel", "serve", "--config", file.to_str().unwrap()];
            argv.extend_from_slice(extra);
            let cli = super::Cli::try_parse_from(argv).unwrap();
            let super::Command::Serve(args) = &cli.command else {
                unreachable!("parsed as serve")
            };
            cli.serve_config(args).unwrap()
        };
        let from_file = serve(&[]);
        assert_eq!(from_file.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(from_file.data_dir, std::path::Path::new("/srv/from-file"));
        assert_eq!(from_file.dns_listen.to_string(), "127.0.0.1:9053");
        assert!(from_file.dns_explicit, "an address from the file is explicit");
        assert_eq!(from_file.http.max_connections, 7);
        assert_eq!(
            from_file.tftp_listen.to_string(),
            crate::config::DEFAULT_TFTP_LISTEN,
            "a default"
        );
        let from_flags = serve(&["--listen", "127.0.0.1:9002", "--data-dir", "/srv/from-flag"]);
        assert_eq!(from_flags.listen.to_string(), "127.0.0.1:9002");
        assert_eq!(from_flags.data_dir, std::path::Path::new("/srv/from-flag"));
        assert_eq!(
            from_flags.dns_listen.to_string(),
            "127.0.0.1:9053",
            "untouched by other flags"
        );
    }

    /// Every section's keys default on their own: a config with one key of one table is whole,
    /// and an unknown or incomplete key is still an error naming it.
    #[test]
    fn config_sections_default_key_by_key() {
        let parse = |t: &str| toml::from_str::<crate::config::FileConfig>(t);
        let d = keel_model::Pools::default();
        let cfg = parse("[pools.uids.user]\nfirst = 20001\nlast = 20999\n").unwrap();
        let pools = cfg.pools.unwrap();
        assert_eq!((pools.uids.user.first, pools.uids.orga), (20001, d.uids.orga));
        assert_eq!(pools.user, d.user);
        let pools = parse("[pools.user]\nnetwork = \"10.0.0.0/16\"\n")
            .unwrap()
            .pools
            .unwrap();
        assert_eq!(
            (pools.user.network.to_string(), &pools.service),
            ("10.0.0.0/16".into(), &d.service)
        );
        let gen = parse("[propagation.generators.groups.root]\nmember_of = [\"adm\"]\n")
            .unwrap()
            .propagation
            .generators;
        let root = &gen.groups[&keel_model::Group::Root];
        assert_eq!(
            (root.name.as_str(), root.gid, root.member_of.as_slice()),
            ("roots", 12000, &["adm".to_owned()][..])
        );
        assert_eq!(
            gen.groups[&keel_model::Group::User].gid,
            10000,
            "the others keep their defaults"
        );
        for (bad, names) in [
            ("[pools.user]\nnetwork = \"10.0.0.0/16\"\nnetwerk = 1\n", "netwerk"),
            ("[pools.uids.user]\nfirst = 1\n", "last"),
            ("[propagation.generators.groups.root]\ngdi = 1\n", "gdi"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(names), "{bad:?}: {e}");
        }
    }

    /// Every key keel.toml has, by section: what serde expects (an unknown key's error lists
    /// them), for the sections of fixed keys. Sections that are maps of names the site chooses
    /// (`[propagation.services.NAME]`, `[sso.overrides]`, `groups`) are left out.
    fn struct_keys() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
        const SECTIONS: [&str; 25] = [
            "",
            "http",
            "pools",
            "pools.user",
            "pools.uids",
            "pools.uids.user",
            "watch",
            "log",
            "propagation",
            "propagation.ssh",
            "propagation.generators",
            "propagation.generators.automount",
            "dns",
            "propagation.generators.dns",
            "propagation.generators.firewall",
            "propagation.generators.dhcp",
            "tftp",
            "netboot",
            "presence",
            "sso",
            "web",
            "rpc",
            "sync",
            "tls",
            "homes",
        ];
        // Keys that are tables: sections of their own, or maps of names the site chooses.
        const TABLES: [&str; 8] = [
            "pools.orga",
            "pools.service",
            "pools.cluster",
            "pools.uids.orga",
            "pools.uids.root",
            "propagation.services",
            "propagation.generators.groups",
            "sso.overrides",
        ];
        let mut out = std::collections::BTreeMap::new();
        for section in SECTIONS {
            // The keys a section cannot do without, so that the unknown one is the error.
            let required = match section {
                "pools.user" => "network = \"10.0.0.0/8\"\n",
                "pools.uids.user" => "first = 1\nlast = 2\n",
                _ => "",
            };
            let probe = if section.is_empty() {
                "zz_probe = 1\n".to_owned()
            } else {
                format!("[{section}]\n{required}zz_probe = 1\n")
            };
            let err = toml::from_str::<crate::config::FileConfig>(&probe)
                .unwrap_err()
                .to_string();
            let expected = err
                .split("expected ")
                .nth(1)
                .unwrap_or_else(|| panic!("[{section}]: {err}"));
            let expected = expected.trim_start_matches("one of ").replace(" or ", ",");
            let keys = expected
                .split(',')
                .map(|k| {
                    k.trim()
                        .trim_matches('`')
                        .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                        .to_owned()
                })
                .filter(|k: &String| {
                    let path = if section.is_empty() {
                        k.clone()
                    } else {
                        format!("{section}.{k}")
                    };
                    !k.is_empty() && !SECTIONS.contains(&path.as_str()) && !TABLES.contains(&path.as_str())
                })
                .collect::<std::collections::BTreeSet<String>>();
            if !keys.is_empty() {
                out.insert(section.to_owned(), keys);
            }
        }
        out
    }

    /// The keys a text lists, by section: `[section]` headers (also commented out) and `key =`
    /// lines (also commented out) below them.
    fn listed_keys(text: &str) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
        let mut out: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
        let mut section = String::new();
        for line in text.lines() {
            let l = line.trim_start_matches('#').trim();
            if let Some(h) = l.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                section = h.to_owned();
                continue;
            }
            if let Some((k, _)) = l.split_once(" = ") {
                if k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    && !k.is_empty()
                {
                    out.entry(section.clone()).or_default().insert(k.to_owned());
                }
            }
        }
        out
    }

    /// contrib/keel.toml (which keel.toml(5) is made of) names every key keel reads, and nothing
    /// keel does not read; docs/keel.md's key list says the same.
    #[test]
    fn the_example_config_and_the_docs_list_every_key() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let sample = listed_keys(&std::fs::read_to_string(root.join("contrib/keel.toml")).unwrap());
        let docs = std::fs::read_to_string(root.join("docs/keel.md")).unwrap();
        let docs_list = docs
            .split("## CONFIGURATION KEYS")
            .nth(1)
            .expect("docs/keel.md has CONFIGURATION KEYS");
        let docs_list = docs_list.split("\n## ").next().unwrap_or_default();
        for (section, keys) in struct_keys() {
            // A section the sample shows by one representative (pools.user for every pool type).
            let sample_keys = sample.get(&section).cloned().unwrap_or_default();
            assert_eq!(sample_keys, keys, "contrib/keel.toml [{section}] vs what keel reads");
            let header = if section.is_empty() {
                "top level".to_owned()
            } else {
                format!("`[{section}]`")
            };
            let line = docs_list
                .lines()
                .find(|l| l.starts_with(&format!("- {header}:")))
                .unwrap_or_else(|| panic!("docs/keel.md CONFIGURATION KEYS has no line for {header}"));
            let in_docs: std::collections::BTreeSet<String> = line
                .split_once(':')
                .map(|(_, rest)| {
                    rest.split(',')
                        .map(|k| k.trim().trim_end_matches('.').trim_matches('`').to_owned())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(in_docs, keys, "docs/keel.md {header} vs what keel reads");
        }
    }

    #[test]
    fn the_example_config_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/keel.toml");
        let cfg = crate::config::FileConfig::read(&path).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(cfg.propagation.parallel, Some(64));
        keel_propagate::registry(&cfg.propagation.services).unwrap_or_else(|e| panic!("{e}"));
    }
}
