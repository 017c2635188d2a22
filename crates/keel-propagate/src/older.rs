//! Destinations whose agent is older than a form keel sends (a stream, a delta): for an hour they
//! are sent the older form, then keel tries the newer one again (the agent may have been upgraded).

use std::collections::HashMap;
use std::time::Duration;

// tokio's clock, not std's: tests can pause and advance it.
use tokio::time::Instant;

/// How long a destination is sent the older form once its agent refused the newer one.
const FOR: Duration = Duration::from_secs(3600);

/// The destinations (by key) whose agent refused the newer form, and when.
#[derive(Default)]
pub(crate) struct OlderAgents(parking_lot::Mutex<HashMap<String, Instant>>);

impl OlderAgents {
    /// `key`'s agent refused the newer form just now.
    pub(crate) fn note(&self, key: &str) {
        self.0.lock().insert(key.to_owned(), Instant::now());
    }

    /// Whether `key` is to be sent the older form (it refused the newer one within the hour).
    pub(crate) fn holds(&self, key: &str) -> bool {
        self.0.lock().get(key).is_some_and(|since| since.elapsed() < FOR)
    }
}
