//! A read-only TFTP server (RFC 1350, with the blksize, tsize and timeout options of RFC 2347–2349)
//! for network boot: PXE firmware loads iPXE from it.
//!
//! Each read request gets its own socket (its own TID, RFC 1350 §4) connected to the client, so
//! packets of other peers never reach a transfer. A block is resent when its ACK does not come in
//! time; duplicate or old ACKs are ignored (never answered with a resend: the Sorcerer's
//! Apprentice bug). Writes are refused, and so is any path that leaves the root, through `..` or
//! through a symbolic link.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// Sends of one block before the transfer is abandoned.
const TRIES: u32 = 6;

/// The `[tftp]` table of keel.toml: where the read-only TFTP server listens and what a transfer
/// may hold. Its `Default` is the one place these defaults are written.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TftpConfig {
    /// Serve TFTP.
    pub enabled: bool,
    /// The UDP address (production: 0.0.0.0:69). keel starts without TFTP when the default
    /// address is taken; one given here must be bound.
    pub listen: SocketAddr,
    /// The directory served (PXE firmware loads undionly.kpxe and ipxe.efi from it); a relative
    /// path is under the data directory. Created if missing.
    pub root: PathBuf,
    /// Resend a block after this long, unless the client asks for another (`timeout` option).
    #[serde(rename = "retransmit_ms", with = "keel_limits::duration::millis")]
    #[schemars(with = "u64")]
    pub timeout: Duration,
    /// Transfers at once, at most (each holds a socket and a file; a room of machines booting
    /// together is a few hundred); more requests are told "busy".
    pub max_transfers: usize,
    /// Transfers at once from one address (a booting machine needs one or two): one host cannot
    /// take every slot.
    pub max_per_source: usize,
}

impl Default for TftpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 6969)),
            root: PathBuf::from("tftp"),
            timeout: Duration::from_secs(1),
            max_transfers: 512,
            max_per_source: 4,
        }
    }
}

/// What one source address may make keel hold and send: transfers at once (`max_per_source`),
/// one "busy" answer every [`BUSY_EVERY`], and — until it has acknowledged a block, which a
/// forged source never does — [`UNPROVEN_BYTES_PER_MINUTE`]. So a request forged from a victim's
/// address makes keel send that victim a few packets a minute at most, whatever the request and
/// whether or not the victim's port is open (a transfer that ends at once frees its slot, not its
/// budget). Many PXE ROMs send no options, so a client cannot be asked to prove itself first: its
/// first block is the proof's price.
#[derive(Default)]
struct Sources(parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, Source>>);

#[derive(Default)]
struct Source {
    transfers: usize,
    /// The current minute of the unproven budget, and the bytes sent in it.
    window: Option<std::time::Instant>,
    unproven_bytes: usize,
    /// Proven (it acknowledged a block) until then.
    proven_until: Option<std::time::Instant>,
    last_busy: Option<std::time::Instant>,
}

/// Bytes a minute keel sends a source that has not acknowledged anything: a first block, an
/// OACK or an error a few times over; a booting machine proves itself within its first block.
const UNPROVEN_BYTES_PER_MINUTE: usize = 16 * 1024;
/// How long an acknowledgement counts.
const PROVEN_FOR: Duration = Duration::from_secs(600);
/// At most one "busy" a source, this often.
const BUSY_EVERY: Duration = Duration::from_secs(5);
/// Sources remembered at most; past it, unknown sources are ignored until old entries expire.
const MAX_SOURCES: usize = 65_536;

/// One transfer counted for its source until dropped.
struct SourceSlot(Arc<Sources>, std::net::IpAddr);

impl Source {
    fn idle(&self, now: std::time::Instant) -> bool {
        self.transfers == 0
            && self
                .window
                .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(60))
            && self.proven_until.is_none_or(|p| p <= now)
            && self.last_busy.is_none_or(|b| now.duration_since(b) >= BUSY_EVERY)
    }
}

impl Sources {
    /// The entry of `ip`, making room for it if need be; `None` when every entry is in use.
    fn entry(
        map: &mut std::collections::HashMap<std::net::IpAddr, Source>,
        ip: std::net::IpAddr,
    ) -> Option<&mut Source> {
        if !map.contains_key(&ip) && map.len() >= MAX_SOURCES {
            let now = std::time::Instant::now();
            map.retain(|_, s| !s.idle(now));
            if map.len() >= MAX_SOURCES {
                return None;
            }
        }
        Some(map.entry(ip).or_default())
    }

