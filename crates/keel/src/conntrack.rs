//! `keel conntrack-log`: every new flow through the gateway, attributed to the machine and the
//! person that held its source address at that moment — what an abuse report (which quotes the
//! NAT'd source port) needs traced back.
//!
//! Input: `conntrack -E -e NEW -o timestamp` lines (spawned, or read from a file/stdin). State:
//! keel's watch stream (machines and sessions), so attribution follows logins live. Output: one
//! JSON object per line, in `<dir>/conntrack-YYYY-MM-DD.jsonl`, rotated by day and by size.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One new flow, as conntrack reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flow {
    /// Nanoseconds since the epoch, when conntrack printed a timestamp.
    #[serde(skip)]
    pub epoch: Option<i128>,
    pub proto: String,
    pub src: String,
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// The source as the internet sees it (the reply tuple's destination, after masquerade).
    pub nat_src: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat_sport: Option<u16>,
}

/// `SECONDS.FRACTION` as nanoseconds, exactly (a float would round the microseconds).
fn nanos(s: &str) -> Option<i128> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac: i128 = format!("{frac:0<9}").parse().ok()?;
    Some(secs.parse::<i128>().ok()? * 1_000_000_000 + frac)
}

/// Why a line is not a flow (reported with its line number, never fatal).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ParseError(String);

/// Parses one `conntrack -E` line: `[1700000000.123456] [NEW] tcp 6 120 SYN_SENT src=… dst=…
/// sport=… dport=… [UNREPLIED] src=… dst=… sport=… dport=…`. The first src/dst/ports are the
/// original direction, the second the reply's.
pub fn parse(line: &str) -> Result<Flow, ParseError> {
    let mut words = line.split_whitespace().peekable();
    let mut epoch = None;
    while let Some(w) = words.peek() {
        if let Some(inner) = w.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            epoch = epoch.or_else(|| nanos(inner));
            words.next();
        } else {
            break;
        }
    }
    let proto = words.next().ok_or_else(|| ParseError("empty line".into()))?.to_owned();
    let mut orig: HashMap<&str, &str> = HashMap::new();
    let mut reply: HashMap<&str, &str> = HashMap::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else { continue };
        if !orig.contains_key(k) {
            orig.insert(k, v);
        } else if !reply.contains_key(k) {
            reply.insert(k, v);
        }
    }
    let field = |m: &HashMap<&str, &str>, k: &str| -> Result<String, ParseError> {
        m.get(k)
            .map(|v| (*v).to_owned())
            .ok_or_else(|| ParseError(format!("no {k}= in {proto} flow")))
    };
    let port = |m: &HashMap<&str, &str>, k: &str| -> Result<Option<u16>, ParseError> {
        m.get(k)
            .map(|v| v.parse().map_err(|_| ParseError(format!("{k}={v} is not a port"))))
            .transpose()
    };
    Ok(Flow {
        epoch,
        src: field(&orig, "src")?,
        dst: field(&orig, "dst")?,
        sport: port(&orig, "sport")?,
        dport: port(&orig, "dport")?,
        nat_src: field(&reply, "dst")?,
        nat_sport: port(&reply, "dport")?,
        proto,
    })
}

/// Who held each address: kept current from the watch stream.
#[derive(Debug, Default)]
pub struct Seats {
    host_by_ip: HashMap<Ipv4Addr, String>,
    ip_by_machine: HashMap<u64, Ipv4Addr>,
    login_by_host: HashMap<String, String>,
}

impl Seats {
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Applies a record (put) or its removal (delete) of kind machine or session.
    pub fn apply(&mut self, kind: keel_model::Kind, delete: bool, data: &serde_json::Value) {
        use keel_model::Kind;
        match kind {
            Kind::Machine => {
                let Some(id) = data["id"].as_u64() else { return };
                if let Some(old) = self.ip_by_machine.remove(&id) {
                    self.host_by_ip.remove(&old);
                }
                let ip = data["ip"].as_str().and_then(|s| s.parse().ok());
                if let (false, Some(ip), Some(h)) = (delete, ip, data["hostname"].as_str()) {
                    self.ip_by_machine.insert(id, ip);
                    self.host_by_ip.insert(ip, h.to_owned());
                }
            }
            Kind::Session => {
                let (Some(login), Some(host)) = (data["login"].as_str(), data["hostname"].as_str()) else {
                    return;
                };
                self.login_by_host.retain(|_, l| l != login);
                if !delete {
                    self.login_by_host.insert(host.to_owned(), login.to_owned());
                }
            }
            _ => {}
        }
    }

    /// (hostname, login) at `src`.
    pub fn at(&self, src: &str) -> (Option<&str>, Option<&str>) {
        let host = src
            .parse()
            .ok()
            .and_then(|ip| self.host_by_ip.get(&ip))
            .map(String::as_str);
        let login = host.and_then(|h| self.login_by_host.get(h)).map(String::as_str);
        (host, login)
    }
}

