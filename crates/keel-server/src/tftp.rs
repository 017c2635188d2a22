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

/// What a transfer needs to know.
#[derive(Debug, Clone)]
pub struct TftpConfig {
    /// The directory served.
    pub root: PathBuf,
    /// Resend timeout unless the client asks for another (`timeout` option).
    pub timeout: Duration,
    /// Transfers at once, at most (each holds a socket and a file); more requests are told "busy".
    pub max_transfers: usize,
    /// Transfers at once from one address (a booting machine needs one or two): one host cannot
    /// take every slot.
    pub max_per_source: usize,
}

/// The default bound on transfers from one address.
pub const MAX_PER_SOURCE: usize = 4;

/// Transfers running per source address; an entry leaves with its last transfer.
#[derive(Default)]
struct PerSource(parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One transfer counted for its source until dropped.
struct SourceSlot(Arc<PerSource>, std::net::IpAddr);

impl PerSource {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<SourceSlot> {
        let mut m = self.0.lock();
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot(self.clone(), ip))
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock();
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// The default bound on transfers at once: a room of machines booting together is a few hundred.
pub const MAX_TRANSFERS: usize = 512;

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
pub async fn serve(cfg: Arc<TftpConfig>, socket: UdpSocket, ended: impl Fn(Outcome) + Send + Sync + 'static) {
    let ended = Arc::new(ended);
    let mut buf = vec![0u8; 2048];
    // A bound on transfers at once (each holds a socket and a file): a flood of requests gets
    // "busy" answers, not a descriptor shortage for the rest of keel.
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_transfers.max(1)));
    let per_source = Arc::new(PerSource::default());
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Some(source) = per_source.take(peer.ip(), cfg.max_per_source.max(1)) else {
            tracing::warn!(%peer, max = cfg.max_per_source, "tftp: too many transfers from this address; request refused");
            let _ = socket.send_to(&error(0, "server busy: try again"), peer).await;
            ended(Outcome::Busy);
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = cfg.max_transfers, "tftp: too many transfers running; request refused");
            let _ = socket.send_to(&error(0, "server busy: try again"), peer).await;
            ended(Outcome::Busy);
            continue;
        };
        let packet = buf[..n].to_vec();
        let local = socket.local_addr().ok();
        let (cfg, ended) = (cfg.clone(), ended.clone());
        tokio::spawn(async move {
            let outcome = match transfer(&cfg, local, peer, &packet).await {
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

/// How a transfer ended, for the log and `keel_tftp_transfers_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The whole file was sent and acknowledged.
    Sent,
    /// A write, a malformed request, a file outside the root or missing: answered with an error.
    Refused,
    /// Too many transfers (in all or from this address): answered "busy".
    Busy,
    /// The transfer broke off (timeout, the client's error, I/O).
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Refused => "refused",
            Self::Busy => "busy",
            Self::Failed => "failed",
        }
    }
}

async fn transfer(
    cfg: &TftpConfig,
    local: Option<SocketAddr>,
    peer: SocketAddr,
    packet: &[u8],
) -> std::io::Result<Outcome> {
    let bind: SocketAddr = match local {
        Some(l) => SocketAddr::new(l.ip(), 0),
        None => ([0, 0, 0, 0], 0).into(),
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(peer).await?;
    let req = match parse(packet) {
        Parsed::Read(r) => r,
        Parsed::Write => {
            sock.send(&error(2, "access violation: this server is read-only"))
                .await?;
            return Ok(Outcome::Refused);
        }
        Parsed::Bad(why) => {
            sock.send(&error(4, why)).await?;
            return Ok(Outcome::Refused);
        }
    };
    let Some(path) = resolve(&cfg.root, &req.file) else {
        tracing::info!(%peer, file = %req.file, "tftp: refused or not found");
        sock.send(&error(1, "file not found")).await?;
        return Ok(Outcome::Refused);
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
    if req.blksize.is_some() || req.tsize || req.timeout.is_some() {
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
        // The OACK is acknowledged as block 0. Sent once: until the client has acknowledged
        // something, it may be a spoofed address, and resends would reflect traffic at it.
        send_until_acked(&sock, &oack, 0, timeout, 1).await?;
    }
    let mut acked = req.blksize.is_some() || req.tsize || req.timeout.is_some();
    let mut block: u16 = 1;
    let mut data = vec![0u8; blksize];
    loop {
        let n = read_full(&mut file, &mut data).await?;
        let mut packet = Vec::with_capacity(n + 4);
        packet.extend_from_slice(&DATA.to_be_bytes());
        packet.extend_from_slice(&block.to_be_bytes());
        packet.extend_from_slice(&data[..n]);
        // The first block (when no OACK came before it) is sent once, like the OACK.
        send_until_acked(&sock, &packet, block, timeout, if acked { TRIES } else { 1 }).await?;
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

    /// With every slot taken (a client that never acknowledges), the next request is told "busy"
    /// at once; the first transfer is not disturbed.
    #[tokio::test]
    async fn a_request_beyond_the_limit_is_refused_as_busy() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), vec![7u8; 4096]).unwrap();
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let cfg = Arc::new(TftpConfig {
            root: root.path().to_owned(),
            timeout: Duration::from_secs(5),
            max_transfers: 1,
            max_per_source: 4,
        });
        tokio::spawn(serve(cfg, server, |_| ()));
        let slow = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        slow.send_to(&rrq(&["f", "octet"]), addr).await.unwrap();
        let mut buf = [0u8; 600];
        let (n, _) = slow.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..2], &DATA.to_be_bytes(), "{n}");
        // It never ACKs: its transfer holds the only slot.
        let second = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        second.send_to(&rrq(&["f", "octet"]), addr).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), second.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..2], &ERROR.to_be_bytes());
        assert!(String::from_utf8_lossy(&buf[4..n]).contains("busy"));
    }

    /// Issue 19: one address cannot hold every slot, and a request that is never acknowledged
    /// (a spoofed source) gets its first packet once, never resent at the victim.
    #[tokio::test]
    async fn one_source_is_bounded_and_an_unacknowledged_first_block_is_not_resent() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), vec![7u8; 4096]).unwrap();
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let timeout = Duration::from_millis(200);
        let cfg = Arc::new(TftpConfig {
            root: root.path().to_owned(),
            timeout,
            max_transfers: 10,
            max_per_source: 1,
        });
        tokio::spawn(serve(cfg, server, |_| ()));
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
}
