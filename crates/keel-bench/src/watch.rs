//! `keel bench watch`: one change fanned out to many subscribers (latency), a bulk import fanned out
//! to 100 subscribers (time until the last has everything, drops), memory per idle subscriber.
//! Deliveries are timed by the kernel's receive timestamps (see [`Readers`]).

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use keel_client::{Client, Records};
use serde_json::{json, Value};

use crate::output::table;
use crate::server::{percentile, rss_mb, start_server};

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct WatchReport {
    subscribers: usize,
    idle_http_connection_kib: f64,
    rss_before_mb: f64,
    rss_after_mb: f64,
    per_subscriber_kib: f64,
    /// From just before the write to the change's arrival in each subscriber's socket (the
    /// kernel's receive timestamp).
    one_change_p50_ms: f64,
    one_change_p99_ms: f64,
    to_last_subscriber_max_ms: f64,
    /// Per round, the first arrival: the write (HTTP, commit with its fsync, broadcast).
    first_arrival_p50_ms: f64,
    first_arrival_p99_ms: f64,
    first_arrival_max_ms: f64,
    /// Each arrival after its round's first: the fan-out alone.
    after_first_p50_ms: f64,
    after_first_p99_ms: f64,
    fanout_subscribers: usize,
    fanout_changes: u64,
    fanout_secs: f64,
    fanout_drops: u64,
}

/// Latency rounds: the p99 of 200 × 1,000 deliveries is not at the mercy of one slow round.
const ROUNDS: usize = 200;

/// A delivery: which subscriber, which seq, when it reached the subscriber's socket (the kernel's
/// receive timestamp, if it gave one, else when it was read).
type Delivery = (usize, u64, SystemTime);

/// The deliveries one look at the sockets found: sent to the collector as one message, so that
/// waking it costs one context switch per look, not one per delivery.
type Batch = Vec<Delivery>;

pub(crate) async fn run(dir: &Path, n: usize) -> anyhow::Result<WatchReport> {
    std::fs::create_dir_all(dir)?;
    let server = start_server(dir)?;
    let client = Client::new(&server.url, Some(server.token.clone()))?;
    let mut r = WatchReport {
        subscribers: n,
        ..Default::default()
    };
    r.idle_http_connection_kib = idle_connection_kib(&dir.join("baseline"), n).await?;
    r.rss_before_mb = rss_mb(server.pid())?;
    let since: Value = client.get("/healthz").await?;
    let since = since["seq"].as_u64().unwrap_or(0);
    eprintln!("bench: opening {n} watch subscribers");
    let (tx, rx) = mpsc::channel::<Batch>();
    let http = reqwest::Client::new();
    let addr = server.url.trim_start_matches("http://").to_owned();
    let readers = Readers::start(tx)?;
    for id in 0..n {
        readers.add(id, subscribe(&addr, &server.token, since).await?);
    }
    wait_for_subscribers(&http, &server.url, n).await?;
    r.rss_after_mb = rss_mb(server.pid())?;
    r.per_subscriber_kib = (r.rss_after_mb - r.rss_before_mb) * 1024.0 / n as f64;
    eprintln!("bench: one change to {n} subscribers, {ROUNDS} times");
    let rounds = one_change_rounds(&client, &rx, n, ROUNDS).await?;
    let p50_p99 = |v: &[f64]| (percentile(v, 0.5), percentile(v, 0.99));
    (r.one_change_p50_ms, r.one_change_p99_ms) = p50_p99(&rounds.all);
    (r.first_arrival_p50_ms, r.first_arrival_p99_ms) = p50_p99(&rounds.first);
    r.first_arrival_max_ms = rounds.first.iter().copied().fold(0.0, f64::max);
    (r.after_first_p50_ms, r.after_first_p99_ms) = p50_p99(&rounds.after_first);
    r.to_last_subscriber_max_ms = rounds.to_last.iter().copied().fold(0.0, f64::max);
    let keep = n.min(100);
    readers.keep_first(keep);
    wait_for_subscribers(&http, &server.url, keep).await?;
    eprintln!("bench: a 10,000-machine import to {keep} subscribers");
    (r.fanout_secs, r.fanout_drops) = bulk_fanout(&client, &rx, keep, 10_000).await?;
    (r.fanout_subscribers, r.fanout_changes) = (keep, 10_000);
    readers.stop()?;
    Ok(r)
}

pub(crate) fn print(r: &WatchReport, n: usize) {
    let rows = vec![
        vec![
            format!("one change → {n} subscribers' sockets ({ROUNDS} rounds)"),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms (slowest round to its last subscriber {:.2} ms)",
                r.one_change_p50_ms, r.one_change_p99_ms, r.to_last_subscriber_max_ms
            ),
            "p99 < 10 ms".into(),
        ],
        vec![
            "  … the write: to a round's first arrival".into(),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                r.first_arrival_p50_ms, r.first_arrival_p99_ms, r.first_arrival_max_ms
            ),
            String::new(),
        ],
        vec![
            "  … the fan-out: each arrival after its round's first".into(),
            format!("p50 {:.2} ms, p99 {:.2} ms", r.after_first_p50_ms, r.after_first_p99_ms),
            String::new(),
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
    let before = rss_mb(server.pid())?;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: keel\r\n\r\n").await?;
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await?;
        conns.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_mb(server.pid())?;
    drop(conns);
    Ok((after - before) * 1024.0 / n as f64)
}

