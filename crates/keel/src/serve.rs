//! `keel serve`: open the data directory, the database and the socket, then serve until stopped.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use keel_model::Role;
use keel_server::{AppState, ServerConfig};
use keel_store::{Db, NewToken, SqliteStore};

use crate::config::ServeConfig;
use crate::example;

pub const DB_FILE: &str = "keel.db";
pub const LOCK_FILE: &str = "keel.lock";
pub const TOKEN_FILE: &str = "admin.token";
/// Written once listening: the address actually bound (useful with port 0).
pub const ADDR_FILE: &str = "listen.addr";
/// Written once the DNS listens: its address (UDP and TCP).
pub const DNS_ADDR_FILE: &str = "dns.addr";
/// Written once TFTP listens: its address.
pub const TFTP_ADDR_FILE: &str = "tftp.addr";
/// The presence site secret, made on first start.
pub const PRESENCE_SECRET_FILE: &str = "presence.secret";

pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    private_data_dir(&cfg.data_dir)?;
    let _lock = lock_data_dir(&cfg.data_dir)?;
    let (store, pg) = open_store(&cfg).await?;
    let db = Arc::new(
        Db::open(store, cfg.pools.clone())
            .await
            .context("cannot load the database")?,
    );
    if let Some(pg) = &pg {
        tokio::spawn(crate::shared::follow(db.clone(), pg.clone()));
    }
    ensure_admin_token(&db, &cfg.data_dir).await?;
    if cfg.example_site {
        example::load(&db, &cfg.data_dir)
            .await
            .context("cannot load the example site")?;
    }
    tokio::spawn(trim_log_forever(db.clone(), cfg.keep_changes, cfg.keep_days));
    let server_config = ServerConfig {
        open_reads: cfg.open_reads,
        data_dir: cfg.data_dir.clone(),
        watch: cfg.watch.clone(),
        netboot: cfg.netboot.config(&cfg.data_dir),
        presence: presence_config(&cfg)?,
        client_addr: cfg.sso.client_addr(),
        sso: keel_server::sso::SsoConfig {
            overrides: cfg.sso.overrides.clone(),
        },
        map_public: cfg.presence.map_public.unwrap_or(true),
        web: cfg.web.config()?,
        rpc_secret: rpc_secret(&cfg)?,
    };
    // Where kernels and initrds go (served at /boot/files/).
    let _ = std::fs::create_dir_all(&server_config.netboot.files_dir);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut state = AppState::with_shutdown(db.clone(), server_config, stop_rx);
    if cfg.propagation.enabled.unwrap_or(true) {
        match &pg {
            // Several servers: the one holding the propagation lock runs the engine.
            Some(pg) => {
                tokio::spawn(crate::shared::propagate_when_leader(
                    state.clone(),
                    db.clone(),
                    pg.clone(),
                    cfg.clone(),
                ));
            }
            None => {
                let engine = crate::propagation::start(db.clone(), &cfg.propagation, &cfg.data_dir, cfg.example_site)
                    .await
                    .context("cannot start propagation")?;
                state = state.with_engine(engine);
            }
        }
    }
    if cfg.dns.enabled.unwrap_or(true) {
        start_dns(&db, &cfg).await?;
    }
    if cfg.tftp.enabled.unwrap_or(true) {
        start_tftp(&cfg).await?;
    }
    tokio::spawn(keel_server::presence::run_expiry(state.clone()));
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    std::fs::write(cfg.data_dir.join(ADDR_FILE), addr.to_string())?;
    tracing::info!(%addr, machines = db.snapshot().machine_count(), seq = db.snapshot().seq(), "keel is serving");
    println!("keel: serving on http://{addr} (data in {})", cfg.data_dir.display());
    let stopping = async move {
        shutdown_signal().await;
        tracing::info!("stopping: ending open streams, finishing requests");
        let _ = stop_tx.send(true);
    };
    raise_open_file_limit();
    serve_http(listener, keel_server::app(state), cfg.http, stopping).await;
    tracing::info!("keel stopped");
    Ok(())
}

/// SQLite in the data directory, or PostgreSQL when a URL is given (then also its URL, for the
/// follower and the propagation lock).
async fn open_store(cfg: &ServeConfig) -> anyhow::Result<(Arc<dyn keel_store::Store>, Option<String>)> {
    match cfg.database.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = keel_store::PgStore::open(url)
                .await
                .with_context(|| format!("cannot open the PostgreSQL database {}", redact(url)))?;
            tracing::info!(database = %redact(url), "using PostgreSQL");
            Ok((Arc::new(store), Some(url.to_owned())))
        }
        Some(other) => anyhow::bail!(
            "--database must be a postgres:// URL (got {:?}); SQLite is the default",
            redact(other)
        ),
        None => {
            let store = SqliteStore::open(&cfg.data_dir.join(DB_FILE))
                .await
                .context("cannot open the database")?;
            Ok((Arc::new(store), None))
        }
    }
}

