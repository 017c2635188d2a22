//! The watch stream: resumable across crashes and disconnects, snapshots when too far behind,
//! slow consumers cut off without slowing anyone else, and the prologin `/poll` feed.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_client::{Client, WatchEvent, WatchOptions};
use keel_model::{Kind, Op};
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{eventually, machine_rows, Keel, BIG_POOLS};

/// A consumer's view: the records it holds and every change seq it saw.
#[derive(Default)]
struct View {
    records: BTreeMap<(Kind, String), Value>,
    seqs: Vec<u64>,
    snapshots: usize,
}

fn key(kind: Kind, data: &Value) -> String {
    match kind {
        Kind::Machine => data["id"].to_string(),
        Kind::Switch => data["name"].to_string(),
        Kind::Setting | Kind::Counter => data["key"].to_string(),
        Kind::User | Kind::Session => data["login"].to_string(),
        Kind::Host | Kind::Facility => data["name"].to_string(),
        Kind::Destination => format!("{}/{}/{}", data["facility"], data["service"], data["destination"]),
        Kind::Role => data["role"].to_string(),
    }
}

impl View {
    fn apply(&mut self, ev: WatchEvent) {
        match ev {
            WatchEvent::SnapshotBegin { .. } => {
                self.records.clear();
                self.snapshots += 1;
            }
            WatchEvent::Record { kind, data } => {
                self.records.insert((kind, key(kind, &data)), data);
            }
            WatchEvent::SnapshotEnd { .. } => {}
            WatchEvent::Change { seq, kind, op, data } => {
                self.seqs.push(seq);
                let k = (kind, key(kind, &data));
                match op {
                    Op::Put => self.records.insert(k, data),
                    Op::Delete => self.records.remove(&k),
                };
            }
        }
    }
}

fn opts(since: Option<u64>) -> WatchOptions {
    WatchOptions {
        since,
        reconnect: true,
        idle_timeout: Duration::from_secs(5),
        ..WatchOptions::default()
    }
}

/// The server's whole state, as a fresh snapshot.
async fn server_view(c: &Client) -> (View, u64) {
    let mut w = c.watch(opts(None));
    let mut v = View::default();
    loop {
        match w.next().await.unwrap() {
            WatchEvent::SnapshotEnd { seq } => return (v, seq),
            ev => v.apply(ev),
        }
    }
}

async fn import(c: &Client, rows: Vec<Value>) {
    c.call::<Value>(
        Method::POST,
        "/api/v1/machines/import",
        Some(&json!({ "machines": rows })),
        None,
    )
    .await
    .unwrap();
}

/// A consumer reading 10,000 changes while the server is kill -9ed and restarted twice, and while
/// it is itself disconnected, ends with the server's state and sees every seq exactly once.
#[tokio::test]
async fn watch_resumes_across_kill9_and_disconnects() {
    let mut k = Keel::start_with_config(
        &format!("{BIG_POOLS}[watch]\nheartbeat_secs = 1\n"),
        &["--example-site"],
    );
    let base_seq = k.seq().await;
    let consumer_client = k.admin();
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(0u64);
    let consumer = tokio::spawn(async move {
        let mut w = consumer_client.watch(opts(None));
        let mut v = View::default();
        let mut disconnected = false;
        loop {
            let target = *done_rx.borrow();
            if target != 0 && w.last_seq() >= Some(target) {
                return v;
            }
            tokio::select! {
                ev = w.next() => v.apply(ev.unwrap()),
                _ = done_rx.changed() => continue,
            };
            if !disconnected && v.seqs.len() >= 3000 {
                w.disconnect(); // the consumer itself drops off and comes back
                disconnected = true;
            }
        }
    });
    for batch in 0..20u32 {
        if batch == 7 || batch == 14 {
            k.kill9();
            k.restart_same_port();
        }
        import(&k.admin(), machine_rows("w", 1, batch * 500..batch * 500 + 500)).await;
    }
    let final_seq = k.seq().await;
    assert_eq!(final_seq, base_seq + 10_000);
    done_tx.send(final_seq).unwrap();
    let v = tokio::time::timeout(Duration::from_secs(60), consumer)
        .await
        .expect("consumer finished")
        .unwrap();
    assert_eq!(
        v.snapshots, 1,
        "resumed from its seq each time, never a second snapshot"
    );
    assert_eq!(
        v.seqs,
        (base_seq + 1..=final_seq).collect::<Vec<_>>(),
        "every seq once, in order"
    );
    let (server, _) = server_view(&k.admin()).await;
    assert_eq!(v.records, server.records, "the consumer ends with the server's state");
}

