//! SEND: how a bundle reaches a destination's agent. Behind one small trait so another channel
//! can be added without touching the engine.
//!
//! Both channels run a program with the bundle on stdin: the system OpenSSH client (so the site's
//! ssh_config, known_hosts and keys apply) or the agent itself as a child process. Every argument
//! comes from keel's config or a destination the model validated (no leading `-`, no spaces); no
//! shell ever sees a destination on keel's side.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keel_model::{Channel, Destination};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// What came back from one send.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// None: the agent's exit code is unknown (timeout, killed, could not start).
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub duration: Duration,
}

/// A way of delivering a bundle.
pub trait Sender: Send + Sync {
    /// The command that delivers to `d`; with `to`, ssh connects to that address (what the
    /// destination resolved to when it was checked) rather than resolving the name again.
    fn command(&self, d: &Destination, to: Option<&Resolved>) -> Option<Command>;
    /// The ssh settings, for resolving a destination as ssh will.
    fn ssh(&self) -> Option<&SshConfig> {
        None
    }
}

/// Where ssh connects for a destination: the host name its config gives (`HostName`), the
/// addresses the system resolver gives for it, and the port.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub host: String,
    pub addresses: Vec<std::net::IpAddr>,
    pub port: u16,
}

/// Resolves `dest` as ssh will: `ssh -G` with the site's config (its `HostName`, `Port`), then the
/// system resolver. An error says why it could not.
pub async fn resolve_ssh(cfg: &SshConfig, dest: &str) -> Result<Resolved, crate::ResolveError> {
    use crate::ResolveError;
    let (user, host, port) = split_destination(dest);
    let mut c = Command::new(&cfg.program);
    c.arg("-G");
    if let Some(f) = &cfg.config_file {
        c.arg("-F").arg(f);
    }
    for o in &cfg.options {
        c.arg("-o").arg(o);
    }
    if let Some(p) = port {
        c.arg("-p").arg(p);
    }
    if let Some(u) = user {
        c.arg("-l").arg(u);
    }
    c.arg(host).stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(10), c.output())
        .await
        .map_err(|_| ResolveError::Timeout)?
        .map_err(ResolveError::Run)?;
    if !out.status.success() {
        return Err(ResolveError::Ssh {
            destination: dest.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' ').map(str::trim))
    };
    let name = field("hostname").unwrap_or(host).to_owned();
    let port: u16 = field("port").and_then(|p| p.parse().ok()).unwrap_or(22);
    // What ssh would connect to: glibc reads `127.1` as 127.0.0.1, and so does this.
    let addresses: Vec<std::net::IpAddr> = match keel_model::identity::parse_address(&name) {
        Some(ip) => vec![ip],
        None => tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|source| ResolveError::Lookup {
                name: name.clone(),
                source,
            })?
            .map(|a| a.ip())
            .collect(),
    };
    if addresses.is_empty() {
        return Err(ResolveError::NoAddress(name));
    }
    Ok(Resolved {
        host: name,
        addresses,
        port,
    })
}

/// Whether `ip` is one of this host's own addresses (it can be bound).
pub fn is_local(ip: std::net::IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The `ssh` channel's settings (the `[propagation.ssh]` table).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SshConfig {
    /// The OpenSSH client.
    pub program: String,
    /// `-F`: the site's ssh_config.
    pub config_file: Option<PathBuf>,
    /// `UserKnownHostsFile`: the destinations' host keys (default: ssh's own).
    pub known_hosts: Option<PathBuf>,
    /// `-i`: the key keel logs in with (default: ssh's own).
    pub identity: Option<PathBuf>,
    /// `ConnectTimeout`, seconds.
    pub connect_timeout_secs: u64,
    /// What runs on the host (a fixed string from this config, never from data).
    pub remote_command: String,
    /// Keep connections open between sends (ControlMaster/ControlPersist); empty disables.
    pub control_persist: String,
    /// Where the control sockets live (default: `<data dir>/ssh`).
    pub control_dir: Option<PathBuf>,
    /// The socket's name in `control_dir` (ssh's tokens; default `%C`, one connection per
    /// user, host and port). Destinations that are names of one sshd but must reach different
    /// agent configs (tests, benchmarks) need `%n`.
    pub control_name: String,
    /// More `-o` options, e.g. `StrictHostKeyChecking=accept-new`.
    pub options: Vec<String>,
    /// Keep one ssh session per destination open, its agent serving a stream of bundles: a send
    /// then starts no process (an agent older than streams is sent one process per bundle). With
    /// changes sent as deltas, one password change at 10,000 users reaches 1,000 destinations in
    /// 14.8 s this way against 22.6 s with a process per send, with 1.5 KB of TCP payload per
    /// destination against 2.1 KB; the kept ssh clients cost ~0.6 MB (PSS) each on keel's host
    /// (~600 MB at 1,000 destinations): false gives one process per send, no client kept.
    pub streams: bool,
    /// Sessions open at once, at most (each is an ssh client process and three descriptors);
    /// beyond, an idle one is closed.
    pub max_channels: usize,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            program: "ssh".into(),
            config_file: None,
            known_hosts: None,
            identity: None,
            connect_timeout_secs: 10,
            remote_command: "keel-agent apply".into(),
            control_persist: "300".into(),
            control_dir: None,
            control_name: "%C".into(),
            options: Vec::new(),
            streams: true,
            max_channels: 2048,
        }
    }
}

