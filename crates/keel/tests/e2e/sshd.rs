//! A real OpenSSH server on 127.0.0.1 for the propagation tests: its own host key, an authorized
//! client key, `MaxStartups` raised, `AcceptEnv KEEL_AGENT_CONFIG` so each destination name can
//! reach an agent with its own config; and an ssh_config naming those destinations.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (Debian package openssh-client) must be installed");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Sshd {
    /// Starts sshd; fails the test (never skips) when it cannot run.
    pub fn start(dir: &Path) -> Self {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "/usr/sbin/sshd is missing: install the Debian package openssh-server"
        );
        // Privilege separation needs this directory (apt does not start the daemon, so it may be absent).
        let _ = std::fs::create_dir_all("/run/sshd");
        std::fs::create_dir_all(dir).unwrap();
        keygen(&dir.join("host_key"));
        keygen(&dir.join("client_key"));
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\n\
             PidFile none\nUsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nMaxStartups 1000:30:1000\nMaxSessions 1000\nAcceptEnv KEEL_AGENT_CONFIG\n\
             LogLevel ERROR\nAllowUsers {user}\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let s = Self {
            child,
            port,
            dir: dir.to_owned(),
        };
        s.wait_ready();
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let key = host_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        std::fs::write(dir.join("known_hosts"), format!("[127.0.0.1]:{port} {key}\n")).unwrap();
        s
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "sshd did not listen; its log:\n{}",
            std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
        );
    }

    /// An ssh_config where each `(name, agent config)` is a destination reaching this sshd with
    /// that agent config; `unreachable` points at a closed port.
    pub fn client_config(&self, hosts: &[(&str, &Path)]) -> PathBuf {
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let mut cfg = String::new();
        for (name, agent) in hosts {
            cfg.push_str(&format!(
                "Host {name}\n  SetEnv KEEL_AGENT_CONFIG={}\n",
                agent.display()
            ));
        }
        cfg.push_str(&format!("Host unreachable\n  Port {}\n", free_port()));
        cfg.push_str(&format!(
            "Host *\n  HostName 127.0.0.1\n  Port {}\n  User {user}\n  IdentityFile {dir}/client_key\n  IdentitiesOnly yes\n  \
             UserKnownHostsFile {dir}/known_hosts\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n",
            self.port,
            dir = self.dir.display()
        ));
        let path = self.dir.join("ssh_config");
        std::fs::write(&path, cfg).unwrap();
        path
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
