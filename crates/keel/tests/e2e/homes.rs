//! Homes on home file servers (docs/homes.md), end to end: the example site's local agent plays
//! both the HFS (facility `hfs1`, service `homes`) and the machines (facility `machines`, service
//! `automount`), writing under the data directory. What runs for real: keel serve, the
//! propagation engine, keel-agent creating the home (owned by the user when run as root, as in
//! CI) and merging `/etc/auto.home`; autofs's parser reads the same map in keel-gen's checkers
//! test. No NFS server or mount runs (this kernel has no nfsd).

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{cli_ok, eventually, req, Keel};

async fn user(k: &Keel, login: &str) -> Value {
    k.admin().get(&format!("/api/v1/users/{login}")).await.unwrap()
}

#[tokio::test]
async fn a_first_login_creates_the_home_on_the_machines_hfs_before_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("moves");
    let fail = dir.path().join("fail");
    // The move hook records what it was asked, and fails while the `fail` file exists.
    let hook = format!(
        "test ! -e {} && echo \"$KEEL_LOGIN $KEEL_UID $KEEL_FROM_HFS $KEEL_TO_HFS\" >> {}",
        fail.display(),
        marker.display()
    );
    let toml = format!("[presence]\nrecovery_secs = 0\n[homes]\nmove_hook = [\"sh\", \"-c\", {hook:?}]\n");
    let k = Keel::start_with_config(&toml, &["--example-site"]);
    for args in [
        &[
            "facility",
            "add",
            "hfs1",
            "--hfs",
            "1",
            "--groups",
            "user",
            "--services",
            "homes",
        ][..],
        &[
            "destination",
            "add",
            "--facility",
            "hfs1",
            "--service",
            "homes",
            "local",
        ],
        &[
            "facility",
            "add",
            "machines",
            "--groups",
            "user",
            "--services",
            "automount",
        ],
        &[
            "destination",
            "add",
            "--facility",
            "machines",
            "--service",
            "automount",
            "local",
        ],
    ] {
        cli_ok(&k, args);
    }
    let (status, _) = req(
        &k,
        Some(&k.token),
        Method::POST,
        "/api/v1/users",
        Some(json!({"login": "zoe", "group": "user"})),
        &[],
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        user(&k, "zoe").await["hfs"],
        Value::Null,
        "no home before the first login"
    );
    let root = k.data().join("example-agent/root");
    let home = root.join("export/home/zoe");
    assert!(!home.exists());

    // The first login, from r00p01 (hfs 1): when it answers, the home is on hfs1.
    let body = json!({"login": "zoe", "hostname": "r00p01"});
    let (status, s) = req(&k, Some(&k.token), Method::POST, "/api/v1/sessions", Some(body), &[]).await;
    assert_eq!(status, 201, "{s}");
    assert!(home.is_dir(), "the home is not there when the login answered");
    if rustix::process::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&home).unwrap();
        let zoe = user(&k, "zoe").await;
        assert_eq!(u64::from(m.uid()), zoe["uid"].as_u64().unwrap());
    }
    assert_eq!(user(&k, "zoe").await["hfs"], 1);
    // The machines' automount map points there: to the machine with the role hfs/1 (gw).
    let map = root.join("etc/auto.home");
    eventually(30, "zoe in the machines' auto.home", async || {
        std::fs::read_to_string(&map)
            .unwrap_or_default()
            .contains("zoe -fstype=nfs,rw,hard,nosuid,nodev gw:/export/home/zoe\n")
    })
    .await;
    // HFS 2 is the machine an admin gives the role, whatever it is called.
    cli_ok(
        &k,
        &[
            "machine",
            "add",
            "--hostname",
            "nas2",
            "--mac",
            "52:54:00:00:05:02",
            "--mtype",
            "service",
        ],
    );
    cli_ok(&k, &["role", "set", "hfs/2", "nas2"]);

    // An edit cannot move a home…
    let (status, e) = req(
        &k,
        Some(&k.token),
        Method::PATCH,
        "/api/v1/users/zoe",
        Some(json!({"hfs": 2})),
        &[("If-Match", "*")],
    )
    .await;
    assert!(status == 400 || status == 428, "{status} {e}");
    // …a move does, through the hook; a failing hook records nothing.
    std::fs::write(&fail, "").unwrap();
    let out = k.cli(&["users", "move-home", "zoe", "--hfs", "2"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("move hook failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(user(&k, "zoe").await["hfs"], 1);
    std::fs::remove_file(&fail).unwrap();
    cli_ok(&k, &["users", "move-home", "zoe", "--hfs", "2"]);
    let zoe = user(&k, "zoe").await;
    assert_eq!(zoe["hfs"], 2);
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        format!("zoe {} 1 2\n", zoe["uid"])
    );
    eventually(30, "the map follows the move", async || {
        std::fs::read_to_string(&map)
            .unwrap_or_default()
            .contains("nas2:/export/home/zoe\n")
    })
    .await;
    // The move is in the log, by whom.
    let changes: Vec<Value> = k.admin().get("/api/v1/changes?since=0&limit=1000").await.unwrap();
    let moved = changes
        .iter()
        .rev()
        .find(|c| c["kind"] == "user" && c["key"] == "zoe")
        .unwrap();
    assert_eq!(moved["after"]["hfs"], 2, "{moved}");
}