/// A `since` older than the retained log, or from another database, gets a snapshot, never a gap.
#[tokio::test]
async fn too_old_or_foreign_since_gets_a_snapshot() {
    let mut k = Keel::start_with_config("[log]\nkeep_changes = 3\n", &["--example-site"]);
    k.restart(&[]); // retention runs at start
    let seq = k.seq().await;
    let c = k.admin();
    let first_event = |since: Option<u64>, db_id: Option<String>| {
        let c = c.clone();
        async move {
            let mut w = c.watch(WatchOptions {
                since,
                db_id,
                ..opts(None)
            });
            w.next().await.unwrap()
        }
    };
    assert!(matches!(
        first_event(Some(1), None).await,
        WatchEvent::SnapshotBegin { .. }
    ));
    assert!(matches!(
        first_event(Some(seq - 1), Some("another-db".into())).await,
        WatchEvent::SnapshotBegin { .. }
    ));
    // Inside the retained log: the changes themselves.
    match first_event(Some(seq - 2), None).await {
        WatchEvent::Change { seq: s, .. } => assert_eq!(s, seq - 1),
        other => panic!("expected a change, got {other:?}"),
    }
}

/// A consumer that stops reading is cut off with a reason line; writers and other consumers go on.
#[tokio::test]
async fn stalled_consumer_is_cut_off_alone() {
    stalled_consumer(false).await;
}

/// The same for a consumer that stalls in the live phase, where the HTTP body takes changes from
/// the broadcast itself and only the stream's watchdog can see that nobody reads.
#[tokio::test]
async fn stalled_live_consumer_is_cut_off_by_the_watchdog() {
    stalled_consumer(true).await;
}

async fn stalled_consumer(live: bool) {
    let cfg = format!("{BIG_POOLS}[watch]\nbuffer = 16\nstall_timeout_secs = 1\nheartbeat_secs = 1\n");
    let k = Keel::start_with_config(&cfg, &[]);
    let addr: std::net::SocketAddr = k.url.trim_start_matches("http://").parse().unwrap();
    // The stalled consumer: a tiny receive buffer, a request, and then no reading at all.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stalled = sock.connect(addr).await.unwrap();
    let since = if live {
        format!("?since={}", k.seq().await)
    } else {
        String::new()
    };
    let req = format!(
        "GET /api/v1/watch{since} HTTP/1.1\r\nHost: keel\r\nAuthorization: Bearer {}\r\n\r\n",
        k.token
    );
    tokio::io::AsyncWriteExt::write_all(&mut stalled, req.as_bytes())
        .await
        .unwrap();
    let healthy_client = k.admin();
    let start = k.seq().await;
    let healthy = tokio::spawn(async move {
        let mut w = healthy_client.watch(opts(Some(start)));
        let mut n = 0;
        while n < 30_000 {
            if let WatchEvent::Change { .. } = w.next().await.unwrap() {
                n += 1;
            }
        }
        n
    });
    // Enough lines to fill the kernel's socket buffers (up to 4 MiB) and hyper's behind them.
    for batch in 0..3 {
        import(&k.admin(), machine_rows("s", 2, batch * 10_000..(batch + 1) * 10_000)).await;
    }
    let got = tokio::time::timeout(Duration::from_secs(120), healthy)
        .await
        .expect("healthy consumer done")
        .unwrap();
    assert_eq!(got, 30_000);
    // The server counted the cut; the stalled consumer, reading at last, finds the reason.
    eventually(10, "a slow-consumer disconnect was counted", async || {
        let m = reqwest::get(format!("{}/metrics", k.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.lines()
            .any(|l| l.starts_with("keel_watch_disconnects_total") && !l.ends_with(" 0"))
    })
    .await;
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut stalled, &mut buf).await.unwrap();
            assert!(n > 0, "stream closed without a reason line");
            seen.extend_from_slice(&buf[..n]);
            let tail = String::from_utf8_lossy(&seen[seen.len().saturating_sub(4096)..]).into_owned();
            if tail.contains("too slow") {
                // Live, the watchdog cuts it before the broadcast could tell it fell behind.
                assert!(!live || tail.contains("accepted nothing"), "{tail}");
                if live {
                    resumes_where_it_ended(&seen);
                }
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no reason line reached the stalled consumer");
}

/// A cut stream's changes run without a gap up to the seq its reason line gives: resuming from
/// there loses nothing.
fn resumes_where_it_ended(raw: &[u8]) {
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(raw)
        .lines()
        .filter(|l| l.starts_with('{')) // not the chunked encoding's size lines
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = lines
        .iter()
        .filter(|v| v.get("kind").is_some())
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "a gap in the changes sent");
    let end = lines.last().unwrap();
    assert_eq!(end["type"], "error");
    assert_eq!(end["seq"].as_u64(), seqs.last().copied(), "{end}");
}

/// `/poll` speaks prologin's mdbsync: the whole set first, then one array line per batch.
#[tokio::test]
async fn poll_is_prologin_compatible() {
    let k = Keel::start(&["--example-site"]);
    let resp = reqwest::Client::new()
        .get(format!("{}/mdb/poll", k.url))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut lines: Vec<Value> = Vec::new();
    let mut written = false;
    while lines.len() < 2 {
        // The change comes once the snapshot line is read: it is then in the live phase, whatever
        // the timing.
        if lines.len() == 1 && !written {
            written = true;
            k.admin()
                .call::<Value>(
                    Method::POST,
                    "/api/v1/machines",
                    Some(&json!({"hostname": "new", "mac": "02:00:00:00:00:aa", "mtype": "user"})),
                    None,
                )
                .await
                .unwrap();
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), futures_util::StreamExt::next(&mut stream))
            .await
            .expect("a line in time")
            .unwrap()
            .unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            lines.push(serde_json::from_slice(&line).unwrap());
        }
    }
    let first = lines[0].as_array().unwrap();
    assert_eq!(first.len(), 6);
    assert!(first.iter().all(|e| e["type"] == "update"));
    let gw = first.iter().find(|e| e["data"]["hostname"] == "gw").unwrap();
    assert_eq!(gw["data"]["aliases"].as_str().unwrap().split(',').next(), Some("mdb"));
    assert_eq!(lines[1], json!([{"type": "update", "data": lines[1][0]["data"]}]));
    assert_eq!(lines[1][0]["data"]["hostname"], "new");
}

