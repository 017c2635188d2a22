//! Presence, SSO and the firewall end to end: a real nginx in front of a small upstream asks
//! keel who sits at each address; the firewall service goes through the engine to the real
//! keel-agent, which loads the ruleset with the real `nft` inside a network namespace this test
//! creates (never the machine's own).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::propagation::{agent_bin, api, public_key, AgentHost};
use crate::support::eventually;
use crate::support::{req, require_tool, wait_for_file, Keel};

/// Pools on loopback, so that curl's `--interface 127.0.5.x` is a machine's address.
pub const LOOPBACK_POOLS: &str = "[pools.user]\nnetwork = \"127.0.5.0/24\"\n[pools.orga]\nnetwork = \"127.0.6.0/24\"\n\
[pools.cluster]\nnetwork = \"127.0.7.0/24\"\n[pools.service]\nnetwork = \"127.0.8.0/24\"\n";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn add_machine(k: &Keel, hostname: &str, mtype: &str, ip: &str) {
    let n = ip.rsplit('.').next().unwrap().parse::<u8>().unwrap();
    let t = match mtype {
        "user" => 1,
        "orga" => 2,
        _ => 3,
    };
    let mac = format!("02:00:00:00:{t:02x}:{n:02x}");
    let body = json!({"hostname": hostname, "mac": mac, "mtype": mtype, "ip": ip, "room": "hall"});
    api(k, Method::POST, "/api/v1/machines", Some(body)).await;
}

pub async fn add_user(k: &Keel, login: &str, group: &str) {
    api(
        k,
        Method::POST,
        "/api/v1/users",
        Some(json!({"login": login, "group": group})),
    )
    .await;
}

/// A user whose password is `pw-<login>` (what the PAM test types).
async fn add_user_with_password(k: &Keel, login: &str, group: &str) {
    let hash = keel_password::hash(&format!("pw-{login}")).unwrap();
    let body = json!({"login": login, "group": group, "password_hash": hash});
    api(k, Method::POST, "/api/v1/users", Some(body)).await;
}

pub async fn login(k: &Keel, login: &str, hostname: &str) -> (u16, Value) {
    let body = json!({"login": login, "hostname": hostname});
    req(k, Some(&k.token), Method::POST, "/api/v1/sessions", Some(body), &[]).await
}

/// curl from `source` (a loopback address) to `url`, with extra headers: (status, body).
fn curl(source: &str, url: &str, headers: &[&str]) -> (String, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-m", "5", "--interface", source, "-w", "\n%{http_code}", url]);
    for h in headers {
        c.args(["-H", h]);
    }
    let out = c.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_owned(), body.trim().to_owned())
}

/// The reply's X-SSO-* headers (lowercased names, in order), for a GET from `source`.
fn sso_reply_headers(source: &str, url: &str) -> Vec<String> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "5",
            "--interface",
            source,
            "-o",
            "/dev/null",
            "-D",
            "-",
            url,
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end().to_owned())
        .filter(|l| l.to_ascii_lowercase().starts_with("x-sso-"))
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or((&l, ""));
            format!("{}: {}", k.to_ascii_lowercase(), v.trim())
        })
        .collect()
}

