//! Group commit on a shared database (PostgreSQL with several keel servers).
//!
//! There every commit pays for the cross-server writer lock and for a WAL flush, both held in
//! turn by every writer of every server; alone, that caps writes at about a thousand a second.
//! So the writers of one server share the work: the first to take this server's writer lock
//! opens a group (the cross-server lock and a transaction); it and each writer queued behind it
//! plan against a *working* Snapshot — the committed one with the group's writes so far — and
//! write inside the transaction under a savepoint of its own, so one that fails is undone alone.
//! The last writer in the queue commits the group. Until then nothing in it is visible: the
//! Snapshot readers see changes only after the COMMIT, in seq order, exactly as before.
//!
//! Each member returns only once the group's COMMIT did (or failed: then all its members fail).
//! A member cancelled mid-write leaves the group `lost` (its connection's state is unknown): the
//! next holder of the writer lock drops it, which closes the connection and so rolls back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use keel_model::{AllocHints, Pools};
use keel_model::{Change, Kind, Principal, Snapshot};

use super::Db;
use crate::store::{WriterLock, CAUGHT_UP_MAX};
use crate::StoreError;

/// The most writes one group takes before it commits, so its first member's wait is bounded.
pub(crate) const MAX: usize = 64;

/// A group still open after this long has no member left to commit it (all were cancelled):
/// the follower's next look at the log commits it.
pub(crate) const STALE: Duration = Duration::from_secs(1);

/// An open group of writes.
pub(crate) struct Batch {
    lock: Box<dyn WriterLock>,
    /// The committed Snapshot with this group's writes so far: what the next member plans against.
    working: Snapshot,
    changes: Vec<Change>,
    /// Writes in the group.
    pub(crate) members: usize,
    /// The transaction can no longer commit (its connection was lost, or a write was cancelled).
    pub(crate) lost: bool,
    pub(crate) opened: Instant,
    /// How the COMMIT went, for members waiting on it (and, by its address, the group's identity).
    pub(crate) outcome: Arc<OnceLock<Result<(), String>>>,
}

/// Counts a writer waiting for the writer lock, until dropped (also when its future is).
pub(crate) struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    pub(crate) fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Db {
    /// Takes the cross-server lock, brings the Snapshot up to the log's end, opens a group.
    pub(crate) async fn open_batch(&self) -> Result<Batch, StoreError> {
        let mut lock = self
            .store()
            .lock_writers(self.snapshot().seq())
            .await?
            .ok_or_else(|| StoreError::Corrupt("a shared store without a writer lock".into()))?;
        let tail = lock.caught_up();
        let whole = tail.len() < CAUGHT_UP_MAX;
        if !(self.apply_committed(&tail).await && whole) {
            if let Err(e) = self.catch_up_locked().await {
                lock.release().await;
                return Err(e);
            }
        }
        Ok(Batch {
            lock,
            working: (*self.snapshot()).clone(),
            changes: Vec::new(),
            members: 0,
            lost: false,
            opened: Instant::now(),
            outcome: Arc::default(),
        })
    }

    /// Plans against the group's working Snapshot and writes inside its transaction.
    pub(crate) async fn join_batch<F>(
        &self,
        group: &mut Batch,
        who: &Principal,
        plan: F,
    ) -> Result<Vec<Change>, StoreError>
    where
        F: FnOnce(&Snapshot, &Pools) -> Result<Vec<crate::store::Write>, StoreError>,
    {
        let writes = plan(&group.working, &self.pools())?;
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        // Until the write returns: a cancelled future leaves the group lost.
        group.lost = true;
        let result = group.lock.write(&who.name, writes).await;
        group.lost = group.lock.broken();
        let changes = match result {
            Ok(c) => c,
            Err(e) => {
                // What the plan allocated is free again.
                *self.alloc_hints() = AllocHints::default();
                return Err(e);
            }
        };
        for c in &changes {
            if let Err(e) = group.working.apply(c) {
                group.lost = true;
                return Err(StoreError::Corrupt(format!("a written change does not apply: {e}")));
            }
        }
        if changes.iter().any(frees_an_address) {
            *self.alloc_hints() = AllocHints::default();
        }
        group.changes.extend(changes.iter().cloned());
        group.members += 1;
        Ok(changes)
    }

    /// Commits the open group (releases the lock if it holds no write), then applies and
    /// broadcasts its changes; every member hears the outcome.
    pub(crate) async fn close_batch(&self, slot: &mut Option<Batch>) -> Result<(), StoreError> {
        let Some(group) = slot.take() else { return Ok(()) };
        if group.members == 0 {
            group.lock.release().await;
            let _ = group.outcome.set(Ok(()));
            return Ok(());
        }
        let committed = self.snapshot().seq();
        if let Err(e) = group.lock.commit().await {
            let _ = group.outcome.set(Err(e.to_string()));
            // Whether the COMMIT took effect is the log's to say.
            if let Err(e) = self.catch_up_locked().await {
                tracing::warn!(%e, "cannot read the log after a failed commit; reloading");
                self.reload().await;
            }
            return Err(e);
        }
        let _ = group.outcome.set(Ok(()));
        if group.changes.first().is_some_and(|c| c.seq != committed + 1) {
            // Another server committed between our catch-up and our commit (it cannot while we
            // hold the writer lock, but a backend without one could): apply the log in seq
            // order, ours included, never our changes alone over a gap.
            if let Err(e) = self.catch_up_locked().await {
                tracing::warn!(%e, "cannot read the log after a commit; the follower will");
            }
        } else {
            self.apply_committed(&group.changes).await;
        }
        Ok(())
    }

    /// Drops a lost group: its connection closes, so the database rolls it back and releases the
    /// lock; its members hear that it failed.
    pub(crate) fn drop_lost_batch(&self, slot: &mut Option<Batch>) {
        if slot.as_ref().is_some_and(|b| b.lost) {
            if let Some(group) = slot.take() {
                let _ = group.outcome.set(Err("the write's transaction was lost".into()));
                *self.alloc_hints() = AllocHints::default();
                // Not `release`: the connection may be mid-statement. Dropping the lock closes it.
                drop(group);
            }
        }
    }
}

/// True if a change may free an IP address (a machine deleted, or moved to another address or type):
/// then an allocation hint no longer holds.
pub(crate) fn frees_an_address(c: &Change) -> bool {
    let field = |v: &Option<serde_json::Value>, f: &str| v.as_ref().map(|v| v[f].clone());
    c.kind == Kind::Machine
        && (c.op == keel_model::Op::Delete
            || (c.before.is_some()
                && (field(&c.before, "ip") != field(&c.after, "ip")
                    || field(&c.before, "mtype") != field(&c.after, "mtype"))))
}
