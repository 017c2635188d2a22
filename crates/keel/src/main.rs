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
mod logging;
#[cfg(feature = "man")]
mod man;
mod output;
mod private_file;
mod serve;
mod sheet;

use config::{FileConfig, Flags};

/// Exit status of `keel serve` when its configuration is invalid (sysexits' EX_CONFIG): the unit's
/// `RestartPreventExitStatus=` keeps systemd from restarting into the same error.
const EXIT_CONFIG: u8 = 78;

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
    /// Run the keel server (`--check`: only check its configuration).
    Serve(ServeArgs),
    /// Make the running server read its config file again: checked here first, then the server
    /// is signalled (SIGHUP) and its answer printed. Exit 0 reloaded, 1 refused (the server then
    /// keeps its configuration). What can change live: pools, propagation services and
    /// generators, presence, logging level, the TLS certificate; other changes are named and wait
    /// for a restart.
    Reload(cmd::reload::ReloadArgs),
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
    /// Self-registration of machines from the iPXE menu: open for a time, close, status.
    #[command(subcommand)]
    Registration(cmd::setting::RegistrationCmd),
    /// Roles of machines: the gateway, the RFS and HFS of each number, keel's service names.
    #[command(subcommand, alias = "roles")]
    Role(cmd::role::RoleCmd),
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
    #[cfg(feature = "man")]
    #[command(hide = true)]
    Man { dir: PathBuf },
    /// Print the REST API's OpenAPI 3.1 description (what GET /api/v1/openapi.json answers), or
    /// with --python the typed Python client made from it (contrib/python/keel_api.py).
    Openapi(cmd::openapi::OpenapiArgs),
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Check the configuration (file, variables, flags, and the files it names) and exit: 0 if
    /// keel would start with it, 1 with every error and its line. Opens nothing: no database, no
    /// lock, no port.
    #[arg(long)]
    check: bool,
    /// Print keel.toml with every key at its default, each under its documentation, and exit
    /// (with --json: every key's section, name, default, kind and documentation).
    #[arg(long, conflicts_with = "check")]
    print_defaults: bool,
    /// Address to listen on for HTTP (port 0 picks a free port, written to DATA_DIR/listen.addr).
    #[arg(long, env = "KEEL_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Address of the built-in DNS, UDP and TCP (port 0: a free port, written to
    /// DATA_DIR/dns.addr). Default: [dns] listen.
    #[arg(long, env = "KEEL_DNS_LISTEN")]
    dns_listen: Option<std::net::SocketAddr>,
    /// Address of the read-only TFTP server (port 0: a free port, written to DATA_DIR/tftp.addr).
    /// Default: [tftp] listen.
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
            .or_else(|| file.map(|f| f.data_dir.clone()))
            .unwrap_or_else(|| FileConfig::default().data_dir)
    }

    /// What `config::load` takes from the command line (and, through clap, the `KEEL_*`
    /// variables); `args` are `serve`'s own flags when the command is `serve`.
    fn flags(&self, args: Option<&ServeArgs>) -> Flags {
        Flags {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            listen: args.and_then(|a| a.listen),
            dns_listen: args.and_then(|a| a.dns_listen),
            tftp_listen: args.and_then(|a| a.tftp_listen),
            example_site: args.is_some_and(|a| a.example_site),
            open_reads: args.is_some_and(|a| a.open_reads),
            database: args.and_then(|a| a.database.clone()),
            workers: args.and_then(|a| a.workers),
        }
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
    match &cli.command {
        Command::Serve(args) => return serve(&cli, args),
        Command::Reload(args) => {
            let _logging = logging::init("warn");
            return match cmd::reload::run(&cli.flags(None), args, cli.json) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    output::print_error(&e);
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let _logging = logging::init("warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keel: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output left (`keel machine list | head`): done, as `ls | head` is.
        Err(e) if output::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            output::print_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// `keel serve`: the configuration checked whole before anything opens (`--check` stops there),
/// then the server. An invalid configuration exits with [`EXIT_CONFIG`].
fn serve(cli: &Cli, args: &ServeArgs) -> ExitCode {
    if args.print_defaults {
        return print_defaults(cli.json);
    }
    let cfg = match config::load(&cli.flags(Some(args))) {
        Ok(cfg) => cfg,
        Err(errors) => {
            if args.check {
                return check_result(&Err(errors), cli.json);
            }
            eprintln!("keel: error: {errors}");
            let first = errors.0.first().map(ToString::to_string).unwrap_or_default();
            serve::notify::notify(&format!("STATUS=invalid configuration: {first}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check {
        return check_result(&Ok(cfg), cli.json);
    }
    let logging = logging::init(&cfg.log_level);
    purge_in_background();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cfg.workers {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keel: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve::run(cfg, logging)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::print_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// `keel serve --print-defaults`: keel.toml's reference, made from the config types.
fn print_defaults(json: bool) -> ExitCode {
    if json {
        let keys: Vec<serde_json::Value> = config::reference::keys()
            .iter()
            .map(|k| {
                serde_json::json!({
                    "path": k.path(),
                    "section": k.section,
                    "key": k.name,
                    "default": k.default,
                    "kind": k.kind,
                    "doc": k.doc,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(keys));
    } else {
        print!("{}", config::reference::default_toml());
    }
    ExitCode::SUCCESS
}

/// What `keel serve --check` prints: the file checked, or every error with its line.
fn check_result(result: &Result<config::ServeConfig, config::ConfigErrors>, json: bool) -> ExitCode {
    let (file, errors) = match result {
        Ok(cfg) => (cfg.file.clone(), Vec::new()),
        Err(e) => (e.0.first().and_then(|e| e.file.clone()), e.0.clone()),
    };
    if json {
        let v = serde_json::json!({ "ok": errors.is_empty(), "file": file, "errors": errors });
        println!("{v:#}");
    } else if errors.is_empty() {
        let what = file.map_or_else(|| "the built-in defaults".to_owned(), |f| f.display().to_string());
        println!("keel: {what}: the configuration is valid");
    } else {
        eprintln!("keel: error: {}", config::ConfigErrors(errors.clone()));
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    match &cli.command {
        // Run by main(), before a runtime exists: their configuration decides the runtime.
        Command::Serve(_) | Command::Reload(_) => Ok(()),
        Command::Machine(c) => cmd::machine::run(&cli.client()?, c, json).await,
        Command::Switch(c) => cmd::switch::run(&cli.client()?, c, json).await,
        Command::Agent(_) => Ok(()), // run by main(), outside the runtime, with its own exit codes
        Command::Host(c) => cmd::propagation::host(&cli.client()?, c, json).await,
        Command::Facility(c) => cmd::propagation::facility(&cli.client()?, c, json).await,
        Command::Destination(c) => cmd::propagation::destination(&cli.client()?, c, json).await,
        Command::Propagation(cmd::propagation::PropagationCmd::Key) => {
            cmd::propagation::key(&cli.client()?, &cli.flags(None), json).await
        }
        Command::Propagation(c) => cmd::propagation::propagation(&cli.client()?, c, json).await,
        Command::Setting(c) => cmd::setting::run(&cli.client()?, c, json).await,
        Command::Registration(c) => cmd::setting::registration(&cli.client()?, c, json).await,
        Command::Role(c) => cmd::role::run(&cli.client()?, c, json).await,
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
        Command::MigrateDb(a) => {
            let file = client_target::server_file(cli.config.as_deref())?;
            cmd::migrate::run(a, &cli.data_dir(file.as_ref()), json).await
        }
        #[cfg(feature = "man")]
        Command::Man { dir } => man::run(dir),
        Command::Openapi(args) => cmd::openapi::run(args),
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
            crate::config::load(&cli.flags(Some(args))).unwrap()
        };
        let from_file = serve(&[]);
        assert_eq!(from_file.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(from_file.data_dir, std::path::Path::new("/srv/from-file"));
        let dns = from_file.dns.as_ref().unwrap();
        assert_eq!(dns.listen.to_string(), "127.0.0.1:9053");
        assert!(dns.explicit, "an address from the file is explicit");
        assert_eq!(from_file.http.max_connections, 7);
        assert_eq!(
            from_file.tftp.as_ref().unwrap().listen.to_string(),
            keel_tftp::TftpConfig::default().listen.to_string(),
            "a default"
        );
        let from_flags = serve(&["--listen", "127.0.0.1:9002", "--data-dir", "/srv/from-flag"]);
        assert_eq!(from_flags.listen.to_string(), "127.0.0.1:9002");
        assert_eq!(from_flags.data_dir, std::path::Path::new("/srv/from-flag"));
        assert_eq!(
            from_flags.dns.as_ref().unwrap().listen.to_string(),
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
        let pools = cfg.pools;
        assert_eq!((pools.uids.user.first, pools.uids.orga), (20001, d.uids.orga));
        assert_eq!(pools.user, d.user);
        let pools = parse("[pools.user]\nnetwork = \"10.0.0.0/16\"\n").unwrap().pools;
        assert_eq!(
            (pools.user.network.to_string(), &pools.service),
            ("10.0.0.0/16".into(), &d.service)
        );
        let gen = parse("[propagation.generators.groups.root]\nmember_of = [\"adm\"]\n")
            .unwrap()
            .propagation
            .gen;
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
}
