//! The `keel-agent` binary (the same agent is `keel agent` in the keel binary).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "keel-agent", version)]
struct Cli {
    #[command(flatten)]
    args: keel_agent::cli::AgentArgs,
}

fn main() -> ExitCode {
    keel_agent::cli::run(&Cli::parse().args)
}
