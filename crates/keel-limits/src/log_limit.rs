//! Refusals an outsider can cause at will (a flood of bad logins, TFTP requests, connections) are
//! logged, but not without bound: [`refused!`](crate::refused) writes at most
//! [`LogLimit::PER_MINUTE`] lines a minute from one place, and the next line written says how
//! many were dropped in between. 53 MB of log in 3 s is what one forged packet loop made before.

use std::time::{Duration, Instant};

/// The budget of one log call site.
pub struct LogLimit(parking_lot::Mutex<Window>);

struct Window {
    start: Option<Instant>,
    written: u32,
    dropped: u64,
}

impl LogLimit {
    /// Lines a minute from one call site.
    pub const PER_MINUTE: u32 = 20;

    pub const fn new() -> Self {
        Self(parking_lot::const_mutex(Window {
            start: None,
            written: 0,
            dropped: 0,
        }))
    }

    /// `Some(lines dropped since the last one written)` when this line may be written.
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut w = self.0.lock();
        if w.start.is_none_or(|s| now.duration_since(s) >= Duration::from_secs(60)) {
            w.start = Some(now);
            w.written = 0;
        }
        if w.written >= Self::PER_MINUTE {
            w.dropped += 1;
            return None;
        }
        w.written += 1;
        Some(std::mem::take(&mut w.dropped))
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// `tracing::event!` at a level (`WARN`, `INFO`) for a refusal an outsider can cause: at most
/// [`LogLimit::PER_MINUTE`] lines a minute from this call site, each with `dropped`, the lines
/// left out before it.
#[macro_export]
macro_rules! refused {
    ($level:ident, $($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimit = $crate::log_limit::LogLimit::new();
        if let Some(dropped) = LIMIT.allow() {
            tracing::event!(tracing::Level::$level, dropped, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::LogLimit;

    #[test]
    fn a_call_site_writes_its_budget_then_counts_what_it_drops() {
        let l = LogLimit::new();
        let written: Vec<Option<u64>> = (0..LogLimit::PER_MINUTE + 5).map(|_| l.allow()).collect();
        assert!(written[..LogLimit::PER_MINUTE as usize].iter().all(|w| *w == Some(0)));
        assert!(written[LogLimit::PER_MINUTE as usize..].iter().all(Option::is_none));
    }
}