/// nginx with the shipped snippets, in front of an upstream that echoes what it received.
fn nginx(dir: &Path, keel_port: u16, port: u16) -> Guard {
    require_tool("nginx");
    let echo = free_port();
    let conf = format!(
        "daemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         upstream keel_sso {{ server 127.0.0.1:{keel_port}; keepalive 4; }}\n\
         server {{\n  listen 127.0.0.1:{port};\n  include sso/handler;\n\
           location / {{ proxy_pass http://127.0.0.1:{echo}; }}\n\
           location /private/ {{ include sso/protect; proxy_pass http://127.0.0.1:{echo}; }}\n }}\n\
         server {{\n  listen 127.0.0.1:{echo};\n  location / {{ return 200 \"user=[$http_x_sso_user] \
         status=[$http_x_sso_status] remote=[$http_remote_user] backend=[$http_x_sso_backend_status]\"; }}\n }}\n}}\n",
        d = dir.display()
    );
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let copy = Command::new("cp")
        .arg("-r")
        .arg(repo().join("contrib/nginx/sso"))
        .arg(dir)
        .status()
        .unwrap();
    assert!(copy.success());
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = keel_testkit::guard::spawn(
        Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("nginx");
    let g = Guard(child);
    if keel_testkit::wait_until(Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }) {
        return g;
    }
    panic!(
        "nginx did not listen: {}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
}

#[tokio::test]
#[cfg_attr(
    not(all(has_nginx, has_curl)),
    ignore = "needs nginx, curl, not installed here (.ci/run installs it)"
)]
async fn sso_through_a_real_nginx_answers_each_status_and_never_passes_a_forged_login() {
    let toml = format!("{LOOPBACK_POOLS}[presence]\nrecovery_secs = 0\n");
    let mut k = Keel::start_with_config(&toml, &[]);
    add_machine(&k, "pc1", "user", "127.0.5.7").await;
    add_user(&k, "alice", "user").await;
    let keel_port: u16 = k.url.rsplit(':').next().unwrap().parse().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nginx = nginx(tmp.path(), keel_port, port);
    let site = format!("http://127.0.0.1:{port}/");
    let private = format!("http://127.0.0.1:{port}/private/");
    let forged = ["X-SSO-User: root", "Remote-User: root", "X-SSO-Status: authenticated"];
    let echo = |user: &str, status: &str, backend: &str| {
        format!("user=[{user}] status=[{status}] remote=[{user}] backend=[{backend}]")
    };
    // Directly, without nginx's header: `missing header`.
    let direct = reqwest::get(format!("{}/sso", k.url)).await.unwrap();
    assert_eq!(direct.headers()["x-sso-status"], "missing header");
    assert_eq!(
        curl("127.0.0.1", &site, &forged),
        ("200".into(), echo("", "unknown IP", "working"))
    );
    assert_eq!(
        curl("127.0.5.7", &site, &forged),
        ("200".into(), echo("", "logged-out machine", "working"))
    );
    assert_eq!(curl("127.0.5.7", &private, &forged).0, "403");
    assert_eq!(login(&k, "alice", "pc1").await.0, 201);
    assert_eq!(
        curl("127.0.5.7", &site, &forged),
        ("200".into(), echo("alice", "authenticated", "working"))
    );
    assert_eq!(
        curl("127.0.5.7", &private, &forged),
        ("200".into(), echo("alice", "authenticated", "working"))
    );
    // The reply carries what keel answered, for debugging in a browser (prologin's headers).
    assert_eq!(
        sso_reply_headers("127.0.5.7", &site),
        [
            "x-sso-user: alice",
            "x-sso-status: authenticated",
            "x-sso-backend-status: working"
        ]
    );
    assert_eq!(
        sso_reply_headers("127.0.0.1", &site),
        ["x-sso-status: unknown IP", "x-sso-backend-status: working"],
        "nobody there: no X-SSO-User line (nginx drops an empty header)"
    );
    // keel down: the site still answers, saying so; protected pages are refused.
    k.kill9();
    assert_eq!(
        curl("127.0.5.7", &site, &forged),
        ("200".into(), echo("", "", "keel unreachable"))
    );
    assert_eq!(curl("127.0.5.7", &private, &forged).0, "403");
}

/// A network namespace held by a sleeping process; `run` enters it.
pub struct Netns(Guard);