    fn take(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<SourceSlot> {
        let mut m = self.0.lock();
        let s = Self::entry(&mut m, ip)?;
        if s.transfers >= max {
            return None;
        }
        s.transfers += 1;
        Some(SourceSlot(self.clone(), ip))
    }

    /// Whether `bytes` may go to `ip` now: always once it is proven; else out of its budget.
    fn charge(&self, ip: std::net::IpAddr, bytes: usize) -> bool {
        let now = std::time::Instant::now();
        let mut m = self.0.lock();
        let Some(s) = Self::entry(&mut m, ip) else {
            return false;
        };
        if s.proven_until.is_some_and(|p| p > now) {
            return true;
        }
        if s.window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(60))
        {
            s.window = Some(now);
            s.unproven_bytes = 0;
        }
        if s.unproven_bytes + bytes > UNPROVEN_BYTES_PER_MINUTE {
            return false;
        }
        s.unproven_bytes += bytes;
        true
    }

    /// `ip` acknowledged a block: it is who it says it is.
    fn proven(&self, ip: std::net::IpAddr) {
        if let Some(s) = Self::entry(&mut self.0.lock(), ip) {
            s.proven_until = Some(std::time::Instant::now() + PROVEN_FOR);
        }
    }

    /// Whether `ip` may be told "busy" now (and it is charged for it).
    fn may_say_busy(&self, ip: std::net::IpAddr, bytes: usize) -> bool {
        let now = std::time::Instant::now();
        {
            let mut m = self.0.lock();
            let Some(s) = Self::entry(&mut m, ip) else {
                return false;
            };
            if s.last_busy.is_some_and(|b| now.duration_since(b) < BUSY_EVERY) {
                return false;
            }
            s.last_busy = Some(now);
        }
        self.charge(ip, bytes)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if let Some(s) = (self.0).0.lock().get_mut(&self.1) {
            s.transfers = s.transfers.saturating_sub(1);
        }
    }
}

/// A parsed read request.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    file: String,
    blksize: Option<usize>,
    tsize: bool,
    timeout: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Read(Request),
    Write,
    Bad(&'static str),
}

fn parse(p: &[u8]) -> Parsed {
    if p.len() < 4 {
        return Parsed::Bad("short packet");
    }
    let op = u16::from_be_bytes([p[0], p[1]]);
    if op == WRQ {
        return Parsed::Write;
    }
    if op != RRQ {
        return Parsed::Bad("expected a read request");
    }
    let fields: Vec<&[u8]> = p[2..].split(|&b| b == 0).collect();
    // "file\0mode\0[opt\0val\0]*" splits into an even count plus one empty tail.
    if fields.len() < 3 || fields.last().is_some_and(|l| !l.is_empty()) {
        return Parsed::Bad("malformed request");
    }
    let Ok(file) = std::str::from_utf8(fields[0]) else {
        return Parsed::Bad("file name is not UTF-8");
    };
    let mode = String::from_utf8_lossy(fields[1]).to_ascii_lowercase();
    if mode != "octet" && mode != "netascii" {
        return Parsed::Bad("mode must be octet or netascii");
    }
    let mut r = Request {
        file: file.to_owned(),
        blksize: None,
        tsize: false,
        timeout: None,
    };
    let opts = &fields[2..fields.len() - 1];
    for pair in opts.chunks(2) {
        let [k, v] = pair else { break };
        let key = String::from_utf8_lossy(k).to_ascii_lowercase();
        let val = std::str::from_utf8(v).ok().and_then(|v| v.parse::<u64>().ok());
        match (key.as_str(), val) {
            ("blksize", Some(n)) if (8..=65_464).contains(&n) => r.blksize = usize::try_from(n).ok(),
            ("tsize", Some(_)) => r.tsize = true,
            ("timeout", Some(n)) if (1..=255).contains(&n) => r.timeout = Some(n),
            _ => {} // unknown or out-of-range options are ignored, as RFC 2347 says
        }
    }
    Parsed::Read(r)
}

