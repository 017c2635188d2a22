//! The foundation: README commands, validation, versions, tokens and roles.

use keel_client::data_dir as files;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{req, require_tool, Keel};

/// The README's first command serves the example site; `curl …/call/query` lists `gw`.
#[tokio::test]
#[cfg_attr(not(has_curl), ignore = "needs curl, not installed here (.ci/run installs it)")]
async fn example_site_answers_curl_query() {
    require_tool("curl");
    let k = Keel::start(&["--example-site"]);
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("{}/call/query", k.url)])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "result");
    let gw = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["hostname"] == "gw")
        .expect("gw listed");
    assert_eq!(gw["ip"], "192.168.1.254");
    assert_eq!(gw["mtype"], "service");
    assert!(gw["aliases"].as_str().unwrap().split(',').any(|a| a == "mdb"));
    // Django-style lookups and the Host-routed, /mdb-prefixed forms.
    let one: Value = k
        .anonymous()
        .get("/mdb/call/query?aliases__contains=netboot")
        .await
        .unwrap();
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    let out = std::process::Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Host: mdb.prolo",
            "--data-urlencode",
            "hostname__startswith=r00",
            &format!("{}/call/query", k.url),
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 4);
    let sw: Value = k.anonymous().rpc("/call/switches", json!({})).await.unwrap();
    assert_eq!(sw.as_array().unwrap().len(), 2);
}

fn m(host: &str, mac: &str, extra: Value) -> Value {
    let mut v = json!({"hostname": host, "mac": mac, "mtype": "user"});
    if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
        a.extend(b);
    }
    v
}

/// Each bad write is a 4xx naming the field, and changes nothing.
#[tokio::test]
async fn bad_machines_are_refused_by_field_and_change_nothing() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    // A user pool with two usable addresses, to fill it.
    std::fs::write(cfg.path(), "[pools.user]\nnetwork = \"10.9.0.0/29\"\nreserved = [\"10.9.0.1\", \"10.9.0.2\", \"10.9.0.3\", \"10.9.0.4\"]\n[pools.orga]\nnetwork = \"10.8.0.0/24\"\n[pools.cluster]\nnetwork = \"10.7.0.0/24\"\n[pools.service]\nnetwork = \"10.6.0.0/24\"\n").unwrap();
    let k = Keel::start(&["--config", cfg.path().to_str().unwrap()]);
    let t = Some(k.token.as_str());
    let post = |body: Value| req(&k, t, Method::POST, "/api/v1/machines", Some(body), &[]);
    assert_eq!(
        post(m("a", "aa:bb:cc:dd:ee:01", json!({"aliases": ["alias-a"]})))
            .await
            .0,
        201
    );
    let seq = k.seq().await;
    let cases = [
        (m("a", "aa:bb:cc:dd:ee:02", json!({})), "hostname"),
        (m("alias-a", "aa:bb:cc:dd:ee:02", json!({})), "hostname"),
        (m("b", "aa:bb:cc:dd:ee:02", json!({"aliases": ["a"]})), "aliases"),
        (m("b", "AA-BB-CC-DD-EE-01", json!({})), "mac"),
        (m("b", "aa:bb:cc:dd:ee:02", json!({"ip": "10.9.0.5"})), "ip"),
        (m("b", "aa:bb:cc:dd:ee:02", json!({"ip": "10.8.0.9"})), "ip"),
        (m("b", "zz:bb:cc:dd:ee:02", json!({})), "mac"),
        (m("Upper", "aa:bb:cc:dd:ee:02", json!({})), "hostname"),
        (m("with space", "aa:bb:cc:dd:ee:02", json!({})), "hostname"),
        (m("b", "aa:bb:cc:dd:ee:02", json!({"mtype": "toaster"})), "mtype"),
        (m("b", "aa:bb:cc:dd:ee:02", json!({"rfs": "1"})), "rfs"),
        (m("b", "aa:bb:cc:dd:ee:02", json!({"rfs": -1})), "rfs"),
        (m("b", "aa:bb:cc:dd:ee:02", json!({"colour": "red"})), "colour"),
        (json!({"mac": "aa:bb:cc:dd:ee:02", "mtype": "user"}), "hostname"),
        (json!(["not", "an", "object"]), "body"),
    ];
    for (body, field) in cases {
        let (status, answer) = post(body.clone()).await;
        assert!((400..500).contains(&status), "{body} → {status}");
        assert_eq!(answer["field"], field, "{body} → {answer}");
    }
    // The pool has one address left (10.9.0.6 after .5 is taken): fill it, then the next is refused.
    assert_eq!(post(m("b", "aa:bb:cc:dd:ee:02", json!({}))).await.0, 201);
    let seq_full = k.seq().await;
    let (status, answer) = post(m("c", "aa:bb:cc:dd:ee:03", json!({}))).await;
    assert_eq!((status, answer["field"].as_str()), (400, Some("ip")), "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("full"));
    assert_eq!(seq + 1, seq_full, "only the good machine was written");
    assert_eq!(k.seq().await, seq_full);
    // A body that is not JSON, and one too large.
    let (status, answer) = req(
        &k,
        t,
        Method::POST,
        "/api/v1/machines",
        None,
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!((status, answer["field"].as_str()), (400, Some("body")));
    let huge = json!({"hostname": "x".repeat(2 * 1024 * 1024)});
    assert_eq!(post(huge).await.0, 413);
    assert_eq!(k.seq().await, seq_full);
}

/// Two clients editing one machine: the second gets 412; no If-Match is 428; `*` is refused.
#[tokio::test]
async fn concurrent_edits_are_refused_with_412() {
    let k = Keel::start(&["--example-site"]);
    let t = Some(k.token.as_str());
    let path = "/api/v1/machines/r00p01";
    let (a, b) = (k.admin(), k.admin());
    let va = a
        .call::<Value>(Method::GET, path, None, None)
        .await
        .unwrap()
        .version
        .unwrap();
    let vb = b
        .call::<Value>(Method::GET, path, None, None)
        .await
        .unwrap()
        .version
        .unwrap();
    assert_eq!(va, vb);
    a.call::<Value>(Method::PATCH, path, Some(&json!({"room": "alt"})), Some(va))
        .await
        .unwrap();
    let err = b
        .call::<Value>(Method::PATCH, path, Some(&json!({"room": "pasteur"})), Some(vb))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(412));
    let now: Value = a.get(path).await.unwrap();
    assert_eq!(now["room"], "alt");
    assert_eq!(
        req(&k, t, Method::PATCH, path, Some(json!({"room": "x"})), &[]).await.0,
        428
    );
    assert_eq!(
        req(
            &k,
            t,
            Method::PATCH,
            path,
            Some(json!({"room": "x"})),
            &[("If-Match", "*")]
        )
        .await
        .0,
        428
    );
    assert_eq!(
        req(&k, t, Method::DELETE, path, None, &[("If-Match", "\"1\"")]).await.0,
        412
    );
    let v = now["version"].to_string();
    assert_eq!(
        req(&k, t, Method::DELETE, path, None, &[("If-Match", &format!("\"{v}\""))])
            .await
            .0,
        204
    );
    assert_eq!(req(&k, t, Method::GET, path, None, &[]).await.0, 404);
}

