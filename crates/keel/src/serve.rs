//! `keel serve`: open the data directory, the database and the socket, then serve until stopped.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
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

pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
    let _lock = lock_data_dir(&cfg.data_dir)?;
    let store = SqliteStore::open(&cfg.data_dir.join(DB_FILE))
        .await
        .context("cannot open the database")?;
    let db = Arc::new(
        Db::open(Arc::new(store), cfg.pools.clone())
            .await
            .context("cannot load the database")?,
    );
    ensure_admin_token(&db, &cfg.data_dir).await?;
    if cfg.example_site {
        example::load(&db).await.context("cannot load the example site")?;
    }
    tokio::spawn(trim_log_forever(db.clone(), cfg.keep_changes, cfg.keep_days));
    let server_config = ServerConfig {
        open_reads: cfg.open_reads,
        data_dir: cfg.data_dir.clone(),
        watch: cfg.watch.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = AppState::with_shutdown(db.clone(), server_config, stop_rx);
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
    let serve = axum::serve(listener, keel_server::app(state)).with_graceful_shutdown(stopping);
    // Requests in flight get a few seconds to finish; a client that never reads is not waited for.
    let mut serve = std::pin::pin!(std::future::IntoFuture::into_future(serve));
    tokio::select! {
        r = &mut serve => r?,
        () = async {
            shutdown_signal().await;
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        } => tracing::warn!("stopped with requests still open after 10 s"),
    }
    tracing::info!("keel stopped");
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
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{secret}")?;
    f.sync_all()?;
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
