//! `Db`: the live database — a `Store`, the current Snapshot and the Change broadcast.
//!
//! One writer at a time: a write plans its records against the current Snapshot (which is exactly
//! the committed state, since only this writer changes it), commits them with their Changes in one
//! transaction, then swaps in the next Snapshot and broadcasts the Changes. Readers never wait.

use std::sync::Arc;

use arc_swap::ArcSwap;
use keel_model::{Change, Kind, Pools, Principal, Snapshot};
use tokio::sync::{broadcast, Mutex};

mod batch;

use crate::store::{Store, Write};
use crate::token::{self, AuthError, NewToken, TokenRow};
use crate::{now_rfc3339, StoreError};
use batch::Batch;

/// How many Changes a slow in-process subscriber may lag before it must resync.
const BROADCAST_CAPACITY: usize = 16_384;

pub struct Db {
    store: Arc<dyn Store>,
    snapshot: ArcSwap<Snapshot>,
    /// The writer lock; on a shared database it holds the open group of writes, if any.
    writer: Mutex<Option<Batch>>,
    /// Writers waiting for the writer lock (a group stays open while there are).
    queued: std::sync::atomic::AtomicUsize,
    changes: broadcast::Sender<Arc<Change>>,
    /// Replaced whole by a reload of keel.toml ([`Db::set_pools`]); a write plans against the
    /// pools current when it starts.
    pools: ArcSwap<Pools>,
    /// keel's own addresses (where it listens): no facility manager sends there, in any spelling.
    own_addresses: ArcSwap<Vec<std::net::IpAddr>>,
    db_id: String,
    tokens: TokenCache,
    /// Where each pool's lowest-free search may start; reset whenever an address is freed.
    alloc_hints: parking_lot::Mutex<keel_model::AllocHints>,
}

impl Db {
    /// Loads the whole state from the store and builds the Snapshot.
    pub async fn open(store: Arc<dyn Store>, pools: Pools) -> Result<Self, StoreError> {
        let (snapshot, db_id) = build_snapshot(store.as_ref()).await?;
        let (changes, _) = broadcast::channel(BROADCAST_CAPACITY);
        Ok(Self {
            store,
            snapshot: ArcSwap::from_pointee(snapshot),
            writer: Mutex::new(None),
            queued: std::sync::atomic::AtomicUsize::new(0),
            changes,
            pools: ArcSwap::from_pointee(pools),
            own_addresses: ArcSwap::from_pointee(Vec::new()),
            db_id,
            tokens: TokenCache::default(),
            alloc_hints: parking_lot::Mutex::new(keel_model::AllocHints::default()),
        })
    }

