//! The built-in authoritative DNS: answers from the live Snapshot, over UDP and TCP.
//!
//! Zones: the forward zone (`prolo` by default: A records for every hostname and alias) and the
//! reverse zone of every pool (PTR to the hostname). Inside them keel is authoritative (AA, SOA,
//! NS, NXDOMAIN); names outside are forwarded to the configured upstream resolvers, or REFUSED.
//! Each query reads the Snapshot current at that moment, so a write acknowledged over HTTP is
//! answered by the next query (read-your-writes). [`answer`] is a pure function of the Snapshot.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, NS, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use keel_model::{Pools, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// The `[dns]` table of keel.toml: where the built-in DNS listens and how it answers. Its
/// `Default` is the one place these defaults are written.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Serve DNS.
    pub enabled: bool,
    /// UDP and TCP address (production: 0.0.0.0:53, with CAP_NET_BIND_SERVICE). keel starts
    /// without DNS when the default address is taken; one given here must be bound.
    pub listen: SocketAddr,
    /// The forward zone (A records for every hostname and alias), without a trailing dot.
    pub zone: String,
    /// TTL of every answer, and the SOA's negative-caching minimum.
    pub ttl: u32,
    /// The hostname (a machine) named in NS records, with its address as glue.
    pub ns: String,
    /// Resolvers (`ip:port`) for names outside keel's zones; none: such queries are REFUSED.
    pub upstream: Vec<SocketAddr>,
    /// Who may have names outside keel's zones forwarded (a resolver open to all is an
    /// amplifier). Empty: loopback and the pools' networks.
    #[schemars(with = "Vec<String>")]
    pub forward_clients: Vec<ipnet::IpNet>,
    /// Forwarded queries in flight at once; over it a query gets SERVFAIL at once. Forwards run
    /// on their own tasks: a dead upstream never delays an authoritative answer.
    pub max_forwards: usize,
    /// Forwarded queries per source address and minute; over it, REFUSED.
    pub forward_per_minute: u32,
    /// DNS-over-TCP connections at once; over it a new one is closed at once.
    pub max_tcp: usize,
    /// Names for the free addresses of the unknown machines' DHCP range, as the `dns` service
    /// writes them for BIND (`<prefix>-A-B-C-D`): derived from `[propagation.generators]`.
    #[serde(skip)]
    #[schemars(skip)]
    pub dynamic: Option<DynamicNames>,
}

impl DnsConfig {
    /// The zone as answered (lower case, no trailing dot) and the NS name checked; the error
    /// names its key (`dns.zone`, `dns.ns`).
    pub fn normalize(&mut self) -> Result<(), keel_model::ValidationError> {
        self.zone = self.zone.trim_end_matches('.').to_ascii_lowercase();
        keel_model::propagation::check_fqdn("dns.zone", &self.zone)?;
        keel_model::Hostname::parse("dns.ns", &self.ns)?;
        Ok(())
    }
}

/// The DHCP range for unknown machines, and the prefix of its addresses' names.
#[derive(Debug, Clone)]
pub struct DynamicNames {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub prefix: String,
}

impl DynamicNames {
    /// The address of a forward-zone name of the range, if no machine holds it.
    fn address(&self, snap: &Snapshot, host: &str) -> Option<Ipv4Addr> {
        keel_gen::dynamic_address(&self.prefix, host).filter(|ip| self.free(snap, *ip))
    }

    /// The name of an address of the range, if no machine holds it.
    fn name(&self, snap: &Snapshot, ip: Ipv4Addr) -> Option<String> {
        self.free(snap, ip).then(|| keel_gen::dynamic_name(&self.prefix, ip))
    }

    fn free(&self, snap: &Snapshot, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&ip) && snap.machine_by_ip(ip).is_none()
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 5353)),
            zone: "prolo".into(),
            ttl: 60,
            ns: "gw".into(),
            upstream: Vec::new(),
            forward_clients: Vec::new(),
            max_forwards: 64,
            forward_per_minute: 600,
            max_tcp: 128,
            dynamic: None,
        }
    }
}

/// The zones as served, replaced whole when the pools change (a reload of keel.toml): each query
/// reads the zones current when it arrives.
pub type LiveZones = Arc<arc_swap::ArcSwap<Zones>>;

/// The zones keel serves: the forward zone and one reverse zone per pool network.
#[derive(Debug, Clone)]
pub struct Zones {
    cfg: DnsConfig,
    /// Reverse zone names (`0.168.192.in-addr.arpa`), from the pools.
    reverse: Vec<String>,
    /// Who may have queries forwarded: `forward_clients`, or loopback and the pools' networks.
    forward_clients: Vec<ipnet::IpNet>,
}