/// `ssh` and `local`, as configured.
#[derive(Debug, Clone)]
pub struct Senders {
    pub ssh: SshConfig,
    /// The agent command for `local` destinations, e.g. `["sudo", "-n", "keel-agent", "apply"]`.
    pub local: Vec<String>,
}

impl Sender for Senders {
    fn command(&self, d: &Destination, to: Option<&Resolved>) -> Option<Command> {
        match d.channel {
            Channel::Local => {
                let (prog, args) = self.local.split_first()?;
                let mut c = Command::new(prog);
                c.args(args);
                Some(c)
            }
            Channel::Ssh => Some(self.ssh_command(&d.destination, to)),
        }
    }

    fn ssh(&self) -> Option<&SshConfig> {
        Some(&self.ssh)
    }
}

impl Senders {
    fn ssh_command(&self, dest: &str, to: Option<&Resolved>) -> Command {
        let s = &self.ssh;
        let mut c = Command::new(&s.program);
        c.args(["-o", "BatchMode=yes"]);
        c.arg("-o").arg(format!("ConnectTimeout={}", s.connect_timeout_secs));
        if let Some(f) = &s.config_file {
            c.arg("-F").arg(f);
        }
        if let Some(k) = &s.known_hosts {
            c.arg("-o").arg(format!("UserKnownHostsFile={}", k.display()));
        }
        if let Some(i) = &s.identity {
            c.arg("-i").arg(i);
        }
        if !s.control_persist.is_empty() {
            if let Some(dir) = &s.control_dir {
                c.args(["-o", "ControlMaster=auto"]);
                c.arg("-o")
                    .arg(format!("ControlPath={}/{}", dir.display(), s.control_name));
                c.arg("-o").arg(format!("ControlPersist={}", s.control_persist));
            }
        }
        for o in &s.options {
            c.arg("-o").arg(o);
        }
        if let Some(r) = to {
            // The address that was checked, not a second resolution that could differ; the host
            // key is still the name's.
            if let Some(ip) = r.addresses.first() {
                c.arg("-o").arg(format!("HostName={ip}"));
                c.arg("-o").arg(format!("HostKeyAlias={}", r.host));
            }
        }
        let (user, host, port) = split_destination(dest);
        if let Some(p) = port {
            c.arg("-p").arg(p);
        }
        if let Some(u) = user {
            c.arg("-l").arg(u);
        }
        c.arg(host).arg(&s.remote_command);
        c
    }
}

/// `user@host:port` → (user, host, port); brackets of an IPv6 address removed.
fn split_destination(d: &str) -> (Option<&str>, &str, Option<&str>) {
    let (user, rest) = d.rsplit_once('@').map_or((None, d), |(u, r)| (Some(u), r));
    if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').unwrap_or((v6, ""));
        return (user, h, after.strip_prefix(':'));
    }
    match rest.split_once(':') {
        Some((h, p)) => (user, h, Some(p)),
        None => (user, rest, None),
    }
}

/// Keeps at most this much of an agent's output per stream.
pub(crate) const KEEP: usize = 16 * 1024;

pub(crate) fn text(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() <= KEEP {
        return s.into_owned();
    }
    let mut cut = s.len() - KEEP;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &s[cut..])
}

/// Runs `cmd` with `head` then `tail` on stdin (a bundle's own members, then the members shared
/// by all destinations), within `timeout`; the child is killed if it overruns.
pub async fn run(mut cmd: Command, head: Vec<u8>, tail: std::sync::Arc<Vec<u8>>, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let fail = |msg: String| Outcome {
        exit_code: None,
        stdout: String::new(),
        stderr: msg,
        duration: start.elapsed(),
    };
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start {:?}: {e}", cmd.as_std().get_program())),
    };
    let stdin = child.stdin.take();
    let feed = async move {
        if let Some(mut w) = stdin {
            // A refused bundle may close stdin early: the exit code tells why.
            if w.write_all(&head).await.is_ok() {
                let _ = w.write_all(&tail).await;
            }
            let _ = w.shutdown().await;
        }
    };
    let work = async {
        let ((), out) = tokio::join!(feed, child.wait_with_output());
        out
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(out)) => Outcome {
            exit_code: out.status.code(),
            stdout: text(&out.stdout),
            stderr: text(&out.stderr),
            duration: start.elapsed(),
        },
        Ok(Err(e)) => fail(format!("waiting for the agent: {e}")),
        Err(_) => fail(format!("timed out after {} s; killed", timeout.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_split() {
        assert_eq!(split_destination("h"), (None, "h", None));
        assert_eq!(split_destination("root@h:2222"), (Some("root"), "h", Some("2222")));
        assert_eq!(split_destination("[::1]:22"), (None, "::1", Some("22")));
        assert_eq!(split_destination("u@[fe80::1]"), (Some("u"), "fe80::1", None));
    }
}
