//! The test harness: a real `keel serve` per test, killed when the test ends.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use keel_client::data_dir as files;
use keel_client::Client;
pub use keel_testkit::{eventually, wait_for_file};
use keel_testkit::{KeelCommand, KeelProcess};
use reqwest::Method;
use serde_json::Value;

pub const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// A running keel server with its own data directory (a [`KeelProcess`] that tests can restart).
pub struct Keel {
    process: Option<KeelProcess>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub token: String,
    /// The built-in DNS's address (UDP and TCP), `127.0.0.1:PORT`.
    pub dns: String,
    /// The TFTP server's address.
    pub tftp: String,
    args: Vec<String>,
    listen: String,
}

impl Keel {
    /// `keel serve` on a free port with a fresh data directory, plus `args`.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut k = Self::unstarted(args);
        k.spawn(env);
        k
    }

    /// A second server on a shared database: the first one made the admin token (it is in the
    /// database), so this one is given it.
    pub fn start_sharing(args: &[&str], token: &str) -> Self {
        let mut k = Self::unstarted(args);
        let data = k.data();
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::write(data.join(files::ADMIN_TOKEN), token).expect("token");
        k.spawn(&[]);
        k
    }

    /// A fresh data directory, not yet served.
    fn unstarted(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keel-e2e-")
            .tempdir()
            .expect("temp dir");
        Self {
            process: None,
            dir,
            url: String::new(),
            token: String::new(),
            dns: String::new(),
            tftp: String::new(),
            args: args.iter().map(|s| s.to_string()).collect(),
            listen: "127.0.0.1:0".to_owned(),
        }
    }

    /// The `--config` file this server was started with ("" if none).
    pub fn config_arg(&self) -> &str {
        self.args
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| self.args.get(i + 1))
            .map_or("", String::as_str)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    /// A server whose config file holds `toml` (plus any `args`).
    pub fn start_with_config(toml: &str, args: &[&str]) -> Self {
        let cfg = tempfile::Builder::new()
            .prefix("keel-e2e-cfg-")
            .suffix(".toml")
            .tempfile()
            .expect("config");
        std::fs::write(cfg.path(), toml).expect("write config");
        let (_, path) = cfg.keep().expect("keep config");
        let mut all = vec!["--config", path.to_str().expect("utf-8")];
        all.extend_from_slice(args);
        Self::start(&all)
    }

    /// Restarts on the same port after a kill -9 (clients reconnect to the same URL).
    pub fn restart_same_port(&mut self) {
        self.stop();
        let port = self.url.rsplit(':').next().expect("port").to_owned();
        self.listen = format!("127.0.0.1:{port}");
        self.spawn(&[]);
    }

    fn spawn(&mut self, env: &[(&str, &str)]) {
        let mut args: Vec<OsString> = vec!["--listen".into(), self.listen.clone().into()];
        args.extend(self.args.iter().map(OsString::from));
        // Tests run in parallel: each server's DNS and TFTP on a free port, not the defaults.
        for flag in ["--dns-listen", "--tftp-listen"] {
            if !self.args.iter().any(|a| a == flag) {
                args.extend([flag.into(), "127.0.0.1:0".into()]);
            }
        }
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.insert(0, ("RUST_LOG".into(), "info".into()));
        let command = KeelCommand {
            keel: KEEL.into(),
            args,
            data: self.data(),
            log: self.log_path(),
            env,
        };
        let p = KeelProcess::start(&command).unwrap_or_else(|e| panic!("{e}"));
        (self.url, self.token, self.dns, self.tftp) = (p.url.clone(), p.token.clone(), p.dns.clone(), p.tftp.clone());
        self.process = Some(p);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, KeelProcess::pid)
    }

    /// Stops the server with SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill9();
        }
    }

    /// Stops the server cleanly (SIGTERM) and waits for it; its exit status, or `None` if it had
    /// to be killed after 15 s.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.process.take()?.stop()
    }

    /// Starts the server again on the same data directory.
    pub fn restart(&mut self, env: &[(&str, &str)]) {
        self.stop();
        self.spawn(env);
    }

    pub fn admin(&self) -> Client {
        Client::new(&self.url, Some(self.token.clone())).expect("client")
    }

    pub fn anonymous(&self) -> Client {
        Client::new(&self.url, None).expect("client")
    }

    /// Runs the CLI against this server with the admin token.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(KEEL)
            .args(args)
            .env("KEEL_URL", &self.url)
            .env("KEEL_TOKEN", &self.token)
            .env_remove("KEEL_DATA_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("run keel")
    }

    /// The current seq, from /healthz.
    pub async fn seq(&self) -> u64 {
        let h: Value = self.anonymous().get("/healthz").await.expect("healthz");
        h["seq"].as_u64().expect("seq")
    }
}

/// Fails the test unless `tool` is on PATH. Under CI a missing tool is a failure, never a skip.
/// Runs a keel CLI command that must succeed; its stdout.
pub fn cli_ok(k: &Keel, args: &[&str]) -> String {
    let out = k.cli(args);
    assert!(
        out.status.success(),
        "keel {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: .ci/run installs it (apt-get install); install it to run this test"
    );
}

/// Sends a request as-is and returns its status and JSON body (for checking error answers).
pub async fn req(
    k: &Keel,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut r = reqwest::Client::new().request(method, format!("{}{path}", k.url));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    for (h, v) in headers {
        r = r.header(*h, *v);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The JSON printed by a CLI command run with --json.
pub fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "keel failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Pools of 65,534 addresses per type, for tests that add thousands of machines.
pub const BIG_POOLS: &str = "[pools.user]\nnetwork = \"10.0.0.0/16\"\n[pools.orga]\nnetwork = \"10.1.0.0/16\"\n\
[pools.cluster]\nnetwork = \"10.2.0.0/16\"\n[pools.service]\nnetwork = \"192.168.0.0/16\"\n";

/// `n` machine rows for the import endpoint, hostnames `{prefix}{i}`, MACs unique per `salt`.
pub fn machine_rows(prefix: &str, salt: u8, range: std::ops::Range<u32>) -> Vec<Value> {
    range
        .map(|i| {
            let b = i.to_be_bytes();
            serde_json::json!({"hostname": format!("{prefix}{i}"), "mac": format!("02:{salt:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3]), "mtype": "user"})
        })
        .collect()
}