impl Zones {
    pub fn new(cfg: DnsConfig, pools: &Pools) -> Self {
        let forward_clients = if cfg.forward_clients.is_empty() {
            let loopback = ["127.0.0.0/8", "::1/128"].iter().filter_map(|n| n.parse().ok());
            loopback
                .chain(pools.networks().into_iter().map(ipnet::IpNet::V4))
                .collect()
        } else {
            cfg.forward_clients.clone()
        };
        Self {
            cfg,
            reverse: pools.reverse_zones(),
            forward_clients,
        }
    }

    pub fn config(&self) -> &DnsConfig {
        &self.cfg
    }
}

/// What a query name is, relative to keel's zones.
enum Place<'a> {
    /// The apex of one of keel's zones (forward or reverse).
    Apex(&'a str),
    /// A name in the forward zone (the part before the zone).
    Forward(&'a str),
    /// An address inside a reverse zone (a full `d.c.b.a.in-addr.arpa`, or a partial one).
    Reverse(&'a str, Option<Ipv4Addr>),
    Outside,
}

fn place<'a>(zones: &'a Zones, name: &'a str) -> Place<'a> {
    let zone = zones.cfg.zone.as_str();
    if name == zone {
        return Place::Apex(zone);
    }
    if let Some(host) = name.strip_suffix(zone).and_then(|h| h.strip_suffix('.')) {
        return Place::Forward(host);
    }
    for rz in &zones.reverse {
        if name == rz {
            return Place::Apex(rz);
        }
        if name.ends_with(&format!(".{rz}")) {
            return Place::Reverse(rz, ptr_address(name));
        }
    }
    Place::Outside
}

/// `d.c.b.a.in-addr.arpa` → a.b.c.d.
fn ptr_address(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let octets: Vec<u8> = rest.split('.').map(str::parse).collect::<Result<_, _>>().ok()?;
    let [d, c, b, a] = octets[..] else {
        return None;
    };
    Some(Ipv4Addr::new(a, b, c, d))
}

fn fqdn(s: &str) -> Name {
    Name::from_ascii(format!("{s}.")).unwrap_or_else(|_| Name::root())
}

fn soa(zones: &Zones, apex: &str, snap: &Snapshot) -> Record {
    let cfg = &zones.cfg;
    let rdata = SOA::new(
        fqdn(&format!("{}.{}", cfg.ns, cfg.zone)),
        fqdn(&format!("hostmaster.{}", cfg.zone)),
        // The seq of the last machine change: it grows exactly when the zones' data does.
        u32::try_from(snap.machines_seq() % u64::from(u32::MAX)).unwrap_or(0),
        3600,
        600,
        86_400,
        cfg.ttl,
    );
    Record::from_rdata(fqdn(apex), cfg.ttl, RData::SOA(rdata))
}

fn ns(zones: &Zones, apex: &str) -> Record {
    let target = fqdn(&format!("{}.{}", zones.cfg.ns, zones.cfg.zone));
    Record::from_rdata(fqdn(apex), zones.cfg.ttl, RData::NS(NS(target)))
}

/// The answer to one query message, from `snap`. `None`: forward it upstream.
pub fn answer(zones: &Zones, snap: &Snapshot, req: &Message) -> Option<Message> {
    let mut resp = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = !zones.cfg.upstream.is_empty();
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        resp.set_edns(e);
    }
    if req.metadata.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        return Some(resp);
    }
    let [q] = &req.queries[..] else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return Some(resp);
    };
    resp.add_query(q.clone());
    let name = q.name().to_ascii().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    let qtype = q.query_type();
    let ttl = zones.cfg.ttl;
    let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
    match place(zones, name) {
        Place::Outside if !zones.cfg.upstream.is_empty() => return None,
        Place::Outside => {
            resp.metadata.response_code = ResponseCode::Refused;
            return Some(resp);
        }
        Place::Apex(apex) => {
            resp.metadata.authoritative = true;
            if wants(RecordType::SOA) {
                resp.add_answer(soa(zones, apex, snap));
            }
            if wants(RecordType::NS) {
                resp.add_answer(ns(zones, apex));
                if let Some(m) = snap.machine_by_name(&zones.cfg.ns) {
                    let glue = fqdn(&format!("{}.{}", zones.cfg.ns, zones.cfg.zone));
                    resp.add_additional(Record::from_rdata(glue, ttl, RData::A(A(m.ip))));
                }
            }
            if resp.answers.is_empty() {
                resp.add_authority(soa(zones, apex, snap));
            }
        }
        Place::Forward(host) => {
            resp.metadata.authoritative = true;
            let dynamic = || zones.cfg.dynamic.as_ref().and_then(|d| d.address(snap, host));
            match snap.machine_answering(host).map(|m| m.ip).or_else(dynamic) {
                Some(ip) if wants(RecordType::A) => {
                    resp.add_answer(Record::from_rdata(q.name().clone(), ttl, RData::A(A(ip))));
                }
                Some(_) => {
                    resp.add_authority(soa(zones, &zones.cfg.zone, snap)); // NODATA
                }
                None => {
                    resp.metadata.response_code = ResponseCode::NXDomain;
                    resp.add_authority(soa(zones, &zones.cfg.zone, snap));
                }
            }
        }
        Place::Reverse(rz, ip) => {
            resp.metadata.authoritative = true;
            let dynamic = |ip| zones.cfg.dynamic.as_ref().and_then(|d| d.name(snap, ip));
            let host = ip.and_then(|ip| {
                snap.machine_by_ip(ip)
                    .map(|m| m.hostname.to_string())
                    .or_else(|| dynamic(ip))
            });
            match host {
                Some(host) if wants(RecordType::PTR) => {
                    let target = fqdn(&format!("{host}.{}", zones.cfg.zone));
                    resp.add_answer(Record::from_rdata(q.name().clone(), ttl, RData::PTR(PTR(target))));
                }
                Some(_) => {
                    resp.add_authority(soa(zones, rz, snap));
                }
                None => {
                    resp.metadata.response_code = ResponseCode::NXDomain;
                    resp.add_authority(soa(zones, rz, snap));
                }
            }
        }
    }
    Some(resp)
}

