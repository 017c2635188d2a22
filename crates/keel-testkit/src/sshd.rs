//! A real OpenSSH server on 127.0.0.1, for `keel bench propagation` and the end-to-end tests: its
//! own host key, an authorized client key, `MaxStartups` raised,
//! `AcceptEnv KEEL_AGENT_CONFIG` so each destination name reaches an agent with its own config;
//! and an ssh_config naming those destinations. Killed when dropped.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Error, Result};

pub struct Sshd {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

fn keygen(path: &Path) -> Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .map_err(|e| {
            Error::msg(format!(
                "ssh-keygen (Debian package openssh-client) must be installed: {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(Error::msg(format!(
            "ssh-keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

impl Sshd {
    /// Starts sshd; an error (never a skip) when it cannot run.
    pub fn start(dir: &Path) -> Result<Self> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() {
            return Err(Error::msg(
                "/usr/sbin/sshd is missing: install the Debian package openssh-server",
            ));
        }
        // Privilege separation needs this directory (apt does not start the daemon, so it may be absent).
        let _ = std::fs::create_dir_all("/run/sshd");
        std::fs::create_dir_all(dir)?;
        keygen(&dir.join("host_key"))?;
        keygen(&dir.join("client_key"))?;
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        let port = free_port()?;
        // SHLVL=1: bash started by sshd then skips ~/.bashrc (it only reads it at shell level 1),
        // so a heavy login setup on the test machine (pyenv, conda…) does not weigh on every
        // session and the figures measure ssh and keel, not the local dotfiles.
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\n\
             PidFile none\nUsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nMaxStartups 1000:30:1000\nMaxSessions 1000\nAcceptEnv KEEL_AGENT_CONFIG\n\
             LogLevel ERROR\nAllowUsers {user}\nSetEnv SHLVL=1\n",
            dir = dir.display(),
            user = user()
        );
        std::fs::write(dir.join("sshd_config"), config)?;
        let log = std::fs::File::create(dir.join("sshd.log"))?;
        let child = crate::guard::spawn(
            Command::new(sshd)
                .args(["-D", "-e", "-f"])
                .arg(dir.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
        )
        .map_err(|e| Error::msg(format!("cannot start sshd: {e}")))?;
        let s = Self {
            child,
            port,
            dir: dir.to_owned(),
        };
        s.wait_ready()?;
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub"))?;
        let key = host_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        std::fs::write(dir.join("known_hosts"), format!("[127.0.0.1]:{port} {key}\n"))?;
        Ok(s)
    }

    fn wait_ready(&self) -> Result<()> {
        if crate::wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        }) {
            return Ok(());
        }
        Err(Error::msg(format!(
            "sshd did not listen; its log:\n{}",
            std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
        )))
    }

    /// An ssh_config where each `(name, agent config)` is a destination reaching this sshd with
    /// that agent config; `unreachable` points at a closed port.
    pub fn client_config(&self, hosts: &[(&str, &Path)]) -> Result<PathBuf> {
        let mut cfg = String::new();
        for (name, agent) in hosts {
            let _ = write!(cfg, "Host {name}\n  SetEnv KEEL_AGENT_CONFIG={}\n", agent.display());
        }
        let _ = write!(cfg, "Host unreachable\n  Port {}\n", free_port()?);
        let _ = write!(
            cfg,
            "Host *\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {dir}/client_key\n  IdentitiesOnly yes\n  \
             UserKnownHostsFile {dir}/known_hosts\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n",
            self.port,
            user(),
            dir = self.dir.display()
        );
        let path = self.dir.join("ssh_config");
        std::fs::write(&path, cfg)?;
        Ok(path)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
