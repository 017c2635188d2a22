//! The clients made from the OpenAPI description, against a real keel: `keel openapi` prints what
//! the server serves; the typed Python client (contrib/python/keel_api.py) reads, writes and
//! reports refusals; the Ansible inventory built on it is read by the real `ansible-inventory`.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{cli_ok, Keel};

fn contrib_python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../contrib/python")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_openapi_command_prints_what_the_server_serves() {
    let k = Keel::start(&[]);
    let served = reqwest::get(format!("{}/api/v1/openapi.json", k.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let printed = cli_ok(&k, &["openapi"]);
    assert_eq!(printed.trim_end(), served.trim_end());
    let python = cli_ok(&k, &["openapi", "--python"]);
    let shipped = std::fs::read_to_string(contrib_python().join("keel_api.py")).unwrap();
    assert_eq!(python, shipped, "contrib/python/keel_api.py is `keel openapi --python`");
}

/// A Python program run with keel_api on its path; its stdout parsed as JSON.
fn python(k: &Keel, token: Option<&str>, program: &str) -> Value {
    let out = Command::new("python3")
        .env("PYTHONPATH", contrib_python())
        .env("KEEL_URL", &k.url)
        .env("KEEL_TOKEN", token.unwrap_or(""))
        .args(["-c", program])
        .output()
        .expect("python3");
    serde_json::from_str(&ok(&out, "python3")).unwrap()
}

#[tokio::test]
#[cfg_attr(not(has_python3), ignore = "needs python3, not installed here (.ci/run installs it)")]
async fn the_python_client_reads_writes_and_reports_refusals() {
    let k = Keel::start(&["--example-site"]);
    let program = r#"
import json, os, keel_api
api = keel_api.Client(os.environ["KEEL_URL"], token=os.environ["KEEL_TOKEN"] or None)
out = {}
made = api.create_machine({"hostname": "pc-py", "mac": "52:54:00:12:34:56", "mtype": "user", "room": "alt"})
out["created"] = made["hostname"]
out["patched"] = api.patch_machine("pc-py", {"room": "lab"}, if_match=str(made["version"]))["room"]
out["listed"] = [m["hostname"] for m in api.list_machines(room="lab")]
out["user"] = api.get_user("admin")
try:
    api.create_machine({"hostname": "pc-bad", "mac": "not-a-mac", "mtype": "user"})
except keel_api.KeelError as e:
    out["refused"] = [e.status, e.body["field"]]
try:
    api.get_machine("../../etc/passwd")
except keel_api.KeelError as e:
    out["traversal"] = e.status
print(json.dumps(out))
"#;
    let out = python(&k, Some(&k.token), program);
    assert_eq!(out["created"], "pc-py", "{out}");
    assert_eq!(out["patched"], "lab", "{out}");
    assert_eq!(out["listed"], serde_json::json!(["pc-py"]), "{out}");
    assert_eq!(out["user"]["login"], "admin", "{out}");
    assert!(out["user"].get("password_hash").is_none(), "no hash on the API: {out}");
    assert_eq!(out["refused"], serde_json::json!([400, "mac"]), "{out}");
    assert_eq!(out["traversal"], 404, "a name with slashes is one path segment: {out}");
    // Without the token, the same write is refused and says so.
    let anonymous = python(
        &k,
        None,
        r#"
import json, os, keel_api
api = keel_api.Client(os.environ["KEEL_URL"])
try:
    api.create_machine({"hostname": "pc-anon", "mac": "52:54:00:12:34:57", "mtype": "user"})
    print(json.dumps("created"))
except keel_api.KeelError as e:
    print(json.dumps([e.status, e.body["error"]]))
"#,
    );
    assert_eq!(anonymous[0], 401, "{anonymous}");
}

#[tokio::test]
#[cfg_attr(
    not(all(has_python3, has_ansible_inventory)),
    ignore = "needs python3, ansible-inventory (ansible-core), not installed here (.ci/run installs them)"
)]
async fn ansible_inventory_reads_keel_machines_by_type_room_and_role() {
    let k = Keel::start(&["--example-site"]);
    let tmp = tempfile::tempdir().unwrap();
    let inventory = |token: &str| {
        Command::new("ansible-inventory")
            .args(["-i"])
            .arg(contrib_python().join("keel_inventory.py"))
            .arg("--list")
            .env("KEEL_URL", &k.url)
            .env("KEEL_TOKEN", token)
            .env("ANSIBLE_LOCAL_TEMP", tmp.path())
            .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "true")
            .output()
            .expect("ansible-inventory")
    };
    let inv: Value = serde_json::from_str(&ok(&inventory(&k.token), "ansible-inventory")).unwrap();
    let hosts = |group: &str| inv[group]["hosts"].clone();
    assert!(
        hosts("role_gateway")
            .as_array()
            .is_some_and(|h| h.contains(&"gw".into())),
        "{inv}"
    );
    assert!(
        hosts("service").as_array().is_some_and(|h| h.contains(&"gw".into())),
        "{inv}"
    );
    assert!(hosts("room_alt").as_array().is_some_and(|h| !h.is_empty()), "{inv}");
    let gw = &inv["_meta"]["hostvars"]["gw"];
    assert_eq!(gw["ansible_host"], "192.168.1.254", "{gw}");
    assert!(
        gw["roles"].as_array().is_some_and(|r| r.contains(&"rfs/1".into())),
        "{gw}"
    );
    // A token keel refuses: the inventory fails, and Ansible says so.
    let refused = inventory("not-a-token");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("401") || said.contains("keel_inventory"), "{said}");
}
