//! Propagation end to end: keel's engine, signed bundles, and the real keel-agent applying them
//! under a `root_dir` — locally (a child process) and over a real sshd on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{Keel, KEEL};

/// keel-agent, built beside keel by `cargo test --workspace`.
pub fn agent_bin() -> PathBuf {
    let p = Path::new(KEEL).with_file_name("keel-agent");
    assert!(
        p.exists(),
        "{} is missing: build the workspace (cargo test --workspace)",
        p.display()
    );
    p
}

/// A destination's agent: its config and its root.
pub struct AgentHost {
    pub dir: PathBuf,
}

impl AgentHost {
    pub fn new(parent: &Path, name: &str, fqdn: &str, public_key: &str, extra: &str) -> Self {
        let dir = parent.join(name);
        std::fs::create_dir_all(dir.join("root/etc")).unwrap();
        std::fs::write(dir.join("root/etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        std::fs::write(dir.join("root/etc/group"), "root:x:0:\n").unwrap();
        std::fs::write(dir.join("root/etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        std::fs::write(
            dir.join("agent.toml"),
            format!(
                "fqdn = \"{fqdn}\"\ntrusted_keys = [\"{public_key}\"]\nroot_dir = \"{}\"\n{extra}",
                dir.join("root").display()
            ),
        )
        .unwrap();
        Self { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.join("root").join(rel)).unwrap_or_default()
    }

    pub fn hook(&self, service: &str, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let d = self.dir.join(format!("agent.d/{service}.d"));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

pub async fn api(k: &Keel, method: Method, path: &str, body: Option<Value>) -> Value {
    k.admin()
        .call::<Value>(method, path, body.as_ref(), None)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .value
}

pub async fn public_key(k: &Keel) -> String {
    let v = api(k, Method::GET, "/api/v1/propagation/key", None).await;
    v["public_key"].as_str().unwrap().to_owned()
}

/// Polls until `ok` holds, or panics after `secs` with `what`.
pub async fn eventually(secs: u64, what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out: {what}");
}

pub async fn tasks(k: &Keel) -> Vec<Value> {
    let v = api(k, Method::GET, "/api/v1/propagation", None).await;
    v["tasks"].as_array().unwrap().clone()
}

pub async fn task_state(k: &Keel, facility: &str, service: &str) -> (String, Value) {
    let t = tasks(k)
        .await
        .into_iter()
        .find(|t| t["facility"] == facility && t["service"] == service)
        .unwrap_or(Value::Null);
    (t["state"].as_str().unwrap_or_default().to_owned(), t["results"].clone())
}

fn local_config(agent: &Path, extra: &str) -> String {
    format!(
        "[propagation]\ndebounce_ms = 100\nretry_min_secs = 1\nlocal_command = [\"{}\", \"--config\", \"{}\", \"apply\"]\n{extra}",
        agent_bin().display(),
        agent.display()
    )
}

async fn add_user(k: &Keel, login: &str, group: &str) {
    api(
        k,
        Method::POST,
        "/api/v1/users",
        Some(json!({"login": login, "group": group})),
    )
    .await;
}

#[tokio::test]
async fn a_local_destination_receives_users_of_its_facility_and_honours_blocks() {
    let agents = tempfile::tempdir().unwrap();
    let cfg_path = agents.path().join("local/agent.toml");
    let k = Keel::start_with_config(&local_config(&cfg_path, ""), &[]);
    // keel's own host accepts bundles for destination `local` (invariant 7: by name).
    let whitelist = "dns_alias_whitelist = [\"keel.example.org\", \"local\"]\n";
    let host = AgentHost::new(
        agents.path(),
        "local",
        "keel.example.org",
        &public_key(&k).await,
        whitelist,
    );
    assert_eq!(host.config(), cfg_path);
    api(
        &k,
        Method::POST,
        "/api/v1/facilities",
        Some(json!({"name": "lan", "groups": ["user"], "services": ["passwd", "hosts"]})),
    )
    .await;
    for s in ["passwd", "hosts"] {
        let d = json!({"facility": "lan", "service": s, "destination": "local", "channel": "local"});
        api(&k, Method::POST, "/api/v1/destinations", Some(d)).await;
    }
    add_user(&k, "alice", "user").await;
    add_user(&k, "olga", "orga").await;
    eventually(20, "alice in the local passwd", async || {
        host.read("etc/passwd").contains("alice:x:")
    })
    .await;
    eventually(20, "the passwd task DONE", async || {
        task_state(&k, "lan", "passwd").await.0 == "DONE"
    })
    .await;
    let passwd = host.read("etc/passwd");
    assert!(
        passwd.starts_with("root:x:0:0:"),
        "the host's own accounts stay: {passwd}"
    );
    assert!(
        !passwd.contains("olga"),
        "orga is not received by this facility: {passwd}"
    );
    assert!(host.read("etc/shadow").contains("alice:!:"));
    let (_, results) = task_state(&k, "lan", "passwd").await;
    assert_eq!(results["local"]["status"], "DONE", "{results}");
    assert_eq!(results["local"]["exit_code"], 0);

    // Blocked: nothing is sent, the result says DENIED.
    let out = k.cli(&["propagation", "block", "--facility", "lan", "--service", "passwd"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    add_user(&k, "bob", "user").await;
    eventually(20, "DENIED while blocked", async || {
        task_state(&k, "lan", "passwd").await.1["local"]["status"] == "DENIED"
    })
    .await;
    assert!(!host.read("etc/passwd").contains("bob:"));
    let out = k.cli(&["propagation", "unblock", "--facility", "lan", "--service", "passwd"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually(20, "bob after the unblock", async || {
        host.read("etc/passwd").contains("bob:x:")
    })
    .await;

    // The CLI's table and force.
    let out = k.cli(&[
        "propagation",
        "force",
        "--facility",
        "lan",
        "--service",
        "passwd",
        "--timeout",
        "30",
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = k.cli(&["propagation", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("lan") && text.contains("passwd") && text.contains("DONE"),
        "{text}"
    );
    // The bundle GEN would send, applied by hand with the real agent.
    let bundle = agents.path().join("passwd.tar");
    let out = k.cli(&[
        "propagation",
        "gen",
        "passwd",
        "--facility",
        "lan",
        "--destination",
        "local",
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let applied = std::process::Command::new(agent_bin())
        .args(["--config", cfg_path.to_str().unwrap(), "apply"])
        .stdin(std::fs::File::open(&bundle).unwrap())
        .output()
        .unwrap();
    assert_eq!(
        applied.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    // It took a serial of its own: the engine's next send is still above it.
    add_user(&k, "dora", "user").await;
    eventually(20, "dora after a hand-applied bundle", async || {
        host.read("etc/passwd").contains("dora:x:")
    })
    .await;
    // A host that does not list `local` refuses it, and the result says DENIED.
    std::fs::write(
        host.config(),
        std::fs::read_to_string(host.config()).unwrap().replace(whitelist, ""),
    )
    .unwrap();
    add_user(&k, "erin", "user").await;
    eventually(20, "DENIED by the agent's whitelist", async || {
        let r = task_state(&k, "lan", "passwd").await.1;
        r["local"]["status"] == "DENIED" && r["local"]["exit_code"] == 2
    })
    .await;
    assert!(!host.read("etc/passwd").contains("erin:"));
}

#[tokio::test]
async fn kill9_of_keel_mid_propagation_resumes_after_restart() {
    let agents = tempfile::tempdir().unwrap();
    let cfg_path = agents.path().join("slow/agent.toml");
    let mut k = Keel::start_with_config(&local_config(&cfg_path, ""), &[]);
    let host = AgentHost::new(
        agents.path(),
        "slow",
        "slow.example.org",
        &public_key(&k).await,
        "facility_whitelist = [\"lan\"]\n",
    );
    api(
        &k,
        Method::POST,
        "/api/v1/facilities",
        Some(json!({"name": "lan", "groups": ["user"], "services": ["passwd"]})),
    )
    .await;
    let d = json!({"facility": "lan", "service": "passwd", "destination": "local", "channel": "local"});
    api(&k, Method::POST, "/api/v1/destinations", Some(d)).await;
    let started = agents.path().join("hook-started");
    host.hook(
        "passwd",
        "pre_10_slow",
        &format!("touch {}; sleep 3", started.display()),
    );
    add_user(&k, "carol", "user").await;
    eventually(20, "the agent's pre hook running", async || started.exists()).await;
    k.kill9(); // mid-SEND: the task is in flight
    std::fs::remove_dir_all(host.dir.join("agent.d")).unwrap();
    k.restart(&[]);
    eventually(30, "carol in passwd after the restart", async || {
        host.read("etc/passwd").contains("carol:x:")
    })
    .await;
    eventually(30, "the task DONE after the restart", async || {
        task_state(&k, "lan", "passwd").await.0 == "DONE"
    })
    .await;
    assert!(k.log().contains("resuming propagation tasks"), "{}", k.log());
}