/// Opens one watch stream: a bare HTTP/1.1 request, not a full client — the figures should be the
/// server's fan-out, not this process's HTTP stack. The socket asks the kernel for receive
/// timestamps.
async fn subscribe(addr: &str, token: &str, since: u64) -> anyhow::Result<std::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::ReceiveTimestampns, &true)?;
    let request =
        format!("GET /api/v1/watch?since={since} HTTP/1.1\r\nHost: keel\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    Ok(stream.into_std()?) // still non-blocking
}

/// The subscribers' reading side: one thread that wakes every [`POLL`] and reads every socket with
/// data (epoll), reporting each change line with the kernel's receive timestamp — when the bytes
/// reached the socket; on loopback, inside the server's own write.
///
/// Why not a task per subscriber: then the bench's threads sleep and are woken for nearly every
/// one of the 1,000 deliveries (~1,000 context switches a round), and on loopback that wake-up is
/// paid inside the *server's* write, while a thousand readers share the server's two cores.
/// Subscribers on other hosts cost the server neither; this reader costs it little of either.
struct Readers {
    add: mpsc::Sender<(usize, std::net::TcpStream)>,
    keep: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

/// How often the reader thread looks at its sockets.
const POLL: Duration = Duration::from_micros(250);

impl Readers {
    fn start(tx: mpsc::Sender<Batch>) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        let (add, added) = mpsc::channel();
        let keep = std::sync::Arc::new(AtomicUsize::new(usize::MAX));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (k, st) = (keep.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("bench-readers".into())
            .spawn(move || read_all(&added, &k, &st, &tx))?;
        Ok(Self {
            add,
            keep,
            stop,
            thread,
        })
    }

    fn add(&self, id: usize, stream: std::net::TcpStream) {
        let _ = self.add.send((id, stream));
    }

    /// Closes every stream but the first `n`.
    fn keep_first(&self, n: usize) {
        self.keep.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        match self.thread.join() {
            Ok(r) => Ok(r?),
            Err(_) => bail!("the reader thread panicked"),
        }
    }
}

/// One subscriber's stream and the partial line it ended on.
struct Sub {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

fn read_all(
    added: &mpsc::Receiver<(usize, std::net::TcpStream)>,
    keep: &std::sync::atomic::AtomicUsize,
    stop: &std::sync::atomic::AtomicBool,
    tx: &mpsc::Sender<Batch>,
) -> std::io::Result<()> {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    use std::sync::atomic::Ordering::Relaxed;
    // The kernel stamps each delivery when it arrives, so when this thread gets to read it does
    // not change the figures; it should not take the server's CPU while the server fans out.
    // (On Linux the nice value of PRIO_PROCESS 0 is this thread's.)
    rustix::process::setpriority_process(None, 19)?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let mut subs: Vec<Option<Sub>> = Vec::new();
    let mut events = vec![EpollEvent::empty(); 1024];
    let mut chunk = vec![0u8; 64 * 1024];
    while !stop.load(Relaxed) {
        while let Ok((id, stream)) = added.try_recv() {
            epoll.add(
                &stream,
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, id as u64),
            )?;
            if subs.len() <= id {
                subs.resize_with(id + 1, || None);
            }
            subs[id] = Some(Sub {
                stream,
                buf: Vec::new(),
            });
        }
        if keep.load(Relaxed) < subs.len() {
            for gone in subs.drain(keep.load(Relaxed)..).flatten() {
                epoll.delete(&gone.stream)?;
            }
        }
        std::thread::sleep(POLL);
        let ready = epoll.wait(&mut events, EpollTimeout::ZERO)?;
        let mut batch = Vec::new();
        for ev in &events[..ready] {
            let Ok(id) = usize::try_from(ev.data()) else { continue };
            let Some(slot) = subs.get_mut(id) else { continue };
            if slot.as_mut().is_some_and(|sub| !sub.drain(id, &mut chunk, &mut batch)) {
                if let Some(sub) = slot.take() {
                    epoll.delete(&sub.stream)?;
                }
            }
        }
        if !batch.is_empty() && tx.send(batch).is_err() {
            return Ok(()); // nobody is collecting any more
        }
    }
    Ok(())
}

impl Sub {
    /// Reads until the socket is empty (edge-triggered); false once the stream ended.
    fn drain(&mut self, id: usize, chunk: &mut [u8], out: &mut Batch) -> bool {
        loop {
            let (n, arrived) = match recv_stamped(&self.stream, chunk) {
                Ok((0, _)) => return false,
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            };
            let arrived = arrived.unwrap_or_else(SystemTime::now);
            self.buf.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some(i) = self.buf[start..].iter().position(|&b| b == b'\n') {
                if let Some(seq) = seq_of(&self.buf[start..start + i]) {
                    out.push((id, seq, arrived));
                }
                start += i + 1;
            }
            self.buf.drain(..start);
        }
    }
}

/// One `recvmsg`: the bytes read, and the kernel's receive timestamp of the last of them.
fn recv_stamped(stream: &std::net::TcpStream, buf: &mut [u8]) -> std::io::Result<(usize, Option<SystemTime>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())?;
    let arrived = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::ScmTimestampns(ts) => {
            let since_epoch = Duration::new(u64::try_from(ts.tv_sec()).ok()?, u32::try_from(ts.tv_nsec()).ok()?);
            Some(SystemTime::UNIX_EPOCH + since_epoch)
        }
        _ => None,
    });
    Ok((msg.bytes, arrived))
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