/// What to do with one request.
enum Decision {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// A name outside keel's zones: forward it as received (if the client may), off the
    /// answering path.
    Forward(Message, Vec<u8>),
    /// Nothing sensible to send (not a query).
    Ignore,
}

/// Decides a request from the Snapshot alone: never waits on anything. Only a query is ever
/// answered: a packet with the reply bit set, or one that does not parse as a query, gets
/// silence — an answer to an answer is how two servers (or keel's DNS and a forged TFTP packet)
/// would bounce packets at each other without end.
fn decide(zones: &Zones, snap: &Snapshot, packet: &[u8], udp: bool) -> Decision {
    // The QR bit (RFC 1035 4.1.1), read before parsing: replies are never answered.
    if packet.get(2).is_none_or(|flags| flags & 0x80 != 0) {
        return Decision::Ignore;
    }
    let req = match Message::from_vec(packet) {
        Ok(m) if m.metadata.message_type == MessageType::Query => m,
        _ => return Decision::Ignore,
    };
    let Some(resp) = answer(zones, snap, &req) else {
        return Decision::Forward(req, packet.to_vec());
    };
    let Ok(bytes) = resp.to_vec() else {
        return Decision::Ignore;
    };
    let limit = if req.edns.is_some() { 1232 } else { 512 };
    if udp && bytes.len() > limit {
        return resp.truncate().to_vec().map_or(Decision::Ignore, Decision::Reply);
    }
    Decision::Reply(bytes)
}

/// An error answer to `req` (REFUSED, SERVFAIL).
fn error_reply(req: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut m = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
    m.metadata.response_code = code;
    m.add_queries(req.queries.clone());
    m.to_vec().ok()
}

/// What bounds forwarding: the clients it serves, a per-source rate, and the forwards in flight.
struct Forwarding {
    slots: Arc<tokio::sync::Semaphore>,
    rate: keel_limits::RateLimit,
}

impl Forwarding {
    fn new(cfg: &DnsConfig) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_forwards.max(1))),
            rate: keel_limits::RateLimit::per_minute(cfg.forward_per_minute),
        }
    }

    /// A slot for forwarding `req` from `client`, or the answer to give at once instead.
    fn admit(
        &self,
        zones: &Zones,
        client: std::net::IpAddr,
        req: &Message,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Option<Vec<u8>>> {
        let client = keel_limits::canonical(client);
        let allowed = zones.forward_clients.iter().any(|n| n.contains(&client));
        if zones.cfg.upstream.is_empty() || !allowed || !self.rate.allow(client) {
            return Err(error_reply(req, ResponseCode::Refused));
        }
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| error_reply(req, ResponseCode::ServFail))
    }
}

