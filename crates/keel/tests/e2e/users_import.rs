//! `keel users import`: prologin's batchimport, with its login rule, all or nothing.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use keel_client::data_dir as files;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{req, require_tool, stdout_json, Keel};

/// Tricky names give the logins the rule says, collisions numbered (in the file, with the database,
/// with reserved names); the sheet holds the passwords, and the stored hashes verify with the
/// system's crypt; no plaintext reaches the database, the API or the log.
#[tokio::test]
#[cfg_attr(
    not(all(has_openssl, has_sqlite3, has_pdftotext)),
    ignore = "needs openssl, sqlite3, pdftotext, not installed here (.ci/run installs it)"
)]
async fn import_follows_the_login_rule_and_stores_only_hashes() {
    require_tool("openssl");
    require_tool("sqlite3");
    require_tool("pdftotext");
    let k = Keel::start(&[]);
    req(
        &k,
        Some(&k.token),
        Method::POST,
        "/api/v1/users",
        Some(json!({"login": "emullerlude", "group": "user"})),
        &[],
    )
    .await;
    let file = k.dir.path().join("finalistes.txt");
    std::fs::write(
        &file,
        "\u{feff}Jean-Baptiste\tPoquelin\r\n\
         Élodie\tMüller-Lüdenscheidt\r\n\
         \r\n\
         Anne Marie Louise\td'Orléans\n\
         Jean-Baptiste\tPoquelin\n\
         Zoë\tO'Brien\n\
         Ro\tOt\n\
         Ægir\tØdegård\n\
         B\tIn\n\
         Kim\tEel\n",
    )
    .unwrap();
    let prefix = k.dir.path().join("sheet");
    let out = k.cli(&[
        "users",
        "import",
        file.to_str().unwrap(),
        "--sheet",
        prefix.to_str().unwrap(),
        "--reserved",
        "keel1",
        "--json",
    ]);
    let answer = stdout_json(&out);
    let logins: Vec<&str> = answer["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["login"].as_str().unwrap())
        .collect();
    assert_eq!(
        logins,
        [
            "jbpoquelin",
            "emullerlude1",
            "amldorleans",
            "jbpoquelin1",
            "zobrien",
            "rot",
            "gdegard",
            "bin1",  // bin is a system account
            "keel2"  // keel is reserved, and keel1 by --reserved
        ]
    );
    let tsv_path = k.dir.path().join("sheet.tsv");
    assert_eq!(
        std::fs::metadata(&tsv_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let tsv = std::fs::read_to_string(&tsv_path).unwrap();
    assert_eq!(tsv.lines().count(), 9);
    let pdf_path = k.dir.path().join("sheet.pdf");
    assert_eq!(
        std::fs::metadata(&pdf_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pdf_text = Command::new("pdftotext")
        .args(["-layout", pdf_path.to_str().unwrap(), "-"])
        .output()
        .unwrap();
    let pdf_text = String::from_utf8_lossy(&pdf_text.stdout).into_owned();
    let db = k.data().join(files::DB);
    for line in tsv.lines() {
        let [name, login, password] = line.split('\t').collect::<Vec<_>>()[..] else {
            panic!("bad sheet line {line:?}")
        };
        assert!(!name.is_empty());
        assert!(
            pdf_text.contains(login) && pdf_text.contains(password),
            "{login} or its password is not in the PDF"
        );
        let sql = format!(
            "SELECT json_extract(data, '$.password_hash') FROM objects WHERE kind = 'user' AND key = '{login}'"
        );
        let hash = String::from_utf8(Command::new("sqlite3").arg(&db).arg(sql).output().unwrap().stdout).unwrap();
        let hash = hash.trim();
        let salt = hash.split('$').nth(2).unwrap();
        let crypt = Command::new("openssl")
            .args(["passwd", "-6", "-salt", salt, password])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(crypt.stdout).unwrap().trim(),
            hash,
            "{login}'s hash does not verify with openssl"
        );
        let (_, api) = req(&k, Some(&k.token), Method::GET, "/api/v1/users", None, &[]).await;
        assert!(!api.to_string().contains(password) && !api.to_string().contains(hash));
        assert!(!k.log().contains(password));
        let raw = std::fs::read(&db).unwrap();
        let wal = std::fs::read(k.data().join("keel.db-wal")).unwrap_or_default();
        assert!(!raw
            .windows(password.len())
            .chain(wal.windows(password.len()))
            .any(|w| w == password.as_bytes()));
    }
    let (_, udb) = req(&k, None, Method::GET, "/udb/call/query?group=user", None, &[]).await;
    assert_eq!(udb["data"].as_array().unwrap().len(), 10);
}

/// One bad line imports nothing and is named; --logins with an existing user needs --update or
/// --ignore.
#[tokio::test]
async fn a_bad_line_imports_nothing() {
    let k = Keel::start(&[]);
    let seq = k.seq().await;
    let file = k.dir.path().join("orgas.txt");
    std::fs::write(&file, "Alice\tLiddell\nno tab here\n李\t小龙\nBob\tMarley\n").unwrap();
    let out = k.cli(&["users", "import", file.to_str().unwrap(), "--type", "orga"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2: line:") && err.contains("line 3: login:"), "{err}");
    assert_eq!(k.seq().await, seq);
    std::fs::write(&file, "alice:Pa55-word\nbob:Other-99\n").unwrap();
    let path = file.to_str().unwrap();
    let roots = |extra: &[&str]| {
        let mut a = vec!["users", "import", path, "--logins", "--passwords", "--type", "root"];
        a.extend_from_slice(extra);
        k.cli(&a)
    };
    let v: Value = stdout_json(&roots(&["--json"]));
    assert_eq!(v["created"][0]["uid"], 12001);
    let out = roots(&[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = stdout_json(&roots(&["--update", "--json"]));
    assert_eq!(v["updated"].as_array().unwrap().len(), 2);
    let v = stdout_json(&roots(&["--ignore", "--json"]));
    assert_eq!(v["ignored"].as_array().unwrap().len(), 2);
}

/// kill -9 while a 10,000-user import is inside its transaction leaves none of them; the same
/// import then succeeds whole.
#[tokio::test]
async fn kill9_during_a_large_import_leaves_none() {
    let marker = k_marker();
    let cfg = "[pools.uids.user]\nfirst = 100000\nlast = 199999\n[pools.uids.orga]\nfirst = 11001\nlast = 11999\n\
               [pools.uids.root]\nfirst = 12001\nlast = 12999\n";
    let mut k = Keel::start_with_config(&format!("{}{cfg}", crate::support::BIG_POOLS), &[]);
    k.restart(&[
        ("KEEL_FAULT", "hang_in_commit:1"),
        ("KEEL_FAULT_MARKER", marker.to_str().unwrap()),
    ]);
    let file = k.dir.path().join("many.txt");
    let text: String = (0..10_000).map(|i| format!("First{i}\tLast{i}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let mut import = std::process::Command::new(crate::support::KEEL)
        .args(["users", "import", file.to_str().unwrap()])
        .env("KEEL_URL", &k.url)
        .env("KEEL_TOKEN", &k.token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let hit = crate::support::wait_for_file(&marker, std::time::Duration::from_secs(120), || false);
    assert!(hit.is_some(), "the import never reached its commit");
    k.kill9();
    let _ = import.wait();
    k.restart(&[]);
    assert_eq!(k.seq().await, 0, "nothing of the import was committed");
    let (_, users) = req(&k, Some(&k.token), Method::GET, "/api/v1/users", None, &[]).await;
    assert_eq!(users.as_array().unwrap().len(), 0);
    let out = k.cli(&["users", "import", file.to_str().unwrap(), "--json"]);
    assert_eq!(stdout_json(&out)["created"].as_array().unwrap().len(), 10_000);
    assert_eq!(
        k.seq().await,
        10_001,
        "10,000 users and their group's counter, in one commit"
    );
}

fn k_marker() -> std::path::PathBuf {
    let p = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let path = p.to_path_buf();
    drop(p);
    path
}

/// Runs `keel passwd --stdin LOGIN` with `input` on standard input, without a token.
fn passwd(k: &Keel, login: &str, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(crate::support::KEEL)
        .args(["passwd", "--stdin", login])
        .env("KEEL_URL", &k.url)
        .env_remove("KEEL_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// A user changes their password (the old one checked); sheets then leave them alone unless
/// forced, ask before resetting, and an admin can reset one password.
#[tokio::test]
async fn passwd_sheets_and_reset() {
    let k = Keel::start(&[]);
    let file = k.dir.path().join("people.txt");
    std::fs::write(&file, "alice:First-pass-1\nbob:Bob-pass-22\ncarol:Carol-pass-3\n").unwrap();
    let path = file.to_str().unwrap();
    assert!(k
        .cli(&["users", "import", path, "--logins", "--passwords"])
        .status
        .success());
    let out = passwd(&k, "alice", "wrong-pass\nAlice-new-pw\n");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("wrong login or password"));
    let out = passwd(&k, "alice", "First-pass-1\nAlice-new-pw\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let prefix = k.dir.path().join("s2");
    let sheet = |extra: &[&str]| {
        let mut a = vec![
            "users",
            "sheet",
            "--type",
            "user",
            "--all",
            "--sheet",
            prefix.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        k.cli(&a)
    };
    let out = sheet(&[]);
    assert!(!out.status.success(), "no confirmation, no reset");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert!(sheet(&["--yes"]).status.success());
    let tsv = std::fs::read_to_string(k.dir.path().join("s2.tsv")).unwrap();
    assert_eq!(tsv.lines().count(), 2, "alice chose her password: left alone\n{tsv}");
    assert!(!tsv.contains("alice"));
    assert!(
        passwd(&k, "alice", "Alice-new-pw\nAlice-newer-pw\n").status.success(),
        "alice's password still works"
    );
    let bob_pw = tsv
        .lines()
        .find(|l| l.contains("\tbob\t"))
        .unwrap()
        .rsplit('\t')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        passwd(&k, "bob", &format!("{bob_pw}\nBob-own-pass\n")).status.success(),
        "bob's sheet password works"
    );
    assert!(sheet(&["--yes", "--force"]).status.success());
    assert_eq!(
        std::fs::read_to_string(k.dir.path().join("s2.tsv"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    let out = k.cli(&["passwd", "--reset", "carol", "--json"]);
    let reset = stdout_json(&out);
    let carol_pw = reset["password"].as_str().unwrap();
    assert!(passwd(&k, "carol", &format!("{carol_pw}\nCarol-own-pass\n"))
        .status
        .success());
    assert!(!k.log().contains(carol_pw) && !k.log().contains("Carol-own-pass"));
}
