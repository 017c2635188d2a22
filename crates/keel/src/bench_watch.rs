//! `keel bench watch`: one change fanned out to many subscribers (latency), a bulk import fanned out
//! to 100 subscribers (time until the last has everything, drops), memory per idle subscriber.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keel_client::Client;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::bench::{percentile, rss_mb, start_server};
use crate::output::table;

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct WatchReport {
    subscribers: usize,
    idle_http_connection_kib: f64,
    rss_before_mb: f64,
    rss_after_mb: f64,
    per_subscriber_kib: f64,
    one_change_p50_ms: f64,
    one_change_p99_ms: f64,
    to_last_subscriber_max_ms: f64,
    fanout_subscribers: usize,
    fanout_changes: u64,
    fanout_secs: f64,
    fanout_drops: u64,
}

/// A delivery: which subscriber, which seq, when.
type Delivery = (usize, u64, Instant);

pub(crate) async fn run(dir: &Path, n: usize) -> anyhow::Result<WatchReport> {
    std::fs::create_dir_all(dir)?;
    let server = start_server(dir)?;
    let client = Client::new(&server.url, Some(server.token.clone()))?;
    let mut r = WatchReport {
        subscribers: n,
        ..Default::default()
    };
    r.idle_http_connection_kib = idle_connection_kib(&dir.join("baseline"), n).await?;
    r.rss_before_mb = rss_mb(server.child.id())?;
    let since: Value = client.get("/healthz").await?;
    let since = since["seq"].as_u64().unwrap_or(0);
    eprintln!("bench: opening {n} watch subscribers");
    let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
    let http = reqwest::Client::new();
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut subs = Vec::with_capacity(n);
    for id in 0..n {
        subs.push(tokio::spawn(subscriber(
            addr.clone(),
            server.token.clone(),
            since,
            id,
            tx.clone(),
        )));
    }
    wait_for_subscribers(&http, &server.url, n).await?;
    r.rss_after_mb = rss_mb(server.child.id())?;
    r.per_subscriber_kib = (r.rss_after_mb - r.rss_before_mb) * 1024.0 / n as f64;
    eprintln!("bench: one change to {n} subscribers, 20 times");
    let (all, to_last) = one_change_rounds(&client, &mut rx, n, 20).await?;
    (r.one_change_p50_ms, r.one_change_p99_ms) = (percentile(&all, 0.5), percentile(&all, 0.99));
    r.to_last_subscriber_max_ms = to_last.iter().copied().fold(0.0, f64::max);
    let keep = n.min(100);
    for s in subs.drain(keep..) {
        s.abort();
    }
    wait_for_subscribers(&http, &server.url, keep).await?;
    eprintln!("bench: a 10,000-machine import to {keep} subscribers");
    (r.fanout_secs, r.fanout_drops) = bulk_fanout(&client, &mut rx, keep, 10_000).await?;
    (r.fanout_subscribers, r.fanout_changes) = (keep, 10_000);
    Ok(r)
}

pub(crate) fn print(r: &WatchReport, n: usize) {
    let rows = vec![
        vec![
            format!("one change → {n} subscribers (20 rounds)"),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms (slowest round to its last subscriber {:.2} ms)",
                r.one_change_p50_ms, r.one_change_p99_ms, r.to_last_subscriber_max_ms
            ),
            "p99 < 10 ms".into(),
        ],
        vec![
            format!("10,000-machine import → {} subscribers", r.fanout_subscribers),
            format!(
                "{:.2} s until the last has every change, {} dropped",
                r.fanout_secs, r.fanout_drops
            ),
            "< 2 s, no drops".into(),
        ],
        vec![
            "memory per idle subscriber".into(),
            format!(
                "{:.1} KiB (server RSS {:.1} → {:.1} MB)",
                r.per_subscriber_kib, r.rss_before_mb, r.rss_after_mb
            ),
            "< 20 KiB".into(),
        ],
        vec![
            "for comparison: an idle keep-alive HTTP connection".into(),
            format!("{:.1} KiB", r.idle_http_connection_kib),
            String::new(),
        ],
    ];
    println!("{}", table(&["measure", "result", "target"], rows));
}