impl Netns {
    pub fn new() -> Self {
        require_tool("unshare");
        require_tool("nsenter");
        let child = keel_testkit::guard::spawn(Command::new("unshare").args(["-n", "sleep", "600"]))
            .expect("unshare -n (needs root or user namespaces)");
        let ns = Self(Guard(child));
        // The namespace exists once unshare has exec'd sleep.
        let entered = keel_testkit::wait_until(Duration::from_secs(10), || {
            std::fs::read_link(format!("/proc/{}/exe", ns.pid())).is_ok_and(|p| p.ends_with("sleep"))
        });
        assert!(entered, "unshare never entered its namespace");
        ns
    }

    pub fn pid(&self) -> u32 {
        self.0 .0.id()
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn prefix(&self) -> Vec<String> {
        vec!["nsenter".into(), "-t".into(), self.pid().to_string(), "-n".into()]
    }

    /// Runs a command inside; (success, stdout + stderr).
    pub fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid().to_string(), "-n"])
            .args(args)
            .output()
            .expect("nsenter");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// The addresses in keel's `internet` set, as nft lists them.
    pub fn internet_set(&self) -> String {
        self.run(&["nft", "list", "set", "inet", "keel", "internet"]).1
    }
}

/// keel with a `gw` facility shipping `firewall` to a local agent that applies inside `ns` with
/// the shipped hooks (real nft, real conntrack).
pub async fn firewall_site(ns: &Netns, tmp: &Path, extra: &str) -> (Keel, AgentHost) {
    require_tool("nft");
    require_tool("conntrack");
    let cfg = tmp.join("gw/agent.toml");
    let mut cmd = ns.prefix();
    cmd.extend([
        agent_bin().display().to_string(),
        "--config".into(),
        cfg.display().to_string(),
        "apply".into(),
    ]);
    let cmd: Vec<String> = cmd.iter().map(|c| format!("{c:?}")).collect();
    let toml = format!(
        "{LOOPBACK_POOLS}[presence]\nrecovery_secs = 0\n[propagation]\nretry_min_secs = 1\nlocal_command = [{}]\n{extra}",
        cmd.join(", ")
    );
    let k = Keel::start_with_config(&toml, &[]);
    let hooks = format!(
        "dns_alias_whitelist = [\"local\"]\nhooks_dir = \"{}\"\n",
        repo().join("contrib/agent.d").display()
    );
    let host = AgentHost::new(tmp, "gw", "gw.example.org", &public_key(&k).await, &hooks);
    api(
        &k,
        Method::POST,
        "/api/v1/facilities",
        Some(json!({"name": "gw", "services": ["firewall"]})),
    )
    .await;
    let d = json!({"facility": "gw", "service": "firewall", "destination": "local", "channel": "local"});
    api(&k, Method::POST, "/api/v1/destinations", Some(d)).await;
    (k, host)
}