/// A database URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!(
                "{}{user}{}@{}",
                &url[..s + 3],
                if creds.contains(':') { ":***" } else { "" },
                &url[at + 1..]
            )
        }
        _ => url.to_owned(),
    }
}

/// The presence settings; the site secret is read from its file, made on first start.
fn presence_config(cfg: &ServeConfig) -> anyhow::Result<keel_server::presence::PresenceConfig> {
    let timeout = std::time::Duration::from_secs(cfg.presence.timeout_secs.unwrap_or(30).max(1));
    let path = cfg
        .presence
        .secret_file
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join(PRESENCE_SECRET_FILE));
    Ok(keel_server::presence::PresenceConfig {
        timeout,
        recovery: cfg
            .presence
            .recovery_secs
            .map_or(timeout, std::time::Duration::from_secs),
        secret: Some(read_or_create_secret(&path)?),
    })
}

/// prologin's RPC shared secret, when `[rpc] secret_file` names one.
fn rpc_secret(cfg: &ServeConfig) -> anyhow::Result<Option<keel_server::rpc::RpcSecret>> {
    let Some(path) = &cfg.rpc.secret_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    anyhow::ensure!(!secret.is_empty(), "{}: the RPC secret is empty", path.display());
    Ok(Some(keel_server::rpc::RpcSecret {
        secret,
        principal: keel_model::Principal {
            name: cfg.rpc.principal.clone().unwrap_or_else(|| "prologin-rpc".into()),
            ..keel_model::Principal::system()
        },
    }))
}

/// Makes a new file readable by keel only (0600) holding `line`, flushed to disk; an existing
/// file is an error (a secret is never overwritten).
pub fn create_private_file(path: &Path, line: &str) -> anyhow::Result<()> {
    crate::private_file::create_new(path, line).with_context(|| format!("cannot create {}", path.display()))
}

/// A secret file's first line; a new random secret (mode 0600) when the file does not exist.
fn read_or_create_secret(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let s = text.lines().next().unwrap_or("").trim().to_owned();
            anyhow::ensure!(
                s.len() >= 16,
                "{}: the secret must be at least 16 characters",
                path.display()
            );
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = [0u8; 24];
            getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let secret = hex::encode(raw);
            create_private_file(path, &secret)?;
            tracing::info!(file = %path.display(), "made the presence secret; machines send it with presence calls");
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Starts the built-in DNS. The default address being taken (another resolver on 5353) is a
/// warning, so `keel serve` still works on first start; an address asked for is an error.
async fn start_dns(db: &Arc<Db>, cfg: &ServeConfig) -> anyhow::Result<()> {
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
    std::fs::write(cfg.data_dir.join(DNS_ADDR_FILE), addr.to_string())?;
    tracing::info!(%addr, zone = %zones.config().zone, "DNS is serving (UDP and TCP)");
    tokio::spawn(keel_server::dns::serve(db.clone(), zones, udp, tcp));
    Ok(())
}

/// Starts the read-only TFTP server, on the same terms as the DNS.
async fn start_tftp(cfg: &ServeConfig) -> anyhow::Result<()> {
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
    std::fs::write(cfg.data_dir.join(TFTP_ADDR_FILE), addr.to_string())?;
    tracing::info!(%addr, root = %root.display(), "TFTP is serving (read-only)");
    tokio::spawn(keel_server::tftp::serve(tftp, sock));
    Ok(())
}

/// A listener of an optional service: its default address being taken is a warning (`None`), so
/// `keel serve` still works on first start; an address asked for explicitly is an error.
fn optional<T>(
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

/// Serves HTTP/1.1 until `stop` resolves, then lets open requests finish for up to 10 s.
///
/// hyper's own HTTP/1 connection, not `axum::serve`: that one detects HTTP/2 on every connection,
/// and its extra buffers cost an idle keep-alive connection (a watch subscriber) about 38 KiB
/// where this costs about 11 KiB (`keel bench watch` prints both). Also: TCP_NODELAY, so watch
/// lines are not held back by Nagle.
///
/// What an unauthenticated client can hold is bounded (`[http]`): connections at once (over the
/// cap a new one is closed at once, before any byte is read), the time to send headers, and the
/// time to send a body. The cap is far below the open-file limit keel raises at start, so a
/// flood of idle connections leaves room for `/healthz`, nginx's `/sso` and presence.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: crate::config::HttpLimits,
    stop: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(8192)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, usually: wait instead of spinning.
                    tracing::error!(%e, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "connection closed: [http] max_connections reached");
            continue; // dropped: closed at once
        };
        let _ = stream.set_nodelay(true);
        // The peer's address, for presence (a machine speaks only for itself) and SSO's proxy
        // check; the body must arrive within its deadline.
        let service = tower::ServiceBuilder::new()
            .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body_timeout))
            .map_request(
                move |mut req: hyper::Request<tower_http::timeout::TimeoutBody<hyper::body::Incoming>>| {
                    req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    req.map(axum::body::Body::new)
                },
            )
            .service(app.clone());
        let service = hyper_util::service::TowerToHyperService::new(service);
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
            tracing::warn!("stopped with requests still open after 10 s");
        }
    }
}

