//! Propagation end to end: keel's engine, signed bundles, and the real keel-agent applying them
//! under a `root_dir` — locally (a child process) and over a real sshd on 127.0.0.1.

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{eventually, Keel, KEEL};

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

    /// Takes `text` out of the agent's config (a whitelist line: the host then refuses).
    pub fn drop_from_config(&self, text: &str) {
        let config = std::fs::read_to_string(self.config()).unwrap();
        assert!(config.contains(text), "{text} not in {config}");
        std::fs::write(self.config(), config.replace(text, "")).unwrap();
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

/// A facility `name` receiving `group`, running `passwd` on the ssh destinations `dests`.
async fn passwd_facility(k: &Keel, name: &str, group: &str, dests: &[&str]) {
    api(
        k,
        Method::POST,
        "/api/v1/facilities",
        Some(json!({"name": name, "groups": [group], "services": ["passwd"]})),
    )
    .await;
    let mut args = vec!["destination", "add", "--facility", name, "--service", "passwd"];
    args.extend_from_slice(dests);
    let out = k.cli(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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

/// Facility `name` receiving the user group, with `services` sent to its `local` destination.
async fn local_facility(k: &Keel, name: &str, services: &[&str]) {
    api(
        k,
        Method::POST,
        "/api/v1/facilities",
        Some(json!({"name": name, "groups": ["user"], "services": services})),
    )
    .await;
    for s in services {
        let d = json!({"facility": name, "service": s, "destination": "local", "channel": "local"});
        api(k, Method::POST, "/api/v1/destinations", Some(d)).await;
    }
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
    local_facility(&k, "lan", &["passwd", "hosts"]).await;
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
    force_passwd(&k);
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
    host.drop_from_config(whitelist);
    add_user(&k, "erin", "user").await;
    eventually(20, "DENIED by the agent's whitelist", async || {
        let r = task_state(&k, "lan", "passwd").await.1;
        r["local"]["status"] == "DENIED" && r["local"]["exit_code"] == 2
    })
    .await;
    assert!(!host.read("etc/passwd").contains("erin:"));
}

/// Issue 34: after its first full state a destination gets deltas; one whose files were edited
/// by hand or wiped refuses the next delta (202) and converges on the full state in the same run —
/// on the next change, on a force, and on the periodic refresh with no change at all.
#[tokio::test]
async fn a_wiped_or_hand_edited_destination_converges_on_the_next_change_refresh_or_force() {
    let agents = tempfile::tempdir().unwrap();
    let (k, host) = passwd_to_local(agents.path(), "").await;
    let lands = async |what: &str, check: &dyn Fn(&str, &str) -> bool| landed(&k, &host, what, check).await;
    // A change travels as a delta onto what the host holds.
    add_user(&k, "bob", "user").await;
    let said = lands("bob, as a delta", &|p, _| p.contains("bob:x:")).await;
    assert!(said.contains("a delta onto serial"), "{said}");
    // A hand edit of keel's lines: the next change's delta is refused, its full state lands.
    let edited = host.read("etc/shadow").replace("alice:!:", "alice:$6$byhand:");
    std::fs::write(host.dir.join("root/etc/shadow"), &edited).unwrap();
    add_user(&k, "carol", "user").await;
    let said = lands("carol, the hand edit undone", &|p, s| {
        p.contains("carol:x:") && s.contains("alice:!:")
    })
    .await;
    assert!(
        said.contains("(code=202)") && said.contains("full state is needed"),
        "{said}"
    );
    // Wiped: a force converges it.
    std::fs::write(host.dir.join("root/etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    force_passwd(&k);
    let said = lands("the wiped passwd refilled", &|p, _| {
        p.contains("alice:x:") && p.contains("carol:x:")
    })
    .await;
    assert!(said.contains("(code=202)"), "{said}");
    // Edited, then no change at all: the periodic refresh (every 2 s here) converges it.
    let other = tempfile::tempdir().unwrap();
    let (k, host) = passwd_to_local(other.path(), "refresh_secs = 2\n").await;
    std::fs::write(
        host.dir.join("root/etc/shadow"),
        host.read("etc/shadow").replace("alice:!:", "alice:$6$byhand:"),
    )
    .unwrap();
    landed(&k, &host, "the refresh undoing the edit", &|_, s| {
        s.contains("alice:!:")
    })
    .await;
}

/// `keel propagation force` of lan's passwd, waited for.
fn force_passwd(k: &Keel) {
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
}

/// keel with `extra` in its [propagation], sending `passwd` of facility `lan` to a `local` agent
/// under `dir`, once alice has landed there.
async fn passwd_to_local(dir: &Path, extra: &str) -> (Keel, AgentHost) {
    let cfg_path = dir.join("local/agent.toml");
    let k = Keel::start_with_config(&local_config(&cfg_path, extra), &[]);
    let whitelist = "dns_alias_whitelist = [\"keel.example.org\", \"local\"]\n";
    let host = AgentHost::new(dir, "local", "keel.example.org", &public_key(&k).await, whitelist);
    local_facility(&k, "lan", &["passwd"]).await;
    add_user(&k, "alice", "user").await;
    landed(&k, &host, "alice", &|p, _| p.contains("alice:x:")).await;
    (k, host)
}

/// Waits until `lan`'s passwd is DONE with `check(passwd, shadow)` true at the local agent;
/// returns what the agent said.
async fn landed(k: &Keel, host: &AgentHost, what: &str, check: &dyn Fn(&str, &str) -> bool) -> String {
    eventually(30, what, async || {
        let (state, r) = task_state(k, "lan", "passwd").await;
        state == "DONE" && r["local"]["exit_code"] == 0 && check(&host.read("etc/passwd"), &host.read("etc/shadow"))
    })
    .await;
    task_state(k, "lan", "passwd").await.1["local"]["stdout"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
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

/// Sends `bundle` to `host` over ssh the way keel does; returns (exit code, stderr).
fn ssh_apply(ssh_config: &Path, host: &str, bundle: &[u8]) -> (i32, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("ssh")
        .args(["-F", ssh_config.to_str().unwrap(), "-o", "BatchMode=yes", host])
        .arg(format!("{} apply", agent_bin().display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(bundle);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn signed(key: &keel_bundle::SecretKey, version: keel_model::service::Version, serial: u64, passwd: &str) -> Vec<u8> {
    let files = [
        ("passwd", passwd.to_owned()),
        ("group", "user:x:10000:\n".into()),
        ("shadow", String::new()),
    ];
    let files: Vec<keel_model::service::File> = files
        .iter()
        .map(|(p, d)| keel_model::service::File {
            path: (*p).into(),
            mode: 0o644,
            data: d.clone().into_bytes(),
        })
        .collect();
    let h = keel_bundle::Header {
        service: "passwd",
        version,
        facility: "lan",
        destination: "host1",
        run_id: "by-hand",
        created: "",
        serial,
    };
    keel_bundle::build(key, &h, &files).unwrap()
}

/// A signed tar with one hostile member, written byte by byte.
fn hostile(key: &keel_bundle::SecretKey, name: &str, kind: tar::EntryType) -> Vec<u8> {
    let m = json!({"format": 1, "service": "passwd", "version": "1.0", "facility": "lan", "destination": "host1",
        "run_id": "x", "created": "", "serial": 9_000_000, "files": []});
    let json = serde_json::to_vec(&m).unwrap();
    let sig = key.sign(&json);
    let mut t = tar::Builder::new(Vec::new());
    for (n, k, d) in [
        ("MANIFEST.json", tar::EntryType::Regular, &json[..]),
        ("MANIFEST.sig", tar::EntryType::Regular, &sig[..]),
        (name, kind, b"evil:x:0:0::/:/bin/sh\n"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(k);
        h.set_mode(0o644);
        if k.is_symlink() {
            h.set_size(0);
            t.append_link(&mut h, n, "/etc/shadow").unwrap();
            continue;
        }
        h.set_size(d.len() as u64);
        h.as_old_mut().name[..n.len()].copy_from_slice(n.as_bytes());
        h.set_cksum();
        t.append(&h, d).unwrap();
    }
    t.into_inner().unwrap()
}

#[tokio::test]
#[cfg_attr(
    not(all(has_sshd, has_ssh, has_ssh_keygen)),
    ignore = "needs sshd, ssh, ssh-keygen, not installed here (.ci/run installs it)"
)]
async fn ssh_destinations_with_their_own_agents_each_get_their_facilitys_users() {
    let tmp = tempfile::tempdir().unwrap();
    let sshd = keel_testkit::Sshd::start(&tmp.path().join("sshd")).unwrap();
    let agent_cfg = |n: &str| tmp.path().join(n).join("agent.toml");
    let names = ["host1", "host2", "host3", "host4"];
    let cfgs: Vec<PathBuf> = names.iter().map(|n| agent_cfg(n)).collect();
    let pairs: Vec<(&str, &Path)> = names.iter().copied().zip(cfgs.iter().map(PathBuf::as_path)).collect();
    let ssh_config = sshd.client_config(&pairs).unwrap();
    let config = format!(
        "[propagation]\ndebounce_ms = 100\nretry_min_secs = 1\nsend_timeout_secs = 30\n\
         [propagation.ssh]\nconfig_file = \"{}\"\nremote_command = \"{} apply\"\ncontrol_persist = \"\"\nconnect_timeout_secs = 3\n",
        ssh_config.display(),
        agent_bin().display()
    );
    let k = Keel::start_with_config(&config, &[]);
    let pk = public_key(&k).await;
    let hosts: Vec<AgentHost> = names
        .iter()
        .map(|n| {
            // host3's agent knows itself by another name: it must refuse what is addressed to host3.
            let fqdn = if *n == "host3" { "elsewhere.example.org" } else { n };
            AgentHost::new(tmp.path(), n, fqdn, &pk, "")
        })
        .collect();
    let before3 = hosts[2].read("etc/passwd");
    passwd_facility(&k, "lan", "user", &["host1", "root@host2", "host3", "unreachable"]).await;
    passwd_facility(&k, "staff", "orga", &["host4"]).await;
    add_user(&k, "alice", "user").await;
    add_user(&k, "olga", "orga").await;
    eventually(30, "alice on host1 and host2, olga on host4", async || {
        hosts[0].read("etc/passwd").contains("alice:x:")
            && hosts[1].read("etc/shadow").contains("alice:!:")
            && hosts[3].read("etc/passwd").contains("olga:x:")
    })
    .await;
    assert!(
        !hosts[0].read("etc/passwd").contains("olga"),
        "lan does not receive orga"
    );
    assert!(
        !hosts[3].read("etc/passwd").contains("alice"),
        "staff does not receive users"
    );
    eventually(30, "results for every lan destination", async || {
        let r = task_state(&k, "lan", "passwd").await.1;
        ["host1", "root@host2", "host3", "unreachable"]
            .iter()
            .all(|d| r[d]["status"] != Value::Null)
            && r["host3"]["status"] != "PENDING"
    })
    .await;
    let (state, r) = task_state(&k, "lan", "passwd").await;
    assert_eq!(r["host1"]["status"], "DONE", "{r}");
    assert_eq!(r["root@host2"]["status"], "DONE", "{r}");
    assert_eq!(r["host3"]["status"], "DENIED", "not whitelisted: {r}");
    assert_eq!(r["host3"]["exit_code"], 2, "{r}");
    assert_eq!(
        hosts[2].read("etc/passwd"),
        before3,
        "nothing written on a host that refused"
    );
    assert_eq!(r["unreachable"]["status"], "ERROR", "{r}");
    // SENDERROR, or already planned again for the retry.
    assert!(
        ["SENDERROR", "PLANNED", "GENERATING", "GENERATED", "SENDING"].contains(&state.as_str()),
        "{state}"
    );
    // The unreachable destination is retried; the others are not resent (their digest holds).
    let done_at = r["host1"]["at"].clone();
    eventually(30, "the unreachable destination retried", async || {
        task_state(&k, "lan", "passwd").await.1["unreachable"]["failures"].as_u64() >= Some(2)
    })
    .await;
    assert_eq!(
        task_state(&k, "lan", "passwd").await.1["host1"]["at"],
        done_at,
        "host1 was not resent"
    );
    let out = k.cli(&["propagation", "status", "--facility", "lan"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("unreachable") && text.contains("ERROR") && text.contains("DENIED"),
        "{text}"
    );

    // Hostile bundles over the same ssh path, each refused with its own code, host1 untouched.
    let key_text = std::fs::read_to_string(k.data().join(keel_propagate::EngineConfig::default().key_file)).unwrap();
    let key = keel_bundle::SecretKey::from_base64(&key_text).unwrap();
    let stranger = keel_bundle::SecretKey::generate().unwrap();
    let v1 = keel_model::service::Version::new(1, 0);
    let good = signed(&key, v1, 5_000_000, "zed:x:10500:10000::/home/zed:/bin/sh\n");
    let mut tampered = good.clone();
    let at = tampered.windows(3).position(|w| w == b"zed").unwrap();
    tampered[at] = b'Z';
    let before1 = hosts[0].read("etc/passwd");
    // zstd frames: one whose header claims a terabyte (refused before anything is inflated), and
    // junk after the magic number.
    let mut bomb = vec![0x28, 0xB5, 0x2F, 0xFD, 0xC0, 0x50];
    bomb.extend((1u64 << 40).to_le_bytes());
    bomb.extend([9, 0, 0, b'x']); // one raw, last block of one byte
    let junk = [&[0x28, 0xB5, 0x2F, 0xFD][..], b"not zstd at all"].concat();
    let (_, stderr) = ssh_apply(&ssh_config, "host1", &bomb);
    assert!(stderr.contains("larger than the limit"), "{stderr}");
    for (what, bundle, code) in [
        ("tampered", tampered, 4),
        ("a zstd frame claiming a terabyte", bomb, 4),
        ("zstd junk", junk, 4),
        (
            "signed by another key",
            signed(&stranger, v1, 5_000_000, "x:x:10501:10000::/:/bin/sh\n"),
            5,
        ),
        (
            "wrong major",
            signed(
                &key,
                keel_model::service::Version::new(2, 0),
                5_000_000,
                "y:x:10502:10000::/:/bin/sh\n",
            ),
            200,
        ),
        (
            "a .. member",
            hostile(&key, "../../etc/passwd", tar::EntryType::Regular),
            4,
        ),
        ("a symlink member", hostile(&key, "passwd", tar::EntryType::Symlink), 4),
        (
            "an absolute member",
            hostile(&key, "/etc/passwd", tar::EntryType::Regular),
            4,
        ),
    ] {
        let (got, stderr) = ssh_apply(&ssh_config, "host1", &bundle);
        assert_eq!(got, code, "{what}: {stderr}");
        assert_eq!(hosts[0].read("etc/passwd"), before1, "{what}: nothing written");
    }
    // A failing pre hook: refused, nothing written.
    hosts[0].hook("passwd", "pre_10_fail", "echo 'maintenance' >&2; exit 1");
    let (got, stderr) = ssh_apply(&ssh_config, "host1", &good);
    assert_eq!(got, 7, "{stderr}");
    assert_eq!(hosts[0].read("etc/passwd"), before1);
    // A concurrent run: refused while the first holds the lock.
    std::fs::remove_dir_all(hosts[0].dir.join("agent.d")).unwrap();
    // The first run holds the lock until the test opens the gate (after the second was refused):
    // no guess of how long the second takes to try.
    let (started, gate) = (tmp.path().join("slow-started"), tmp.path().join("slow-gate"));
    hosts[0].hook(
        "passwd",
        "pre_10_slow",
        &format!(
            "touch {}; i=0; while [ ! -e {} ] && [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done",
            started.display(),
            gate.display()
        ),
    );
    let first = {
        let (cfg, good) = (ssh_config.clone(), good.clone());
        std::thread::spawn(move || ssh_apply(&cfg, "host1", &good))
    };
    eventually(20, "the first run started", async || started.exists()).await;
    let (got, stderr) = ssh_apply(&ssh_config, "host1", &signed(&key, v1, 5_000_001, ""));
    assert_eq!(got, 3, "concurrent run: {stderr}");
    std::fs::write(&gate, "").unwrap();
    assert_eq!(first.join().unwrap().0, 0, "the first run completes");
    assert!(hosts[0].read("etc/passwd").contains("zed:x:10500"));
    // Replaying it, or an older one, is refused; the host keeps the newer state.
    let (got, _) = ssh_apply(
        &ssh_config,
        "host1",
        &signed(&key, v1, 4_999_999, "old:x:10503:10000::/:/bin/sh\n"),
    );
    assert_eq!(got, 6, "an older serial");
    assert!(!hosts[0].read("etc/passwd").contains("old:x:"));
}

#[tokio::test]
async fn the_propagation_api_refuses_hostile_input_and_foreign_managers() {
    use crate::support::req;
    let k = Keel::start(&[]);
    let admin = Some(k.token.as_str());
    api(
        &k,
        Method::POST,
        "/api/v1/facilities",
        Some(json!({"name": "a", "managers": ["mgr-a"], "services": ["passwd"]})),
    )
    .await;
    api(
        &k,
        Method::POST,
        "/api/v1/facilities",
        Some(json!({"name": "b", "managers": ["mgr-b"], "services": ["passwd"]})),
    )
    .await;
    api(
        &k,
        Method::POST,
        "/api/v1/hosts",
        Some(json!({"name": "b1.example.org", "facility": "b", "aliases": ["www.example.org"]})),
    )
    .await;
    let dest = |d: &str| json!({"facility": "a", "service": "passwd", "destination": d, "channel": "ssh"});
    // Destinations that would be ssh options or shell words, unknown fields and types.
    for (body, field) in [
        (dest("-oProxyCommand=sh"), "destination"),
        (dest("root@h;reboot"), "destination"),
        (dest("h:0"), "destination"),
        (dest("$(id)"), "destination"),
        (
            json!({"facility": "a", "service": "../../etc", "destination": "h", "channel": "ssh"}),
            "service",
        ),
        (
            json!({"facility": "a", "service": "passwd", "destination": "h", "channel": "telnet"}),
            "body",
        ),
        (
            json!({"facility": "a", "service": "passwd", "destination": "h", "channel": "ssh", "evil": 1}),
            "body",
        ),
    ] {
        let (status, v) = req(&k, admin, Method::POST, "/api/v1/destinations", Some(body.clone()), &[]).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
    }
    for name in ["../x", "A", "", "x y", "é"] {
        let (status, v) = req(
            &k,
            admin,
            Method::POST,
            "/api/v1/facilities",
            Some(json!({"name": name})),
            &[],
        )
        .await;
        assert_eq!(status, 400, "{name:?}: {v}");
    }
    let (status, _) = req(
        &k,
        admin,
        Method::GET,
        "/api/v1/propagation/bundle?service=../../x&facility=a&destination=h",
        None,
        &[],
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = req(
        &k,
        admin,
        Method::DELETE,
        "/api/v1/destinations/a/passwd/..%2F..%2Fetc",
        None,
        &[("If-Match", "\"1\"")],
    )
    .await;
    assert_eq!(status, 404);
    // A manager: only their facility, never a name of another facility's host, never `local`.
    let out = k.cli(&["token", "create", "--name", "mgr-a", "--role", "manager", "--json"]);
    let mgr = crate::support::stdout_json(&out)["token"]
        .as_str()
        .map(str::to_owned)
        .expect("token");
    let m = Some(mgr.as_str());
    let other =
        |f: &str, d: &str, ch: &str| json!({"facility": f, "service": "passwd", "destination": d, "channel": ch});
    for (token, path, body, want, why) in [
        (
            m,
            "/api/v1/destinations",
            dest("root@www.example.org"),
            403,
            "an alias of a host of facility b",
        ),
        (
            m,
            "/api/v1/destinations",
            other("b", "new.example.org", "ssh"),
            403,
            "facility b is not theirs",
        ),
        (
            m,
            "/api/v1/destinations",
            other("a", "local", "local"),
            403,
            "local runs on keel's host: admins only",
        ),
        (
            m,
            "/api/v1/destinations",
            dest("root@a1.example.org"),
            201,
            "a free name in their facility",
        ),
        (
            m,
            "/api/v1/propagation/force",
            json!({"facility": "b"}),
            403,
            "forcing another facility",
        ),
        (
            None,
            "/api/v1/propagation/force",
            json!({"facility": "a"}),
            401,
            "no token",
        ),
    ] {
        let (status, v) = req(&k, token, Method::POST, path, Some(body), &[]).await;
        assert_eq!(status, want, "{why}: {v}");
    }
    // Issue 19: a signed bundle is a credential for its destination. A manager gets one only for
    // a destination of their own facility (the first line, their own, succeeds).
    for (query, want, why) in [
        (
            "service=passwd&facility=a&destination=root@a1.example.org",
            200,
            "their own destination",
        ),
        (
            "service=passwd&facility=a&destination=b1.example.org",
            403,
            "a destination outside a",
        ),
        ("service=passwd&facility=a&destination=gw.prolo", 403, "keel's own host"),
        (
            "service=passwd&facility=b&destination=b1.example.org",
            403,
            "facility b",
        ),
    ] {
        let url = format!("{}/api/v1/propagation/bundle?{query}", k.url);
        let status = reqwest::Client::new()
            .get(url)
            .bearer_auth(&mgr)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), want, "{why}");
    }
    // And what a facility receives is the admins' to say: a manager adding `root` is refused.
    let (status, f) = req(&k, m, Method::GET, "/api/v1/facilities/a", None, &[]).await;
    assert_eq!(status, 200);
    let mut f = f;
    f["groups"] = json!(["root"]);
    let version = format!("\"{}\"", f["version"]);
    let (status, v) = req(
        &k,
        m,
        Method::PUT,
        "/api/v1/facilities/a",
        Some(f),
        &[("If-Match", &version)],
    )
    .await;
    assert_eq!(status, 403, "{v}");
}

/// The series of `name` for one destination, as /metrics shows it: the labels as written and the
/// value.
fn scraped(metrics: &str, name: &str, service: &str) -> Option<(String, f64)> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, value) = rest.split_once("} ")?;
        labels
            .contains(&format!("service=\"{service}\""))
            .then(|| (format!("{{{labels}}}"), value.trim().parse().unwrap_or(f64::NAN)))
    })
}

/// promtool, fed the series a scrape gave (held for 15 minutes), says whether the shipped
/// KeelDestinationFailing alert fires for it.
fn alert_fires(series: &str, value: f64, labels: &[(&str, &str)]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/prometheus/keel.rules.yml");
    let exp: String = labels
        .iter()
        .map(|(k, v)| format!("              {k}: {v:?}\n"))
        .collect();
    let test = format!(
        "rule_files:\n  - {rules:?}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n      \
         - series: '{series}'\n        values: '{value}x15'\n    alert_rule_test:\n      - eval_time: 12m\n        \
         alertname: KeelDestinationFailing\n        exp_alerts:\n          - exp_labels:\n              severity: warning\n{exp}\
         \x20           exp_annotations:\n              summary: \"{f}/{s} fails at {d}\"\n              description: \"{value} \
         failures in a row; `keel propagation status --facility {f}` says why.\"\n",
        rules = rules.display().to_string(),
        f = labels.iter().find(|(k, _)| *k == "facility").map_or("", |l| l.1),
        s = labels.iter().find(|(k, _)| *k == "service").map_or("", |l| l.1),
        d = labels.iter().find(|(k, _)| *k == "destination").map_or("", |l| l.1),
    );
    let file = dir.path().join("test.yml");
    std::fs::write(&file, &test).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{test}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Issue 30: every outcome at a destination is reported as what it is, by the real agent's exit
/// code, through the engine to `keel propagation status --json`, `/metrics` and the shipped alert:
/// a home that cannot be made (9) and a failed post hook (100) are failures — retried, counted,
/// never a last success — until fixed; a remark on stderr with exit 0 is a WARNING that succeeded;
/// the host's whitelist refusal (2) makes the task ERROR; an admin's block leaves it DONE.
#[tokio::test]
#[cfg_attr(
    not(has_promtool),
    ignore = "needs promtool, not installed here (.ci/run installs it)"
)]
async fn every_outcome_reaches_status_metrics_and_the_alert_as_what_it_is() {
    crate::support::require_tool("promtool");
    let agents = tempfile::tempdir().unwrap();
    let cfg_path = agents.path().join("local/agent.toml");
    let k = Keel::start_with_config(
        &local_config(&cfg_path, "[propagation.generators]\nhome_root = \"/homes\"\n"),
        &[],
    );
    let whitelist = "dns_alias_whitelist = [\"local\"]\n";
    let host = AgentHost::new(
        agents.path(),
        "local",
        "keel.example.org",
        &public_key(&k).await,
        whitelist,
    );
    // The homes' parent is a file: no home can be made until it is removed.
    std::fs::write(host.dir.join("root/homes"), "in the way").unwrap();
    local_facility(&k, "lan", &["passwd", "homes"]).await;
    let status = || {
        let out = k.cli(&["propagation", "status", "--json"]);
        crate::support::stdout_json(&out)
    };
    let result_of = |v: &Value, service: &str| -> (Value, Value) {
        let t = v
            .as_array()
            .or_else(|| v["tasks"].as_array())
            .and_then(|ts| {
                ts.iter()
                    .find(|t| t["facility"] == "lan" && t["service"] == service)
                    .cloned()
            })
            .unwrap_or(Value::Null);
        (t["state"].clone(), t["results"]["local"].clone())
    };
    let metrics = || async {
        reqwest::get(format!("{}/metrics", k.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    add_user(&k, "alice", "user").await;

    // 9: the files went out, the home did not: ERROR, counted, no success.
    eventually(30, "homes ERROR with exit 9", async || {
        let (state, r) = result_of(&status(), "homes");
        state == "ERROR" && r["exit_code"] == 9 && r["status"] == "ERROR"
    })
    .await;
    let (_, r) = result_of(&status(), "homes");
    assert!(r["last_success"].is_null() && r["failures"].as_u64() >= Some(1), "{r}");
    let m = metrics().await;
    let (series, failures) =
        scraped(&m, "keel_propagation_destination_consecutive_failures", "homes").expect("the series");
    assert!(failures >= 1.0, "{m}");
    assert_eq!(
        scraped(
            &m,
            "keel_propagation_destination_last_success_timestamp_seconds",
            "homes"
        )
        .map(|s| s.1),
        Some(0.0),
        "never a success: {m}"
    );
    let labels = [("facility", "lan"), ("service", "homes"), ("destination", "local")];
    alert_fires(
        &format!("keel_propagation_destination_consecutive_failures{series}"),
        failures,
        &labels,
    )
    .unwrap_or_else(|e| panic!("the alert does not fire on what keel exports: {e}"));
    // Fixed: the retry makes the home, DONE, and the failures are gone.
    std::fs::remove_file(host.dir.join("root/homes")).unwrap();
    eventually(30, "homes DONE after the retry", async || {
        result_of(&status(), "homes").1["status"] == "DONE"
    })
    .await;
    assert!(host.dir.join("root/homes/alice").is_dir());
    let m = metrics().await;
    assert_eq!(
        scraped(&m, "keel_propagation_destination_consecutive_failures", "homes").map(|s| s.1),
        Some(0.0)
    );

    // 0 with a remark: a WARNING, and a success.
    host.hook("passwd", "post_10_note", "echo 'reloaded, with a note' >&2");
    add_user(&k, "bob", "user").await;
    eventually(30, "passwd WARNING", async || {
        let (state, r) = result_of(&status(), "passwd");
        state == "WARNING" && r["status"] == "WARNING" && host.read("etc/passwd").contains("bob:")
    })
    .await;
    let (_, r) = result_of(&status(), "passwd");
    assert_eq!(
        (r["exit_code"].as_i64(), r["failures"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    let warned_at = r["last_success"].clone();
    assert!(warned_at.is_string(), "{r}");

    // 100: a post hook failed after the files were written: ERROR until the hook works.
    host.hook("passwd", "post_10_note", "echo 'reload failed' >&2; exit 1");
    add_user(&k, "carol", "user").await;
    eventually(30, "passwd ERROR with exit 100", async || {
        let (state, r) = result_of(&status(), "passwd");
        state == "ERROR" && r["exit_code"] == 100
    })
    .await;
    let (_, r) = result_of(&status(), "passwd");
    assert_eq!(r["last_success"], warned_at, "a failed run is no success: {r}");
    let m = metrics().await;
    assert!(scraped(&m, "keel_propagation_destination_consecutive_failures", "passwd").is_some_and(|s| s.1 >= 1.0));
    host.hook("passwd", "post_10_note", "exit 0");
    eventually(30, "passwd DONE once the hook works", async || {
        result_of(&status(), "passwd").1["status"] == "DONE"
    })
    .await;

    // 2: the host's whitelist refuses: DENIED there, and the task is an ERROR, counted.
    host.drop_from_config(whitelist);
    add_user(&k, "dora", "user").await;
    eventually(30, "passwd refused by the host", async || {
        let (state, r) = result_of(&status(), "passwd");
        state == "ERROR" && r["status"] == "DENIED" && r["exit_code"] == 2 && r["failures"].as_u64() >= Some(1)
    })
    .await;

    // An admin's block: DENIED, nothing sent, and the task DONE.
    let out = k.cli(&["propagation", "block", "--facility", "lan", "--service", "passwd"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    add_user(&k, "erin", "user").await;
    eventually(30, "passwd blocked: DONE with the destination DENIED", async || {
        let (state, r) = result_of(&status(), "passwd");
        state == "DONE" && r["status"] == "DENIED" && r["exit_code"].is_null()
    })
    .await;
}

/// `keel propagation wait` returns once every change made so far has landed: right after a write
/// it waits for the engine to see it (issue 32: the runbook's checks follow it, with no retry loop),
/// and it exits 1 naming the failure when a task failed.
#[tokio::test]
async fn propagation_wait_returns_when_every_change_has_landed() {
    let k = Keel::start(&["--example-site"]);
    let hosts = k.data().join("example-agent/root/etc/hosts");
    for n in 1..=3 {
        let name = format!("wait{n}");
        let mac = format!("52:54:00:77:00:0{n}");
        let out = k.cli(&[
            "machine",
            "add",
            "--hostname",
            &name,
            "--mac",
            &mac,
            "--mtype",
            "service",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = k.cli(&["propagation", "wait", "--facility", "gw"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = std::fs::read_to_string(&hosts).unwrap();
        assert!(
            text.contains(&format!(" {name}")),
            "{name} not in hosts after wait:\n{text}"
        );
    }
    // A task that fails: wait says so and exits 1.
    let out = k.cli(&["propagation", "block", "--facility", "gw", "--service", "hosts"]);
    assert!(out.status.success());
    std::fs::write(k.data().join("example-agent/agent.toml"), "not toml at all [").unwrap();
    let out = k.cli(&[
        "propagation",
        "force",
        "--facility",
        "gw",
        "--service",
        "dns",
        "--no-wait",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = k.cli(&["propagation", "wait", "--facility", "gw", "--timeout", "120"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("task(s) failed"));
}

/// Issue 34: an ssh destination's agent is started once and serves every later send over the
/// same session; an agent older than streams (it reads its input whole first) gets one process
/// per send, as before; a session that died while idle is reopened and the send goes through.
#[tokio::test]
#[cfg_attr(
    not(all(has_sshd, has_ssh, has_ssh_keygen)),
    ignore = "needs sshd, ssh, ssh-keygen, not installed here (.ci/run installs it)"
)]
async fn one_ssh_session_carries_every_send_and_an_older_agent_gets_a_process_each() {
    let tmp = tempfile::tempdir().unwrap();
    let sshd = keel_testkit::Sshd::start(&tmp.path().join("sshd")).unwrap();
    let names = ["new1", "old1"];
    let cfgs: Vec<PathBuf> = names.iter().map(|n| tmp.path().join(n).join("agent.toml")).collect();
    let pairs: Vec<(&str, &Path)> = names.iter().copied().zip(cfgs.iter().map(PathBuf::as_path)).collect();
    let ssh_config = sshd.client_config(&pairs).unwrap();
    // Every start of an agent is a line in `starts`, with its pid; old1's agent reads all its
    // input before it runs, as agents before streams did.
    let starts = tmp.path().join("starts");
    let wrapper = tmp.path().join("agent-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$KEEL_AGENT_CONFIG $$\" >> {starts}\ncase \"$KEEL_AGENT_CONFIG\" in\n\
             *old1*) cat > \"$KEEL_AGENT_CONFIG.in\"; exec {agent} apply < \"$KEEL_AGENT_CONFIG.in\" ;;\n\
             *) exec {agent} apply ;;\nesac\n",
            starts = starts.display(),
            agent = agent_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = format!(
        "[propagation]\ndebounce_ms = 100\nretry_min_secs = 1\nsend_timeout_secs = 30\n\
         [propagation.ssh]\nconfig_file = \"{}\"\nremote_command = \"{}\"\ncontrol_persist = \"\"\nconnect_timeout_secs = 1\nstreams = true\n",
        ssh_config.display(),
        wrapper.display()
    );
    let k = Keel::start_with_config(&config, &[]);
    let pk = public_key(&k).await;
    let hosts: Vec<AgentHost> = names
        .iter()
        .map(|n| AgentHost::new(tmp.path(), n, n, &pk, ""))
        .collect();
    passwd_facility(&k, "lan", "user", &["new1", "old1"]).await;
    let starts_of = |name: &str| -> Vec<String> {
        std::fs::read_to_string(&starts)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("/{name}/")))
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
            .collect()
    };
    for login in ["alice", "bob"] {
        add_user(&k, login, "user").await;
        eventually(60, &format!("{login} on both hosts"), async || {
            hosts
                .iter()
                .all(|h| h.read("etc/passwd").contains(&format!("{login}:x:")))
        })
        .await;
    }
    let r = task_state(&k, "lan", "passwd").await.1;
    assert_eq!(
        (&r["new1"]["status"], &r["old1"]["status"]),
        (&json!("DONE"), &json!("DONE")),
        "{r}"
    );
    assert_eq!(
        starts_of("new1").len(),
        1,
        "one agent for every send: {:?}",
        starts_of("new1")
    );
    // old1: the stream it did not answer, then one process per send (the stream is not tried
    // again for an hour).
    assert_eq!(starts_of("old1").len(), 3, "{:?}", starts_of("old1"));

    // The session's agent dies while idle: the next send opens a new session and lands.
    let pid = starts_of("new1")[0].clone();
    let killed = std::process::Command::new("kill").args(["-9", &pid]).status().unwrap();
    assert!(killed.success());
    add_user(&k, "carol", "user").await;
    eventually(60, "carol on new1", async || {
        hosts[0].read("etc/passwd").contains("carol:x:")
    })
    .await;
    assert_eq!(task_state(&k, "lan", "passwd").await.1["new1"]["status"], "DONE");
    assert_eq!(starts_of("new1").len(), 2, "{:?}", starts_of("new1"));
}