    /// The latest committed state. Cheap: an `Arc` clone.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Every Change committed from now on, in seq order.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    pub fn db_id(&self) -> &str {
        &self.db_id
    }

    /// keel's own addresses, for the rights rules (`Snapshot::may_claim`).
    pub fn own_addresses(&self) -> Arc<Vec<std::net::IpAddr>> {
        self.own_addresses.load_full()
    }

    /// Where keel listens (set at start): a manager may never make these a destination.
    pub fn set_own_addresses(&self, addresses: Vec<std::net::IpAddr>) {
        self.own_addresses.store(Arc::new(addresses));
    }

    /// The pools machines and users are given addresses and uids from.
    pub fn pools(&self) -> Arc<Pools> {
        self.pools.load_full()
    }

    /// New pools (a reload of keel.toml): later writes allocate from them. Records already
    /// outside them keep their addresses and uids: only an explicit renumbering moves them.
    pub fn set_pools(&self, pools: Pools) {
        self.pools.store(Arc::new(pools));
        *self.alloc_hints.lock() = keel_model::AllocHints::default();
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Plans writes against the current Snapshot and commits them atomically, as `who`.
    pub async fn write<F>(&self, who: &Principal, plan: F) -> Result<Vec<Change>, StoreError>
    where
        F: FnOnce(&Snapshot, &Pools) -> Result<Vec<Write>, StoreError>,
    {
        if self.store.shared() {
            return self.write_shared(who, plan).await;
        }
        let _writer = self.writer.lock().await;
        let current = self.snapshot();
        let writes = plan(&current, &self.pools())?;
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let changes = match self.store.commit(&who.name, writes).await {
            Ok(c) => c,
            Err(e @ (StoreError::Db(_) | StoreError::Io(_))) => {
                // Whether a failed COMMIT took effect is the store's to say: reload from it.
                self.reload().await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.apply_committed(&changes).await;
        Ok(changes)
    }

    /// A write on a shared database, committed in a group with the writes queued behind it
    /// (see `batch.rs`): the cross-server lock and the commit's WAL flush are paid once a group.
    async fn write_shared<F>(&self, who: &Principal, plan: F) -> Result<Vec<Change>, StoreError>
    where
        F: FnOnce(&Snapshot, &Pools) -> Result<Vec<Write>, StoreError>,
    {
        let mut slot = {
            let _queued = batch::Queued::enter(&self.queued);
            self.writer.lock().await
        };
        self.drop_lost_batch(&mut slot);
        if slot.is_none() {
            *slot = Some(self.open_batch().await?);
        }
        let group = slot
            .as_mut()
            .ok_or_else(|| StoreError::Corrupt("no open batch".into()))?;
        let mine = self.join_batch(group, who, plan).await;
        if group.lost {
            self.drop_lost_batch(&mut slot);
            return mine.and(Err(StoreError::Unavailable("the database connection was lost".into())));
        }
        let close_now = self.queued.load(std::sync::atomic::Ordering::Acquire) == 0 || group.members >= batch::MAX;
        let mine = match mine {
            Ok(c) if !c.is_empty() => c,
            other => {
                if close_now {
                    // Our write is not in it; the group's outcome is its members' to hear.
                    let _ = self.close_batch(&mut slot).await;
                }
                return other;
            }
        };
        if close_now {
            return self.close_batch(&mut slot).await.map(|()| mine);
        }
        // Those queued behind us join the group; the last of them commits it. Should none do so
        // (cancelled), we do when the writer lock comes back to us: it is FIFO, so by then every
        // writer queued before us has joined.
        let outcome = group.outcome.clone();
        drop(slot);
        let mut slot = self.writer.lock().await;
        self.drop_lost_batch(&mut slot);
        if slot.as_ref().is_some_and(|b| Arc::ptr_eq(&b.outcome, &outcome)) {
            return self.close_batch(&mut slot).await.map(|()| mine);
        }
        match outcome.get() {
            Some(Ok(())) => Ok(mine),
            Some(Err(e)) => Err(StoreError::Unavailable(e.clone())),
            None => Err(StoreError::Unavailable("the write's transaction was lost".into())),
        }
    }

    /// Brings the Snapshot up to the log's end (changes committed by other servers on a shared
    /// database), broadcasting each change in seq order. A follower calls it when woken.
    pub async fn catch_up(&self) -> Result<usize, StoreError> {
        let mut slot = self.writer.lock().await;
        self.drop_lost_batch(&mut slot);
        if let Some(open) = slot.as_ref() {
            if open.opened.elapsed() < batch::STALE {
                // This server holds the writer lock: nobody else can have committed.
                return Ok(0);
            }
            // Its members were all cancelled before one committed it.
            let _ = self.close_batch(&mut slot).await;
        }
        self.catch_up_locked().await
    }

    /// Applies committed changes — this server's own, or read from the log — in seq order from
    /// the Snapshot's next, and broadcasts them. A gap (the log trimmed past this server) or a
    /// change that does not apply reloads the Snapshot from the records instead; then false.
    pub(crate) async fn apply_committed(&self, batch: &[Change]) -> bool {
        let current = self.snapshot();
        let batch: Vec<&Change> = batch.iter().filter(|c| c.seq > current.seq()).collect();
        let Some(first) = batch.first() else { return true };
        if first.seq != current.seq() + 1 {
            tracing::warn!(
                at = current.seq(),
                first = first.seq,
                "the log moved past this server: reloading"
            );
            self.reload().await;
            return false;
        }
        let mut next = (*current).clone();
        for c in &batch {
            if let Err(e) = next.apply(c) {
                tracing::error!(%e, "a committed change does not apply to the snapshot; reloading");
                self.reload().await;
                return false;
            }
        }
        self.snapshot.store(Arc::new(next));
        if batch.iter().any(|c| batch::frees_an_address(c)) {
            *self.alloc_hints() = keel_model::AllocHints::default();
        }
        for c in batch {
            // No subscriber is not an error.
            let _ = self.changes.send(Arc::new(c.clone()));
        }
        true
    }

    pub(crate) async fn catch_up_locked(&self) -> Result<usize, StoreError> {
        let mut applied = 0;
        loop {
            let batch = self.store.changes_since(self.snapshot().seq(), 5_000).await?;
            if batch.is_empty() {
                return Ok(applied);
            }
            let n = batch.len();
            if !self.apply_committed(&batch).await {
                return Ok(applied); // reloaded: the Snapshot is the records' state
            }
            applied += n;
        }
    }

    /// The allocation hints, for a write in progress (only writers use them, under the writer lock).
    pub(crate) fn alloc_hints(&self) -> parking_lot::MutexGuard<'_, keel_model::AllocHints> {
        self.alloc_hints.lock()
    }

    pub(crate) async fn reload(&self) {
        *self.alloc_hints() = keel_model::AllocHints::default();
        match build_snapshot(self.store.as_ref()).await {
            Ok((s, _)) => self.snapshot.store(Arc::new(s)),
            Err(e) => tracing::error!(%e, "cannot reload the snapshot from the store"),
        }
    }

    /// Creates a token; returns the secret (to show once) and its stored row.
    pub async fn create_token(&self, new: NewToken) -> Result<(String, TokenRow), StoreError> {
        let (secret, row) = token::generate(new, &now_rfc3339())?;
        self.store.insert_token(&row).await?;
        tracing::info!(token = %row.id, name = %row.name, role = %row.role, "token created");
        Ok((secret, row))
    }

    pub async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let done = self.store.revoke_token(id, &now_rfc3339()).await?;
        self.tokens.forget(id);
        tracing::info!(token = %id, done, "token revoked");
        Ok(done)
    }

    /// Checks a presented bearer token. The outer error is the store's; the inner, the refusal.
    pub async fn authenticate(&self, presented: &str) -> Result<Result<Principal, AuthError>, StoreError> {
        let (id, secret) = match token::parse(presented) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let row = match self.tokens.get(id) {
            Some(row) => Some(row),
            None => {
                let row = self.store.token(id).await?;
                if let Some(r) = &row {
                    self.tokens.put(r.clone());
                }
                row
            }
        };
        Ok(match row {
            None => Err(AuthError::Unknown),
            Some(row) => token::verify(&row, secret, time::OffsetDateTime::now_utc()),
        })
    }
}

