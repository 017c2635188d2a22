//! A real `keel serve` child process on loopback, for the end-to-end tests and the benchmarks:
//! started on a data directory, ready once it has written the address it bound and the admin
//! token, killed when dropped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use keel_client::data_dir as files;

use crate::{wait_until, Error, Result};

/// How long a server may take to listen (a first start creates the database and hashes nothing
/// slow; 30 s is for a loaded CI machine).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What to start: the `keel` binary, `serve`'s arguments, the data directory and the log file
/// (stdout and stderr, appended).
pub struct KeelCommand {
    pub keel: PathBuf,
    pub args: Vec<OsString>,
    pub data: PathBuf,
    pub log: PathBuf,
    pub env: Vec<(String, String)>,
}

/// A running server and the addresses it wrote in its data directory.
pub struct KeelProcess {
    child: Option<Child>,
    pub data: PathBuf,
    pub log: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub token: String,
    /// The built-in DNS's address (UDP and TCP), empty if it does not run.
    pub dns: String,
    /// The TFTP server's address, empty if it does not run.
    pub tftp: String,
}

impl KeelProcess {
    /// Starts `keel serve` and waits until it listens. The addresses of an earlier run on the same
    /// directory are removed first, so a stale file is never taken for this run's.
    /// The data directory is left for keel to create (0700), as on a first start.
    pub fn start(cmd: &KeelCommand) -> Result<Self> {
        for name in [files::LISTEN_ADDR, files::DNS_ADDR, files::TFTP_ADDR] {
            let _ = std::fs::remove_file(cmd.data.join(name));
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&cmd.log)?;
        let mut command = Command::new(&cmd.keel);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&cmd.data)
            .args(&cmd.args)
            // The caller's own keel settings must not leak into the server under test.
            .env_remove("KEEL_TOKEN")
            .env_remove("KEEL_URL")
            .env_remove("KEEL_DATA_DIR")
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = crate::guard::spawn(&mut command)
            .map_err(|e| Error::msg(format!("cannot start {}: {e}", cmd.keel.display())))?;
        let mut process = Self {
            child: Some(child),
            data: cmd.data.clone(),
            log: cmd.log.clone(),
            url: String::new(),
            token: String::new(),
            dns: String::new(),
            tftp: String::new(),
        };
        let addr = wait_for_file(&cmd.data.join(files::LISTEN_ADDR), START_TIMEOUT, || process.exited())
            .ok_or_else(|| Error::msg(format!("keel serve did not start; its log:\n{}", process.log_text())))?;
        process.url = format!("http://{}", addr.trim());
        process.token = read_trimmed(&cmd.data.join(files::ADMIN_TOKEN))
            .ok_or_else(|| Error::msg("keel serve listens but wrote no admin token"))?;
        process.dns = read_trimmed(&cmd.data.join(files::DNS_ADDR)).unwrap_or_default();
        process.tftp = read_trimmed(&cmd.data.join(files::TFTP_ADDR)).unwrap_or_default();
        Ok(process)
    }

    /// Whether the process has ended.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Stops the server with SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server cleanly (SIGTERM) and waits for it: its exit status, or `None` if it had
    /// to be killed after 15 s.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let mut status = None;
        if wait_until(Duration::from_secs(15), || {
            status = c.try_wait().ok().flatten();
            status.is_some()
        }) {
            return status;
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for KeelProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Waits for a file to exist and be non-empty: its text, or `None` on timeout or once `dead()`
/// says the process that should write it has ended.
pub fn wait_for_file(path: &Path, timeout: Duration, mut dead: impl FnMut() -> bool) -> Option<String> {
    let mut text = None;
    let mut died = false;
    wait_until(timeout, || {
        text = std::fs::read_to_string(path).ok().filter(|s| !s.trim().is_empty());
        died = text.is_none() && dead();
        text.is_some() || died
    });
    text
}
