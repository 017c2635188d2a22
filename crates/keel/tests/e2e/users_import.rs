//! `keel users import`: prologin's batchimport, with its login rule, all or nothing.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{req, require_tool, stdout_json, Keel};

/// Tricky names give the logins the rule says, collisions numbered (in the file, with the database,
/// with reserved names); the sheet holds the passwords, and the stored hashes verify with the
/// system's crypt; no plaintext reaches the database, the API or the log.
#[tokio::test]
async fn import_follows_the_login_rule_and_stores_only_hashes() {
    require_tool("openssl");
    require_tool("sqlite3");
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
         Ægir\tØdegård\n",
    )
    .unwrap();
    let prefix = k.dir.path().join("sheet");
    let out = k.cli(&[
        "users",
        "import",
        file.to_str().unwrap(),
        "--sheet",
        prefix.to_str().unwrap(),
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
            "gdegard"
        ]
    );
    let tsv_path = k.dir.path().join("sheet.tsv");
    assert_eq!(
        std::fs::metadata(&tsv_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let tsv = std::fs::read_to_string(&tsv_path).unwrap();
    assert_eq!(tsv.lines().count(), 7);
    let db = k.data().join("keel.db");
    for line in tsv.lines() {
        let [name, login, password] = line.split('\t').collect::<Vec<_>>()[..] else {
            panic!("bad sheet line {line:?}")
        };
        assert!(!name.is_empty());
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
    assert_eq!(udb["data"].as_array().unwrap().len(), 8);
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
    let v: Value = stdout_json(&k.cli(&[
        "users",
        "import",
        path,
        "--logins",
        "--passwords",
        "--type",
        "root",
        "--json",
    ]));
    assert_eq!(v["created"][0]["uid"], 12001);
    let out = k.cli(&["users", "import", path, "--logins", "--passwords", "--type", "root"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = stdout_json(&k.cli(&[
        "users",
        "import",
        path,
        "--logins",
        "--passwords",
        "--type",
        "root",
        "--update",
        "--json",
    ]));
    assert_eq!(v["updated"].as_array().unwrap().len(), 2);
    let v = stdout_json(&k.cli(&[
        "users",
        "import",
        path,
        "--logins",
        "--passwords",
        "--type",
        "root",
        "--ignore",
        "--json",
    ]));
    assert_eq!(v["ignored"].as_array().unwrap().len(), 2);
}
