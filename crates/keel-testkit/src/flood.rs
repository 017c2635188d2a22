//! One source flooding what keel pools, and another client's probes of what everyone needs: the
//! hostile end-to-end test asserts the probes answer, `keel bench flood` times them. Raw sockets
//! only (HTTP/1.1 spoken by hand), so each probe's time is keel's, not a client library's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long a probe may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP connection to `to` from the loopback address `from` (127.0.0.0/8 is all local: a second
/// source without a second machine). Dropped open, it is closed with a reset: a flood's
/// thousands of sockets leave no TIME_WAIT behind (one that saw both sides close still does).
pub async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((from, 0)))?;
    let stream = sock.connect(to).await?;
    stream.set_zero_linger()?;
    Ok(stream)
}

/// Raises this process's soft open-file limit to `want` (a flood holds thousands of sockets).
pub fn raise_open_file_limit(want: u64) -> crate::Result<()> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    let max = lim.maximum.unwrap_or(u64::MAX);
    if max < want {
        return Err(crate::Error::msg(format!(
            "the hard open-file limit ({max}) is below {want}: raise it (ulimit -Hn)"
        )));
    }
    if lim.current.is_some_and(|c| c < want) {
        lim.current = Some(want);
        setrlimit(Resource::Nofile, lim)
            .map_err(|e| crate::Error::msg(format!("cannot raise the open-file limit: {e}")))?;
    }
    Ok(())
}

/// What one source floods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// HTTP connections that send nothing, `n` of them.
    IdleHttp(usize),
    /// Anonymous `/mdb/poll` streams held open.
    AnonymousPolls(usize),
    /// DNS-over-TCP connections that pipeline queries and never read an answer.
    DnsNonReaders(usize),
    /// HTTPS connections that send half a handshake and stall.
    StalledTls(usize),
}

impl Flood {
    pub fn name(self) -> &'static str {
        match self {
            Self::IdleHttp(_) => "idle HTTP connections",
            Self::AnonymousPolls(_) => "anonymous /poll streams",
            Self::DnsNonReaders(_) => "DNS-over-TCP non-readers",
            Self::StalledTls(_) => "stalled TLS handshakes",
        }
    }
}

/// Where keel listens.
#[derive(Debug, Clone)]
pub struct Target {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub dns: SocketAddr,
    pub token: String,
    /// A user and a machine for the presence probe.
    pub login: String,
    pub hostname: String,
    /// A name keel's DNS answers.
    pub name: String,
}

/// The sockets a flood holds (dropped: the flood ends), and how many keel refused at once.
pub struct Held {
    pub streams: Vec<TcpStream>,
    pub refused: usize,
}

/// Starts `flood` from `from` against `t`; returns once every connection is open (or refused).
pub async fn start(flood: Flood, from: [u8; 4], t: &Target) -> Held {
    let mut held = Held {
        streams: Vec::new(),
        refused: 0,
    };
    let (n, to, first): (usize, SocketAddr, Vec<u8>) = match flood {
        Flood::IdleHttp(n) => (n, t.http, Vec::new()),
        Flood::AnonymousPolls(n) => (n, t.http, b"GET /mdb/poll HTTP/1.1\r\nHost: keel\r\n\r\n".to_vec()),
        Flood::DnsNonReaders(n) => (n, t.dns, framed(&crate::dns_query(1, &t.name)).repeat(50)),
        // A handshake record that announces 512 bytes and brings 100.
        Flood::StalledTls(n) => (
            n,
            t.https.unwrap_or(t.http),
            [&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..], &[0u8; 99][..]].concat(),
        ),
    };
    for _ in 0..n {
        let Ok(mut s) = connect_from(from, to).await else {
            held.refused += 1;
            continue;
        };
        if !first.is_empty() && s.write_all(&first).await.is_err() {
            held.refused += 1;
            continue;
        }
        if matches!(flood, Flood::AnonymousPolls(_)) && status_line(&mut s).await != Some(200) {
            held.refused += 1;
            continue;
        }
        held.streams.push(s);
    }
    held
}

