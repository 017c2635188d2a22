//! A throwaway PostgreSQL server for tests and benchmarks: `initdb` in a temporary directory, then
//! `postgres` on a free loopback port, stopped (and its files removed) when dropped. A test binary
//! shares one ([`TestPg::shared`]) and gives each test a database of its own
//! ([`TestPg::fresh_database`]); it dies with the test binary (keel-testkit's guard). Uses Debian's
//! `postgresql` package (`/usr/lib/postgresql/<version>/bin`). PostgreSQL refuses to run as root:
//! as root it runs as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

pub struct TestPg {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

fn bin_dir() -> Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| {
            Error::msg(format!(
                "{}: {e} (install the Debian package postgresql; .ci/run does)",
                root.display()
            ))
        })?
        .filter_map(std::result::Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| Error::msg("no initdb under /usr/lib/postgresql (install postgresql)"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command run as the `postgres` user when this process is root.
fn as_pg(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl TestPg {
    pub fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let dir = std::env::temp_dir().join(format!(
            "keel-pg-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ u128::from(rand_port())
        ));
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            let ok = Command::new("chown").args(["postgres:postgres"]).arg(&dir).status();
            if !ok.is_ok_and(|s| s.success()) {
                return Err(Error::msg("cannot chown the test cluster's directory to postgres"));
            }
        }
        let data = dir.join("data");
        let out = as_pg(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "keel", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .map_err(|e| Error::msg(format!("initdb: {e}")))?;
        if !out.status.success() {
            return Err(Error::msg(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        // postgres cannot pick its own port: a free one is picked, and if another process takes
        // it before postgres binds it, postgres says so and exits, and another is tried.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = rand_port();
            let log = dir.join("postgres.log");
            let mut cmd = as_pg(&bin.join("postgres"));
            cmd.arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
                .arg(&dir)
                .args(["-c", "fsync=on", "-c", "max_connections=200"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?);
            let child =
                crate::guard::spawn_cleaning(&mut cmd, Some(&dir)).map_err(|e| Error::msg(format!("postgres: {e}")))?;
            let mut child = child;
            if wait_ready(&mut child, &bin, port, Duration::from_secs(30)) {
                return Ok(Self { child, dir, port });
            }
            // As root, the child is runuser: postgres itself is stopped by pg_ctl.
            let _ = as_pg(&bin.join("pg_ctl"))
                .args(["-m", "immediate", "-D"])
                .arg(&data)
                .arg("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            if !last_log.contains("could not bind") {
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(Error::msg(format!("postgres did not start: {last_log}")))
    }

    /// A new, empty database on this server; its URL.
    pub fn database(&self, name: &str) -> Result<String> {
        let bin = bin_dir()?;
        let out = Command::new(bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "keel", name])
            .output()
            .map_err(|e| Error::msg(format!("createdb: {e}")))?;
        if !out.status.success() {
            return Err(Error::msg(format!(
                "createdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(self.url(name))
    }

    /// The test binary's cluster, started on first use and never stopped by it: it dies with
    /// the test binary, and its files with it (the guard's watchdog).
    pub fn shared() -> Result<&'static TestPg> {
        static SHARED: std::sync::OnceLock<std::result::Result<TestPg, String>> = std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| TestPg::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::msg(e.clone()))
    }

    /// A new database with a name no other test of this binary has; its URL.
    pub fn fresh_database(&self) -> Result<String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.database(&format!("test{n}"))
    }

    pub fn url(&self, name: &str) -> String {
        format!("postgres://keel@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        if let Ok(bin) = bin_dir() {
            let _ = as_pg(&bin.join("pg_ctl"))
                .args(["-m", "immediate", "-D"])
                .arg(self.dir.join("data"))
                .arg("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        crate::wait_until(Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until the server accepts connections (`pg_isready`, which asks the server itself, not
/// just its socket), or has exited, or `timeout` passed.
fn wait_ready(child: &mut Child, bin: &Path, port: u16, timeout: Duration) -> bool {
    let mut ready = false;
    crate::wait_until(timeout, || {
        if child.try_wait().ok().flatten().is_some() {
            return true; // exited: not ready, and never will be
        }
        ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "keel"])
            .status()
            .is_ok_and(|s| s.success());
        ready
    });
    ready
}

fn rand_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(54_329, |a| a.port())
}
