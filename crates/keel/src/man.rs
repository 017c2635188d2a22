//! `keel man DIR`: the manual pages the Debian packages install — keel(1) and one page per
//! command (keel-machine(1)…), keel-agent(8), and keel.toml(5) (the annotated example config,
//! which names every key).

use std::path::Path;

use anyhow::Context;
use clap::{Args, Command, CommandFactory};

const EXAMPLE_CONFIG: &str = include_str!("../../../contrib/keel.toml");

fn write(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn render(cmd: Command, section: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).section(section).render(&mut out)?;
    Ok(out)
}

/// Text as roff shows it verbatim: backslashes doubled, a line starting with `.` or `'` kept
/// from being read as a request.
fn roff_verbatim(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn keel_toml_5() -> String {
    format!(
        ".TH KEEL.TOML 5 \"\" \"keel {v}\" \"File Formats\"\n.SH NAME\nkeel.toml \\- configuration of keel serve\n\
.SH DESCRIPTION\n\\fBkeel serve\\fR reads /etc/keel/keel.toml (or \\fB\\-\\-config\\fR, \\fBKEEL_CONFIG\\fR); client\n\
commands read it for the server's address and data directory. Every key is optional and defaults on\n\
its own; an unknown key is an error naming it. Flags and \\fBKEEL_*\\fR variables override the file.\n\
Below is the annotated example shipped as /usr/share/doc/keel/examples/keel.toml: every section and\n\
key, with its default.\n.SH EXAMPLE\n.nf\n{body}\n.fi\n.SH SEE ALSO\n\\fBkeel\\fR(1), \\fBkeel\\-agent\\fR(8)\n",
        v = env!("CARGO_PKG_VERSION"),
        body = roff_verbatim(EXAMPLE_CONFIG)
    )
}

/// Writes every page into `dir`.
pub fn write_all(dir: &Path, cli: Command) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cli = cli.name("keel");
    // `agent` is keel-agent(8); `bench` runs keel-bench, which the packages do not ship.
    let own = |s: &&Command| !s.is_hide_set() && !matches!(s.get_name(), "agent" | "bench");
    for sub in cli.get_subcommands().filter(own) {
        let name = format!("keel-{}", sub.get_name());
        let page = sub.clone().name(name.clone()).display_name(name.clone());
        write(dir, &format!("{name}.1"), &render(page, "1")?)?;
    }
    write(dir, "keel.1", &render(cli, "1")?)?;
    let agent = keel_agent::cli::AgentArgs::augment_args(
        Command::new("keel-agent")
            .version(env!("CARGO_PKG_VERSION"))
            .about("keel-agent applies what keel propagates to this host"),
    );
    write(dir, "keel-agent.8", &render(agent, "8")?)?;
    write(dir, "keel.toml.5", keel_toml_5().as_bytes())
}

/// The pages of the command line as built, for `keel man`.
pub fn run(dir: &Path) -> anyhow::Result<()> {
    write_all(dir, crate::Cli::command())
}