/// For comparison: server memory per idle keep-alive HTTP connection that served one request,
/// measured on a server of its own (an allocator keeps freed memory, which would skew the other).
async fn idle_connection_kib(dir: &Path, n: usize) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    std::fs::create_dir_all(dir)?;
    let server = start_server(dir)?;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let before = rss_mb(server.child.id())?;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: keel\r\n\r\n").await?;
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await?;
        conns.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_mb(server.child.id())?;
    drop(conns);
    Ok((after - before) * 1024.0 / n as f64)
}

/// Reads one watch stream and reports each change's seq as it arrives. A bare HTTP/1.1 reader, not a
/// full client: the figures should be the server's fan-out, not this process's HTTP stack. (Each
/// line arrives whole inside one chunk of the chunked encoding, so splitting on newlines finds them;
/// the chunk-size lines in between are not change lines and are skipped.)
async fn subscriber(addr: String, token: String, since: u64, id: usize, tx: mpsc::UnboundedSender<Delivery>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let request =
        format!("GET /api/v1/watch?since={since} HTTP/1.1\r\nHost: keel\r\nAuthorization: Bearer {token}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
            if let Some(seq) = seq_of(&buf[start..start + i]) {
                if tx.send((id, seq, now)).is_err() {
                    return;
                }
            }
            start += i + 1;
        }
        buf.drain(..start);
    }
}

/// The seq of a change line (`{"seq":N,…`), without parsing the whole line; `None` for other lines.
fn seq_of(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|&b| b == b',')?;
    if rest[end..].starts_with(b",\"type\":\"heartbeat\"") {
        return Some(u64::MAX);
    }
    if rest[end..].starts_with(b",\"type\"") {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

async fn wait_for_subscribers(http: &reqwest::Client, url: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let want = format!("keel_watch_subscribers {n}");
    while Instant::now() < deadline {
        let text = http.get(format!("{url}/metrics")).send().await?.text().await?;
        if text.lines().any(|l| l == want) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the server never had {n} subscribers")
}

/// Writes one change per round; returns every delivery's latency and, per round, the latency to
/// the last subscriber. Latency runs from just before the write is sent.
async fn one_change_rounds(
    c: &Client,
    rx: &mut mpsc::UnboundedReceiver<Delivery>,
    n: usize,
    rounds: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut all, mut to_last) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        while rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        let sw: Value = c
            .call(
                Method::POST,
                "/api/v1/switches",
                Some(&json!({"name": format!("bench-sw-{round}")})),
                None,
            )
            .await?
            .value;
        let seq = sw["version"].as_u64().context("no version")?;
        let mut got = 0;
        let mut last = 0.0;
        while got < n {
            let (_, s, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await?
                .context("subscribers gone")?;
            if s == seq {
                let ms = at.duration_since(t0).as_secs_f64() * 1000.0;
                all.push(ms);
                last = ms;
                got += 1;
            }
        }
        to_last.push(last);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((all, to_last))
}

/// Imports `count` machines in one commit; returns the time until every subscriber had every
/// change, and how many changes did not arrive in order.
async fn bulk_fanout(
    c: &Client,
    rx: &mut mpsc::UnboundedReceiver<Delivery>,
    subs: usize,
    count: u32,
) -> anyhow::Result<(f64, u64)> {
    while rx.try_recv().is_ok() {}
    let rows: Vec<Value> = (0..count)
        .map(|k| json!({"hostname": format!("fan{k}"), "mac": crate::bench::mac_of(0x0100_0000 + k), "mtype": "user"}))
        .collect();
    let t0 = Instant::now();
    let before: Value = c.get("/healthz").await?;
    let first = before["seq"].as_u64().unwrap_or(0) + 1;
    let last = first + u64::from(count) - 1;
    crate::bench::import(c, rows).await?;
    eprintln!(
        "bench: the import was acknowledged after {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let mut next: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
    let (mut done, mut drops, mut end) = (0, 0u64, t0);
    while done < subs {
        let (id, s, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await?
            .context("subscribers gone")?;
        if s == u64::MAX || s < first {
            continue; // a heartbeat, or a round of the latency test
        }
        let expect = next.entry(id).or_insert(first);
        if s != *expect {
            drops += 1;
        }
        *expect = s + 1;
        if s == last {
            done += 1;
            end = at;
        }
    }
    Ok((end.duration_since(t0).as_secs_f64(), drops))
}
