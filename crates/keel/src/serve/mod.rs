//! `keel serve`: open the data directory, the database and the sockets, then serve until
//! stopped. `run` reads as the start sequence, top to bottom; each step lives in the module that
//! says its job:
//!
//! - `data_dir`: the private data directory, its lock, the first admin token, secrets;
//! - `database`: SQLite in the data directory or PostgreSQL (its URL redacted in logs);
//! - `engine`: the propagation engine (signing key, services, senders);
//! - `shared`: several servers on one PostgreSQL (the follower, the propagation leader);
//! - `udp`: the built-in DNS and TFTP listeners;
//! - `http`: the HTTP/1.1 accept loop and its limits;
//! - `tls`: HTTPS's certificate, kept current by a reload;
//! - `reload`: SIGHUP — keel.toml read again, what can change live changed;
//! - `example`: the example site of `--example-site`.
//!
//! The configuration arrives checked (`config::load`): nothing here refuses a setting.

mod data_dir;
mod database;
mod engine;
mod example;
mod http;
pub(crate) mod notify;
pub mod reload;
mod shared;
mod shares;
mod tls;
mod udp;

use std::sync::Arc;

use anyhow::Context;
use keel_client::data_dir as files;
use keel_server::AppState;
use keel_store::Db;

use crate::config::ServeConfig;

pub use data_dir::{lock_data_dir, private_data_dir};
pub use database::redact;
pub use tls::check_certificate;

/// Facilities listed managers by bare name before names had namespaces; a bare name is a token's
/// (what the API always said). One that names no token but a user's login was probably meant for
/// that user's web pages, which it no longer opens: say so once at start.
async fn report_user_like_managers(db: &Db) {
    let tokens: std::collections::BTreeSet<String> = match db.store().tokens().await {
        Ok(rows) => rows.into_iter().map(|t| t.name).collect(),
        Err(e) => return tracing::warn!(%e, "cannot read tokens to check facilities' managers"),
    };
    let snap = db.snapshot();
    for f in snap.facilities() {
        for m in &f.managers {
            if let keel_model::ManagerName::Token(name) = m {
                if !tokens.contains(name) && snap.user(name).is_some() {
                    tracing::warn!(
                        facility = %f.name,
                        manager = %m,
                        "this manager is a token's name and no token has it, but a user has this login: to let that user manage the facility on the web, list user:{name}"
                    );
                }
            }
        }
    }
}

/// Names the ssh destinations of managed facilities that keel sends to unchecked (made by an
/// admin, or by a manager before keel recorded who added each) and that a manager of their
/// facility could not claim today: a manager may have aimed one at keel's own host or another's
/// machine before issue 31. Every start, until an admin removes it or links a host of the
/// facility to that machine: the two cannot be told apart afterwards.
fn report_unchecked_destinations(db: &Db) {
    let snap = db.snapshot();
    for (d, why) in snap.unchecked_destinations(&db.own_addresses()) {
        tracing::warn!(
            facility = %d.facility,
            service = %d.service,
            destination = %d.destination,
            %why,
            "an ssh destination of a managed facility reaches what its managers may not (made by an admin, or by a manager before keel checked): still sent to; an admin removes it (keel destination rm) or links a host of the facility to that machine"
        );
    }
}

