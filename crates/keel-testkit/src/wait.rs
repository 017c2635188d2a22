//! Waiting on a condition, never on a guessed duration: every test and harness that waits for
//! something (a server listening, a file written, an engine settled) polls it through these, from
//! every few milliseconds at first to every 100 ms, and fails naming what it waited for.

use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_millis(5);
const MOST: Duration = Duration::from_millis(100);

/// Polls `ok` until it holds (`true`) or `timeout` passes (`false`). Blocking.
pub fn wait_until(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MOST);
    }
}

/// Polls `ok` on the tokio runtime until it holds; panics naming `what` after `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut pause = FIRST;
    loop {
        if ok().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s: {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MOST);
    }
}
