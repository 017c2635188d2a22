//! Operating keel (issue 30): a config checked before use (`keel serve --check`, the start's own
//! check and its exit status), reloaded live (`keel reload`, SIGHUP) with a bad file refused,
//! journal-shaped log lines with priorities, and every logged value escaped.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use reqwest::Method;
use serde_json::{json, Value};

use crate::propagation::api;
use crate::support::{eventually, Keel, KEEL};

fn keel(args: &[&str]) -> Output {
    Command::new(KEEL)
        .args(args)
        .env_remove("KEEL_URL")
        .env_remove("KEEL_TOKEN")
        .env_remove("KEEL_DATA_DIR")
        .env_remove("KEEL_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run keel")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn serve_check_names_every_error_with_its_line_and_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "listen = \"127.0.0.1:0\"\n[dns]\nzone = \"prolo\"\n").unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let out = keel(&["serve", "--check", "--config", good.to_str().unwrap(), "--data-dir", d]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("the configuration is valid"), "{}", text(&out));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:0\"\n[dns]\nzone = \"not a zone\"\n\n[web]\ntrust_sso = true\n",
    )
    .unwrap();
    let out = keel(&["serve", "--check", "--config", bad.to_str().unwrap(), "--data-dir", d]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("bad.toml:3: [dns] zone:"), "{shown}");
    assert!(shown.contains("bad.toml:6: [web] trust_sso:"), "{shown}");
    let out = keel(&[
        "serve",
        "--check",
        "--json",
        "--config",
        bad.to_str().unwrap(),
        "--data-dir",
        d,
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["line"], 3, "{v}");
    assert!(
        !data.exists(),
        "a check opens nothing: no data directory, no lock, no database"
    );

    // A start with that file stops before opening anything, with the configuration's own status.
    let out = keel(&["serve", "--config", bad.to_str().unwrap(), "--data-dir", d]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(text(&out).contains("bad.toml:3: [dns] zone:"), "{}", text(&out));
    assert!(!data.exists());
}

async fn add_machine(k: &Keel, hostname: &str, mac: &str) -> Value {
    k.admin()
        .call::<Value>(
            Method::POST,
            "/api/v1/machines",
            Some(&json!({"hostname": hostname, "mac": mac, "mtype": "user", "room": "alt"})),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{hostname}: {e}"))
        .value
}

fn reload(cfg: &Path, data: &Path) -> Output {
    keel(&[
        "reload",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ])
}

/// A reload applies the new pools (new machines get addresses from them; a machine outside them
/// keeps its own), names what waits for a restart, and refuses a bad file — whether `keel reload`
/// checks it or a bare SIGHUP reaches the server — while keel keeps serving what it had.
#[tokio::test]
async fn a_reload_applies_what_it_can_names_the_rest_and_refuses_a_bad_file() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("keel.toml");
    std::fs::write(&cfg, "[pools.user]\nnetwork = \"10.10.0.0/22\"\n").unwrap();
    let k = Keel::start(&["--config", cfg.to_str().unwrap()]);
    let r1 = add_machine(&k, "r1", "aa:bb:cc:dd:ee:01").await;
    assert_eq!(r1["ip"], "10.10.0.1");

    std::fs::write(
        &cfg,
        "workers = 1\n[pools.user]\nnetwork = \"192.168.50.0/24\"\n[logging]\nlevel = \"info\"\n",
    )
    .unwrap();
    let out = reload(&cfg, &k.data());
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("applied: pools"), "{said}");
    assert!(said.contains("applies at the next restart: workers"), "{said}");
    let r2 = add_machine(&k, "r2", "aa:bb:cc:dd:ee:02").await;
    assert_eq!(r2["ip"], "192.168.50.1", "new machines come from the new pool");
    let r1 = k.admin().get::<Value>("/api/v1/machines/r1").await.unwrap();
    assert_eq!(
        r1["ip"], "10.10.0.1",
        "a machine outside the new pool keeps its address"
    );
    assert!(k.log().contains("takes effect at the next restart"), "{}", k.log());

    // A bad file: refused by `keel reload` before the server hears of it.
    std::fs::write(
        &cfg,
        "[pools.user]\nnetwork = \"172.16.0.0/24\"\n[dns]\nzone = \"no good\"\n",
    )
    .unwrap();
    let out = reload(&cfg, &k.data());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("keel.toml:4: [dns] zone:"), "{}", text(&out));
    // And by the server itself, when a SIGHUP comes without the check.
    let before = report(&k.data()).map_or(0, |r| r["generation"].as_u64().unwrap_or(0));
    let hup = Command::new("kill")
        .args(["-HUP", &k.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually(20, "the server's own refusal", async || {
        report(&k.data()).is_some_and(|r| r["generation"].as_u64() > Some(before))
    })
    .await;
    let r = report(&k.data()).unwrap();
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["errors"][0].as_str().unwrap().contains("[dns] zone"), "{r}");
    let r3 = add_machine(&k, "r3", "aa:bb:cc:dd:ee:03").await;
    assert_eq!(r3["ip"], "192.168.50.2", "still the pools of the last good file");
}

