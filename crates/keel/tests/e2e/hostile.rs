//! Issue 19's must-holds about what an unauthenticated client can make keel hold: idle and slow
//! connections, huge logins on the password endpoint, the files of the data directory.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use keel_client::data_dir as files;
use reqwest::Method;
use serde_json::json;

use crate::presence::{add_user, login};
use crate::support::{eventually, req, Keel};
use keel_testkit::flood;

/// 2,000 connections from loopback, half idle and half sending a request head a byte at a time,
/// do not stop `/healthz`, nginx's `/sso` or a presence login; keel's memory stays bounded, and
/// a write made meanwhile is there afterwards.
#[tokio::test]
async fn idle_and_slow_connections_leave_room_for_health_sso_and_presence() {
    keel_testkit::flood::raise_open_file_limit(4096).unwrap();
    // No recovery window after the start: logins are taken at once.
    let k = Keel::start_with_config("[presence]\nrecovery_secs = 0\n", &["--example-site"]);
    add_user(&k, "alice", "user").await;
    let addr = k.url.trim_start_matches("http://").to_owned();
    let rss_before = rss_kib(&k);
    let mut held = Vec::with_capacity(2000);
    for i in 0..2000 {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        if i % 2 == 1 {
            s.write_all(b"POST /api/v1/passwd HTTP/1.1\r\nHost: x\r\n")
                .expect("slow head");
        }
        held.push(s);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let health = client
        .get(format!("{}/healthz", k.url))
        .send()
        .await
        .expect("/healthz answers");
    assert_eq!(health.status(), 200);
    let sso = client
        .get(format!("{}/sso", k.url))
        .header("X-Real-IP", "192.168.0.1")
        .send()
        .await
        .expect("/sso answers");
    assert!(sso.status().as_u16() < 500, "{}", sso.status());
    assert_eq!(login(&k, "alice", "r00p01").await.0, 201, "a presence login");
    let rss_during = rss_kib(&k);
    // ~11 KiB an idle connection (see `keel bench watch`); 64 MiB is far above that for 2,000.
    assert!(
        rss_during < rss_before + 64 * 1024,
        "{rss_before} KiB before, {rss_during} KiB with 2,000 connections"
    );
    drop(held);
    let (status, sessions) = req(&k, Some(&k.token), Method::GET, "/api/v1/sessions", None, &[]).await;
    assert_eq!(status, 200);
    assert!(sessions.to_string().contains("alice"), "{sessions}");
}

/// Over `[http] max_connections` a new connection is closed at once, and a connection is taken
/// again once one is free.
#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let k = Keel::start_with_config("[http]\nmax_connections = 20\n", &[]);
    let addr = k.url.trim_start_matches("http://").to_owned();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(
        client.get(format!("{}/healthz", k.url)).send().await.unwrap().status(),
        200
    );
    let held: Vec<_> = (0..20).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    // The 21st is accepted by the kernel and closed by keel without a byte.
    let mut extra = std::net::TcpStream::connect(&addr).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut extra, &mut buf).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "closed without an answer: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(held);
    crate::support::eventually(10, "a slot is free again", async || {
        client
            .get(format!("{}/healthz", k.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// 1,000 failed password changes with 900 KB logins grow the database by less than 1 MB: the
/// throttle keeps a fixed-size digest, the log lines a few characters.
#[tokio::test]
#[cfg_attr(not(has_sqlite3), ignore = "needs sqlite3, not installed here (.ci/run installs it)")]
async fn failed_password_tries_with_huge_logins_cost_no_space() {
    let mut k = Keel::start(&[]);
    let hash = "$6$saltsalt$W8/of8d2LyqjgMBUekC8rz9KqwXuk/zM2UFVSqjBrgi3iOHzUpki1KXdE9sy4UjXzKwFKfQDgDGi8qHdDVLoh/";
    // The same call with a real login and a wrong password is refused as wrong (not as malformed).
    add_user(&k, "alice", "user").await;
    let body = |login: &str| json!({"login": login, "old_password": "nope", "new_password_hash": hash});
    let (status, _) = req(&k, None, Method::POST, "/api/v1/passwd", Some(body("alice")), &[]).await;
    assert_eq!(status, 401);
    // Sizes with keel stopped and the WAL checkpointed: the WAL's own size follows its
    // checkpoint threshold (16 MiB of pages), whatever each write stores.
    k.stop();
    let before = db_bytes(&k);
    k.restart(&[]);
    let client = reqwest::Client::new();
    for i in 0..1000 {
        let login = format!("{i:04}{}", "x".repeat(900 * 1024));
        let status = client
            .post(format!("{}/api/v1/passwd", k.url))
            .json(&body(&login))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        // Read whole and refused as wrong or throttled (a 1 MiB body fits the limit): the
        // handler saw each of them.
        assert!(matches!(status, 401 | 429), "{status}");
    }
    k.stop();
    let grown = db_bytes(&k).saturating_sub(before);
    assert!(grown < 1 << 20, "the database grew by {grown} bytes");
    assert!(
        k.log().len() < 4 << 20,
        "the log holds the logins: {} bytes",
        k.log().len()
    );
}

/// The data directory and every file in it are private (0700 / no bits for others), from the
/// first start on; so are the agent's staged and journal files (see keel-agent's tests).
#[tokio::test]
async fn the_data_directory_is_private() {
    let k = Keel::start(&["--example-site"]);
    let data = k.data();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let mut files = 0;
    for e in std::fs::read_dir(&data).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            files += 1;
            assert_eq!(mode(&p) & 0o077, 0, "{} is {:o}", p.display(), mode(&p));
        }
    }
    assert!(files >= 3, "keel.db, its WAL, the token at least");
    assert!(data.join("keel.db-wal").exists());
}

/// The database's size with its WAL checkpointed into it (by the real `sqlite3`, keel stopped):
/// what is stored, not how many writes the WAL has seen since its last checkpoint.
fn db_bytes(k: &Keel) -> u64 {
    crate::support::require_tool("sqlite3");
    let db = k.data().join(files::DB);
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA wal_checkpoint(TRUNCATE);")
        .output()
        .expect("sqlite3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::metadata(&db).expect("keel.db").len()
}

/// keel's resident memory, from /proc.
fn rss_kib(k: &Keel) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", k.pid())).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// This test process holds thousands of sockets itself.
/// Sends `payload` to `to` as a UDP datagram that seems to come from `from` (a raw socket: the
/// test forges the source port of one of keel's own services; needs CAP_NET_RAW, as CI has).
fn forge_udp(from: std::net::SocketAddr, to: std::net::SocketAddr, payload: &[u8]) {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
        .expect("a raw socket (the forging tests need root or CAP_NET_RAW)");
    let len = u16::try_from(8 + payload.len()).unwrap();
    let mut packet = Vec::with_capacity(8 + payload.len());
    packet.extend_from_slice(&from.port().to_be_bytes());
    packet.extend_from_slice(&to.port().to_be_bytes());
    packet.extend_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(&[0, 0]); // no checksum (IPv4 allows it)
    packet.extend_from_slice(payload);
    sock.send_to(&packet, &to.into()).expect("send the forged packet");
}

/// What keel's DNS and TFTP have answered so far (DNS answers of every code, TFTP outcomes).
async fn udp_answers(k: &Keel) -> u64 {
    let text = reqwest::get(format!("{}/metrics", k.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("keel_dns_answers_total") || l.starts_with("keel_tftp_transfers_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Issue 31: keel's DNS answered FORMERR to anything unparsable and its TFTP answered "busy" from
/// its listening port to anything: 30 packets forged from one's address to the other started an
/// exchange of ~86,000 packets a second. Forged between keel's own DNS and TFTP, and between two
/// keel servers, packets now die out: the answers stay bounded by the packets sent.
#[tokio::test]
async fn forged_packets_between_keels_dns_and_tftp_die_out() {
    let a = Keel::start(&[]);
    let b = Keel::start(&[]);
    let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
    let (dns_a, tftp_a, dns_b, tftp_b) = (addr(&a.dns), addr(&a.tftp), addr(&b.dns), addr(&b.tftp));
    // Before: a real query is answered (the counters count).
    let before = udp_answers(&a).await + udp_answers(&b).await;
    let mut query = keel_testkit::dns_query(1, "gw.prolo");
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(&query, dns_a).unwrap();
    let mut buf = [0u8; 1500];
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    client.recv_from(&mut buf).expect("a real query is answered");
    // The forgeries: every pairing of the two services, each kind of packet that started it.
    let busy = b"\x00\x05\x00\x00server busy: try again\x00";
    let rrq = b"\x00\x01nothing\x00octet\x00";
    let ack = b"\x00\x04\x00\x01";
    let mut sent = 1u64;
    for _ in 0..5 {
        for (from, to) in [
            (dns_a, tftp_a),
            (tftp_a, dns_a),
            (dns_a, tftp_b),
            (dns_b, dns_a),
            (tftp_b, dns_a),
        ] {
            for payload in [&busy[..], rrq, ack, &query[..], b"\x12"] {
                forge_udp(from, to, payload);
                sent += 1;
            }
        }
        query[0] ^= 1; // another id: 0 and 1 read as TFTP opcodes too
    }
    // Wait until both servers are quiet (their counters stop moving), then count.
    let mut last = u64::MAX;
    eventually(30, "keel's DNS and TFTP quiet again", async || {
        let now = udp_answers(&a).await + udp_answers(&b).await;
        let quiet = now == last;
        last = now;
        if !quiet {
            // sleep-ok: a counter's rate is sampled over time; 1.5 s outlasts a TFTP transfer's
            // wait for an ACK (1 s), which ends, and is counted, that late.
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        }
        quiet
    })
    .await;
    let answered = last - before;
    assert!(
        answered <= sent,
        "{answered} answers to {sent} packets: an answer was answered (it was 259,235 FORMERR in 3 s)"
    );
}

/// Where the flood test's keel listens, for keel-testkit's floods and probes.
fn target(k: &Keel, login: &str) -> flood::Target {
    flood::Target {
        http: k.url.trim_start_matches("http://").parse().unwrap(),
        https: None,
        dns: k.dns.parse().unwrap(),
        token: k.token.clone(),
        login: login.into(),
        hostname: "r00p01".into(),
        name: "gw.prolo".into(),
    }
}

/// What another client (127.0.0.1) must still get, each within 5 s: health, nginx's SSO, a
/// presence login, DNS over UDP and TCP, and an admin's watch stream.
async fn others_are_served(t: &flood::Target) {
    for p in flood::Probe::ALL {
        if let Err(e) = flood::probe(p, [127, 0, 0, 1], t).await {
            panic!("{e}");
        }
    }
}

/// Issue 31: one client (127.0.0.2) flooding each pooled resource — idle HTTP connections,
/// anonymous `/poll` streams, DNS-over-TCP connections it never reads — fills its own share,
/// and another client's health, SSO, presence login, DNS and an admin's watch still answer
/// (`keel bench flood` times them).
#[tokio::test]
async fn one_source_flooding_each_resource_leaves_the_others_their_share() {
    flood::raise_open_file_limit(4096).unwrap();
    // Small pools, so that one client could take all of each without its share.
    let k = Keel::start_with_config(
        "[presence]\nrecovery_secs = 0\n[watch]\nmax_subscribers = 40\n[http]\nmax_connections = 300\n",
        &["--example-site"],
    );
    add_user(&k, "alice", "user").await;
    let t = target(&k, "alice");
    others_are_served(&t).await;
    // Twice the whole pool of idle connections: it keeps its share (up to the reserve).
    let held = flood::start(flood::Flood::IdleHttp(600), [127, 0, 0, 2], &t).await;
    others_are_served(&t).await;
    drop(held);
    // Anonymous /poll streams: its share (16), then 503; an admin's watch has its own.
    let held = flood::start(flood::Flood::AnonymousPolls(45), [127, 0, 0, 2], &t).await;
    assert!(
        held.refused > 0 && held.streams.len() <= 16,
        "{} streams held, {} refused",
        held.streams.len(),
        held.refused
    );
    others_are_served(&t).await;
    drop(held);
    // DNS over TCP: connections that pipeline queries and never read an answer.
    let _held = flood::start(flood::Flood::DnsNonReaders(200), [127, 0, 0, 2], &t).await;
    others_are_served(&t).await;
}
