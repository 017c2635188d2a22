//! The SQLite backend: WAL, `synchronous=FULL` on every pooled connection, migrations embedded.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use keel_model::Change;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::store::{Copying, Sharing, Write};
use crate::StoreError;

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
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
            // Checkpoint every ~16 MiB of WAL rather than 4 MiB: fewer checkpoint stalls under write load.
            .pragma("wal_autocheckpoint", "4000")
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
        MIGRATOR.run(&pool).await?;
        sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES ('db_id', ?)")
            .bind(uuid::Uuid::new_v4().to_string())
            .execute(&pool)
            .await?;
        Ok(Self { pool })
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
        crate::sqlite_commit::commit(&self.pool, principal, writes).await
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