/// `keel watch` on an empty database prints an empty snapshot, then waits for changes.
#[tokio::test]
async fn cli_watch_prints_an_empty_snapshot_and_waits() {
    use tokio::io::AsyncBufReadExt;
    let k = Keel::start(&[]);
    let mut child = tokio::process::Command::new(crate::support::KEEL)
        .args(["watch", "--kinds", "machine"])
        .env("KEEL_URL", &k.url)
        .env("KEEL_TOKEN", &k.token)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    async fn next(out: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) -> String {
        tokio::time::timeout(Duration::from_secs(10), out.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }
    assert_eq!(next(&mut out).await, "snapshot at seq 0:");
    assert_eq!(next(&mut out).await, "end of snapshot (seq 0); waiting for changes");
    k.admin()
        .call::<Value>(
            Method::POST,
            "/api/v1/machines",
            Some(&json!({"hostname": "a1", "mac": "02:00:00:00:00:01", "mtype": "user"})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(next(&mut out).await, "1 put machine a1");
    assert!(child.try_wait().unwrap().is_none(), "keel watch keeps waiting");
}

/// SIGTERM with watch streams open: the streams end and the server exits cleanly, promptly.
#[tokio::test]
async fn stop_with_open_streams_is_prompt_and_clean() {
    let mut k = Keel::start(&["--example-site"]);
    let mut w = k.admin().watch(WatchOptions {
        reconnect: false,
        ..opts(None)
    });
    assert!(matches!(w.next().await.unwrap(), WatchEvent::SnapshotBegin { .. }));
    let poll = reqwest::get(format!("{}/poll", k.url)).await.unwrap();
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let s = k.stop();
        (s, k)
    })
    .await
    .unwrap()
    .0;
    assert!(
        status.is_some_and(|s| s.success()),
        "keel did not exit cleanly: {status:?}"
    );
    // Not a speed measure: the server's own fallback would end it after 10 s; this proves it did not wait.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stopping waited for the streams: {:?}",
        started.elapsed()
    );
    drop(poll);
}