fn report(data: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(data.join(keel_client::data_dir::RELOAD_STATUS)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Under systemd (stderr is the journal stream `$JOURNAL_STREAM` names) each line carries its
/// syslog priority and no timestamp or colour of keel's own; a web login and a TFTP file name
/// holding a newline and an escape code are each logged as one line, escaped (issue 31: one
/// field formatter for every value, whoever set it).
#[tokio::test]
async fn journal_lines_carry_their_priority_and_no_logged_value_forges_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    std::fs::write(&log, "").unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let stream = format!(
        "{}:{}",
        std::os::unix::fs::MetadataExt::dev(&meta),
        std::os::unix::fs::MetadataExt::ino(&meta)
    );
    let data = dir.path().join("data");
    let command = keel_testkit::KeelCommand {
        keel: KEEL.into(),
        args: [
            "--listen",
            "127.0.0.1:0",
            "--dns-listen",
            "127.0.0.1:0",
            "--tftp-listen",
            "127.0.0.1:0",
        ]
        .map(Into::into)
        .to_vec(),
        data: data.clone(),
        log: log.clone(),
        env: vec![("RUST_LOG".into(), "info".into()), ("JOURNAL_STREAM".into(), stream)],
    };
    let p = keel_testkit::KeelProcess::start(&command).unwrap();
    // A web login refused, with a login that would forge a line and colour a terminal.
    let client = reqwest::Client::new();
    let page = client.get(format!("{}/login", p.url)).send().await.unwrap();
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = page.text().await.unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let forged = "x\nFORGED root logged in\x1b[2J";
    let form = [("csrf", csrf.as_str()), ("login", forged), ("password", "nope")];
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let sent = client
        .post(format!("{}/login", p.url))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200, "the form answered (a refusal page)");
    // The same in a TFTP file name (a request from anyone on the LAN).
    let tftp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(b"y\nFORGED tftp root\x1b[2J\0octet\0");
    tftp.send_to(&rrq, &p.tftp).unwrap();
    eventually(20, "both refusals logged", async || {
        let text = std::fs::read_to_string(&log).unwrap();
        text.contains("web login refused") && text.contains("tftp: refused or not found")
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('<')).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("<6>keel::serve: keel is serving")),
        "{text}"
    );
    let refused = lines.iter().find(|l| l.contains("web login refused")).unwrap();
    assert!(refused.starts_with("<4>"), "a warning at priority 4: {refused}");
    assert!(refused.contains("x\\nFORGED root logged in\\e[2J"), "{refused}");
    let tftp = lines.iter().find(|l| l.contains("tftp: refused")).unwrap();
    assert!(tftp.contains("y\\nFORGED tftp root\\e[2J"), "{tftp}");
    assert!(
        !text.lines().any(|l| l.starts_with("FORGED")) && !text.contains('\x1b'),
        "no line forged, no escape code written: {text}"
    );
}

