//! The built-in DNS against the real `dig` (Debian bind9-dnsutils, installed by `.ci/run`).

use std::process::Command;

use reqwest::Method;
use serde_json::json;

use crate::support::{req, Keel};

/// `dig` against keel; returns (status, answer lines of `+noall +answer`).
pub fn dig(k: &Keel, args: &[&str]) -> (String, Vec<String>) {
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
#[cfg_attr(not(has_dig), ignore = "needs dig, not installed here (.ci/run installs it)")]
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
#[cfg_attr(not(has_dig), ignore = "needs dig, not installed here (.ci/run installs it)")]
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

/// The unknown machines' DHCP range has names, as the `dns` service writes them for BIND:
/// `dhcp-A-B-C-D` for each free address, both ways; a registered machine's address is its own.
#[tokio::test]
#[cfg_attr(not(has_dig), ignore = "needs dig, not installed here (.ci/run installs it)")]
async fn the_unknown_range_has_names_like_the_bind_zone() {
    let cfg = "[propagation.generators.dhcp]\nunknown_range = [\"192.168.0.200\", \"192.168.0.210\"]\n";
    let k = Keel::start_with_config(cfg, &["--example-site"]);
    let (status, a) = dig(&k, &["dhcp-192-168-0-201.prolo", "A"]);
    assert_eq!(status, "NOERROR");
    assert_eq!(a, ["dhcp-192-168-0-201.prolo. 60 IN A 192.168.0.201"]);
    let (_, ptr) = dig(&k, &["-x", "192.168.0.210"]);
    assert_eq!(ptr, ["210.0.168.192.in-addr.arpa. 60 IN PTR dhcp-192-168-0-210.prolo."]);
    // Outside the range, or not the one spelling of an address: no such name.
    for name in [
        "dhcp-192-168-0-211.prolo",
        "dhcp-192-168-0-0201.prolo",
        "dhcp-192-168-0.prolo",
    ] {
        assert_eq!(dig(&k, &[name, "A"]).0, "NXDOMAIN", "{name}");
    }
    // No machine is given an address of the range (issue 32): the DHCP server leases them.
    let body = json!({"hostname": "late", "mac": "52:54:00:12:34:99", "mtype": "user", "ip": "192.168.0.205"});
    let (status, answer) = req(&k, Some(&k.token), Method::POST, "/api/v1/machines", Some(body), &[]).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].to_string().contains("unknown machines"), "{answer}");
    let body = json!({"hostname": "late", "mac": "52:54:00:12:34:99", "mtype": "user", "ip": "192.168.0.199"});
    assert_eq!(
        req(&k, Some(&k.token), Method::POST, "/api/v1/machines", Some(body), &[])
            .await
            .0,
        201
    );
    assert_eq!(dig(&k, &["dhcp-192-168-0-205.prolo", "A"]).0, "NOERROR");
}

/// The SOA serial of a zone file.
fn serial(zone: &str) -> u64 {
    zone.lines()
        .find(|l| l.contains(" SOA "))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no serial in {zone}"))
}