fn error(code: u16, msg: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(msg.len() + 5);
    p.extend_from_slice(&ERROR.to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p
}

/// The file a request names, inside the root; `None` for anything that would leave it.
fn resolve(root: &Path, name: &str) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    // PXE firmware sometimes sends backslashes.
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return None,
            p if p.contains('\0') => return None,
            p => path.push(p),
        }
    }
    // A link inside the root must not lead outside it.
    let real = std::fs::canonicalize(&path).ok()?;
    let root = std::fs::canonicalize(root).ok()?;
    (real.starts_with(&root) && real.is_file()).then_some(real)
}

/// Serves read requests on `socket` until the process ends; `ended` hears how each one ended.
///
/// Only a request (RRQ, or a WRQ to refuse) is answered, and never from the listening port: any
/// other packet (an ACK, an ERROR, DATA, garbage) gets silence — answering it is how two servers,
/// or keel's DNS and TFTP, would bounce packets at each other without end.
pub async fn serve(cfg: Arc<TftpConfig>, socket: UdpSocket, ended: impl Fn(Outcome) + Send + Sync + 'static) {
    let ended = Arc::new(ended);
    let mut buf = vec![0u8; 2048];
    // A bound on transfers at once (each holds a socket and a file): a flood of requests gets
    // "busy" answers, not a descriptor shortage for the rest of keel.
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_transfers.max(1)));
    let sources = Arc::new(Sources::default());
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if !matches!(opcode(&buf[..n]), Some(RRQ | WRQ)) {
            tracing::trace!(%peer, "tftp: not a request, ignored");
            continue;
        }
        let local = socket.local_addr().ok();
        let Some(source) = sources.take(peer.ip(), cfg.max_per_source.max(1)) else {
            keel_limits::refused!(WARN, %peer, max = cfg.max_per_source, "tftp: too many transfers from this address; request refused");
            busy(&sources, local, peer, &ended);
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            keel_limits::refused!(WARN, %peer, max = cfg.max_transfers, "tftp: too many transfers running; request refused");
            busy(&sources, local, peer, &ended);
            continue;
        };
        let packet = buf[..n].to_vec();
        let (cfg, ended, sources) = (cfg.clone(), ended.clone(), sources.clone());
        tokio::spawn(async move {
            let outcome = match transfer(&cfg, &sources, local, peer, &packet).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(%peer, %e, "tftp transfer ended");
                    Outcome::Failed
                }
            };
            tracing::debug!(%peer, outcome = outcome.as_str(), "tftp transfer done");
            ended(outcome);
            drop((slot, source));
        });
    }
}

/// The opcode of a packet, if it has one.
fn opcode(p: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*p.first()?, *p.get(1)?]))
}

/// Tells `peer` "busy" — from a socket of its own, as a transfer's error would come, at most once
/// every [`BUSY_EVERY`] and within the source's budget; otherwise the request gets silence.
fn busy(
    sources: &Sources,
    local: Option<SocketAddr>,
    peer: SocketAddr,
    ended: &Arc<impl Fn(Outcome) + Send + Sync + 'static>,
) {
    let packet = error(0, "server busy: try again");
    if !sources.may_say_busy(peer.ip(), packet.len()) {
        ended(Outcome::Dropped);
        return;
    }
    ended(Outcome::Busy);
    tokio::spawn(async move {
        if let Ok(sock) = UdpSocket::bind(ephemeral(local)).await {
            let _ = sock.send_to(&packet, peer).await;
        }
    });
}

/// An address to bind a transfer's socket to: the listening address's, on a port of its own.
fn ephemeral(local: Option<SocketAddr>) -> SocketAddr {
    match local {
        Some(l) => SocketAddr::new(l.ip(), 0),
        None => ([0, 0, 0, 0], 0).into(),
    }
}

/// How a transfer ended, for the log and `keel_tftp_transfers_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The whole file was sent and acknowledged.
    Sent,
    /// A write, a malformed request, a file outside the root or missing: answered with an error.
    Refused,
    /// Too many transfers (in all or from this address): answered "busy".
    Busy,
    /// Not answered: a source that has acknowledged nothing used up its budget, or was told
    /// "busy" a moment ago (a forged request must not make keel send its victim more).
    Dropped,
    /// The transfer broke off (timeout, the client's error, I/O).
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Refused => "refused",
            Self::Busy => "busy",
            Self::Dropped => "dropped",
            Self::Failed => "failed",
        }
    }
}