/// Relays a query to the first upstream that answers within 2 s; SERVFAIL if none does.
async fn forward(upstream: &[SocketAddr], req: &Message, packet: &[u8]) -> Option<Vec<u8>> {
    for up in upstream {
        let bind: SocketAddr = if up.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(packet, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, from))) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
            if from == *up && n >= 2 && buf[..2] == packet[..2] {
                buf.truncate(n);
                return Some(buf);
            }
        }
    }
    error_reply(req, ResponseCode::ServFail)
}

/// Binds UDP and TCP on the same address (port 0: a free port both can use).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() != 0 => return Err(e),
            Err(_) => continue, // the TCP side of that free UDP port is taken: another one
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no port free for both UDP and TCP",
    ))
}

/// Hears the RCODE of every answer sent (its header's low four bits), for metrics.
pub type Answered = Arc<dyn Fn(u8) + Send + Sync>;

fn rcode(answer: &[u8]) -> u8 {
    answer.get(3).map_or(0, |b| b & 0x0F)
}

/// Where each query reads the Snapshot current at that moment (keel-server's `Db::snapshot`).
pub type SnapshotSource = Arc<dyn Fn() -> Arc<Snapshot> + Send + Sync>;

/// Serves DNS on `udp` and `tcp` until the process ends.
pub async fn serve(db: SnapshotSource, zones: LiveZones, udp: UdpSocket, tcp: TcpListener, answered: Answered) {
    let udp = Arc::new(udp);
    let (fwd, max_tcp) = {
        let first = zones.load();
        (Arc::new(Forwarding::new(&first.cfg)), first.cfg.max_tcp)
    };
    for _ in 0..2 {
        let (db, zones, udp, fwd, answered) = (db.clone(), zones.clone(), udp.clone(), fwd.clone(), answered.clone());
        tokio::spawn(async move { serve_udp(&db, &zones, &udp, &fwd, &answered).await });
    }
    let conns = Arc::new(tokio::sync::Semaphore::new(max_tcp.max(1)));
    // One address holds at most an eighth of the connections: a client that opens them and never
    // reads fills its own share, not everyone's.
    let per_source = (max_tcp / 8).max(1);
    let by_source = Arc::new(parking_lot::Mutex::new(std::collections::HashMap::<
        std::net::IpAddr,
        usize,
    >::new()));
    loop {
        let Ok((stream, peer)) = tcp.accept().await else {
            // Out of descriptors, most likely: let connections close rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let ip = peer.ip();
        {
            let mut by = by_source.lock();
            let n = by.entry(ip).or_insert(0);
            if *n >= per_source {
                keel_limits::refused!(DEBUG, %peer, per_source, "DNS over TCP: this address holds its share, closed");
                continue;
            }
            *n += 1;
        }
        let Ok(slot) = conns.clone().try_acquire_owned() else {
            keel_limits::refused!(DEBUG, %peer, "DNS over TCP: connection cap reached, closed");
            release_source(&by_source, ip);
            continue; // dropped: closed at once
        };
        let (db, zones, fwd, answered, by) = (
            db.clone(),
            zones.clone(),
            fwd.clone(),
            answered.clone(),
            by_source.clone(),
        );
        tokio::spawn(async move {
            serve_tcp(&db, &zones, &fwd, stream, ip, &answered).await;
            drop(slot);
            release_source(&by, ip);
        });
    }
}

fn release_source(by: &parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>, ip: std::net::IpAddr) {
    let mut by = by.lock();
    if let Some(n) = by.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            by.remove(&ip);
        }
    }
}

/// Answers on the socket's own task; a forward runs on a task of its own, holding a slot, and
/// sends its answer itself when the upstream gives one.
async fn serve_udp(db: &SnapshotSource, live: &LiveZones, udp: &Arc<UdpSocket>, fwd: &Forwarding, answered: &Answered) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = udp.recv_from(&mut buf).await else {
            continue;
        };
        let zones = live.load_full();
        let out = match decide(&zones, &db(), &buf[..n], true) {
            Decision::Reply(out) => Some(out),
            Decision::Ignore => None,
            Decision::Forward(req, packet) => match fwd.admit(&zones, from.ip(), &req) {
                Err(now) => now,
                Ok(slot) => {
                    let (zones, udp, answered) = (zones.clone(), udp.clone(), answered.clone());
                    tokio::spawn(async move {
                        if let Some(out) = forward(&zones.cfg.upstream, &req, &packet).await {
                            answered(rcode(&out));
                            let _ = udp.send_to(&out, from).await;
                        }
                        drop(slot);
                    });
                    None
                }
            },
        };
        if let Some(out) = out {
            answered(rcode(&out));
            let _ = udp.send_to(&out, from).await;
        }
    }
}