/// One output line.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub time: String,
    #[serde(flatten)]
    pub flow: &'a Flow,
    pub hostname: Option<&'a str>,
    pub login: Option<&'a str>,
}

/// Files `conntrack-YYYY-MM-DD.jsonl` in a directory; a new one each day, and when the current
/// one would pass `max_bytes` it is renamed `…-YYYY-MM-DD.N.jsonl` (N from 1) first.
pub struct Rotating {
    dir: PathBuf,
    max_bytes: u64,
    current: Option<(String, std::fs::File, u64)>,
}

impl Rotating {
    pub fn new(dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes: max_bytes.max(1024),
            current: None,
        })
    }

    fn path(&self, day: &str) -> PathBuf {
        self.dir.join(format!("conntrack-{day}.jsonl"))
    }

    /// Appends one line (a trailing newline is added) to the file of `day` (`YYYY-MM-DD`).
    pub fn write(&mut self, day: &str, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64 + 1;
        let rotate = matches!(&self.current, Some((d, _, size)) if d == day && size + len > self.max_bytes);
        if rotate {
            self.current = None;
            let mut n = 1;
            while self.dir.join(format!("conntrack-{day}.{n}.jsonl")).exists() {
                n += 1;
            }
            std::fs::rename(self.path(day), self.dir.join(format!("conntrack-{day}.{n}.jsonl")))?;
        }
        if self.current.as_ref().is_none_or(|(d, _, _)| d != day) {
            let path = self.path(day);
            let f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            let size = f.metadata()?.len();
            self.current = Some((day.to_owned(), f, size));
        }
        if let Some((_, f, size)) = &mut self.current {
            f.write_all(format!("{line}\n").as_bytes())?;
            *size += len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_udp_and_icmp_events() {
        let tcp = parse(
            "[1764217200.123456]\t    [NEW] tcp      6 120 SYN_SENT src=10.0.0.5 dst=1.1.1.1 sport=40000 dport=443 \
             [UNREPLIED] src=1.1.1.1 dst=192.0.2.1 sport=443 dport=61000",
        )
        .unwrap();
        assert_eq!(
            (
                tcp.proto.as_str(),
                tcp.src.as_str(),
                tcp.sport,
                tcp.nat_src.as_str(),
                tcp.nat_sport
            ),
            ("tcp", "10.0.0.5", Some(40000), "192.0.2.1", Some(61000))
        );
        assert_eq!(tcp.epoch, Some(1_764_217_200_123_456_000));
        let udp = parse("[NEW] udp 17 30 src=10.0.0.6 dst=9.9.9.9 sport=5353 dport=53 [UNREPLIED] src=9.9.9.9 dst=192.0.2.1 sport=53 dport=1024").unwrap();
        assert_eq!((udp.dport, udp.epoch), (Some(53), None));
        let icmp = parse("[NEW] icmp 1 30 src=10.0.0.7 dst=8.8.8.8 type=8 code=0 id=7 [UNREPLIED] src=8.8.8.8 dst=192.0.2.1 type=0 code=0 id=7").unwrap();
        assert_eq!((icmp.sport, icmp.nat_src.as_str()), (None, "192.0.2.1"));
        for bad in [
            "",
            "[NEW] tcp 6 120",
            "tcp 6 src=1.2.3.4 dst=5.6.7.8 sport=99999 dport=1 src=5.6.7.8 dst=1.2.3.4",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn seats_follow_machines_and_sessions() {
        use keel_model::Kind;
        let mut s = Seats::default();
        s.apply(
            Kind::Machine,
            false,
            &serde_json::json!({"id": 1, "ip": "10.0.0.5", "hostname": "pc1"}),
        );
        s.apply(
            Kind::Session,
            false,
            &serde_json::json!({"login": "alice", "hostname": "pc1"}),
        );
        assert_eq!(s.at("10.0.0.5"), (Some("pc1"), Some("alice")));
        s.apply(
            Kind::Session,
            true,
            &serde_json::json!({"login": "alice", "hostname": "pc1"}),
        );
        assert_eq!(s.at("10.0.0.5"), (Some("pc1"), None));
        s.apply(
            Kind::Machine,
            false,
            &serde_json::json!({"id": 1, "ip": "10.0.0.9", "hostname": "pc1"}),
        );
        assert_eq!(s.at("10.0.0.5"), (None, None));
        assert_eq!(s.at("nonsense"), (None, None));
    }

    #[test]
    fn files_rotate_by_day_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Rotating::new(dir.path(), 1024).unwrap();
        let line = "x".repeat(300);
        for _ in 0..4 {
            r.write("2026-11-27", &line).unwrap();
        }
        r.write("2026-11-28", &line).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "conntrack-2026-11-27.1.jsonl",
                "conntrack-2026-11-27.jsonl",
                "conntrack-2026-11-28.jsonl"
            ]
        );
        let first = std::fs::read_to_string(dir.path().join("conntrack-2026-11-27.1.jsonl")).unwrap();
        assert_eq!(first.lines().count(), 3);
    }
}
