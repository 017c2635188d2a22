//! The built-in DNS (UDP and TCP) and the read-only TFTP server: bound, their addresses written in
//! the data directory, served on their own tasks.

use std::sync::Arc;

use anyhow::Context;
use keel_client::data_dir as files;
use keel_store::Db;

use crate::config::ServeConfig;

/// Starts the built-in DNS. The default address being taken (another resolver on 5353) is a
/// warning, so `keel serve` still works on first start; an address asked for is an error.
pub(super) async fn start_dns(
    db: &Arc<Db>,
    cfg: &ServeConfig,
    metrics: Arc<keel_server::Metrics>,
) -> anyhow::Result<()> {
    let dns_cfg = cfg
        .dns
        .config(&cfg.propagation.generators)
        .context("invalid [dns] configuration")?;
    let zones = Arc::new(keel_server::dns::Zones::new(dns_cfg, db.pools()));
    let bound = keel_server::dns::bind(cfg.dns_listen).await;
    let Some((udp, tcp)) = optional(
        bound,
        "DNS",
        cfg.dns_listen,
        cfg.dns_explicit,
        "[dns] listen or --dns-listen",
    )?
    else {
        return Ok(());
    };
    let addr = udp.local_addr()?;
    std::fs::write(cfg.data_dir.join(files::DNS_ADDR), addr.to_string())?;
    tracing::info!(%addr, zone = %zones.config().zone, "DNS is serving (UDP and TCP)");
    let answered: keel_server::dns::Answered = Arc::new(move |rcode| metrics.dns_answered(rcode));
    tokio::spawn(keel_server::dns::serve(db.clone(), zones, udp, tcp, answered));
    Ok(())
}

/// Starts the read-only TFTP server, on the same terms as the DNS.
pub(super) async fn start_tftp(cfg: &ServeConfig, metrics: Arc<keel_server::Metrics>) -> anyhow::Result<()> {
    let root = cfg.tftp.root.clone().unwrap_or_else(|| cfg.data_dir.join("tftp"));
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create the TFTP root {}", root.display()))?;
    let tftp = Arc::new(keel_server::tftp::TftpConfig {
        max_transfers: cfg.tftp.max_transfers.unwrap_or(keel_server::tftp::MAX_TRANSFERS),
        max_per_source: cfg.tftp.max_per_source.unwrap_or(keel_server::tftp::MAX_PER_SOURCE),
        root: root.clone(),
        timeout: std::time::Duration::from_millis(cfg.tftp.retransmit_ms.unwrap_or(1000).max(10)),
    });
    let bound = tokio::net::UdpSocket::bind(cfg.tftp_listen).await;
    let Some(sock) = optional(
        bound,
        "TFTP",
        cfg.tftp_listen,
        cfg.tftp_explicit,
        "[tftp] listen or --tftp-listen",
    )?
    else {
        return Ok(());
    };
    let addr = sock.local_addr()?;
    std::fs::write(cfg.data_dir.join(files::TFTP_ADDR), addr.to_string())?;
    tracing::info!(%addr, root = %root.display(), "TFTP is serving (read-only)");
    tokio::spawn(keel_server::tftp::serve(tftp, sock, move |o| metrics.tftp_ended(o)));
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
