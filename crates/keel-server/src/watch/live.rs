//! The live phase of a watch stream: hyper's poll of the HTTP body takes changes straight from the
//! broadcast (one task wake-up per subscriber and change), and the stream's producer task stays on
//! as a watchdog that cuts a client which stopped reading.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::body::Bytes;
use keel_model::wire::WatchControl;
use keel_model::Change;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use super::{control, Lines, Params, Shared, Subscribed, CHUNK};
use crate::AppState;

/// A watch stream in its live phase.
pub(super) struct Live {
    st: AppState,
    params: Params,
    rx: broadcast::Receiver<Arc<Change>>,
    lines: Lines,
    shared: Arc<Shared>,
    ticks: tokio::time::Interval,
    /// Nothing sent since the last tick.
    quiet: bool,
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    _counted: Subscribed,
}

/// What woke the stream.
enum Event {
    Change(Result<Arc<Change>, RecvError>),
    Tick,
    Stopping,
}

impl Live {
    pub(super) fn new(
        st: AppState,
        params: Params,
        rx: broadcast::Receiver<Arc<Change>>,
        lines: Lines,
        shared: Arc<Shared>,
        counted: Subscribed,
    ) -> Self {
        let heartbeat = st.config.watch.heartbeat;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = st.clone();
        Self {
            stopping: Box::pin(async move { stop.stopping().await }),
            st,
            params,
            rx,
            lines,
            shared,
            ticks,
            quiet: true,
            _counted: counted,
        }
    }

    /// The next chunk of lines: changes as they come, or a heartbeat after a quiet interval.
    /// `None` once the stream must end; the reason line in [`Shared`] is then its last.
    pub(super) async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.shared.cut.load(Relaxed) {
                return None; // the watchdog's verdict
            }
            // In this order, and only as far as needed: a change (the hot path, a thousand
            // subscribers at once) costs no poll of the timer or of the shutdown signal.
            let event = tokio::select! {
                biased;
                r = self.rx.recv() => Event::Change(r),
                _ = self.ticks.tick() => Event::Tick,
                () = &mut self.stopping => Event::Stopping,
            };
            match event {
                Event::Change(r) => {
                    let taken = self.take_ready(r);
                    if let Err(reason) = &taken {
                        // What was taken before the trouble still goes out; the reason follows.
                        self.shared.cut(&self.st, reason, self.lines.last);
                    }
                    self.shared.last.store(self.lines.last, Relaxed);
                    match self.lines.take(&self.st) {
                        Some(chunk) => {
                            self.quiet = false;
                            return Some(chunk);
                        }
                        None if taken.is_err() => return None,
                        None => {} // only kinds the client did not ask for
                    }
                }
                Event::Tick => {
                    if std::mem::replace(&mut self.quiet, true) {
                        let seq = self.lines.last;
                        self.lines.push(&control(WatchControl::Heartbeat { seq }));
                        return self.lines.take(&self.st);
                    }
                }
                Event::Stopping => {
                    let reason = "server shutting down; resume elsewhere or later";
                    self.shared.cut(&self.st, reason, self.lines.last);
                    return None;
                }
            }
        }
    }

    /// Queues the change received and whatever else is already waiting (up to a chunk), in order.
    fn take_ready(&mut self, first: Result<Arc<Change>, RecvError>) -> Result<(), String> {
        self.received(first.map_err(|e| match e {
            RecvError::Lagged(n) => Some(n),
            RecvError::Closed => None,
        }))?;
        while self.lines.pending() < CHUNK {
            match self.rx.try_recv() {
                Err(TryRecvError::Empty) => break,
                Ok(c) => self.received(Ok(c))?,
                Err(TryRecvError::Lagged(n)) => self.received(Err(Some(n)))?,
                Err(TryRecvError::Closed) => self.received(Err(None))?,
            }
        }
        Ok(())
    }

    /// One change, or how many the stream fell behind (`None`: the broadcast closed).
    fn received(&mut self, r: Result<Arc<Change>, Option<u64>>) -> Result<(), String> {
        match r {
            Ok(c) => self.lines.change(&self.st, &self.params, &c),
            Err(Some(n)) => Err(format!("too slow: fell {n} changes behind")),
            Err(None) => Err("server shutting down".into()),
        }
    }
}

/// Cuts the stream if its client took nothing for a whole `stall_timeout` while changes were
/// waiting for it (a client that stopped reading: hyper no longer polls its body). Looks once a
/// period; returns when the stream ends.
pub(super) async fn watchdog(st: AppState, shared: Arc<Shared>) {
    let period = st.config.watch.stall_timeout;
    // (the last seq the body took, the newest in the database) at the previous look.
    let mut seen = (shared.last.load(Relaxed), st.db.snapshot().seq());
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = st.stopping() => return,
        }
        // The body holds the only other reference: when it is gone, so is the stream.
        if Arc::strong_count(&shared) == 1 || shared.cut.load(Relaxed) {
            return;
        }
        let last = shared.last.load(Relaxed);
        if stalled(seen, last) {
            let reason = format!("too slow: accepted nothing for {} s", period.as_secs());
            return shared.cut(&st, &reason, last);
        }
        seen = (last, st.db.snapshot().seq());
    }
}

/// Whether a stream is stalled, given (the last seq it had taken, the newest seq in the database)
/// at the previous look and the last seq it has taken now: changes that were already waiting a
/// period ago and are still not taken. A reader that a change just reached is never mistaken for
/// a stalled one, however the looks fall.
fn stalled(before: (u64, u64), last: u64) -> bool {
    last == before.0 && last < before.1
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_reader_that_left_waiting_changes_untaken_for_a_whole_period_is_stalled() {
        // (last taken, newest) at the previous look, last taken now, stalled?
        for (before, now, want) in [
            ((10, 10), 10, false), // idle, or a change came after the last look: not yet
            ((10, 10), 12, false), // took what came since
            ((10, 12), 12, false), // took what was waiting
            ((10, 12), 11, false), // slow, but taking
            ((10, 12), 10, true),  // two changes waited a whole period
            ((10, 11), 10, true),
            ((0, 0), 0, false), // a fresh, empty database
        ] {
            assert_eq!(super::stalled(before, now), want, "{before:?} then {now}");
        }
    }
}