pub async fn run(mut cfg: ServeConfig, logging: crate::logging::Logging) -> anyhow::Result<()> {
    private_data_dir(&cfg.data_dir)?;
    let _lock = lock_data_dir(&cfg.data_dir)?;
    let (store, pg) = database::open_store(&cfg).await?;
    let db = Arc::new(
        Db::open(store, cfg.pools.clone())
            .await
            .context("cannot load the database")?,
    );
    if let Some(pg) = &pg {
        tokio::spawn(shared::follow(db.clone(), pg.clone()));
    }
    data_dir::ensure_admin_token(&db, &cfg.data_dir).await?;
    match db.migrate_roles().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            roles = n,
            "machines named rfsN, hfsN, gw or after a service name were given that role once (keel role list): from now on only roles count, never names"
        ),
        Err(e) => return Err(e).context("cannot give the old names' roles"),
    }
    if cfg.example_site {
        example::load(&db, &cfg.data_dir)
            .await
            .context("cannot load the example site")?;
    }
    reload::report_outside_pools(&db);
    report_user_like_managers(&db).await;
    db.set_own_addresses(own_addresses(&cfg));
    report_unchecked_destinations(&db);
    tokio::spawn(trim_log_forever(db.clone(), cfg.keep_changes, cfg.keep_days));
    let proof_default = db
        .default_proof_policy()
        .await
        .context("cannot read the database's presence proof default")?;
    cfg.server.presence.proof = cfg.presence_proof.unwrap_or(proof_default);
    tracing::info!(
        proof = %cfg.server.presence.proof,
        from = if cfg.presence_proof.is_some() { "keel.toml" } else { "the data directory's age" },
        "presence proof"
    );
    if cfg.server.presence.proof != keel_model::ProofPolicy::Off && cfg.tls.is_none() {
        tracing::warn!(
            proof = %cfg.server.presence.proof,
            "machines send a password for a presence proof only over HTTPS, and keel has no [tls] listen: their logins will be refused (proof_needed). Set [tls] listen (docs/tls.md), or [presence] proof = \"off\""
        );
    }
    if cfg.server.presence.secret.is_none() {
        let secret = data_dir::read_or_create_secret(&cfg.server.presence.secret_file)?;
        cfg.server.presence.secret = Some(secret.into());
    }
    // Where kernels and initrds go (served at /boot/files/).
    let _ = std::fs::create_dir_all(&cfg.pages.netboot.files_dir);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut state = AppState::with_shutdown(db.clone(), cfg.server.clone(), stop_rx);
    if let Some(p) = &cfg.propagation {
        match &pg {
            // Several servers: the one holding the propagation lock runs the engine.
            Some(pg) => {
                tokio::spawn(shared::propagate_when_leader(
                    state.clone(),
                    db.clone(),
                    pg.clone(),
                    p.clone(),
                    cfg.data_dir.clone(),
                    cfg.example_site,
                ));
            }
            None => {
                let engine = engine::start(db.clone(), p, &cfg.data_dir, cfg.example_site)
                    .await
                    .context("cannot start propagation")?;
                state = state.with_engine(engine);
            }
        }
    }
    let zones = match &cfg.dns {
        Some(dns) => udp::start_dns(&db, dns, &cfg.data_dir, state.metrics.clone()).await?,
        None => None,
    };
    if let Some(tftp) = &cfg.tftp {
        udp::start_tftp(tftp, &cfg.data_dir, state.metrics.clone()).await?;
    }
    tokio::spawn(keel_server::presence::run_expiry(state.clone()));
    tokio::spawn(keel_web::netboot::close_registration_when_due(state.clone()));
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    std::fs::write(cfg.data_dir.join(files::LISTEN_ADDR), addr.to_string())?;
    tracing::info!(%addr, machines = db.snapshot().machine_count(), seq = db.snapshot().seq(), "keel is serving");
    println!("keel: serving on http://{addr} (data in {})", cfg.data_dir.display());
    let mut app = keel_web::app(keel_web::WebState::new(state.clone(), cfg.pages.clone()));
    let (https, cert) = match &cfg.tls {
        Some(t) => {
            let (task, port, cert) = start_https(&cfg, t, app.clone(), stop_tx.subscribe()).await?;
            if t.redirect_web {
                app = app.layer(axum::middleware::from_fn(move |req, next| {
                    http::redirect_web(port, req, next)
                }));
            }
            (Some(task), Some(cert))
        }
        None => {
            warn_plain_http(&cfg, addr);
            (None, None)
        }
    };
    let signal = shutdown_signal()?;
    let limits = cfg.http.clone();
    let live = reload::Live {
        db: db.clone(),
        state,
        zones,
        cert,
        logging,
        proof_default,
    };
    reload::listen(live, cfg)?;
    // Migrated, listening (HTTP, HTTPS, DNS, TFTP) and propagating: what Type=notify waits for.
    notify::notify(&format!("READY=1\nSTATUS=serving on {addr}"));
    let stopping = async move {
        signal.await;
        notify::notify("STOPPING=1");
        tracing::info!("stopping: ending open streams, finishing requests");
        let _ = stop_tx.send(true);
    };
    http::raise_open_file_limit();
    http::serve_http(listener, app, limits, None, stopping).await;
    if let Some(h) = https {
        let _ = h.await;
    }
    tracing::info!("keel stopped");
    Ok(())
}

/// keel's own addresses, as its configuration names them (a wildcard names none: the engine's
/// check that an address is not local covers it at send time). No facility manager may make one
/// a destination.
fn own_addresses(cfg: &ServeConfig) -> Vec<std::net::IpAddr> {
    let listens = [
        Some(cfg.listen),
        cfg.tls.as_ref().map(|t| t.listen),
        cfg.dns.as_ref().map(|d| d.listen),
        cfg.tftp.as_ref().map(|t| t.listen),
    ];
    let mut own: Vec<std::net::IpAddr> = listens
        .into_iter()
        .flatten()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
        .collect();
    own.sort();
    own.dedup();
    own
}

/// Binds `[tls] listen` and serves HTTPS there until the stop signal; says what clients trust.
async fn start_https(
    cfg: &ServeConfig,
    t: &crate::config::Tls,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, u16, Arc<tls::LiveCert>)> {
    let tls = tls::load(t, &cfg.data_dir)?;
    let listener = tokio::net::TcpListener::bind(t.listen)
        .await
        .with_context(|| format!("cannot listen on {} ([tls] listen)", t.listen))?;
    let addr = listener.local_addr()?;
    std::fs::write(cfg.data_dir.join(files::TLS_ADDR), addr.to_string())?;
    tracing::info!(%addr, fingerprint = %tls.fingerprint, "HTTPS is serving");
    println!("keel: serving on https://{addr}, certificate {}", tls.fingerprint);
    if let Some(ca) = &tls.ca_file {
        println!(
            "keel: clients trust it with --ca-file {} or --pin {}",
            ca.display(),
            tls.fingerprint
        );
    }
    let limits = cfg.http.clone();
    let cert = tls.cert.clone();
    let task = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        http::serve_http(listener, app, limits, Some(tls.acceptor), stopped).await;
    });
    Ok((task, addr.port(), cert))
}

/// The web login's cookie is `Secure` by default, which a browser never sends back over plain
/// HTTP from another machine: say so at start rather than let the login fail silently.
fn warn_plain_http(cfg: &ServeConfig, addr: std::net::SocketAddr) {
    if addr.ip().is_loopback() || !cfg.pages.web.secure_cookies {
        return;
    }
    tracing::warn!(
        %addr,
        "the web pages are served over plain HTTP on a non-loopback address: browsers will not send \
         the (Secure) login cookie back; serve HTTPS ([tls] listen) or set [web] secure_cookies = false"
    );
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
        // sleep-ok: a periodic job, not a test's wait.
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
}

/// SIGTERM or SIGINT, listened for from this call on, not from the future's first poll: called
/// before READY=1, so a SIGTERM sent the moment READY is read (systemd stopping a unit that just
/// started; the notify test) is a clean stop with STOPPING=1, never the default disposition's kill.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
