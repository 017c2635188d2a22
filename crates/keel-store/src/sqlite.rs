//! The SQLite backend: WAL, `synchronous=FULL` on every pooled connection, migrations embedded.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use keel_model::{Change, Kind};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::store::{Loaded, Store, Write};
use crate::{StoreError, TokenRow};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
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
            .pragma("wal_autocheckpoint", "4000");
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

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<Loaded, StoreError> {
        let db_id: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'db_id'")
            .fetch_one(&self.pool)
            .await?;
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM counter WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query("SELECT kind, data FROM objects")
            .fetch_all(&self.pool)
            .await?;
        let records = rows
            .iter()
            .map(|r| Ok((parse_kind(r.try_get("kind")?)?, parse_json(r.try_get("data")?)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let last_machine: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes WHERE kind = 'machine'")
            .fetch_one(&self.pool)
            .await?;
        let first: i64 = sqlx::query_scalar("SELECT COALESCE(MIN(seq), 0) FROM changes")
            .fetch_one(&self.pool)
            .await?;
        // A trimmed log may have dropped the last machine change: it was before the first kept one.
        let machines_seq = if last_machine == 0 && first > 1 {
            first - 1
        } else {
            last_machine
        };
        Ok(Loaded {
            db_id,
            seq: to_u64(seq),
            records,
            machines_seq: to_u64(machines_seq),
        })
    }

    async fn commit(&self, principal: &str, writes: Vec<Write>) -> Result<Vec<Change>, StoreError> {
        crate::sqlite_commit::commit(&self.pool, principal, writes).await
    }

    async fn changes_since(&self, since: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        crate::common_sql::sqlite::changes_since(&self.pool, since, limit).await
    }

    async fn first_seq(&self) -> Result<u64, StoreError> {
        crate::common_sql::sqlite::first_seq(&self.pool).await
    }

    async fn trim_log(&self, keep: u64, older_than: Option<&str>) -> Result<u64, StoreError> {
        crate::common_sql::sqlite::trim_log(&self.pool, keep, older_than).await
    }

    async fn insert_token(&self, t: &TokenRow) -> Result<(), StoreError> {
        crate::common_sql::sqlite::insert_token(&self.pool, t).await
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRow>, StoreError> {
        crate::common_sql::sqlite::token(&self.pool, id).await
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        crate::common_sql::sqlite::tokens(&self.pool).await
    }

    async fn revoke_token(&self, id: &str, at: &str) -> Result<bool, StoreError> {
        crate::common_sql::sqlite::revoke_token(&self.pool, id, at).await
    }

    async fn put_web_session(&self, s: &crate::WebSession) -> Result<(), StoreError> {
        crate::common_sql::sqlite::put(&self.pool, s).await
    }

    async fn web_session(&self, id: &str) -> Result<Option<crate::WebSession>, StoreError> {
        crate::common_sql::sqlite::get(&self.pool, id).await
    }

    async fn touch_web_session(&self, id: &str, last_ms: i64) -> Result<(), StoreError> {
        crate::common_sql::sqlite::touch(&self.pool, id, last_ms).await
    }

    async fn end_web_sessions(&self, id: Option<&str>, unused_before_ms: i64) -> Result<u64, StoreError> {
        crate::common_sql::sqlite::end(&self.pool, id, unused_before_ms).await
    }

    async fn login_attempt(
        &self,
        key: &str,
        at_ms: i64,
        forget_before_ms: i64,
    ) -> Result<crate::LoginFailures, StoreError> {
        crate::common_sql::sqlite::login_attempt(&self.pool, key, at_ms, forget_before_ms).await
    }

    async fn login_succeeded(&self, login: &str) -> Result<(), StoreError> {
        crate::common_sql::sqlite::login_succeeded(&self.pool, login).await
    }

    async fn meta_secret(&self, key: &str) -> Result<String, StoreError> {
        crate::common_sql::sqlite::meta_secret(&self.pool, key).await
    }

    async fn prop_state(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT key, data FROM prop_state ORDER BY key")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    async fn put_prop_state(&self, rows: &[(String, String)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (k, v) in rows {
            sqlx::query(
                "INSERT INTO prop_state (key, data) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET data = excluded.data",
            )
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

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

pub(crate) fn parse_kind(s: &str) -> Result<Kind, StoreError> {
    Kind::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown kind {s:?}")))
}

pub(crate) fn parse_json(s: &str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("stored JSON does not parse: {e}")))
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

crate::rows::decoders!(sqlx::sqlite::SqliteRow);
