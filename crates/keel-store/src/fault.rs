//! Fault points for crash tests: inert unless `KEEL_FAULT` arms one.
//!
//! `KEEL_FAULT=hang_in_commit:N` makes the N-th commit of this process (counting from 1) hang
//! inside its transaction, after its rows are written and before COMMIT, having first created the
//! file named by `KEEL_FAULT_MARKER`. A test waits for that file, then `kill -9`s the server: the
//! kill provably lands inside a transaction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

static COMMITS: AtomicU64 = AtomicU64::new(0);

fn armed_commit() -> Option<u64> {
    static ARMED: OnceLock<Option<u64>> = OnceLock::new();
    *ARMED.get_or_init(|| {
        let spec = std::env::var("KEEL_FAULT").ok()?;
        let n = spec.strip_prefix("hang_in_commit:")?.parse().ok()?;
        tracing::warn!(
            commit = n,
            "fault point armed: that commit will hang inside its transaction"
        );
        Some(n)
    })
}

/// True when a commit fault is armed (the commit path then makes room for it).
pub(crate) fn armed() -> bool {
    armed_commit().is_some()
}

#[cfg(test)]
tokio::task_local! {
    /// Set by [`hold_commits`]: this task's commits stop inside their transaction.
    static HOLD: std::sync::Arc<tokio::sync::Notify>;
}

/// Runs `fut` with each commit it makes stopping for good inside its transaction (rows read,
/// before COMMIT); `reached` is notified there. A test then drops `fut` — a request gone away
/// mid-write — knowing that it held the writer lock and an open transaction, where a short
/// timeout could fire before either. Per task: other tests' commits are not held.
#[cfg(test)]
pub(crate) async fn hold_commits<F: std::future::Future>(
    reached: std::sync::Arc<tokio::sync::Notify>,
    fut: F,
) -> F::Output {
    HOLD.scope(reached, fut).await
}

/// Called inside each write transaction, just before COMMIT.
pub(crate) async fn in_commit() {
    #[cfg(test)]
    if let Ok(reached) = HOLD.try_with(std::sync::Arc::clone) {
        reached.notify_one();
        std::future::pending::<()>().await;
    }
    let n = COMMITS.fetch_add(1, Ordering::SeqCst) + 1;
    if armed_commit() != Some(n) {
        return;
    }
    if let Ok(marker) = std::env::var("KEEL_FAULT_MARKER") {
        if let Err(e) = std::fs::write(&marker, n.to_string()) {
            tracing::error!(%e, "cannot write the fault marker");
        }
    }
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
