//! The SQLite backend: WAL, `synchronous=FULL` on every pooled connection, migrations embedded,
//! the WAL checkpointed in the background (`checkpointer`).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use keel_model::Change;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::store::{Copying, Sharing, Write};
use crate::StoreError;

pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    /// Wakes the checkpointer (see `checkpointer`); it stops when the store is dropped.
    checkpoints: tokio::sync::mpsc::Sender<()>,
    /// Records written since the checkpointer was last woken.
    unchecked: std::sync::atomic::AtomicUsize,
}

/// Records written after which a commit wakes the checkpointer: about 2 MiB of WAL.
const CHECKPOINT_AFTER: usize = 1_000;

/// Copies the WAL back into the database file, off the writers' path. Left to SQLite, the
/// checkpoint runs inside the COMMIT that crosses `wal_autocheckpoint`, and that commit waits for
/// it: a tenth to a fifth of a 10,000-user import at 100,000 users. Here a commit that wrote
/// enough wakes this task, whose PASSIVE checkpoint neither waits for nor blocks writers and
/// readers; `wal_autocheckpoint`, set higher, stays as the bound if this one falls behind.
async fn checkpointer(pool: SqlitePool, mut wake: tokio::sync::mpsc::Receiver<()>) {
    while wake.recv().await.is_some() {
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            tracing::warn!(error = %e, "background WAL checkpoint failed; SQLite's own will run");
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, 4).await
    }

    /// Opens with one connection only: for offline work on a file (restore).
    pub async fn open_single(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, 1).await
    }

    async fn open_with(path: &Path, max_connections: u32) -> Result<Self, StoreError> {
        // Options apply to every connection the pool opens, so no connection runs without them.
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // The background checkpointer keeps the WAL short; SQLite's own checkpoint, inside a
            // COMMIT, runs only if that one falls behind (64 MiB of WAL).
            .pragma("wal_autocheckpoint", "16000")
            // Up to 32 MiB of pages per connection (the default is 2 MiB): a 10,000-user import
            // dirties more index pages than that, and SQLite then spills and re-reads them, a cost
            // that grows with the site. Allocated as used: reads are served by the Snapshot, so
            // only connections that write fill it.
            .pragma("cache_size", "-32768");
        let pool = SqlitePoolOptions::new()
            // A ping before each use is a round trip to the worker thread, and a local file does not
            // go away: skip it.
            .test_before_acquire(false)
            .max_connections(max_connections)
            .min_connections(1)
            .connect_with(opts)
            .await?;
        crate::migrations::sqlite().run(&pool).await?;
        sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES ('db_id', ?)")
            .bind(uuid::Uuid::new_v4().to_string())
            .execute(&pool)
            .await?;
        let (checkpoints, wake) = tokio::sync::mpsc::channel(1);
        tokio::spawn(checkpointer(pool.clone(), wake));
        Ok(Self {
            pool,
            checkpoints,
            unchecked: 0.into(),
        })
    }

    /// Gives the database a new id (after a restore, so watchers of the old one start over).
    pub async fn renew_db_id(&self) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query("UPDATE meta SET value = ? WHERE key = 'db_id'")
            .bind(&id)
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// `PRAGMA integrity_check`: "ok" or SQLite's description of the damage.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        let row = sqlx::query("PRAGMA integrity_check").fetch_one(&self.pool).await?;
        Ok(row.try_get::<String, _>(0)?)
    }

    /// Leaves the file self-contained (no -wal beside it), so it can be renamed into place.
    pub async fn checkpoint_and_detach_wal(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        sqlx::query("PRAGMA journal_mode=DELETE").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}

impl SqliteStore {
    /// Commits `writes` in one transaction (the `Records` trait's `commit`).
    pub(crate) async fn commit_writes(&self, principal: &str, writes: Vec<Write>) -> Result<Vec<Change>, StoreError> {
        let n = writes.len();
        let changes = crate::sqlite_commit::commit(&self.pool, principal, writes).await?;
        use std::sync::atomic::Ordering::Relaxed;
        if self.unchecked.fetch_add(n, Relaxed) + n >= CHECKPOINT_AFTER {
            self.unchecked.store(0, Relaxed);
            // Full: a checkpoint is already asked for, and it will cover this commit too.
            let _ = self.checkpoints.try_send(());
        }
        Ok(changes)
    }
}

#[async_trait]
impl Copying for SqliteStore {
    async fn backup(&self, dest: &Path) -> Result<(), StoreError> {
        let dest = dest
            .to_str()
            .ok_or_else(|| StoreError::Corrupt("backup path is not UTF-8".into()))?;
        // VACUUM INTO reads one consistent snapshot of the database, even under concurrent writes.
        sqlx::query("VACUUM INTO ?").bind(dest).execute(&self.pool).await?;
        Ok(())
    }

    async fn export(&self) -> Result<crate::copy::Dump, StoreError> {
        // A read transaction sees one snapshot of the WAL.
        let mut tx = self.pool.begin().await?;
        let d = crate::copy::export_sqlite(&mut tx).await;
        tx.commit().await?;
        d
    }

    async fn import(&self, dump: &crate::copy::Dump) -> Result<(), StoreError> {
        crate::copy::import_sqlite(&self.pool, dump).await
    }
}

/// One server per SQLite database (the data directory's lock): nothing to share.
impl Sharing for SqliteStore {}
