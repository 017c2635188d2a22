//! Several keel servers on one PostgreSQL database: each follows the log; exactly one runs the
//! propagation engine — whoever holds the propagation lock, taken over within seconds when its
//! holder dies (see `keel_store::pg::Leadership`).

use std::sync::Arc;
use std::time::Duration;

use keel_server::AppState;
use keel_store::Db;

use crate::config::Propagation;

/// Keeps the Snapshot current with the other servers' commits.
pub async fn follow(db: Arc<Db>, url: String) {
    keel_store::pg::follow(db, url).await;
}

/// Waits for the propagation lock, then runs the engine (resuming the tasks its predecessor left
/// in flight: their state is in the database). Losing the lock stops it here.
pub async fn propagate_when_leader(
    state: AppState,
    db: Arc<Db>,
    url: String,
    p: Propagation,
    data_dir: std::path::PathBuf,
    example: bool,
) {
    let lead = keel_store::pg::Leadership::acquire(&url, Duration::from_secs(2)).await;
    tracing::info!("this server holds the propagation lock: starting the engine");
    let engine = match super::engine::start(db, &p, &data_dir, example).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot start propagation");
            return;
        }
    };
    state.set_engine(engine.clone());
    lead.lost().await;
    tracing::error!(
        "lost the propagation lock's connection: propagation stops on this server (restart keel to take part again)"
    );
    engine.shutdown();
}