async fn transfer(
    cfg: &TftpConfig,
    sources: &Sources,
    local: Option<SocketAddr>,
    peer: SocketAddr,
    packet: &[u8],
) -> std::io::Result<Outcome> {
    let sock = UdpSocket::bind(ephemeral(local)).await?;
    sock.connect(peer).await?;
    // Until the client acknowledges, what it costs to answer comes out of its source's budget.
    let unproven = |p: &[u8]| sources.charge(peer.ip(), p.len());
    let refuse = async |p: Vec<u8>| -> std::io::Result<Outcome> {
        if !unproven(&p) {
            return Ok(Outcome::Dropped);
        }
        sock.send(&p).await?;
        Ok(Outcome::Refused)
    };
    let req = match parse(packet) {
        Parsed::Read(r) => r,
        Parsed::Write => return refuse(error(2, "access violation: this server is read-only")).await,
        Parsed::Bad(why) => return refuse(error(4, why)).await,
    };
    let Some(path) = resolve(&cfg.root, &req.file) else {
        keel_limits::refused!(INFO, %peer, file = %req.file, "tftp: refused or not found");
        return refuse(error(1, "file not found")).await;
    };
    let mut file = tokio::fs::File::open(&path).await?;
    let size = file.metadata().await?.len();
    let blksize = req.blksize.unwrap_or(512);
    // Resending sooner than the client's `timeout` is harmless (a duplicate is re-ACKed and that
    // ACK ignored) and keeps a lossy transfer moving.
    let timeout = req
        .timeout
        .map_or(cfg.timeout, |t| cfg.timeout.min(Duration::from_secs(t)));
    tracing::debug!(%peer, file = %req.file, size, blksize, "tftp read");
    let negotiated = req.blksize.is_some() || req.tsize || req.timeout.is_some();
    if negotiated {
        let mut oack = OACK.to_be_bytes().to_vec();
        let mut opt = |k: &str, v: String| {
            oack.extend_from_slice(k.as_bytes());
            oack.push(0);
            oack.extend_from_slice(v.as_bytes());
            oack.push(0);
        };
        if let Some(b) = req.blksize {
            opt("blksize", b.to_string());
        }
        if req.tsize {
            opt("tsize", size.to_string());
        }
        if let Some(t) = req.timeout {
            opt("timeout", t.to_string());
        }
        // The OACK is acknowledged as block 0. Sent once, out of the budget: until the client has
        // acknowledged something, it may be a forged address, and resends would reflect at it.
        if !unproven(&oack) {
            return Ok(Outcome::Dropped);
        }
        send_until_acked(&sock, &oack, 0, timeout, 1).await?;
        sources.proven(peer.ip());
    }
    let mut acked = negotiated;
    let mut block: u16 = 1;
    let mut data = vec![0u8; blksize];
    loop {
        let n = read_full(&mut file, &mut data).await?;
        let mut packet = Vec::with_capacity(n + 4);
        packet.extend_from_slice(&DATA.to_be_bytes());
        packet.extend_from_slice(&block.to_be_bytes());
        packet.extend_from_slice(&data[..n]);
        // The first block (when no OACK came before it) is sent once, out of the budget, like
        // the OACK.
        if !acked && !unproven(&packet) {
            return Ok(Outcome::Dropped);
        }
        send_until_acked(&sock, &packet, block, timeout, if acked { TRIES } else { 1 }).await?;
        if !acked {
            sources.proven(peer.ip());
        }
        acked = true;
        if n < blksize {
            return Ok(Outcome::Sent); // a short block ends the transfer
        }
        block = block.wrapping_add(1); // files beyond 65535 blocks roll over, as clients expect
    }
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let got = file.read(&mut buf[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(n)
}

/// Sends `packet` and waits for the ACK of `block`, resending on timeout. Old or duplicate ACKs
/// are ignored; an ERROR from the client ends the transfer.
async fn send_until_acked(
    sock: &UdpSocket,
    packet: &[u8],
    block: u16,
    timeout: Duration,
    tries: u32,
) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    for attempt in 0..tries {
        if attempt > 0 {
            tracing::debug!(block, attempt, "tftp resend");
        }
        sock.send(packet).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await;
            let Ok(got) = got else { break }; // timed out: resend
            let n = got?;
            if n < 4 {
                continue;
            }
            match u16::from_be_bytes([buf[0], buf[1]]) {
                ACK if u16::from_be_bytes([buf[2], buf[3]]) == block => return Ok(()),
                ACK => tracing::trace!(block, got = u16::from_be_bytes([buf[2], buf[3]]), "tftp: other ACK"),
                ERROR => return Err(std::io::Error::other("the client sent an error")),
                _ => {}
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no ACK for block {block}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(parts: &[&str]) -> Vec<u8> {
        let mut p = RRQ.to_be_bytes().to_vec();
        for s in parts {
            p.extend_from_slice(s.as_bytes());
            p.push(0);
        }
        p
    }

    /// A TFTP server on loopback serving one file, with these limits; `ended` is called at the
    /// end of each transfer. The directory lives as long as the returned guard.
    pub(super) async fn start(
        file: (&str, &[u8]),
        timeout: Duration,
        (max_transfers, max_per_source): (usize, usize),
        ended: impl Fn(Outcome) + Send + Sync + 'static,
    ) -> (tempfile::TempDir, SocketAddr) {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join(file.0), file.1).unwrap();
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let cfg = Arc::new(TftpConfig {
            root: root.path().to_owned(),
            timeout,
            max_transfers,
            max_per_source,
            ..TftpConfig::default()
        });
        tokio::spawn(serve(cfg, server, ended));
        (root, addr)
    }

    /// With every slot taken (a client that never acknowledges), the next request is told "busy"
    /// at once; the first transfer is not disturbed.
    #[tokio::test]
    async fn a_request_beyond_the_limit_is_refused_as_busy() {
        let (_root, addr) = start(("f", &[7u8; 4096]), Duration::from_secs(5), (1, 4), |_| ()).await;
        let slow = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        slow.send_to(&rrq(&["f", "octet"]), addr).await.unwrap();
        let mut buf = [0u8; 600];
        let (n, _) = slow.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..2], &DATA.to_be_bytes(), "{n}");
        // It never ACKs: its transfer holds the only slot.
        let second = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        second.send_to(&rrq(&["f", "octet"]), addr).await.unwrap();
        let (n, from) = tokio::time::timeout(Duration::from_secs(2), second.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..2], &ERROR.to_be_bytes());
        assert!(String::from_utf8_lossy(&buf[4..n]).contains("busy"));
        assert_ne!(
            from, addr,
            "an error comes from a port of its own, never the listening one"
        );
    }

    /// Issue 31: keel's TFTP answered "busy" from its listening port to any packet — an ACK, an
    /// ERROR, one byte — which a forged packet turned into an endless exchange with keel's DNS.
    /// Only a request is answered: the first answer this client gets is its request's block.
    #[tokio::test]
    async fn what_is_not_a_request_gets_silence() {
        let (_root, addr) = start(("f", b"hello"), Duration::from_secs(5), (1, 1), |_| ()).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for junk in [
            &[0u8, 4, 0, 1][..],
            &[0, 5, 0, 0, b'x', 0],
            &[0, 3, 0, 1, 1, 2],
            &[7],
            &[0, 9, 9],
            b"garbage",
        ] {
            client.send_to(junk, addr).await.unwrap();
        }
        client.send_to(&rrq(&["f", "octet"]), addr).await.unwrap();
        let mut buf = [0u8; 600];
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            &buf[..n],
            b"\x00\x03\x00\x01hello",
            "the block, not an answer to the junk"
        );
        assert_ne!(from, addr);
    }

    /// Issue 31: a request forged from a victim's address made keel send the victim its first
    /// block every time, past the per-source limit when the victim's port was closed. Until a
    /// source acknowledges something, what keel sends it a minute is bounded.
    #[test]
    fn an_unproven_source_has_a_budget_and_an_acknowledging_one_has_none() {
        let sources = Sources::default();
        let victim: std::net::IpAddr = [192, 0, 2, 7].into();
        let sent = (0..100).take_while(|_| sources.charge(victim, 516)).count();
        assert_eq!(
            sent,
            UNPROVEN_BYTES_PER_MINUTE / 516,
            "first blocks a forged source can draw a minute"
        );
        let client: std::net::IpAddr = [192, 0, 2, 8].into();
        assert!(sources.charge(client, 516));
        sources.proven(client);
        assert!(
            (0..1000).all(|_| sources.charge(client, 516)),
            "a real client is not held back"
        );
        assert!(sources.may_say_busy([192, 0, 2, 9].into(), 30));
        assert!(!sources.may_say_busy([192, 0, 2, 9].into(), 30), "one busy at a time");
    }

    /// Issue 19: one address cannot hold every slot, and a request that is never acknowledged
    /// (a spoofed source) gets its first packet once, never resent at the victim.
    #[tokio::test]
    async fn one_source_is_bounded_and_an_unacknowledged_first_block_is_not_resent() {
        let timeout = Duration::from_millis(200);
        let (_root, addr) = start(("f", &[7u8; 4096]), timeout, (10, 1), |_| ()).await;
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        silent.send_to(&rrq(&["f", "octet"]), addr).await.unwrap();
        let mut buf = [0u8; 600];
        let (_, from) = silent.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..2], &DATA.to_be_bytes());
        // While it runs, the same address gets "busy".
        let again = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        again.send_to(&rrq(&["f", "octet"]), addr).await.unwrap();
        let (n, _) = again.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..2], &ERROR.to_be_bytes());
        assert!(String::from_utf8_lossy(&buf[4..n]).contains("busy"));
        // No resend of block 1 in ten times the resend timeout (the old code resent it after one).
        let resend = tokio::time::timeout(timeout * 10, silent.recv_from(&mut buf)).await;
        assert!(
            resend.is_err(),
            "block 1 was resent to an address that never acknowledged: {from}"
        );
        // An acknowledging client from that address is served once the slot is back.
        let good = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        good.send_to(&rrq(&["f", "octet"]), addr).await.unwrap();
        let (_, tid) = good.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..4], &[0, 3, 0, 1], "block 1");
        good.send_to(&[0, 4, 0, 1], tid).await.unwrap();
        let _ = good.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..4], &[0, 3, 0, 2], "block 2 after the ACK");
    }

    #[test]
    fn requests_parse_with_options() {
        let r = parse(&rrq(&[
            "undionly.kpxe",
            "octet",
            "blksize",
            "1468",
            "tsize",
            "0",
            "x",
            "y",
        ]));
        assert_eq!(
            r,
            Parsed::Read(Request {
                file: "undionly.kpxe".into(),
                blksize: Some(1468),
                tsize: true,
                timeout: None
            })
        );
        assert!(matches!(parse(&rrq(&["f", "mail"])), Parsed::Bad(_)));
        assert!(matches!(parse(&[0, 1, b'f']), Parsed::Bad(_)));
        assert_eq!(parse(&[0, 2, b'f', 0, b'o', 0]), Parsed::Write);
        let Parsed::Read(r) = parse(&rrq(&["f", "OCTET", "blksize", "99999"])) else {
            panic!()
        };
        assert_eq!(r.blksize, None, "out of range: ignored");
    }

    #[test]
    fn paths_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("escape")).unwrap();
        assert!(resolve(dir.path(), "ok").is_some());
        assert!(resolve(dir.path(), "/sub/f").is_some());
        assert!(resolve(dir.path(), "sub\\f").is_some());
        for bad in ["../../etc/passwd", "sub/../../x", "escape", "sub", "missing"] {
            assert!(resolve(dir.path(), bad).is_none(), "{bad}");
        }
    }
}