/// A DNS message framed for TCP (RFC 1035 4.2.2).
fn framed(q: &[u8]) -> Vec<u8> {
    let n = u16::try_from(q.len()).unwrap_or(u16::MAX);
    [&n.to_be_bytes()[..], q].concat()
}

/// What another client needs from keel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Health,
    Sso,
    PresenceLogin,
    DnsUdp,
    DnsTcp,
    AdminWatch,
}

impl Probe {
    pub const ALL: [Self; 6] = [
        Self::Health,
        Self::Sso,
        Self::PresenceLogin,
        Self::DnsUdp,
        Self::DnsTcp,
        Self::AdminWatch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Health => "/healthz",
            Self::Sso => "/sso",
            Self::PresenceLogin => "presence login",
            Self::DnsUdp => "DNS over UDP",
            Self::DnsTcp => "DNS over TCP",
            Self::AdminWatch => "admin's watch",
        }
    }
}

/// Runs `probe` from `from`: its time, or why it failed (within [`PROBE_TIMEOUT`]).
pub async fn probe(probe: Probe, from: [u8; 4], t: &Target) -> Result<Duration, String> {
    let started = Instant::now();
    match tokio::time::timeout(PROBE_TIMEOUT, run(probe, from, t)).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(format!("{}: {e}", probe.name())),
        Err(_) => Err(format!("{}: no answer in {} s", probe.name(), PROBE_TIMEOUT.as_secs())),
    }
}

async fn run(probe: Probe, from: [u8; 4], t: &Target) -> Result<(), String> {
    let want = |got: Option<u16>, ok: fn(u16) -> bool| match got {
        Some(s) if ok(s) => Ok(()),
        other => Err(format!("answered {other:?}")),
    };
    match probe {
        Probe::Health => want(http(from, t.http, "GET /healthz", &[], "").await, |s| s == 200),
        Probe::Sso => want(
            http(from, t.http, "GET /sso", &["X-Real-IP: 192.0.2.1"], "").await,
            |s| s == 200,
        ),
        Probe::PresenceLogin => {
            let auth = format!("Authorization: Bearer {}", t.token);
            let body = format!("{{\"login\":\"{}\",\"hostname\":\"{}\"}}", t.login, t.hostname);
            let opened = http(from, t.http, "POST /api/v1/sessions", &[&auth], &body).await;
            want(opened, |s| s == 200 || s == 201)?;
            let logout = format!("DELETE /api/v1/sessions/{}", t.login);
            want(http(from, t.http, &logout, &[&auth], "").await, |s| s == 204)
        }
        Probe::DnsUdp => {
            let udp = tokio::net::UdpSocket::bind(SocketAddr::from((from, 0)))
                .await
                .map_err(|e| e.to_string())?;
            udp.send_to(&crate::dns_query(9, &t.name), t.dns)
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 512];
            udp.recv_from(&mut buf).await.map(|_| ()).map_err(|e| e.to_string())
        }
        Probe::DnsTcp => {
            let mut s = connect_from(from, t.dns).await.map_err(|e| e.to_string())?;
            s.write_all(&framed(&crate::dns_query(10, &t.name)))
                .await
                .map_err(|e| e.to_string())?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.map(|_| ()).map_err(|e| e.to_string())
        }
        Probe::AdminWatch => {
            let auth = format!("Authorization: Bearer {}", t.token);
            let mut s = connect_from(from, t.http).await.map_err(|e| e.to_string())?;
            let req = format!("GET /api/v1/watch HTTP/1.1\r\nHost: keel\r\n{auth}\r\n\r\n");
            s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
            want(status_line(&mut s).await, |s| s == 200)
        }
    }
}

/// One HTTP/1.1 request (`Connection: close`) from `from`: its status.
async fn http(from: [u8; 4], to: SocketAddr, line: &str, headers: &[&str], body: &str) -> Option<u16> {
    let mut s = connect_from(from, to).await.ok()?;
    let mut req = format!("{line} HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.ok()?;
    status_line(&mut s).await
}

/// The status of the response `s` starts to receive (its first line, read byte by byte so that
/// nothing after it, a stream's first line, is taken).
async fn status_line(s: &mut TcpStream) -> Option<u16> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 256 {
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    String::from_utf8_lossy(&line).split_whitespace().nth(1)?.parse().ok()
}