/// Issue 30: after the pools change, nothing moves that nobody moved. The start counts what lies
/// outside; an edit of the room changes the room only; `--outside-pools` lists the machine, the
/// dhcp task's status names it; `keel machine renumber` shows, then makes, the move. Users keep
/// their uids, and a uid range is never "used up" by another range's counter.
#[tokio::test]
async fn after_a_pool_change_only_renumber_moves_an_address() {
    let agents = tempfile::tempdir().unwrap();
    let agent_cfg = agents.path().join("local/agent.toml");
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("keel.toml");
    let propagation = format!(
        "[propagation]\ndebounce_ms = 100\nlocal_command = [\"{}\", \"--config\", \"{}\", \"apply\"]\n",
        crate::propagation::agent_bin().display(),
        agent_cfg.display()
    );
    std::fs::write(
        &cfg,
        format!(
            "{propagation}[pools.user]\nnetwork = \"10.10.0.0/22\"\n[pools.uids.user]\nfirst = 20001\nlast = 20999\n"
        ),
    )
    .unwrap();
    let mut k = Keel::start(&["--config", cfg.to_str().unwrap()]);
    crate::propagation::AgentHost::new(
        agents.path(),
        "local",
        "gw.prolo",
        &crate::propagation::public_key(&k).await,
        "dns_alias_whitelist = [\"local\"]\n",
    );
    assert_eq!(add_machine(&k, "r1", "aa:bb:cc:dd:ee:01").await["ip"], "10.10.0.1");
    let cli = |k: &Keel, args: &[&str]| {
        let out = k.cli(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        text(&out)
    };
    let u = api(
        &k,
        Method::POST,
        "/api/v1/users",
        Some(json!({"login": "zoe", "group": "user"})),
    )
    .await;
    assert_eq!(u["uid"], 20001);

    // The pools change (back to the defaults for users) and keel restarts.
    std::fs::write(&cfg, &propagation).unwrap();
    k.restart(&[]);
    let log = k.log();
    assert!(
        log.contains("machines have addresses outside today's pools") && log.contains("machines=1"),
        "{log}"
    );
    assert!(
        log.contains("users have uids outside today's uid pools") && log.contains("users=1"),
        "{log}"
    );

    // An edit of one field changes that field.
    let out = cli(&k, &["machine", "edit", "r1", "--room", "pasteur"]);
    assert!(out.contains("10.10.0.1") && out.contains("pasteur"), "{out}");
    let changes: Value = crate::support::stdout_json(&k.cli(&["log", "--json", "--limit", "1"]));
    let last = changes.as_array().and_then(|a| a.last()).cloned().unwrap_or_default();
    assert_eq!(last["before"]["ip"], "10.10.0.1", "{last}");
    assert_eq!(last["after"]["ip"], "10.10.0.1", "{last}");
    assert_eq!(last["after"]["room"], "pasteur", "{last}");

    // Listed, named by the dhcp task, moved only by renumber.
    let listed = cli(&k, &["machine", "list", "--outside-pools"]);
    assert!(listed.contains("r1"), "{listed}");
    assert_eq!(add_machine(&k, "r2", "aa:bb:cc:dd:ee:02").await["ip"], "192.168.0.1");
    let listed = cli(&k, &["machine", "list", "--outside-pools"]);
    assert!(!listed.contains("r2"), "{listed}");
    api(
        &k,
        Method::POST,
        "/api/v1/facilities",
        Some(json!({"name": "gw", "services": ["dhcp"]})),
    )
    .await;
    let d = json!({"facility": "gw", "service": "dhcp", "destination": "local", "channel": "local"});
    api(&k, Method::POST, "/api/v1/destinations", Some(d)).await;
    eventually(30, "the dhcp task names r1", async || {
        let out = k.cli(&["propagation", "status"]);
        text(&out).contains("gw/dhcp: machine r1 has 10.10.0.1, outside today's user pool 192.168.0.0/24")
    })
    .await;
    let dry = cli(&k, &["machine", "renumber"]);
    assert!(
        dry.contains("r1") && dry.contains("10.10.0.1") && dry.contains("192.168.0.2"),
        "{dry}"
    );
    assert!(dry.contains("dry run"), "{dry}");
    let r1 = k.admin().get::<Value>("/api/v1/machines/r1").await.unwrap();
    assert_eq!(r1["ip"], "10.10.0.1", "a dry run moves nothing");
    let moved = cli(&k, &["machine", "renumber", "--apply"]);
    assert!(moved.contains("1 machines renumbered"), "{moved}");
    let r1 = k.admin().get::<Value>("/api/v1/machines/r1").await.unwrap();
    assert_eq!(r1["ip"], "192.168.0.2");
    assert!(cli(&k, &["machine", "list", "--outside-pools", "--json"]).trim() == "[]");

    // The user pool 10001–10999 is not "used up" by the counter of 20001–20999.
    let u = api(
        &k,
        Method::POST,
        "/api/v1/users",
        Some(json!({"login": "yan", "group": "user"})),
    )
    .await;
    assert_eq!(u["uid"], 10001);
    let zoe = k.admin().get::<Value>("/api/v1/users/zoe").await.unwrap();
    assert_eq!(zoe["uid"], 20001, "kept");
}

/// `keel migrate-db` opens the database file itself: like `keel restore` it holds the data
/// directory's lock, so it refuses while a server runs there (invariant 15) and writes nothing;
/// the same migration once keel is stopped goes through.
#[tokio::test]
async fn migrate_db_refuses_while_keel_serves_its_database() {
    let mut k = Keel::start(&["--example-site"]);
    let db = k.data().join(keel_client::data_dir::DB);
    let copy = k.dir.path().join("copy.db");
    let args = [
        "migrate-db",
        "--from",
        db.to_str().unwrap(),
        "--to",
        copy.to_str().unwrap(),
    ];
    let out = k.cli(&args);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("stop keel"), "{said}");
    assert!(!copy.exists(), "nothing is written while keel serves");
    k.stop();
    let out = k.cli(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(copy.exists());
}
