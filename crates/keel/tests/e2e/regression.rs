//! Regression tests, one per fixed bug, named `r<issue>`.

use serde_json::{json, Value};

use crate::support::Keel;

// See: issue 7 (the original netboot matched `rfs1` by substring, so `rfs10` matched too).
// Here: an exact filter on a name — hostname or alias — never matches a longer one.
#[tokio::test]
async fn r7_exact_alias_lookup_is_not_a_substring_match() {
    let k = Keel::start(&["--example-site"]);
    for (hostname, alias, mac) in [
        ("nfs7", "rfs7", "02:00:00:00:07:07"),
        ("nfs70", "rfs70", "02:00:00:00:07:70"),
    ] {
        let body = json!({"hostname": hostname, "aliases": [alias], "mac": mac, "mtype": "service"});
        crate::propagation::api(&k, reqwest::Method::POST, "/api/v1/machines", Some(body)).await;
    }
    let query = async |filter: Value| -> Vec<String> {
        let q: Value = k.anonymous().rpc("/call/query", filter).await.unwrap();
        q.as_array()
            .unwrap()
            .iter()
            .map(|m| m["hostname"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        query(json!({"aliases": "rfs7"})).await,
        ["nfs7"],
        "the alias rfs7, not rfs70"
    );
    assert_eq!(query(json!({"aliases": "rfs70"})).await, ["nfs70"]);
    assert!(query(json!({"aliases": "rfs"})).await.is_empty(), "no prefix match");
    assert_eq!(query(json!({"hostname": "gw"})).await, ["gw"]);
    assert!(query(json!({"hostname": "g"})).await.is_empty());
}

fn run(k: &Keel, args: &[&str]) -> std::process::Output {
    let out = k.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// See: issue 30 (`keel machine list | head -4` panicked: "failed printing to stdout: Broken
// pipe", exit 101; `keel watch | head` too). A reader that leaves ends the command, exit 0.
#[tokio::test]
async fn r30_a_closed_pipe_ends_the_cli_with_exit_0() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let k = Keel::start(&["--example-site"]);
    for args in [&["machine", "list"][..], &["watch"][..]] {
        let mut child = Command::new(crate::support::KEEL)
            .args(args)
            .env("KEEL_URL", &k.url)
            .env("KEEL_TOKEN", &k.token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty(), "{args:?} printed nothing");
        // The reader is gone; a change gives `watch` something more to write.
        let body = json!({"hostname": format!("p{}", child.id()), "mac": format!("02:00:00:00:{:02x}:01", child.id() % 250), "mtype": "user"});
        crate::propagation::api(&k, reqwest::Method::POST, "/api/v1/machines", Some(body)).await;
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// See: issue 30 (`keel log --limit 5` showed the 5 oldest changes). The newest, in order, as
// `journalctl -n` does; `--oldest` and `--since` read forward.
#[tokio::test]
async fn r30_log_limit_shows_the_newest_changes() {
    let k = Keel::start(&["--example-site"]);
    let seq = k.seq().await;
    let log = |args: &[&str]| -> Vec<u64> {
        let mut all = vec!["log", "--json"];
        all.extend_from_slice(args);
        let v: Value = serde_json::from_slice(&run(&k, &all).stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c["seq"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(log(&["--limit", "3"]), [seq - 2, seq - 1, seq]);
    assert_eq!(log(&["--oldest", "--limit", "2"]), [1, 2]);
    assert_eq!(log(&["--since", "1", "--limit", "2"]), [2, 3]);
    let table = String::from_utf8_lossy(&run(&k, &["log", "-n", "1"]).stdout).into_owned();
    assert!(table.contains(&format!("│ {seq} ")), "{table}");
}

// See: issue 30 (`machine import --dry-run` said "no error found in the file (the server was not
// asked)" for a file the import refused). The server plans it against the live state.
#[tokio::test]
async fn r30_an_import_dry_run_finds_what_the_import_would() {
    let k = Keel::start(&["--example-site"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.csv");
    // gw's MAC and name are taken: only the server knows.
    std::fs::write(
        &file,
        "hostname,mac,mtype\nr9,52-54-00-00-01-FE,user\ngw,aa:bb:cc:00:00:09,user\nok1,aa:bb:cc:00:00:10,user\n",
    )
    .unwrap();
    let seq = k.seq().await;
    let dry = k.cli(&["machine", "import", "--dry-run", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&dry.stderr).into_owned();
    assert_eq!(dry.status.code(), Some(1), "{err}");
    assert!(
        err.contains("m.csv:line 2: mac:") && err.contains("m.csv:line 3: hostname:"),
        "{err}"
    );
    let real = k.cli(&["machine", "import", file.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&real.stderr),
        err,
        "the same errors as the import itself"
    );
    std::fs::write(&file, "hostname,mac,mtype\nok1,aa:bb:cc:00:00:10,user\n").unwrap();
    let out = run(&k, &["machine", "import", "--dry-run", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("would create 1 machines"));
    assert_eq!(k.seq().await, seq, "a dry run commits and logs nothing");
    assert!(!k.cli(&["machine", "show", "ok1"]).status.success());
}

// See: issue 30 (there was no `keel users add`/`edit`: the first web admin needed a one-line
// import file). One user, with a one-person sheet; an edit changes what it names.
#[tokio::test]
async fn r30_users_add_and_edit_one_user_with_a_sheet() {
    let k = Keel::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let sheet = dir.path().join("ana");
    let out = run(
        &k,
        &[
            "--json",
            "users",
            "add",
            "--type",
            "root",
            "--firstname",
            "Ana",
            "--lastname",
            "Lovelace",
            "--sheet",
            sheet.to_str().unwrap(),
        ],
    );
    let u: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (u["login"].as_str(), u["uid"].as_u64(), u["has_password"].as_bool()),
        (Some("alovelace"), Some(12001), Some(true)),
        "{u}"
    );
    let tsv = std::fs::read_to_string(dir.path().join("ana.tsv")).unwrap();
    assert!(tsv.contains("alovelace"), "{tsv}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.path().join("ana.tsv")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(dir.path().join("ana.pdf").exists());
    let password = tsv.lines().last().unwrap().rsplit('\t').next().unwrap().to_owned();
    // The sheet's password is the account's: the password change route accepts it.
    let (status, _) = crate::support::req(
        &k,
        None,
        reqwest::Method::POST,
        "/api/v1/passwd",
        Some(json!({"login": "alovelace", "old_password": password, "new_password_hash": "$6$saltsalt$W8/of8d2LyqjgMBUekC8rz9KqwXuk/zM2UFVSqjBrgi3iOHzUpki1KXdE9sy4UjXzKwFKfQDgDGi8qHdDVLoh/"})),
        &[],
    )
    .await;
    assert_eq!(status, 204, "the sheet's password opens the account");
    let out = run(&k, &["--json", "users", "edit", "alovelace", "--shell", "/bin/zsh"]);
    let u: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (u[0]["shell"].as_str(), u[0]["firstname"].as_str()),
        (Some("/bin/zsh"), Some("Ana")),
        "{u}"
    );
    // A user whose login is taken is refused, and no sheet is left behind.
    let again = dir.path().join("again");
    let out = k.cli(&[
        "users",
        "add",
        "--login",
        "alovelace",
        "--sheet",
        again.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.path().join("again.tsv").exists());
}

// See: issue 30 (a member of group keel got "authentication required", not told which file it
// could not read or how to get a token; `token_file = "~/…"` was not expanded).
#[tokio::test]
async fn r30_a_missing_token_is_explained_and_tilde_is_expanded() {
    let k = Keel::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let cli = |args: &[&str], cli_toml: &str| {
        let path = home.path().join("cli.toml");
        std::fs::write(&path, cli_toml).unwrap();
        std::process::Command::new(crate::support::KEEL)
            .args(args)
            .env("KEEL_URL", &k.url)
            .env("HOME", home.path())
            .env("KEEL_CLI_CONFIG", &path)
            .env_remove("KEEL_TOKEN")
            .env_remove("KEEL_CONFIG")
            .env("KEEL_DATA_DIR", home.path().join("not-keels"))
            .output()
            .unwrap()
    };
    let out = cli(&["machine", "list"], "");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not-keels/admin.token"), "names the file: {err}");
    assert!(
        err.contains("--token") && err.contains("keel token create"),
        "says how: {err}"
    );
    std::fs::write(home.path().join("token"), format!("{}\n", k.token)).unwrap();
    let out = cli(&["machine", "list"], "token_file = \"~/token\"\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

// See: issue 31 (with self-registration open, an anonymous machine registered as `rfs2` became
// the NFS root of every machine with rfs 2, and `localhost`, `wpad`, `ip6-localhost`… went into
// DNS and every host's /etc/hosts). Roles are records now; special names are an organiser's.
#[tokio::test]
#[cfg_attr(
    not(all(has_curl, has_dig)),
    ignore = "needs curl, dig, not installed here (.ci/run installs it)"
)]
async fn r31_a_self_registered_machine_takes_no_role_and_no_special_name() {
    use crate::netboot::{boot, curl};
    let k = Keel::start(&["--example-site"]);
    run(&k, &["setting", "set", "allow_self_registration", "true"]);
    let register = |name: &str, mac: &str| {
        curl(&[&format!(
            "{}/register?mac={mac}&hostname={name}&room=alt&rfs=2&hfs=1&mtype=user",
            k.url
        )])
        .1
    };
    // A harmless name registers (the route works)…
    let ok = register("rfs2", "52:54:00:31:00:01");
    assert!(ok.contains("registered rfs2"), "{ok}");
    // …but a machine of RFS 2 does not boot from it: no machine has the role rfs/2.
    let pc = json!({"hostname": "r31p01", "mac": "52:54:00:31:00:02", "mtype": "user", "rfs": 2});
    crate::propagation::api(&k, reqwest::Method::POST, "/api/v1/machines", Some(pc)).await;
    let script = boot(&k, "52:54:00:31:00:02");
    assert!(
        script.contains("no machine has that role") && !script.contains("nfsroot="),
        "{script}"
    );
    // Names other software resolves, keel's service names and the site's own are refused.
    for (i, name) in [
        "wpad",
        "localhost",
        "ip6-localhost",
        "mdb",
        "hostmaster",
        "dhcp-192-168-0-99",
        "gw",
    ]
    .iter()
    .enumerate()
    {
        let answer = register(name, &format!("52:54:00:31:01:{i:02x}"));
        assert!(
            answer.contains("refused") && answer.contains("hostname"),
            "{name}: {answer}"
        );
    }
    let (status, _) = crate::dns::dig(&k, &["wpad.prolo", "A"]);
    assert_eq!(status, "NXDOMAIN");
    // The organiser gives the role: now RFS 2 is that machine, whatever it is called.
    let srv = json!({"hostname": "nfs2", "mac": "52:54:00:31:00:03", "mtype": "service"});
    let srv = crate::propagation::api(&k, reqwest::Method::POST, "/api/v1/machines", Some(srv)).await;
    run(&k, &["role", "set", "rfs/2", "nfs2"]);
    let script = boot(&k, "52:54:00:31:00:02");
    assert!(
        script.contains(&format!("nfsroot={}:", srv["ip"].as_str().unwrap())),
        "{script}"
    );
}

/// A manager token for facility `a`, which has a user to send and the `passwd` service.
async fn manager_of_a(k: &Keel) -> String {
    let api = crate::propagation::api;
    api(
        k,
        reqwest::Method::POST,
        "/api/v1/facilities",
        Some(json!({"name": "a", "managers": ["mgr-a"], "groups": ["user"], "services": ["passwd"]})),
    )
    .await;
    let out = run(
        k,
        &["token", "create", "--name", "mgr-a", "--role", "manager", "--json"],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

// See: issue 31 (a manager linked a harmless host name to machine `gw`, then had `root@gw`,
// `root@192.168.1.254`, `root@gw.prolo` and `root@mdb` accepted, and keel's own host received
// their facility's accounts; `127.1`, `2130706433`, `0x7f.1`, `0`, `3232236030`, `192.168.510`,
// `0300.0250.1.0376`, `ip6-localhost`, `ip6-loopback` reached loopback and the gateway). Rights
// are decided on what a name reaches.
#[tokio::test]
async fn r31_a_manager_never_reaches_keels_host_or_loopback_in_any_spelling() {
    use reqwest::Method;
    let mut k = Keel::start(&["--example-site"]);
    let mgr = manager_of_a(&k).await;
    let as_mgr = async |method: Method, path: &str, body: Value| {
        crate::support::req(&k, Some(&mgr), method, path, Some(body), &[]).await
    };
    let dest = |d: &str| json!({"facility": "a", "service": "passwd", "destination": d, "channel": "ssh"});
    // What a manager may do, first: a free name of their own.
    let (status, v) = as_mgr(Method::POST, "/api/v1/destinations", dest("root@host1.example.org")).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = as_mgr(
        Method::POST,
        "/api/v1/hosts",
        json!({"name": "harmless.example.org", "facility": "a"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    // A host linked to keel's own host is refused: machines are linked by admins.
    let (status, v) = as_mgr(
        Method::POST,
        "/api/v1/hosts",
        json!({"name": "harmless2.example.org", "facility": "a", "machine": "gw"}),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    for spelling in [
        "root@gw",
        "root@192.168.1.254",
        "root@gw.prolo",
        "root@mdb",
        "root@GW.",
        "127.1",
        "2130706433",
        "0x7f.1",
        "0",
        "3232236030",
        "192.168.510",
        "0300.0250.1.0376",
        "ip6-localhost",
        "ip6-loopback",
        "localhost",
        "root@[::1]",
        "[::ffff:127.0.0.1]:22",
        "root@[::ffff:192.168.1.254]",
    ] {
        let (status, v) = as_mgr(Method::POST, "/api/v1/destinations", dest(spelling)).await;
        assert_eq!(status, 403, "{spelling}: {v}");
    }
    let (status, _) = crate::support::req(
        &k,
        Some(&mgr),
        Method::GET,
        "/api/v1/propagation/bundle?service=passwd&facility=a&destination=root@gw",
        None,
        &[],
    )
    .await;
    assert!(status == 403 || status == 404, "no bundle for root@gw: {status}");
    // A machine an admin assigns (a host of the facility linked to it) is theirs to reach.
    run(
        &k,
        &[
            "machine",
            "add",
            "--hostname",
            "srv5",
            "--mac",
            "52:54:00:31:05:05",
            "--mtype",
            "service",
        ],
    );
    run(
        &k,
        &[
            "host",
            "add",
            "srv5.example.org",
            "--facility",
            "a",
            "--machine",
            "srv5",
        ],
    );
    let (status, v) = as_mgr(Method::POST, "/api/v1/destinations", dest("root@srv5")).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = as_mgr(
        Method::POST,
        "/api/v1/hosts",
        json!({"name": "srv5-alt.example.org", "facility": "a", "machine": "srv5"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    // A create over another facility's host names no version of it (it answered 412 with one).
    run(&k, &["facility", "add", "b"]);
    run(&k, &["host", "add", "b1.example.org", "--facility", "b"]);
    let (status, v) = as_mgr(
        Method::POST,
        "/api/v1/hosts",
        json!({"name": "b1.example.org", "facility": "a"}),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    // An admin's destination to keel's own host in a managed facility is sent to unchecked, like
    // one a manager made before keel recorded who did: keel names it at every start.
    let warning = "reaches what its managers may not";
    assert!(!k.log().contains(warning), "nothing to name at the first start");
    run(
        &k,
        &[
            "destination",
            "add",
            "--facility",
            "a",
            "--service",
            "passwd",
            "root@gw",
        ],
    );
    k.restart(&[]);
    let log = k.log();
    let named: Vec<&str> = log.lines().filter(|l| l.contains(warning)).collect();
    assert!(named.len() == 1 && named[0].contains("root@gw"), "{named:?}");
}

// See: issue 31 (names can resolve elsewhere than they say: the site's ssh_config or DNS). A
// manager's destination is resolved at every send as ssh resolves it, and keel refuses to send
// where it leads to keel's own host.
#[tokio::test]
#[cfg_attr(not(has_ssh), ignore = "needs ssh, not installed here (.ci/run installs it)")]
async fn r31_a_managers_destination_that_resolves_to_keels_host_is_not_sent_to() {
    crate::support::require_tool("ssh");
    let dir = tempfile::tempdir().unwrap();
    let ssh_config = dir.path().join("ssh_config");
    std::fs::write(&ssh_config, "Host sneaky.example.org\n  HostName 127.0.0.1\n").unwrap();
    let config = format!(
        "[propagation]\ndebounce_ms = 100\nretry_min_secs = 60\n[propagation.ssh]\nconfig_file = \"{}\"\ncontrol_persist = \"\"\nconnect_timeout_secs = 2\n",
        ssh_config.display()
    );
    let k = Keel::start_with_config(&config, &[]);
    let mgr = manager_of_a(&k).await;
    let dest =
        json!({"facility": "a", "service": "passwd", "destination": "root@sneaky.example.org", "channel": "ssh"});
    let (status, v) = crate::support::req(
        &k,
        Some(&mgr),
        reqwest::Method::POST,
        "/api/v1/destinations",
        Some(dest),
        &[],
    )
    .await;
    assert_eq!(status, 201, "the name itself is free: {v}");
    crate::propagation::api(
        &k,
        reqwest::Method::POST,
        "/api/v1/users",
        Some(json!({"login": "zoe", "group": "user"})),
    )
    .await;
    eventually_refused(&k).await;
}

async fn eventually_refused(k: &Keel) {
    crate::support::eventually(30, "the send refused, as an error", async || {
        let (_, results) = crate::propagation::task_state(k, "a", "passwd").await;
        let r = &results["root@sneaky.example.org"];
        r["status"] == "ERROR"
            && r["stderr"]
                .as_str()
                .is_some_and(|e| e.contains("keel refused to send") && e.contains("keel's own host"))
    })
    .await;
}
