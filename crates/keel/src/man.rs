//! `keel man DIR`: the manual pages the Debian packages install — keel(1) and one page per
//! command and subcommand (keel-machine(1), keel-machine-add(1)…), keel-agent(8) and its
//! commands' pages, and keel.toml(5) (the annotated example config, which names every key).

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
A relative path in \\fBroot\\fR, \\fBfiles_dir\\fR, \\fBsecret_file\\fR or \\fBkey_file\\fR is under \\fBdata_dir\\fR.\n\
KEYS lists every key with its default (\\fBkeel serve \\-\\-print\\-defaults\\fR prints them as a file);\n\
EXAMPLE is the annotated example site shipped as /usr/share/doc/keel/examples/keel.toml.\n{keys}.SH EXAMPLE\n.nf\n{body}\n.fi\n.SH SEE ALSO\n\\fBkeel\\fR(1), \\fBkeel\\-agent\\fR(8)\n",
        v = env!("CARGO_PKG_VERSION"),
        keys = crate::config::reference::roff(),
        body = roff_verbatim(EXAMPLE_CONFIG)
    )
}

/// keel(1)'s own sections after clap's: the files it uses, what its exit status means, examples.
const KEEL_1_EXTRA: &str = r#".SH FILES
.TP
/etc/keel/keel.toml
The server's configuration (keel.toml(5)); client commands read its \fBlisten\fR and \fBdata_dir\fR.
.TP
/var/lib/keel/
The data directory (0700, user keel): keel.db (SQLite, with keel.db\-wal), admin.token (the first admin
token), bundle.key (the propagation signing key), presence.secret, tls/ (keel's site CA: ca.key, ca.pem,
cert.pem, key.pem), reload.json (the last reload's outcome), keel.lock (held by the running server;
its process id). \fBkeel backup\fR copies the database; the keys and secrets must be saved beside it.
.TP
~/.config/keel/cli.toml
A client's own \fBurl\fR, \fBtoken_file\fR, \fBca_file\fR or \fBpin\fR (\fBKEEL_CLI_CONFIG\fR names another).
.TP
/etc/keel/agent.toml
keel\-agent(8)'s configuration on every destination.
.SH EXIT STATUS
.TP
0
Success; also when the reader of the output closed it (\fBkeel machine list | head\fR).
.TP
1
An error: the message says what and, for a refused record or file, every field and line.
.TP
2
Bad command line (an unknown option or a missing argument).
.TP
78
\fBkeel serve\fR: the configuration is invalid (every error with its file and line is printed;
keel.service does not restart on it). \fBkeel serve \-\-check\fR exits 1 instead.
.SH EXAMPLES
.nf
keel serve \-\-example\-site                # a server on its embedded defaults, with an example site
keel serve \-\-check \-\-config /etc/keel/keel.toml   # check a file before a restart
systemctl reload keel                    # runs keel reload: checked, then applied live
keel machine add \-\-hostname r01p01 \-\-mac aa:bb:cc:dd:ee:01 \-\-mtype user \-\-room alt
keel machine import machines.csv \-\-dry\-run   # every error the import would name
keel machine list \-\-outside\-pools       # after a pool change: who kept an old address
keel machine renumber \-\-apply             # move them, all or none
keel users import finalistes.txt \-\-sheet pw   # logins, passwords, pw.tsv and pw.pdf
keel users add \-\-type root \-\-firstname Ana \-\-lastname Lovelace \-\-sheet ana
keel log \-n 20                           # the 20 newest changes
keel propagation status \-\-json
keel backup /var/backups/keel.db
.fi
.SH SEE ALSO
keel.toml(5), keel\-agent(8), systemctl(1), journalctl(1)
"#;

/// Every command's page: `keel-users(1)` lists `keel-users-import(1)`, which is written too.
fn write_pages(dir: &Path, cmd: &Command, name: &str, section: &str) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_name = format!("{name}-{}", sub.get_name());
        let page = sub.clone().name(sub_name.clone()).display_name(sub_name.clone());
        write(dir, &format!("{sub_name}.{section}"), &render(page.clone(), section)?)?;
        write_pages(dir, &page, &sub_name, section)?;
    }
    Ok(())
}

/// clap's `help` subcommand, and every command's, off: a page per command says it all.
fn without_help(cmd: Command) -> Command {
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    names.iter().fold(cmd.disable_help_subcommand(true), |c, n| {
        c.mut_subcommand(n, without_help)
    })
}

/// Writes every page into `dir`.
pub fn write_all(dir: &Path, cli: Command) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // `agent` is keel-agent(8); `bench` runs keel-bench, which the packages do not ship.
    let cli = without_help(cli.name("keel"))
        .mut_subcommand("agent", |s| s.hide(true))
        .mut_subcommand("bench", |s| s.hide(true));
    write_pages(dir, &cli, "keel", "1")?;
    let mut keel = render(cli, "1")?;
    keel.extend_from_slice(KEEL_1_EXTRA.as_bytes());
    write(dir, "keel.1", &keel)?;
    let agent = keel_agent::cli::AgentArgs::augment_args(
        Command::new("keel-agent")
            .version(env!("CARGO_PKG_VERSION"))
            .about("keel-agent applies what keel propagates to this host"),
    );
    let agent = without_help(agent);
    write_pages(dir, &agent, "keel-agent", "8")?;
    write(dir, "keel-agent.8", &render(agent, "8")?)?;
    write(dir, "keel.toml.5", keel_toml_5().as_bytes())
}

/// The pages of the command line as built, for `keel man`.
pub fn run(dir: &Path) -> anyhow::Result<()> {
    write_all(dir, crate::Cli::command())
}

#[cfg(test)]
mod tests {
    /// Every `name(N)` a page names is a page keel writes, or a system page it may name.
    #[test]
    fn every_page_a_page_names_is_written() {
        const SYSTEM: [&str; 3] = ["systemctl.1", "journalctl.1", "ssh_config.5"];
        let dir = tempfile::tempdir().unwrap();
        super::run(dir.path()).unwrap();
        let written: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(written.contains(&"keel-users-import.1".to_owned()), "{written:?}");
        for page in &written {
            let mut text = std::fs::read_to_string(dir.path().join(page))
                .unwrap()
                .replace("\\-", "-");
            for font in ["\\fB", "\\fR", "\\fI", "\\fP"] {
                text = text.replace(font, "");
            }
            for (i, _) in text.match_indices('(') {
                let Some(section) = text[i + 1..].chars().next().filter(char::is_ascii_digit) else {
                    continue;
                };
                if !text[i + 2..].starts_with(')') {
                    continue;
                }
                let name: String = text[..i]
                    .chars()
                    .rev()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                    .collect::<Vec<char>>()
                    .into_iter()
                    .rev()
                    .collect();
                if name.is_empty() {
                    continue;
                }
                let named = format!("{name}.{section}");
                assert!(
                    written.contains(&named) || SYSTEM.contains(&named.as_str()),
                    "{page} names {name}({section}), which no page is"
                );
            }
        }
    }
}