/// Writes need an admin token: none, revoked, expired or read-only are refused, and logged
/// without the token. The token file is private.
#[tokio::test]
async fn writes_need_a_valid_admin_token() {
    use std::os::unix::fs::PermissionsExt;
    let k = Keel::start(&["--example-site"]);
    let mode = std::fs::metadata(k.data().join(files::ADMIN_TOKEN))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let body = || Some(m("newbie", "aa:bb:cc:dd:ee:99", json!({})));
    let mk = |role: &str, extra: Value| {
        let mut b = json!({"name": format!("t-{role}"), "role": role});
        if let (Value::Object(a), Value::Object(e)) = (&mut b, extra) {
            a.extend(e);
        }
        b
    };
    let admin = k.admin();
    let ro: Value = admin
        .call(Method::POST, "/api/v1/tokens", Some(&mk("readonly", json!({}))), None)
        .await
        .unwrap()
        .value;
    let revoked: Value = admin
        .call(Method::POST, "/api/v1/tokens", Some(&mk("admin", json!({}))), None)
        .await
        .unwrap()
        .value;
    let expired: Value = admin
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&mk("admin", json!({"expires": "2020-01-01T00:00:00Z"}))),
            None,
        )
        .await
        .unwrap()
        .value;
    let rid = revoked["id"].as_str().unwrap();
    admin
        .request(Method::DELETE, &format!("/api/v1/tokens/{rid}"), None, None)
        .await
        .unwrap();
    let seq = k.seq().await;
    let tok = |v: &Value| v["token"].as_str().unwrap().to_owned();
    for (token, status) in [
        (None, 401),
        (Some("keel_000000000000_".to_owned() + &"0".repeat(64)), 401),
        (Some("garbage".to_owned()), 401),
        (Some(tok(&revoked)), 401),
        (Some(tok(&expired)), 401),
        (Some(tok(&ro)), 403),
    ] {
        let (got, _) = req(&k, token.as_deref(), Method::POST, "/api/v1/machines", body(), &[]).await;
        assert_eq!(got, status, "token {token:?}");
    }
    // A bad token is refused at once even where no token is needed.
    assert_eq!(
        req(&k, Some("garbage"), Method::GET, "/call/query", None, &[]).await.0,
        401
    );
    // RPC register: closed without a token while self-registration is off.
    let reg = json!({"args": ["selfreg", "aa:bb:cc:dd:ee:98", 1, 1, "pasteur", "user"]});
    let (status, answer) = req(&k, None, Method::POST, "/call/register", Some(reg.clone()), &[]).await;
    assert_eq!((status, answer["type"].as_str()), (401, Some("exception")));
    assert_eq!(k.seq().await, seq);
    // Read-only may read.
    assert_eq!(
        req(&k, Some(&tok(&ro)), Method::GET, "/api/v1/machines", None, &[])
            .await
            .0,
        200
    );
    // With self-registration on, a machine registers itself and gets an address from its pool.
    let s: Value = admin.get("/api/v1/settings/allow_self_registration").await.unwrap();
    let v = s["version"].as_u64().unwrap();
    admin
        .call::<Value>(
            Method::PUT,
            "/api/v1/settings/allow_self_registration",
            Some(&json!({"value": true})),
            Some(v),
        )
        .await
        .unwrap();
    let (status, answer) = req(&k, None, Method::POST, "/call/register", Some(reg), &[]).await;
    // prologin's answer: the address as a string.
    assert_eq!(
        (status, answer["data"].as_str()),
        (200, Some("192.168.0.6")),
        "{answer}"
    );
    // No secret ever reaches the log.
    let log = k.log();
    for t in [tok(&ro), tok(&revoked), tok(&expired), k.token.clone()] {
        let secret = t.rsplit('_').next().unwrap();
        assert!(!log.contains(secret), "a token secret is in the server log");
    }
    assert!(log.contains("token refused"));
}