/// Raises the soft open-file limit to the hard one: systemd's default soft limit (1,024) is what
/// a flood of connections would otherwise exhaust before `[http] max_connections` does.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        let before = lim.current;
        lim.current = lim.maximum;
        match setrlimit(Resource::Nofile, lim) {
            Ok(()) => tracing::info!(?before, now = ?lim.current, "open-file limit raised"),
            Err(e) => tracing::warn!(%e, "cannot raise the open-file limit"),
        }
    }
}

/// The data directory holds the database, its WAL, backups, tokens and secrets: it is created
/// 0700 and everything keel creates in it is 0600 from the moment it exists (the process's umask
/// is 077, set in `main`, so SQLite's own `-wal` and `-shm` files are born private too). A
/// directory and database left wider by an older keel are narrowed here; a directory that is not
/// keel's is only warned about.
pub fn private_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if meta.mode() & 0o077 != 0 {
        // Narrowed only when it is keel's own (an older keel's data directory, of this user):
        // `--data-dir /tmp` must not make /tmp private.
        let keels = dir.join(DB_FILE).exists() || dir.join(LOCK_FILE).exists();
        if keels && meta.uid() == rustix::process::getuid().as_raw() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} private (0700)", dir.display()))?;
            tracing::warn!(dir = %dir.display(), "the data directory was readable by others; now 0700");
        } else {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", meta.mode() & 0o777),
                "the data directory is readable by others: keel's files in it are 0600, but give keel a directory of its own (0700)"
            );
        }
    }
    for name in [DB_FILE, &format!("{DB_FILE}-wal"), &format!("{DB_FILE}-shm")] {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o077 != 0 => {
                tracing::warn!(path = %path.display(), "was readable by others; now 0600");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// One server per data directory: a second `keel serve` (or a `keel restore`) fails clearly.
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.try_lock()
        .map_err(|_| anyhow::anyhow!("another keel is using {} (it holds {})", dir.display(), path.display()))?;
    Ok(f)
}

/// On first start (no token at all), creates an admin token in the data directory, mode 0600.
async fn ensure_admin_token(db: &Db, dir: &Path) -> anyhow::Result<()> {
    if !db.store().tokens().await?.is_empty() {
        return Ok(());
    }
    let (secret, row) = db
        .create_token(NewToken {
            name: "admin".into(),
            role: Role::Admin,
            facilities: vec![],
            host: None,
            expires: None,
        })
        .await?;
    let path = dir.join(TOKEN_FILE);
    crate::private_file::write(&path, format!("{secret}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "keel: first start: created admin token {} in {} (mode 0600)",
        row.id,
        path.display()
    );
    Ok(())
}

/// Applies the change log's retention at start and every minute.
async fn trim_log_forever(db: Arc<Db>, keep: u64, keep_days: Option<u64>) {
    loop {
        let cutoff = keep_days.map(|d| {
            keel_store::rfc3339(
                time::OffsetDateTime::now_utc()
                    - time::Duration::days(i64::try_from(d).unwrap_or(i64::MAX / 86_400_000)),
            )
        });
        match db.store().trim_log(keep, cutoff.as_deref()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "change log trimmed"),
            Err(e) => tracing::error!(%e, "cannot trim the change log"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// A new data directory is 0700; an older keel's is narrowed, with its database; a
    /// directory that is not keel's (`--data-dir /tmp`) keeps its mode, with a warning.
    #[test]
    fn the_data_directory_is_made_private_only_when_it_is_keels() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("fresh/data");
        private_data_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let old = root.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join(DB_FILE), b"").unwrap();
        for p in [&old, &old.join(DB_FILE)] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        private_data_dir(&old).unwrap();
        assert_eq!((mode(&old), mode(&old.join(DB_FILE))), (0o700, 0o600));
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_data_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o755, "not keel's: left as it is");
    }
}
