//! The built-in DNS (UDP and TCP) and the read-only TFTP server: bound, their addresses written in
//! the data directory, served on their own tasks.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use keel_client::data_dir as files;
use keel_dns::LiveZones;
use keel_store::Db;

use crate::config::Listener;

/// Starts the built-in DNS; the zones it serves, for a reload to replace. The default address
/// being taken (another resolver on 5353) is a warning, so `keel serve` still works on first start;
/// an address asked for is an error.
pub(super) async fn start_dns(
    db: &Arc<Db>,
    dns: &Listener<keel_dns::DnsConfig>,
    data_dir: &Path,
    metrics: Arc<keel_server::Metrics>,
) -> anyhow::Result<Option<LiveZones>> {
    let zones = keel_dns::Zones::new(dns.config.clone(), &db.pools());
    let zones: LiveZones = Arc::new(arc_swap::ArcSwap::from_pointee(zones));
    let bound = keel_dns::bind(dns.listen).await;
    let Some((udp, tcp)) = optional(bound, "DNS", dns.listen, dns.explicit, "[dns] listen or --dns-listen")? else {
        return Ok(None);
    };
    let addr = udp.local_addr()?;
    std::fs::write(data_dir.join(files::DNS_ADDR), addr.to_string())?;
    tracing::info!(%addr, zone = %dns.config.zone, "DNS is serving (UDP and TCP)");
    let answered: keel_dns::Answered = Arc::new(move |rcode| metrics.dns_answered(rcode));
    let snapshots: keel_dns::SnapshotSource = {
        let db = db.clone();
        Arc::new(move || db.snapshot())
    };
    tokio::spawn(keel_dns::serve(snapshots, zones.clone(), udp, tcp, answered));
    Ok(Some(zones))
}

/// Starts the read-only TFTP server, on the same terms as the DNS.
pub(super) async fn start_tftp(
    tftp: &Listener<keel_tftp::TftpConfig>,
    data_dir: &Path,
    metrics: Arc<keel_server::Metrics>,
) -> anyhow::Result<()> {
    let root = &tftp.config.root;
    std::fs::create_dir_all(root).with_context(|| format!("cannot create the TFTP root {}", root.display()))?;
    let bound = tokio::net::UdpSocket::bind(tftp.listen).await;
    let Some(sock) = optional(
        bound,
        "TFTP",
        tftp.listen,
        tftp.explicit,
        "[tftp] listen or --tftp-listen",
    )?
    else {
        return Ok(());
    };
    let addr = sock.local_addr()?;
    std::fs::write(data_dir.join(files::TFTP_ADDR), addr.to_string())?;
    tracing::info!(%addr, root = %root.display(), "TFTP is serving (read-only)");
    let config = Arc::new(tftp.config.clone());
    tokio::spawn(keel_tftp::serve(config, sock, move |o| metrics.tftp_ended(o.as_str())));
    Ok(())
}

/// A listener of an optional service: its default address being taken is a warning (`None`), so
/// `keel serve` still works on first start; an address asked for explicitly is an error.
pub(super) fn optional<T>(
    bound: std::io::Result<T>,
    what: &str,
    addr: std::net::SocketAddr,
    explicit: bool,
    setting: &str,
) -> anyhow::Result<Option<T>> {
    match bound {
        Ok(t) => Ok(Some(t)),
        Err(e) if !explicit => {
            tracing::warn!(%addr, %e, "{what} not started: its default address is taken; set {setting}");
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen for {what} on {addr}")),
    }
}
