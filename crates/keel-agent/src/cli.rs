//! The agent's command line, shared by the `keel-agent` binary and `keel agent`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::{Code, Config, Out};

/// keel-agent applies what keel propagates to this host.
///
/// keel sends each service's files as a signed bundle on stdin (over ssh, or as a child process
/// for a `local` destination). The agent checks the signature against its trusted keys, that the
/// bundle is meant for this host (dns_alias_whitelist or facility_whitelist), the service's major
/// version and that the bundle is newer than the last one applied; then it takes the service's
/// lock, runs the hooks in <config dir>/agent.d/<service>.d/ (pre_*, mid_*, post_*) and writes
/// each changed file atomically, rolling back on failure. Exit codes: 0 ok; 1–15 errors (2 not
/// whitelisted, 3 locked, 4 bad bundle, 5 bad signature, 6 replay, 7 hook failed, 8 I/O, 9 a home
/// could not be made); 50 refused by this host's policy; 100 a post hook failed (the files are
/// applied; the same bundle again finishes the run); 200 wrong major version; 201 unknown bundle
/// format. keel counts only 0 as applied.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent's configuration.
    #[arg(long, short, env = "KEEL_AGENT_CONFIG", default_value = "/etc/keel/agent.toml")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: AgentCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AgentCommand {
    /// Apply the bundle read on stdin; or, when stdin opens with `KEEL-STREAM 1`, every bundle
    /// of that stream, each answered in frames (module `stream`: one ssh session, many sends).
    Apply {
        /// Answer in frames on stdout (`O`/`E` lines, then `X code`), for the socket-activated
        /// root agent behind `relay` (keel-agent@.service).
        #[arg(long)]
        framed: bool,
    },
    /// Hand the bundle on stdin to the root agent listening on SOCKET (keel-agent.socket) and
    /// give back its output and exit code: keel's `local` destination when keel runs
    /// unprivileged (`[propagation] local_command`).
    Relay { socket: PathBuf },
    /// Check the configuration and print what it resolves to.
    CheckConfig,
    /// Presence on a machine: the PAM hook and the heartbeat (reads /etc/keel/presence.toml,
    /// not agent.toml).
    #[cfg(feature = "presence")]
    Presence(PresenceArgs),
}

/// Tells keel who is logged in on this machine.
#[cfg(feature = "presence")]
///
/// `pam` is for pam_exec at session open and close:
///     session required pam_exec.so stdout quiet /usr/sbin/keel-agent presence pam
/// At open, keel may refuse the login (the user is logged in elsewhere, the machine is taken, a
/// contestant on a staff machine…): the reason is printed and the session fails. When keel cannot
/// be reached, the `[unreachable]` policy of the user's group decides (default: open for roots
/// and orga, closed for contestants while the contest runs). Accounts below `min_uid` are the
/// machine's own and pass without asking. `heartbeat` runs as a service and reports utmp's
/// logins every `interval_secs` so keel keeps the sessions alive.
#[derive(Debug, Clone, Args)]
pub struct PresenceArgs {
    #[arg(
        long = "presence-config",
        env = "KEEL_PRESENCE_CONFIG",
        default_value = "/etc/keel/presence.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub action: PresenceAction,
}

#[cfg(feature = "presence")]
#[derive(Debug, Clone, Subcommand)]
pub enum PresenceAction {
    /// pam_exec hook: PAM_TYPE auth (with expose_authtok) trades the password on stdin for a
    /// proof, open_session logs PAM_USER in with it, close_session logs them out.
    Pam,
    /// Trade a user's password (read from stdin) for the proof the next `open` presents (what
    /// `pam` does at authentication).
    Prove { login: String },
    /// Log a user in on this machine (what `pam` does at session open).
    Open { login: String },
    /// Log a user out (what `pam` does at session close).
    Close { login: String },
    /// Report utmp's logins to keel every interval (or once, with --once).
    Heartbeat {
        #[arg(long)]
        once: bool,
    },
}

/// Runs the agent as the command line asked; the process's exit code.
pub fn run(args: &AgentArgs) -> ExitCode {
    match &args.command {
        #[cfg(feature = "presence")]
        AgentCommand::Presence(p) => return presence(p),
        AgentCommand::Relay { socket } => {
            let code = crate::relay::relay(
                socket,
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            );
            return ExitCode::from(u8::try_from(code).unwrap_or(Code::Io as u8));
        }
        AgentCommand::Apply { framed: true } => return framed_apply(args),
        _ => {}
    }
    let mut stdin = std::io::stdin().lock();
    // A stream (one ssh session, many bundles) or one bundle: the first bytes tell, and are kept.
    let mut head = Vec::with_capacity(crate::stream::HELLO.len());
    if matches!(args.command, AgentCommand::Apply { .. }) {
        let _ = (&mut stdin)
            .take(crate::stream::HELLO.len() as u64)
            .read_to_end(&mut head);
        if head == crate::stream::HELLO {
            let code = crate::stream::serve(&args.config, &mut stdin, &mut std::io::stdout().lock());
            return ExitCode::from(code as u8);
        }
    }
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
    let mut out = Out {
        info: &mut stdout,
        error: &mut stderr,
        name: "keel-agent".into(),
    };
    ExitCode::from(execute(args, &mut std::io::Cursor::new(head).chain(stdin), &mut out) as u8)
}

