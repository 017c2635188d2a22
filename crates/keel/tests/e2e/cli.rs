//! The admin CLI, run as a user would: tables, --json, imports, clear errors.

use serde_json::Value;

use crate::support::{stdout_json, Keel, KEEL};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn machine_add_edit_show_rm() {
    let k = Keel::start(&["--example-site"]);
    let out = k.cli(&[
        "machine",
        "add",
        "--hostname",
        "r01p01",
        "--mac",
        "AABB.CCDD.EE01",
        "--mtype",
        "user",
        "--room",
        "alt",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("r01p01") && table.contains("aa:bb:cc:dd:ee:01") && table.contains("192.168.0.6"),
        "{table}"
    );
    let out = k.cli(&[
        "machine",
        "edit",
        "r01p01",
        "--faulty",
        "true",
        "--reason",
        "broken screen",
        "--json",
    ]);
    let v = stdout_json(&out);
    assert_eq!(v[0]["is_faulty"], true);
    let v = stdout_json(&k.cli(&["machine", "list", "--json", "room=alt"]));
    assert_eq!(v.as_array().unwrap().len(), 2);
    let out = k.cli(&[
        "machine",
        "add",
        "--hostname",
        "BAD",
        "--mac",
        "aa:bb:cc:dd:ee:02",
        "--mtype",
        "user",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("keel: error: hostname:"), "{err}");
    assert!(k.cli(&["machine", "rm", "r01p01"]).status.success());
    assert!(!k.cli(&["machine", "show", "r01p01"]).status.success());
    // The log shows who did what.
    let log = stdout_json(&k.cli(&["log", "--json", "--limit", "1000"]));
    let last = log.as_array().unwrap().last().unwrap();
    assert_eq!(
        (last["op"].as_str(), last["principal"].as_str()),
        (Some("delete"), Some("admin"))
    );
}

#[tokio::test]
async fn import_names_every_bad_line_and_changes_nothing() {
    let k = Keel::start(&["--example-site"]);
    let seq = k.seq().await;
    let file = k.dir.path().join("machines.csv");
    std::fs::write(
        &file,
        "hostname,mac,mtype,room,rfs\n\
         r10p01,02:00:00:00:10:01,user,pasteur,1\n\
         r10p02,not-a-mac,user,pasteur,1\n\
         r10p01,02:00:00:00:10:03,user,pasteur,1\n\
         r10p04,02:00:00:00:10:04,user,pasteur,x\n\
         gw,02:00:00:00:10:05,user,pasteur,1\n\
         r10p06,02:00:00:00:10:06,user,pasteur,1\n",
    )
    .unwrap();
    let out = k.cli(&["machine", "import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for (line, field) in [(3, "mac"), (4, "hostname"), (5, "rfs"), (6, "hostname")] {
        assert!(
            err.contains(&format!("line {line}: {field}:")),
            "line {line} not named:\n{err}"
        );
    }
    assert!(!err.contains("line 2:") && !err.contains("line 7:"), "{err}");
    assert_eq!(k.seq().await, seq, "a file with bad lines changes nothing");
    // The same file, fixed, imports whole; JSON Lines too.
    std::fs::write(&file, "hostname,mac,mtype,room,rfs,aliases\nr10p01,02:00:00:00:10:01,user,pasteur,1,\"a1,a2\"\nr10p02,02:00:00:00:10:02,user,pasteur,1,\n").unwrap();
    let v = stdout_json(&k.cli(&["machine", "import", file.to_str().unwrap(), "--json"]));
    assert_eq!(v["created"], 2);
    let jsonl = k.dir.path().join("more.jsonl");
    std::fs::write(
        &jsonl,
        "{\"hostname\":\"r11p01\",\"mac\":\"02:00:00:00:11:01\",\"mtype\":\"orga\"}\n",
    )
    .unwrap();
    assert!(k.cli(&["machine", "import", jsonl.to_str().unwrap()]).status.success());
    assert_eq!(k.seq().await, seq + 3);
}

#[tokio::test]
async fn settings_tokens_switches() {
    let k = Keel::start(&["--example-site"]);
    let v = stdout_json(&k.cli(&["setting", "set", "contest_mode", "on", "--json"]));
    assert_eq!(v["value"], true);
    let out = k.cli(&["setting", "set", "contest_mod", "on"]);
    assert!(
        stderr(&out).contains("unknown setting \"contest_mod\"; known: contest_mode"),
        "{}",
        stderr(&out)
    );
    let out = k.cli(&[
        "token",
        "create",
        "--name",
        "ci",
        "--role",
        "readonly",
        "--expires-in-days",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(token.starts_with("keel_"));
    let list = stdout_json(&k.cli(&["token", "list", "--json"]));
    assert!(
        !list.to_string().contains(token.rsplit('_').next().unwrap()),
        "token list shows no secret"
    );
    let out = k.cli(&["switch", "add", "sw-new", "--chassis", "00:1b:21:00:00:01"]);
    assert!(stderr(&out).contains("chassis"), "{}", stderr(&out));
    assert!(k
        .cli(&[
            "switch",
            "add",
            "sw-new",
            "--chassis",
            "00:1b:21:00:00:09",
            "--room",
            "alt"
        ])
        .status
        .success());
    let v: Value = stdout_json(&k.cli(&["switch", "list", "--json"]));
    assert_eq!(v.as_array().unwrap().len(), 3);
}

#[test]
fn unreachable_server_is_one_clear_line() {
    let out = std::process::Command::new(KEEL)
        .args(["machine", "list"])
        .env("KEEL_URL", "http://127.0.0.1:9")
        .env("KEEL_TOKEN", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("keel: error: cannot reach keel at http://127.0.0.1:9"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_and_completions() {
    let out = std::process::Command::new(KEEL).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("serve"));
    let out = std::process::Command::new(KEEL)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success() && !out.stdout.is_empty());
}

/// One server per data directory; a bad config file is refused naming the key.
#[test]
fn second_server_and_bad_config_fail_clearly() {
    let k = Keel::start(&[]);
    let out = std::process::Command::new(KEEL)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            k.data().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("another keel is using"), "{}", stderr(&out));
    let cfg = k.dir.path().join("bad.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nlisten_port = 80\n").unwrap();
    let out = std::process::Command::new(KEEL)
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            k.dir.path().join("other").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "an invalid configuration has its own status"
    );
    assert!(
        stderr(&out).contains("bad.toml:2: unknown field `listen_port`"),
        "{}",
        stderr(&out)
    );
}

/// On keel's host the CLI needs no flag: the server's config file (here named by `KEEL_CONFIG`,
/// on a real host /etc/keel/keel.toml) says where keel listens and where its admin token is.
#[tokio::test]
async fn the_cli_finds_its_server_from_the_servers_config_file() {
    let k = Keel::start(&["--example-site"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    let addr = k.url.trim_start_matches("http://");
    std::fs::write(
        &config,
        format!("listen = \"{addr}\"\ndata_dir = \"{}\"\n", k.data().display()),
    )
    .unwrap();
    let run = |env: &[(&str, &std::path::Path)]| {
        // No URL, token or data directory from the environment: only the config file tells.
        let mut c = std::process::Command::new(crate::support::KEEL);
        c.args(["--json", "machine", "list"])
            .env_remove("KEEL_URL")
            .env_remove("KEEL_TOKEN")
            .env_remove("KEEL_DATA_DIR")
            .env("KEEL_CLI_CONFIG", dir.path().join("none.toml"))
            .current_dir(dir.path());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = run(&[("KEEL_CONFIG", &config)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list.as_array().is_some_and(|l| l.len() > 3), "{list}");
}

/// The README's sample files (examples/) import into the example site as the README says, after
/// its `machine add` (no name in them clashes).
#[tokio::test]
async fn the_readmes_sample_files_import() {
    let k = Keel::start(&["--example-site"]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let add = [
        "machine",
        "add",
        "--hostname",
        "r01p01",
        "--mac",
        "aa:bb:cc:dd:ee:01",
        "--mtype",
        "user",
        "--room",
        "alt",
    ];
    let out = k.cli(&add);
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = root.join("examples/machines.csv");
    let out = k.cli(&["machine", "import", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let sheet = dir.path().join("pw");
    let names = root.join("examples/finalistes.txt");
    let out = k.cli(&[
        "--json",
        "users",
        "import",
        names.to_str().unwrap(),
        "--sheet",
        sheet.to_str().unwrap(),
    ]);
    let report = stdout_json(&out);
    assert_eq!(report["created"].as_array().map(Vec::len), Some(4), "{report}");
    assert!(dir.path().join("pw.pdf").exists());
}