/// How often the collector looks for deliveries: it is not woken for them, so that collecting
/// takes no CPU from the server while it fans a change out (the figures are the kernel's
/// timestamps, taken as the deliveries arrive, not when they are collected).
const COLLECT: Duration = Duration::from_millis(2);

/// Every delivery the reader thread has reported, once there is at least one.
async fn collect(rx: &mpsc::Receiver<Batch>, timeout: Duration) -> anyhow::Result<Batch> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut got = Batch::new();
        loop {
            match rx.try_recv() {
                Ok(batch) => got.extend(batch),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => bail!("the subscribers' reader stopped"),
            }
        }
        if !got.is_empty() {
            return Ok(got);
        }
        if Instant::now() > deadline {
            bail!("no delivery within {} s", timeout.as_secs());
        }
        tokio::time::sleep(COLLECT).await;
    }
}

/// What the latency rounds measured, in ms.
struct Rounds {
    /// Every delivery, from just before its write was sent to its arrival in the socket.
    all: Vec<f64>,
    /// Per round, the arrival at the last subscriber.
    to_last: Vec<f64>,
    /// Per round, the arrival at the first subscriber.
    first: Vec<f64>,
    /// Every delivery, from its round's first arrival.
    after_first: Vec<f64>,
}

/// Writes one change per round and waits until every subscriber has it.
async fn one_change_rounds(c: &Client, rx: &mpsc::Receiver<Batch>, n: usize, rounds: usize) -> anyhow::Result<Rounds> {
    let mut r = Rounds {
        all: Vec::new(),
        to_last: Vec::new(),
        first: Vec::new(),
        after_first: Vec::new(),
    };
    for round in 0..rounds {
        while rx.try_recv().is_ok() {}
        let t0 = SystemTime::now(); // the kernel's timestamps are on this clock
        let sw: Value = c
            .create::<Value>(Records::Switches, &json!({"name": format!("bench-sw-{round}")}))
            .await?;
        let seq = sw["version"].as_u64().context("no version")?;
        let mut this = Vec::with_capacity(n);
        while this.len() < n {
            let batch = collect(rx, Duration::from_secs(10)).await?;
            this.extend(
                batch
                    .into_iter()
                    .filter(|d| d.1 == seq)
                    .map(|(_, _, at)| at.duration_since(t0).unwrap_or_default().as_secs_f64() * 1000.0),
            );
        }
        let first = this.iter().copied().fold(f64::MAX, f64::min);
        r.first.push(first);
        r.to_last.push(this.iter().copied().fold(0.0, f64::max));
        r.after_first.extend(this.iter().map(|ms| ms - first));
        r.all.extend(this);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(r)
}

/// Imports `count` machines in one commit; returns the time until every subscriber had every
/// change, and how many changes did not arrive in order.
async fn bulk_fanout(c: &Client, rx: &mpsc::Receiver<Batch>, subs: usize, count: u32) -> anyhow::Result<(f64, u64)> {
    while rx.try_recv().is_ok() {}
    let rows: Vec<Value> = (0..count)
        .map(|k| json!({"hostname": format!("fan{k}"), "mac": crate::server::mac_of(0x0100_0000 + k), "mtype": "user"}))
        .collect();
    let t0 = SystemTime::now();
    let before: Value = c.get("/healthz").await?;
    let first = before["seq"].as_u64().unwrap_or(0) + 1;
    let last = first + u64::from(count) - 1;
    crate::server::import(c, rows).await?;
    eprintln!(
        "bench: the import was acknowledged after {:.2} s",
        t0.elapsed().unwrap_or_default().as_secs_f64()
    );
    let mut next: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
    let (mut done, mut drops, mut end) = (0, 0u64, t0);
    while done < subs {
        let batch = collect(rx, Duration::from_secs(30)).await?;
        for (id, s, at) in batch {
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
                end = end.max(at);
            }
        }
    }
    Ok((end.duration_since(t0).unwrap_or_default().as_secs_f64(), drops))
}