/// `apply` (of the bundle read from `input`) and `check-config` with their lines going to `out`.
fn execute(args: &AgentArgs, input: &mut dyn Read, out: &mut Out<'_>) -> Code {
    let cfg = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            out.error(Code::Usage, &e.to_string());
            return Code::Usage;
        }
    };
    match args.command {
        AgentCommand::Apply { .. } => crate::apply(&cfg, input, out),
        AgentCommand::CheckConfig => {
            out.info(&format!(
                "fqdn {}; accepts destinations {:?} and facilities {:?}; {} trusted key(s); root {}; state {}; hooks {}",
                cfg.fqdn,
                cfg.dns_alias_whitelist,
                cfg.facility_whitelist,
                cfg.trusted_keys.len(),
                cfg.root_dir.display(),
                cfg.state_dir.display(),
                cfg.hooks_dir.display()
            ));
            Code::Ok
        }
        #[cfg(feature = "presence")]
        AgentCommand::Presence(_) => Code::Ok,
        AgentCommand::Relay { .. } => Code::Ok,
    }
}

/// `apply --framed`: the same run, its lines framed on stdout (the socket), the code last. The
/// two kinds of lines are gathered apart (each writer holds its buffer) and sent O first, then E.
fn framed_apply(args: &AgentArgs) -> ExitCode {
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let code = {
        let (mut info, mut error) = (
            crate::relay::Framed::new(&mut o, "O "),
            crate::relay::Framed::new(&mut e, "E "),
        );
        let mut out = Out {
            info: &mut info,
            error: &mut error,
            name: "keel-agent".into(),
        };
        execute(args, &mut std::io::stdin().lock(), &mut out)
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&o).and_then(|()| stdout.write_all(&e));
    let _ = writeln!(stdout, "X {}", code.as_i32());
    let _ = stdout.flush();
    ExitCode::from(code as u8)
}

#[cfg(feature = "presence")]
/// `keel-agent presence …`: 0 when the session may go on, 1 when refused or on error.
fn presence(args: &PresenceArgs) -> ExitCode {
    use crate::presence::{self as p, Verdict};
    let cfg = match p::PresenceConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keel-agent presence: {e}");
            // A broken config must not lock root out: refuse only keel's own users.
            return pam_fallback();
        }
    };
    let open = |login: &str| -> ExitCode {
        if p::uid_of(login).is_some_and(|u| u < cfg.min_uid) {
            return ExitCode::SUCCESS;
        }
        match p::open(&cfg, login, &p::groups_of(login)) {
            Verdict::Allow(why) => {
                eprintln!("keel-agent presence: {why}");
                ExitCode::SUCCESS
            }
            Verdict::Refuse(why) => {
                println!("Login refused: {why}");
                ExitCode::FAILURE
            }
        }
    };
    let close = |login: &str| -> ExitCode {
        if let Err(e) = p::close(&cfg, login) {
            eprintln!("keel-agent presence: logout of {login}: {e}");
        }
        ExitCode::SUCCESS // a logout is never blocked
    };
    // Never refuses: the password itself is pam_unix's to judge; without a proof, the session
    // step gets keel's refusal (or the unreachable policy) and says why.
    let prove = |login: &str| -> ExitCode {
        if p::uid_of(login).is_some_and(|u| u < cfg.min_uid) {
            return ExitCode::SUCCESS;
        }
        if let Err(e) = p::prove(&cfg, login, &read_password()) {
            eprintln!("keel-agent presence: no proof for {login}: {e}");
        }
        ExitCode::SUCCESS
    };
    match &args.action {
        PresenceAction::Open { login } => open(login),
        PresenceAction::Close { login } => close(login),
        PresenceAction::Prove { login } => prove(login),
        PresenceAction::Pam => {
            let user = std::env::var("PAM_USER").unwrap_or_default();
            match std::env::var("PAM_TYPE").as_deref() {
                Ok("auth") => prove(&user),
                Ok("open_session") => open(&user),
                Ok("close_session") => close(&user),
                _ => ExitCode::SUCCESS, // other PAM phases are not presence's business
            }
        }
        PresenceAction::Heartbeat { once } => heartbeat(&cfg, *once),
    }
}

#[cfg(feature = "presence")]
/// The password on stdin: pam_exec's `expose_authtok` writes it NUL-terminated; by hand it ends
/// with a newline. At most 4 KiB is read (PAM's own limit is 512 bytes).
fn read_password() -> String {
    use std::io::Read as _;
    let mut buf = Vec::new();
    let _ = std::io::stdin().lock().take(4096).read_to_end(&mut buf);
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    text.strip_suffix('\n').map(str::to_owned).unwrap_or(text)
}

#[cfg(feature = "presence")]
fn pam_fallback() -> ExitCode {
    let user = std::env::var("PAM_USER").unwrap_or_default();
    let local = crate::presence::uid_of(&user).is_some_and(|u| u < 1000);
    // Authentication is pam_unix's to decide, a logout never blocks: only a session open is refused.
    let phase = std::env::var("PAM_TYPE").unwrap_or_default();
    if local || phase == "auth" || phase == "close_session" {
        ExitCode::SUCCESS
    } else {
        println!("Login refused: this machine's presence configuration is broken; ask an organiser");
        ExitCode::FAILURE
    }
}

#[cfg(feature = "presence")]
fn heartbeat(cfg: &crate::presence::PresenceConfig, once: bool) -> ExitCode {
    loop {
        match crate::presence::heartbeat(cfg) {
            Ok(answer) => {
                if once {
                    println!("{answer}");
                    return ExitCode::SUCCESS;
                }
            }
            Err(e) => {
                eprintln!("keel-agent presence heartbeat: {e}");
                if once {
                    return ExitCode::FAILURE;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(cfg.interval_secs.max(1)));
    }
}