#[tokio::test]
#[cfg_attr(
    not(has_named_checkzone),
    ignore = "needs named-checkzone, not installed here (.ci/run installs it)"
)]
async fn the_dns_service_ships_checked_zones_and_reloads_a_few_times_for_a_big_import() {
    use crate::propagation::task_state;
    use crate::support::eventually;
    let tmp = tempfile::tempdir().unwrap();
    let reloads = tmp.path().join("reloads");
    let rndc = tmp.path().join("fake-rndc");
    std::fs::write(&rndc, format!("#!/bin/sh\necho \"$@\" >> {}\n", reloads.display())).unwrap();
    std::fs::set_permissions(&rndc, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = tmp.path().join("keel.toml");
    std::fs::write(
        &cfg,
        "[pools.user]\nnetwork = \"10.0.0.0/16\"\n[pools.orga]\nnetwork = \"192.168.0.0/24\"\n\
         [pools.service]\nnetwork = \"192.168.1.0/24\"\n[pools.cluster]\nnetwork = \"192.168.2.0/24\"\n\
         [propagation]\ndebounce_ms = 300\nretry_min_secs = 3600\n\
         [propagation.services.dnsbad]\ncommand = [\"sh\", \"-c\", \"printf 'this is not a zone\\\\n' > \\\"$1/db.prolo\\\"\", \"gen\"]\nkinds = [\"machine\"]\n",
    )
    .unwrap();
    let k = Keel::start_with_env(
        &["--config", cfg.to_str().unwrap(), "--example-site"],
        &[("KEEL_RNDC", rndc.to_str().unwrap())],
    );
    let agent = k.data().join("example-agent");
    let zone_file = agent.join("root/etc/bind/keel/db.prolo");
    eventually(20, "the example site's zone file", async || zone_file.exists()).await;
    // Install the shipped hooks, as a site would.
    let hooks = agent.join("agent.d/dns.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/agent.d/dns.d");
    for h in ["pre_10_named_check", "post_10_rndc_reload"] {
        std::fs::copy(shipped.join(h), hooks.join(h)).unwrap();
    }
    let before = serial(&std::fs::read_to_string(&zone_file).unwrap());
    let c = k.admin();
    let body = json!({"hostname": "pc-new", "mac": "52:54:00:12:34:56", "mtype": "user"});
    c.call::<serde_json::Value>(Method::POST, "/api/v1/machines", Some(&body), None)
        .await
        .unwrap();
    eventually(20, "pc-new in the zone, reloaded", async || {
        std::fs::read_to_string(&zone_file)
            .unwrap_or_default()
            .contains("pc-new IN A")
            && reloads.exists()
    })
    .await;
    let zone = std::fs::read_to_string(&zone_file).unwrap();
    assert!(serial(&zone) > before, "the serial grows with the data");
    let check = Command::new("named-checkzone")
        .args(["prolo"])
        .arg(&zone_file)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    eventually(20, "dns DONE", async || task_state(&k, "gw", "dns").await.0 == "DONE").await;

    // 10,000 machines in one import: a few reloads, not 10,000.
    let n_before = std::fs::read_to_string(&reloads).unwrap().lines().count();
    let rows: Vec<serde_json::Value> = (0..10_000u32)
        .map(|i| {
            let b = i.to_be_bytes();
            json!({"line": i + 1, "hostname": format!("bulk{i}"), "mac": format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3]), "mtype": "user"})
        })
        .collect();
    c.call::<serde_json::Value>(
        Method::POST,
        "/api/v1/machines/import",
        Some(&json!({"machines": rows})),
        None,
    )
    .await
    .unwrap();
    eventually(30, "the import in the zone", async || {
        std::fs::read_to_string(&zone_file)
            .unwrap_or_default()
            .contains("bulk9999 IN A")
    })
    .await;
    eventually(20, "dns DONE after the import", async || {
        task_state(&k, "gw", "dns").await.0 == "DONE"
    })
    .await;
    let n_after = std::fs::read_to_string(&reloads).unwrap().lines().count();
    assert!(n_after - n_before <= 2, "{} reloads for one import", n_after - n_before);

    // A broken zone is caught by the shipped check hook and never swapped in.
    std::fs::create_dir_all(agent.join("agent.d/dnsbad.d")).unwrap();
    std::fs::copy(
        shipped.join("pre_10_named_check"),
        agent.join("agent.d/dnsbad.d/pre_10_named_check"),
    )
    .unwrap();
    let out = k.cli(&["facility", "edit", "gw", "--services", "dns,hosts,dnsbad"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = k.cli(&["destination", "add", "--facility", "gw", "--service", "dnsbad", "local"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually(20, "dnsbad refused by its pre hook", async || {
        task_state(&k, "gw", "dnsbad").await.1["local"]["exit_code"] == 7
    })
    .await;
    assert!(
        !agent.join("root/var/lib/keel/services/dnsbad/db.prolo").exists(),
        "never swapped in"
    );
    let out = k.cli(&["propagation", "status", "--facility", "gw"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dnsbad") && text.contains("ERROR"), "{text}");
    let (_, r) = task_state(&k, "gw", "dnsbad").await;
    assert!(
        r["local"]["stderr"].as_str().unwrap().contains("db.prolo"),
        "named-checkzone's words: {r}"
    );
}

/// Issue 19: an upstream that never answers (an offline contest network) must not stop keel's
/// own answers. 50 queries for outside names are sent and reach the dead upstream (so they are
/// in flight, each waiting its 2 s); an authoritative query asked then is answered all the same.
#[tokio::test]
#[cfg_attr(not(has_dig), ignore = "needs dig, not installed here (.ci/run installs it)")]
async fn a_dead_upstream_does_not_delay_authoritative_answers() {
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let k = Keel::start_with_config(
        &format!("[dns]\nupstream = [\"{}\"]\n", dead.local_addr().expect("addr")),
        &["--example-site"],
    );
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for i in 0..50u16 {
        let q = keel_testkit::dns_query(i, &format!("host{i}.outside.test."));
        client.send_to(&q, &k.dns).expect("send");
    }
    // Wait until the dead upstream holds all 50: they are in flight now.
    dead.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    for n in 0..50 {
        dead.recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("forward {n} never reached the upstream: {e}"));
    }
    let (status, a) = dig(&k, &["gw.prolo", "A"]);
    assert_eq!(status, "NOERROR");
    assert_eq!(a, ["gw.prolo. 60 IN A 192.168.1.254"]);
}

/// keel forwards only for its client networks: it is no open resolver. The same query from an
/// allowed network is forwarded (`names_outside_the_zones_go_to_the_upstream_resolver`).
#[tokio::test]
#[cfg_attr(not(has_dig), ignore = "needs dig, not installed here (.ci/run installs it)")]
async fn outside_names_are_refused_to_clients_outside_forward_clients() {
    let up_cfg = "[dns]\nzone = \"upstream.test\"\n";
    let upstream = Keel::start_with_config(up_cfg, &["--example-site"]);
    let allowed = Keel::start_with_config(&format!("[dns]\nupstream = [\"{}\"]\n", upstream.dns), &[]);
    assert_eq!(dig(&allowed, &["gw.upstream.test", "A"]).0, "NOERROR");
    let k = Keel::start_with_config(
        &format!(
            "[dns]\nupstream = [\"{}\"]\nforward_clients = [\"10.0.0.0/8\"]\n",
            upstream.dns
        ),
        &[],
    );
    assert_eq!(dig(&k, &["gw.upstream.test", "A"]).0, "REFUSED");
}