/// Issue 19: the request parser on any packet (`fuzz_*`, see docs/security.md): no panic; options
/// within their ranges; no name found outside the root.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn fuzz_tftp_request_parser(
            p in prop_oneof![
                any::<Vec<u8>>(),
                "(\\.\\./|/|\\\\|[a-z.]{1,8}){1,6}".prop_map(|f| [&[0u8, 1][..], f.as_bytes(), b"\0octet\0blksize\0", b"99999\0"].concat()),
            ],
        ) {
            if let Parsed::Read(r) = parse(&p) {
                prop_assert!(r.blksize.is_none_or(|b| (8..=65_464).contains(&b)));
                prop_assert!(r.timeout.is_none_or(|t| (1..=255).contains(&t)));
                let root = tempfile::tempdir().unwrap();
                if let Some(found) = resolve(root.path(), &r.file) {
                    prop_assert!(found.starts_with(std::fs::canonicalize(root.path()).unwrap()));
                }
            }
        }
    }

    /// A packet a LAN could send keel's TFTP port: garbage, requests for files that exist or
    /// not (with any options), WRQs, and the ACK, ERROR, DATA and OACK packets of someone
    /// else's transfer.
    fn wire_packet() -> impl Strategy<Value = Vec<u8>> {
        let opts = proptest::collection::vec(
            prop_oneof!["blksize|tsize|timeout|windowsize|x", "[0-9]{0,6}|-1|abc"],
            0..6,
        );
        let request = (
            1u16..=2,
            prop_oneof![Just("boot.ipxe".to_owned()), "[a-z./]{0,12}"],
            prop_oneof!["octet|netascii|OCTET|mail", ".{0,4}"],
            opts,
        )
            .prop_map(|(op, file, mode, opts)| {
                let mut p = op.to_be_bytes().to_vec();
                for part in [file, mode].iter().chain(&opts) {
                    p.extend_from_slice(part.as_bytes());
                    p.push(0);
                }
                p
            });
        let other = (3u16..=6, any::<u16>(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(op, n, rest)| [&op.to_be_bytes()[..], &n.to_be_bytes()[..], &rest[..]].concat());
        prop_oneof![
            2 => proptest::collection::vec(any::<u8>(), 0..600),
            2 => other,
            1 => request,
        ]
    }

    /// Issue 31, from the wire: a client that never acknowledges anything (a forged source)
    /// sends `PROPTEST_CASES` packets of every kind. Nothing ever comes back from the listening
    /// port, and what keel sends that source stays within its budget for unproven sources.
    #[tokio::test]
    async fn fuzz_tftp_from_the_wire() {
        use proptest::strategy::ValueTree as _;
        let ended = Arc::new(tokio::sync::Semaphore::new(0));
        let count = ended.clone();
        let (_root, addr) = super::tests::start(
            ("boot.ipxe", &[b'x'; 3000]),
            Duration::from_millis(20),
            (8, 4),
            move |_| count.add_permits(1),
        )
        .await;
        let client = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let heard = Arc::new(parking_lot::Mutex::new(Vec::<(SocketAddr, usize)>::new()));
        let listener = {
            let (client, heard) = (client.clone(), heard.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 70_000];
                while let Ok((n, from)) = client.recv_from(&mut buf).await {
                    heard.lock().push((from, n));
                }
            })
        };
        let mut runner = proptest::test_runner::TestRunner::default();
        let (cases, strategy, started) = (runner.config().cases, wire_packet(), std::time::Instant::now());
        // First a plain request of a file that exists: the test hears what it must bound.
        client.send_to(b"\0\x01boot.ipxe\0octet\0", addr).await.unwrap();
        let mut requests = 1u32;
        for i in 0..cases {
            let p = strategy.new_tree(&mut runner).unwrap().current();
            requests += u32::from(matches!(opcode(&p), Some(RRQ | WRQ)));
            client.send_to(&p, addr).await.unwrap();
            // Every request ends once (served, busy, or dropped): wait for each batch's before
            // sending more, so no socket buffer overflows and nothing goes untested.
            if i % 64 == 63 || i + 1 == cases {
                let all = tokio::time::timeout(Duration::from_secs(30), ended.acquire_many(requests)).await;
                all.expect("every request ended").unwrap().forget();
                requests = 0;
            }
        }
        listener.abort();
        let heard = heard.lock().clone();
        assert!(!heard.is_empty(), "the first request's block came back");
        assert!(
            heard.iter().all(|(from, _)| *from != addr),
            "an answer from the listening port"
        );
        let minutes = usize::try_from(started.elapsed().as_secs() / 60).unwrap() + 1;
        let bytes: usize = heard.iter().map(|(_, n)| n).sum();
        assert!(
            bytes <= UNPROVEN_BYTES_PER_MINUTE * minutes,
            "{bytes} bytes to a source that never acknowledged, in {minutes} minute(s)"
        );
    }
}