/// Token rows recently read from the store, so a request costs no database read to authenticate.
///
/// A revocation through this server takes effect at once; one made by another server sharing the
/// database (a later backend) within `TOKEN_CACHE_TTL`.
#[derive(Default)]
struct TokenCache {
    rows: parking_lot::RwLock<std::collections::HashMap<String, (TokenRow, std::time::Instant)>>,
}

const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

impl TokenCache {
    fn get(&self, id: &str) -> Option<TokenRow> {
        let rows = self.rows.read();
        rows.get(id)
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(row, _)| row.clone())
    }

    fn put(&self, row: TokenRow) {
        let mut rows = self.rows.write();
        // Bounded: unknown ids are never cached, and stale entries go when the map grows.
        if rows.len() > 10_000 {
            rows.retain(|_, (_, at)| at.elapsed() < TOKEN_CACHE_TTL);
        }
        rows.insert(row.id.clone(), (row, std::time::Instant::now()));
    }

    fn forget(&self, id: &str) {
        self.rows.write().remove(id);
    }
}

/// Builds a Snapshot from everything the store holds.
pub async fn build_snapshot(store: &dyn Store) -> Result<(Snapshot, String), StoreError> {
    let loaded = store.load().await?;
    let mut s = Snapshot::default();
    for (kind, value) in loaded.records {
        s.load_record(kind, value)
            .map_err(|e| StoreError::Corrupt(format!("a stored {kind} does not decode: {e}")))?;
    }
    s.set_seq(loaded.seq);
    s.set_machines_seq(
        loaded
            .machines_seq
            .max(s.machines().map(|m| m.version).max().unwrap_or(0)),
    );
    Ok((s, loaded.db_id))
}

/// The state reached by replaying a complete change log from the start — to check a restore.
pub async fn replay_log(store: &dyn Store) -> Result<Option<Snapshot>, StoreError> {
    if store.first_seq().await? > 1 {
        return Ok(None); // the log was trimmed: there is no full history to compare with
    }
    let mut s = Snapshot::default();
    let mut since = 0;
    loop {
        let batch = store.changes_since(since, 10_000).await?;
        let Some(last) = batch.last() else { break };
        since = last.seq;
        for c in &batch {
            s.apply(c).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        }
    }
    Ok(Some(s))
}

/// Records of one kind as JSON, keyed, for comparing two Snapshots.
pub fn records_of(s: &Snapshot, kind: Kind) -> Vec<serde_json::Value> {
    let v = |r: Result<serde_json::Value, serde_json::Error>| r.unwrap_or_default();
    match kind {
        Kind::Machine => s.machines().map(|m| v(serde_json::to_value(m))).collect(),
        Kind::Switch => s.switches().map(|m| v(serde_json::to_value(m))).collect(),
        Kind::Setting => s.settings().into_iter().map(|m| v(serde_json::to_value(m))).collect(),
        Kind::User => s.users().map(|m| v(serde_json::to_value(m))).collect(),
        Kind::Counter => s.counters().map(|m| v(serde_json::to_value(m))).collect(),
        Kind::Host => s.hosts().map(|m| v(serde_json::to_value(m))).collect(),
        Kind::Facility => s.facilities().map(|m| v(serde_json::to_value(m))).collect(),
        Kind::Destination => s.destinations().map(|m| v(serde_json::to_value(m))).collect(),
        Kind::Session => s.sessions().map(|m| v(serde_json::to_value(m))).collect(),
        Kind::Role => s.roles().map(|m| v(serde_json::to_value(m))).collect(),
    }
}