#[tokio::test]
#[cfg_attr(
    not(all(has_nft, has_conntrack, has_unshare, has_nsenter)),
    ignore = "needs nft, conntrack, unshare, nsenter, not installed here (.ci/run installs it)"
)]
async fn firewall_follows_logins_and_contest_mode_inside_a_network_namespace() {
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let (k, host) = firewall_site(&ns, tmp.path(), "").await;
    // Someone else's table in the namespace: keel must never touch it.
    let (ok, out) = ns.run(&["nft", "add table inet theirs; add chain inet theirs c"]);
    assert!(ok, "{out}");
    add_machine(&k, "pc1", "user", "127.0.5.7").await;
    add_machine(&k, "pc2", "user", "127.0.5.8").await;
    add_machine(&k, "staff1", "orga", "127.0.6.9").await;
    add_user(&k, "alice", "user").await;
    add_user(&k, "bob", "user").await;
    eventually(20, "the orga machine in keel's set", async || {
        ns.internet_set().contains("127.0.6.9")
    })
    .await;
    assert!(!ns.internet_set().contains("127.0.5.7"), "{}", ns.internet_set());
    assert_eq!(login(&k, "alice", "pc1").await.0, 201);
    assert_eq!(login(&k, "bob", "pc2").await.0, 201);
    eventually(20, "logged-in contestants' machines in the set", async || {
        let set = ns.internet_set();
        set.contains("127.0.5.7") && set.contains("127.0.5.8")
    })
    .await;
    assert!(host
        .read("var/lib/keel/services/firewall/allowed")
        .contains("127.0.5.7 pc1 user alice"));
    // A flow alice has open to the internet.
    let (ok, out) = ns.run(&[
        "conntrack",
        "-I",
        "-s",
        "127.0.5.7",
        "-d",
        "192.0.2.80",
        "-p",
        "tcp",
        "--sport",
        "40000",
        "--dport",
        "443",
        "--state",
        "ESTABLISHED",
        "-t",
        "300",
        "-u",
        "SEEN_REPLY",
    ]);
    assert!(ok, "{out}");
    assert!(ns.run(&["conntrack", "-L", "-s", "127.0.5.7"]).1.contains("192.0.2.80"));
    // bob logs out: his address leaves the set.
    let (status, _) = req(&k, Some(&k.token), Method::DELETE, "/api/v1/sessions/bob", None, &[]).await;
    assert_eq!(status, 204);
    eventually(20, "bob's machine out of the set", async || {
        !ns.internet_set().contains("127.0.5.8")
    })
    .await;
    assert!(
        ns.run(&["conntrack", "-L", "-s", "127.0.5.7"]).1.contains("192.0.2.80"),
        "alice's flow stays"
    );
    // The contest starts: contestants lose the internet, and their open connections.
    let out = k.cli(&["setting", "set", "contest_mode", "true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually(20, "alice's machine out of the set", async || {
        !ns.internet_set().contains("127.0.5.7")
    })
    .await;
    assert!(ns.internet_set().contains("127.0.6.9"), "staff keep it");
    eventually(10, "alice's open connection cut", async || {
        !ns.run(&["conntrack", "-L", "-s", "127.0.5.7"]).1.contains("192.0.2.80")
    })
    .await;
    let (_, theirs) = ns.run(&["nft", "list", "tables"]);
    assert!(
        theirs.contains("inet theirs"),
        "someone else's table is untouched: {theirs}"
    );
    let (_, rules) = ns.run(&["nft", "list", "chain", "inet", "keel", "forward"]);
    assert!(rules.contains("keel-drop: ") && rules.contains("@internet"), "{rules}");
}

/// A machine's presence.toml (in `dir`, with its utmp, state file and proofs there) for keel `k`.
pub fn presence_toml(k: &Keel, dir: &Path, hostname: &str) -> PathBuf {
    presence_toml_at(k, &k.url, dir, hostname)
}