/// RFC 7766: length-prefixed messages, several per connection, closed after 10 s idle.
async fn serve_tcp(
    db: &SnapshotSource,
    live: &LiveZones,
    fwd: &Forwarding,
    mut stream: tokio::net::TcpStream,
    peer: std::net::IpAddr,
    answered: &Answered,
) {
    let idle = Duration::from_secs(10);
    loop {
        let mut len = [0u8; 2];
        if !matches!(tokio::time::timeout(idle, stream.read_exact(&mut len)).await, Ok(Ok(_))) {
            return;
        }
        let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if !matches!(
            tokio::time::timeout(idle, stream.read_exact(&mut packet)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let zones = live.load_full();
        let out = match decide(&zones, &db(), &packet, false) {
            Decision::Reply(out) => Some(out),
            Decision::Ignore => None,
            Decision::Forward(req, packet) => match fwd.admit(&zones, peer, &req) {
                Err(now) => now,
                Ok(_slot) => forward(&zones.cfg.upstream, &req, &packet).await,
            },
        };
        let Some(out) = out else { return };
        answered(rcode(&out));
        let Ok(n) = u16::try_from(out.len()) else { return };
        let mut framed = n.to_be_bytes().to_vec();
        framed.extend_from_slice(&out);
        // A client that pipelines queries and reads no answer is cut, not waited for.
        if !matches!(tokio::time::timeout(idle, stream.write_all(&framed)).await, Ok(Ok(()))) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_model::reverse_zone;

    #[test]
    fn reverse_zones_and_ptr_names() {
        assert_eq!(
            reverse_zone("192.168.1.0/24".parse().unwrap()),
            "1.168.192.in-addr.arpa"
        );
        assert_eq!(reverse_zone("10.0.0.0/16".parse().unwrap()), "0.10.in-addr.arpa");
        assert_eq!(reverse_zone("10.0.0.0/20".parse().unwrap()), "0.10.in-addr.arpa");
        assert_eq!(reverse_zone("10.0.0.0/8".parse().unwrap()), "10.in-addr.arpa");
        assert_eq!(
            ptr_address("254.1.168.192.in-addr.arpa"),
            Some(Ipv4Addr::new(192, 168, 1, 254))
        );
        assert_eq!(ptr_address("1.168.192.in-addr.arpa"), None);
        assert_eq!(ptr_address("x.1.168.192.in-addr.arpa"), None);
    }
}

/// Issue 19: the query handler on any packet (`fuzz_*`, see docs/security.md): no panic, and an
/// answer is never larger than UDP allows.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// A query for `name`, as a client would send it, possibly cut or with bytes flipped.
    fn packet() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![
            "[a-z0-9-]{1,10}(\\.prolo)?",
            "[0-9]{1,3}\\.[0-9]{1,3}\\.168\\.192\\.in-addr\\.arpa",
            any::<String>()
        ];
        let query = (name, any::<u16>(), any::<u16>()).prop_map(|(n, id, t)| {
            let mut m = Message::new(id, MessageType::Query, OpCode::Query);
            if let Ok(name) = Name::from_utf8(&n) {
                m.add_query(hickory_proto::op::Query::query(name, RecordType::from(t % 300)));
            }
            m.to_vec().unwrap_or_default()
        });
        prop_oneof![
            any::<Vec<u8>>(),
            query.clone(),
            (query, any::<usize>(), any::<u8>()).prop_map(|(mut q, i, b)| {
                if !q.is_empty() {
                    let i = i % q.len();
                    q[i] ^= b;
                    q.truncate(q.len() - i / 2);
                }
                q
            }),
        ]
    }

    /// Issue 31: keel's DNS answered FORMERR to anything it could not parse, replies included, so a
    /// forged packet started a DNS↔TFTP (or keel↔keel) exchange without end. A query is answered;
    /// a reply, and what does not parse as a query, get silence.
    #[test]
    fn only_queries_are_answered() {
        let zones = Zones::new(DnsConfig::default(), &Pools::default());
        let snap = Snapshot::default();
        let query = keel_testkit::dns_query(7, "gw.prolo");
        assert!(matches!(decide(&zones, &snap, &query, true), Decision::Reply(_)));
        let mut reply = query.clone();
        reply[2] |= 0x80;
        assert!(matches!(decide(&zones, &snap, &reply, true), Decision::Ignore));
        for garbage in [
            &b"\x00\x05\x00\x00server busy\x00"[..],
            b"\x12",
            b"\x12\x34\x01\x00\x00",
        ] {
            assert!(
                matches!(decide(&zones, &snap, garbage, true), Decision::Ignore),
                "{garbage:?}"
            );
        }
    }

    /// What a client writes on a DNS-over-TCP connection: framed packets (each length right,
    /// short or long), and raw bytes.
    fn tcp_stream() -> impl Strategy<Value = Vec<u8>> {
        let frame = (packet(), -3i32..3).prop_map(|(p, off)| {
            let len = u16::try_from((i32::try_from(p.len()).unwrap_or(0) + off).max(0)).unwrap_or(u16::MAX);
            [&len.to_be_bytes()[..], &p[..]].concat()
        });
        prop_oneof![
            3 => proptest::collection::vec(frame, 0..4).prop_map(|f| f.concat()),
            1 => proptest::collection::vec(any::<u8>(), 0..300),
        ]
    }

    /// Issue 31, from the wire: `PROPTEST_CASES` connections to keel's DNS over TCP, each
    /// writing any bytes then closing its side. Every framed answer read back is an answer (its
    /// reply bit set), no connection is held, and a plain query still gets its answer after.
    #[tokio::test]
    async fn fuzz_dns_over_tcp_from_the_wire() {
        use proptest::strategy::ValueTree as _;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let snapshot = Arc::new(Snapshot::default());
        let db: SnapshotSource = Arc::new(move || snapshot.clone());
        let zones: LiveZones = Arc::new(arc_swap::ArcSwap::from_pointee(Zones::new(
            DnsConfig::default(),
            &Pools::default(),
        )));
        let (udp, tcp) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = tcp.local_addr().unwrap();
        tokio::spawn(serve(db, zones, udp, tcp, Arc::new(|_| ())));
        let exchange = |bytes: Vec<u8>| async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let _ = c.write_all(&bytes).await;
            let _ = c.shutdown().await;
            let mut back = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut back)).await;
            (read.is_ok(), back)
        };
        let mut runner = proptest::test_runner::TestRunner::default();
        let strategy = tcp_stream();
        for _ in 0..runner.config().cases {
            let bytes = strategy.new_tree(&mut runner).unwrap().current();
            let (closed, mut back) = exchange(bytes.clone()).await;
            assert!(closed, "keel held a connection whose client had closed: {bytes:?}");
            while back.len() >= 2 {
                let n = usize::from(u16::from_be_bytes([back[0], back[1]]));
                assert!(back.len() >= 2 + n && n >= 12, "a cut answer");
                assert!(back[2 + 2] & 0x80 != 0, "an answer without its reply bit");
                back.drain(..2 + n);
            }
            assert!(back.is_empty(), "bytes outside a frame: {back:?}");
        }
        let mut q = Message::new(7, MessageType::Query, OpCode::Query);
        q.add_query(hickory_proto::op::Query::query(fqdn("gw.prolo"), RecordType::A));
        let q = q.to_vec().unwrap();
        let framed = [&u16::try_from(q.len()).unwrap().to_be_bytes()[..], &q[..]].concat();
        let (_, back) = exchange(framed).await;
        assert!(
            back.len() > 14 && back[2 + 2] & 0x80 != 0,
            "a plain query answered after: {back:?}"
        );
    }

    proptest! {
        #[test]
        fn fuzz_dns_query_handler(p in packet()) {
            let zones = Zones::new(DnsConfig::default(), &Pools::default());
            let reply_bit = p.get(2).is_some_and(|f| f & 0x80 != 0);
            match decide(&zones, &Snapshot::default(), &p, true) {
                Decision::Reply(out) => {
                    prop_assert!(out.len() <= 1232, "{} bytes over UDP", out.len());
                    prop_assert!(!reply_bit, "an answer to an answer");
                    // What keel sends is itself an answer: keel never answers it.
                    prop_assert!(out[2] & 0x80 != 0, "a reply without its reply bit");
                    let again = decide(&zones, &Snapshot::default(), &out, true);
                    prop_assert!(matches!(again, Decision::Ignore), "keel answered its own answer");
                }
                Decision::Forward(..) => prop_assert!(!reply_bit),
                Decision::Ignore => {}
            }
        }
    }
}
