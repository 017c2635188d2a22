//! The built-in DNS against the real `dig` (Debian bind9-dnsutils, installed by `.ci/run`).

use std::process::Command;

use reqwest::Method;
use serde_json::json;

use crate::support::Keel;

/// `dig` against keel; returns (status, answer lines of `+noall +answer`).
fn dig(k: &Keel, args: &[&str]) -> (String, Vec<String>) {
    let (host, port) = k.dns.rsplit_once(':').expect("dns address");
    let out = Command::new("dig")
        .args([
            &format!("@{host}"),
            "-p",
            port,
            "+time=2",
            "+tries=1",
            "+noall",
            "+answer",
            "+comments",
        ])
        .args(args)
        .output()
        .expect("dig (Debian package bind9-dnsutils) must be installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").to_owned())
        .unwrap_or_else(|| format!("no answer: {text}"));
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (status, answers)
}

#[tokio::test]
async fn dig_gets_a_ptr_and_nxdomain_from_the_live_snapshot() {
    let k = Keel::start(&["--example-site"]);
    // The docs' check: mdb.prolo is gw's alias.
    let (status, a) = dig(&k, &["mdb.prolo", "A"]);
    assert_eq!(status, "NOERROR");
    assert_eq!(a, ["mdb.prolo. 60 IN A 192.168.1.254"]);
    let (_, a) = dig(&k, &["GW.Prolo.", "A", "+tcp"]);
    assert_eq!(a, ["GW.Prolo. 60 IN A 192.168.1.254"], "case-insensitive, over TCP too");
    let (status, ptr) = dig(&k, &["-x", "192.168.1.254"]);
    assert_eq!(status, "NOERROR");
    assert_eq!(ptr, ["254.1.168.192.in-addr.arpa. 60 IN PTR gw.prolo."]);
    let (status, a) = dig(&k, &["nosuch.prolo", "A"]);
    assert_eq!((status.as_str(), a.len()), ("NXDOMAIN", 0));
    let (status, _) = dig(&k, &["-x", "192.168.1.77"]);
    assert_eq!(status, "NXDOMAIN");
    let (status, soa) = dig(&k, &["prolo", "SOA"]);
    assert_eq!(status, "NOERROR");
    assert!(soa[0].contains("SOA gw.prolo. hostmaster.prolo."), "{soa:?}");
    let (status, aaaa) = dig(&k, &["mdb.prolo", "AAAA"]);
    assert_eq!(
        (status.as_str(), aaaa.len()),
        ("NOERROR", 0),
        "a name without that type: NODATA"
    );
    let (status, _) = dig(&k, &["example.org", "A"]);
    assert_eq!(status, "REFUSED", "outside keel's zones, no upstream");

    // Read-your-writes: the answer is there as soon as the write is acknowledged.
    let c = k.admin();
    let body = json!({"hostname": "pc-new", "mac": "52:54:00:12:34:56", "mtype": "user", "aliases": "seat-42"});
    let m: serde_json::Value = c
        .call(Method::POST, "/api/v1/machines", Some(&body), None)
        .await
        .unwrap()
        .value;
    let ip = m["ip"].as_str().unwrap().to_owned();
    let (_, a) = dig(&k, &["seat-42.prolo", "A"]);
    assert_eq!(a, [format!("seat-42.prolo. 60 IN A {ip}")]);
    let (_, ptr) = dig(&k, &["-x", &ip]);
    assert!(ptr[0].ends_with("PTR pc-new.prolo."), "{ptr:?}");

    // Garbage does not stop it.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"\x00\x01garbage", &k.dns).unwrap();
    sock.send_to(&[0xff; 600], &k.dns).unwrap();
    let (status, _) = dig(&k, &["mdb.prolo", "A"]);
    assert_eq!(status, "NOERROR");
}

#[tokio::test]
async fn names_outside_the_zones_go_to_the_upstream_resolver() {
    // The upstream is another keel, authoritative for its own zone.
    let up_cfg = "[dns]\nzone = \"upstream.test\"\n";
    let upstream = Keel::start_with_config(up_cfg, &["--example-site"]);
    let k = Keel::start_with_config(
        &format!("[dns]\nupstream = [\"{}\"]\n", upstream.dns),
        &["--example-site"],
    );
    let (status, a) = dig(&k, &["gw.upstream.test", "A"]);
    assert_eq!(status, "NOERROR");
    assert_eq!(a, ["gw.upstream.test. 60 IN A 192.168.1.254"]);
    let (status, _) = dig(&k, &["nosuch.upstream.test", "A"]);
    assert_eq!(status, "NXDOMAIN", "the upstream's answer is relayed as is");
    let (_, a) = dig(&k, &["mdb.prolo", "A"]);
    assert_eq!(a.len(), 1, "its own zone is still answered by keel");
}