/// `/metrics` for operators: propagation (tasks by state, each destination's last success and
/// failures in a row, bytes sent), DNS answers by rcode, TFTP requests by outcome — each seen
/// after the real thing happened (the example site's propagation, dig, curl over TFTP).
#[tokio::test]
#[cfg_attr(
    not(all(has_curl, has_dig)),
    ignore = "needs curl, dig, not installed here (.ci/run installs it)"
)]
async fn metrics_show_propagation_dns_and_tftp() {
    let k = Keel::start(&["--example-site"]);
    let metrics = || async {
        let resp = reqwest::get(format!("{}/metrics", k.url)).await.unwrap();
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"));
        resp.text().await.unwrap()
    };
    let hosts = "keel_propagation_destination_last_success_timestamp_seconds{facility=\"gw\",service=\"hosts\",destination=\"local\"}";
    crate::support::eventually(30, "gw's hosts applied, in the metrics", async || {
        let text = metrics().await;
        text.lines().any(|l| l.starts_with(hosts) && !l.ends_with(" 0"))
    })
    .await;
    let text = metrics().await;
    assert!(text.contains("keel_propagation_destination_consecutive_failures{facility=\"gw\",service=\"hosts\",destination=\"local\"} 0"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("keel_propagation_tasks{state=\"DONE\"}") && !l.ends_with(" 0")),
        "{text}"
    );
    let sent = text
        .lines()
        .find(|l| l.starts_with("keel_propagation_sent_bytes_total "))
        .unwrap();
    assert!(!sent.ends_with(" 0"), "{sent}");
    // DNS: one answer, one NXDOMAIN.
    crate::dns::dig(&k, &["gw.prolo", "A"]);
    crate::dns::dig(&k, &["nosuch.prolo", "A"]);
    // TFTP: a file that is not there.
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", &format!("tftp://{}/nosuch", k.tftp)])
        .output()
        .expect("curl");
    assert!(!out.status.success());
    let text = metrics().await;
    assert!(text.contains("keel_dns_answers_total{rcode=\"NOERROR\"} 1"), "{text}");
    assert!(text.contains("keel_dns_answers_total{rcode=\"NXDOMAIN\"} 1"), "{text}");
    // Every metric the shipped alert rules and dashboard name is one keel serves (a counter's
    // `_total`, a histogram's `_bucket` are the family's samples).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib");
    for file in [
        "prometheus/keel.rules.yml",
        "prometheus/keel.rules.test.yml",
        "grafana/keel.json",
    ] {
        let shipped = std::fs::read_to_string(root.join(file)).unwrap();
        let names = shipped
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("keel_"));
        for name in names {
            let family = name.trim_end_matches("_total").trim_end_matches("_bucket");
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{file} names {name}, which /metrics does not have"
            );
        }
    }
    // TFTP counts once its task has sent the error, which curl may have read first.
    crate::support::eventually(10, "the refused TFTP request counted", async || {
        metrics()
            .await
            .contains("keel_tftp_transfers_total{outcome=\"refused\"} 1")
    })
    .await;
}

/// `Type=notify`: keel tells systemd it is ready once it serves (the datagram systemd would
/// read, on a socket of the test's own), and that it stops on SIGTERM.
#[test]
fn keel_notifies_systemd_when_ready_and_when_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    let mut k = Keel::start_with_env(&[], &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1 within a minute");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    // Ready means serving: the address it names answers.
    let addr = k.url.trim_start_matches("http://").to_owned();
    assert!(ready.contains(&addr), "{ready} (serving on {addr})");
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    k.stop();
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
}