/// The same, calling keel at `url` (its HTTPS listener: with the site CA keel made).
fn presence_toml_at(k: &Keel, url: &str, dir: &Path, hostname: &str) -> PathBuf {
    let cfg = dir.join("presence.toml");
    let ca = if url.starts_with("https://") {
        format!("ca_file = \"{}\"\n", k.data().join("tls/ca.pem").display())
    } else {
        String::new()
    };
    let text = format!(
        "url = \"{url}\"\n{ca}secret_file = \"{}\"\nhostname = \"{hostname}\"\nutmp_file = \"{t}/utmp\"\nstate_file = \"{t}/state.json\"\nproof_dir = \"{t}/proofs\"\n",
        k.data().join(keel_server::presence::PresenceConfig::default().secret_file).display(),
        t = dir.display()
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// `keel-agent presence` as pam_exec runs it; the machine is 127.0.0.1 so its calls come from
/// its own address.
fn pam(cfg: &Path, kind: &str, user: &str) -> (bool, String) {
    pam_with(cfg, kind, user, b"")
}

/// The same, with `stdin` as pam_exec gives it (`expose_authtok`: the password, NUL-terminated).
fn pam_with(cfg: &Path, kind: &str, user: &str, stdin: &[u8]) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new(agent_bin())
        .args(["presence", "--presence-config"])
        .arg(cfg)
        .arg("pam")
        .env("PAM_TYPE", kind)
        .env("PAM_USER", user)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A login at the machine's prompt: PAM's `auth` step with the password typed, then `session`.
fn pam_login(cfg: &Path, user: &str, password: &str) -> (bool, String) {
    let (ok, said) = pam_with(cfg, "auth", user, format!("{password}\0").as_bytes());
    assert!(ok, "the auth step never refuses: {said}");
    pam(cfg, "open_session", user)
}

pub fn heartbeat(cfg: &Path) -> (bool, Value) {
    let out = Command::new(agent_bin())
        .args(["presence", "--presence-config"])
        .arg(cfg)
        .args(["heartbeat", "--once"])
        .output()
        .unwrap();
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

/// Runs with `[presence] proof` as a new data directory has it (required): the machine's PAM
/// lines send the password typed over HTTPS for a proof, the session presents it.
#[tokio::test]
async fn pam_hook_logs_in_refuses_with_a_reason_and_heartbeats_keep_sessions_alive() {
    let pools = LOOPBACK_POOLS.replace("127.0.5.0/24", "127.0.0.0/24");
    let mut k = Keel::start_with_config(
        &format!("{pools}[presence]\ntimeout_secs = 2\nrecovery_secs = 0\n[tls]\nlisten = \"127.0.0.1:0\"\n"),
        &[],
    );
    add_machine(&k, "pc1", "user", "127.0.0.1").await;
    add_machine(&k, "pc2", "user", "127.0.0.2").await;
    add_user_with_password(&k, "alice", "user").await;
    add_user_with_password(&k, "bob", "user").await;
    let tls = wait_for_file(&k.data().join("tls.addr"), Duration::from_secs(30), || false).expect("tls.addr");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = presence_toml_at(&k, &format!("https://{}", tls.trim()), tmp.path(), "pc1");
    // The machine's secret alone opens nothing, nor does a wrong password.
    let (ok, said) = pam(&cfg, "open_session", "alice");
    assert!(!ok && said.contains("proof of alice's password"), "{said}");
    let (ok, said) = pam_login(&cfg, "alice", "pw-bob");
    assert!(!ok && said.contains("proof of alice's password"), "{said}");
    assert!(pam_login(&cfg, "alice", "pw-alice").0);
    assert!(
        !tmp.path().join("proofs/alice").exists(),
        "a proof is used once, then gone"
    );
    assert_eq!(
        k.admin()
            .call::<Value>(Method::GET, "/api/v1/sessions", None, None)
            .await
            .unwrap()
            .value[0]["hostname"],
        "pc1"
    );
    let (ok, said) = pam_login(&cfg, "bob", "pw-bob");
    assert!(!ok && said.contains("pc1 is in use by alice"), "{said}");
    // utmp says alice is here: heartbeats keep her session past the 2 s timeout.
    let me = std::process::id() as i32;
    std::fs::write(
        tmp.path().join("utmp"),
        keel_agent::utmp::record(keel_agent::utmp::USER_PROCESS_TYPE, me, "tty1", "alice"),
    )
    .unwrap();
    for _ in 0..8 {
        let (ok, answer) = heartbeat(&cfg);
        assert!(ok && answer["refreshed"] == json!(["alice"]), "{answer}");
        // sleep-ok: time itself is under test — the session must outlive the 2 s timeout while
        // heartbeats come every half second.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(login(&k, "alice", "pc2").await.0 == 423, "still logged in on pc1");
    // Without heartbeats the session expires, as a Change.
    eventually(10, "alice's session expired", async || {
        login(&k, "bob", "pc1").await.0 == 201
    })
    .await;
    // Logout through PAM.
    assert!(pam(&cfg, "close_session", "bob").0);
    assert!(login(&k, "alice", "pc1").await.0 == 201);
    // keel unreachable: the default policy lets users of unknown groups in, and says why.
    k.kill9();
    let (ok, _) = pam_login(&cfg, "bob", "pw-bob");
    assert!(ok);
    assert!(pam(&cfg, "close_session", "bob").0, "a logout is never blocked");
}

/// keel restarts: sessions are kept; during the first timeout logins wait and heartbeats rebuild
/// what keel lost; a session nobody vouches for expires only after that.
#[tokio::test]
async fn a_restart_never_logs_everyone_out_and_heartbeats_rebuild_sessions() {
    let pools = LOOPBACK_POOLS.replace("127.0.5.0/24", "127.0.0.0/24");
    // `password`: these users have none (keys, Kerberos), so the machines' word is what counts.
    let toml = format!("{pools}[presence]\ntimeout_secs = 3\nrecovery_secs = 3\nproof = \"password\"\n");
    let mut k = Keel::start_with_config(&toml, &[]);
    add_machine(&k, "pc1", "user", "127.0.0.1").await;
    add_machine(&k, "pc2", "user", "127.0.0.2").await;
    add_user(&k, "alice", "user").await;
    add_user(&k, "bob", "user").await;
    let (status, body) = login(&k, "alice", "pc2").await;
    assert_eq!((status, body["reason"].as_str()), (423, Some("recovering")), "{body}");
    eventually(10, "recovery over", async || login(&k, "alice", "pc2").await.0 == 201).await;
    k.kill9();
    k.restart_same_port();
    let sessions = api(&k, Method::GET, "/api/v1/sessions", None).await;
    assert_eq!(sessions[0]["login"], "alice", "kept across the restart: {sessions}");
    // bob was logged in on pc1 when keel was down: pc1's heartbeat brings him back.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = presence_toml(&k, tmp.path(), "pc1");
    let rec = keel_agent::utmp::record(
        keel_agent::utmp::USER_PROCESS_TYPE,
        std::process::id() as i32,
        "tty1",
        "bob",
    );
    std::fs::write(tmp.path().join("utmp"), rec).unwrap();
    let (ok, answer) = heartbeat(&cfg);
    assert!(ok && answer["rebuilt"] == json!(["bob"]), "{answer}");
    // alice's machine sends nothing: her session ends one timeout after the start, not before.
    let sessions = api(&k, Method::GET, "/api/v1/sessions", None).await;
    assert_eq!(sessions.as_array().unwrap().len(), 2, "{sessions}");
    eventually(15, "alice's session expired", async || {
        heartbeat(&cfg);
        let s = api(&k, Method::GET, "/api/v1/sessions", None).await;
        s.as_array().unwrap().len() == 1 && s[0]["login"] == "bob"
    })
    .await;
    // Login, rebuild and expiry are Changes (heartbeats are not).
    let changes = api(&k, Method::GET, "/api/v1/changes?limit=1000", None).await;
    let sessions: Vec<(String, String)> = changes
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "session")
        .map(|c| {
            (
                c["op"].as_str().unwrap().to_owned(),
                c["principal"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        sessions,
        [
            ("put".to_owned(), "admin".to_owned()),
            ("put".to_owned(), "machine pc1".to_owned()),
            ("delete".to_owned(), "keel (presence expiry)".to_owned())
        ],
        "{changes}"
    );
}

/// `keel conntrack-log` on recorded `conntrack -E` output: each flow with the NAT'd source port,
/// and the hostname and login that held its source address.
#[tokio::test]
async fn conntrack_log_attributes_recorded_flows() {
    let k = Keel::start_with_config(
        &format!("{}[presence]\nrecovery_secs = 0\n", crate::support::BIG_POOLS),
        &[],
    );
    add_machine(&k, "pc1", "user", "10.0.0.1").await;
    add_machine(&k, "pc2", "user", "10.0.0.2").await;
    add_user(&k, "alice", "user").await;
    assert_eq!(login(&k, "alice", "pc1").await.0, 201);
    let tmp = tempfile::tempdir().unwrap();
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conntrack-events.txt");
    let out = k.cli(&[
        "conntrack-log",
        "--input",
        events.to_str().unwrap(),
        "--dir",
        tmp.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("3 flow(s) logged, 2 line(s) skipped"), "{stderr}");
    let file = std::fs::read_dir(tmp.path()).unwrap().next().unwrap().unwrap().path();
    assert!(
        file.file_name().unwrap().to_str().unwrap().starts_with("conntrack-20"),
        "{}",
        file.display()
    );
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let pick = |v: &Value| {
        (
            v["proto"].as_str().unwrap().to_owned(),
            v["src"].as_str().unwrap().to_owned(),
            v["nat_sport"].as_u64(),
            v["hostname"].as_str().map(str::to_owned),
            v["login"].as_str().map(str::to_owned),
        )
    };
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(
        pick(&lines[0]),
        ("tcp".into(), "10.0.0.1".into(), Some(61001), s("pc1"), s("alice"))
    );
    assert_eq!(
        pick(&lines[1]),
        ("udp".into(), "10.0.0.2".into(), Some(61002), s("pc2"), None)
    );
    assert_eq!(
        pick(&lines[2]),
        ("tcp".into(), "10.0.0.99".into(), Some(61003), None, None)
    );
    assert_eq!(lines[0]["time"], "2026-11-27T05:04:58.441001Z");
    assert_eq!(lines[0]["nat_src"], "192.0.2.1");
}

/// `/map` in a real headless Chromium: rooms, machines, who sits where, following logins live.
#[tokio::test]
#[cfg_attr(
    not(all(has_chromium, has_chromedriver)),
    ignore = "needs chromium, chromedriver, not installed here (.ci/run installs it)"
)]
async fn the_map_shows_who_sits_where_and_follows_logins_live() {
    let k = Keel::start_with_config(
        &format!("{}[presence]\nrecovery_secs = 0\n", crate::support::BIG_POOLS),
        &[],
    );
    for (i, room) in ["hall-a", "hall-a", "hall-a", "hall-b", "hall-b"].iter().enumerate() {
        let body = json!({"hostname": format!("pc{}", i + 1), "mac": format!("02:00:00:00:07:{i:02x}"),
                          "mtype": "user", "room": room});
        api(&k, Method::POST, "/api/v1/machines", Some(body)).await;
    }
    let body = json!({"hostname": "pc6", "mac": "02:00:00:00:07:09", "mtype": "user", "room": "hall-b",
                      "is_faulty": true, "faulty_reason": "screen"});
    api(&k, Method::POST, "/api/v1/machines", Some(body)).await;
    add_user(&k, "alice", "user").await;
    add_user(&k, "bob", "user").await;
    assert_eq!(login(&k, "alice", "pc1").await.0, 201);
    let b = crate::browser::Browser::start().await;
    b.goto(&format!("{}/map", k.url)).await;
    let seat = |host: &str, who: &str| {
        format!(
            "const e = document.querySelector('li[data-host={host}] .who'); return !!e && e.textContent === '{who}';"
        )
    };
    b.wait_for(20, "alice on pc1", &seat("pc1", "alice")).await;
    assert_eq!(
        b.eval("return document.querySelectorAll('section').length;").await,
        json!(2)
    );
    assert_eq!(b.eval(&seat("pc6", "faulty")).await, json!(true));
    // A login elsewhere shows up without reloading the page.
    assert_eq!(login(&k, "bob", "pc4").await.0, 201);
    b.wait_for(20, "bob on pc4, live", &seat("pc4", "bob")).await;
    let heading = b.eval("return document.querySelectorAll('h2')[1].textContent;").await;
    assert_eq!(heading, json!("hall-b — 1/3 in use"));
    let shot = b.screenshot("map").await;
    assert!(std::fs::metadata(shot).unwrap().len() > 5_000);
}
