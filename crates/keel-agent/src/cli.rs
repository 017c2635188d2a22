//! The agent's command line, shared by the `keel-agent` binary and `keel agent`.

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
/// whitelisted, 3 locked, 4 bad bundle, 5 bad signature, 6 replay, 7 hook failed, 8 I/O); 50
/// refused by this host's policy; 100 applied with a warning; 200 wrong major version; 201
/// unknown bundle format.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent's configuration.
    #[arg(long, short, env = "KEEL_AGENT_CONFIG", default_value = "/etc/keel/agent.toml")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: AgentCommand,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum AgentCommand {
    /// Apply the bundle read on stdin.
    Apply,
    /// Check the configuration and print what it resolves to.
    CheckConfig,
}

/// Runs the agent as the command line asked; the process's exit code.
pub fn run(args: &AgentArgs) -> ExitCode {
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
    let mut out = Out {
        info: &mut stdout,
        error: &mut stderr,
        name: "keel-agent".into(),
    };
    let cfg = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            out.error(Code::Usage, &e.to_string());
            return ExitCode::from(Code::Usage as u8);
        }
    };
    let code = match args.command {
        AgentCommand::Apply => crate::apply(&cfg, std::io::stdin().lock(), &mut out),
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
    };
    ExitCode::from(code as u8)
}
