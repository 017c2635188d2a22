//! The `Store` traits: what a storage backend must do. Callers use `Db` (`db/mod.rs`), never SQL.

use std::path::Path;

use async_trait::async_trait;
use keel_model::{Change, Kind, Op, Record};
use serde_json::Value;

use crate::copy::Dump;
use crate::{StoreError, TokenRow};

/// One record write inside a commit.
#[derive(Debug, Clone)]
pub struct Write {
    pub kind: Kind,
    /// `None` for a new record whose key (and `id`) is the seq of its creating change.
    pub key: Option<String>,
    pub op: Op,
    /// `Some(0)`: the record must not exist yet; `Some(v)`: it must be at version `v`.
    pub expected_version: Option<u64>,
    pub after: Option<Value>,
    pub uniques: Vec<(&'static str, String)>,
}

impl Write {
    /// Writes `r`; a record with `id` 0 gets its id and key from the seq of this change.
    pub fn put<R: Record>(r: &R, expected_version: Option<u64>, assign_key: bool) -> Result<Self, StoreError> {
        let after = serde_json::to_value(r).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Self {
            kind: R::KIND,
            key: if assign_key { None } else { Some(r.key()) },
            op: Op::Put,
            expected_version,
            after: Some(after),
            uniques: r.unique_values(),
        })
    }

    pub fn delete<R: Record>(r: &R, expected_version: Option<u64>) -> Self {
        Self {
            kind: R::KIND,
            key: Some(r.key()),
            op: Op::Delete,
            expected_version,
            after: None,
            uniques: Vec::new(),
        }
    }
}

/// Everything a backend holds, to build the Snapshot from at start.
#[derive(Debug)]
pub struct Loaded {
    pub db_id: String,
    pub seq: u64,
    pub records: Vec<(Kind, Value)>,
    /// The seq of the last machine change (or, when the log no longer holds one, a seq at least
    /// as high): the DNS zone serial.
    pub machines_seq: u64,
}

/// A storage backend: the few traits its callers use, each implemented once per backend (the
/// SQL both share is written once, in `common_sql.rs`). Every commit is one transaction that takes
/// its seqs from the counter row and writes the records, their unique values and their Changes
/// together — or nothing.
pub trait Store: Records + ChangeLog + Credentials + EngineState + Copying + Sharing + Send + Sync + 'static {}

impl<T> Store for T where T: Records + ChangeLog + Credentials + EngineState + Copying + Sharing + Send + Sync + 'static {}

/// The records themselves: what `Db` loads at start and commits.
#[async_trait]
pub trait Records {
    async fn load(&self) -> Result<Loaded, StoreError>;
    /// Commits `writes` atomically; returns their Changes in seq order.
    async fn commit(&self, principal: &str, writes: Vec<Write>) -> Result<Vec<Change>, StoreError>;
}

/// The change log, read (watch replay, `keel log`, the follower) and trimmed.
#[async_trait]
pub trait ChangeLog {
    /// Changes with seq > `since`, at most `limit`, in seq order.
    async fn changes_since(&self, since: u64, limit: u32) -> Result<Vec<Change>, StoreError>;
    /// At most `limit` changes before seq `before` (all, when `None`), newest first (`keel log`
    /// shows the newest, as `journalctl -n` does).
    async fn newest_changes(&self, before: Option<u64>, limit: u32) -> Result<Vec<Change>, StoreError>;
    /// The seq of the oldest change still in the log (0 when the log is empty).
    async fn first_seq(&self) -> Result<u64, StoreError>;
    /// Deletes old changes: all but the newest `keep`, and those before `older_than` (RFC 3339),
    /// never the newest change. Returns how many were deleted.
    async fn trim_log(&self, keep: u64, older_than: Option<&str>) -> Result<u64, StoreError>;
}

/// Who may call: API tokens, web sessions, the login throttle, the secrets kept in `meta`.
#[async_trait]
pub trait Credentials {
    async fn insert_token(&self, t: &TokenRow) -> Result<(), StoreError>;
    async fn token(&self, id: &str) -> Result<Option<TokenRow>, StoreError>;
    async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError>;
    /// Marks a token revoked; false if it does not exist.
    async fn revoke_token(&self, id: &str, at: &str) -> Result<bool, StoreError>;
    /// Stores a new web session.
    async fn put_web_session(&self, s: &crate::WebSession) -> Result<(), StoreError>;
    async fn web_session(&self, id: &str) -> Result<Option<crate::WebSession>, StoreError>;
    /// Records a use of the session (a later time only).
    async fn touch_web_session(&self, id: &str, last_ms: i64) -> Result<(), StoreError>;
    /// Deletes the session `id` (log out), and every session unused since before `unused_before_ms`.
    async fn end_web_sessions(&self, id: Option<&str>, unused_before_ms: i64) -> Result<u64, StoreError>;
    /// Counts a try of `key`'s password at `at_ms` *before* it is checked, in one statement, and
    /// answers the count with this try and the time of the one before: parallel guesses each get
    /// their own count, none slips through between a check and a count. Forgets every count last
    /// raised before `forget_before_ms`. `key` is a fixed-size digest of the login (the login
    /// throttle never stores what a stranger typed).
    async fn login_attempt(
        &self,
        key: &str,
        at_ms: i64,
        forget_before_ms: i64,
    ) -> Result<crate::LoginFailures, StoreError>;
    /// A right password: `login`'s count starts again.
    async fn login_succeeded(&self, login: &str) -> Result<(), StoreError>;
    /// A random secret kept in `meta` under `key` (one of `web_session::SECRETS`), made on first
    /// use: the same for every server on the database.
    async fn meta_secret(&self, key: &str) -> Result<String, StoreError>;
    /// Whether `meta` holds `key` (a one-time job a migration marked as pending).
    async fn meta_flag(&self, key: &str) -> Result<bool, StoreError>;
    /// Removes `key` from `meta` (the job is done).
    async fn clear_meta_flag(&self, key: &str) -> Result<(), StoreError>;
}

/// The propagation engine's own rows (serials, results), outside the change log.
#[async_trait]
pub trait EngineState {
    /// Propagation's state rows (key, JSON), all of them.
    async fn prop_state(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Inserts or replaces propagation state rows, in one transaction.
    async fn put_prop_state(&self, rows: &[(String, String)]) -> Result<(), StoreError>;
}

/// Whole-database copies: `keel backup`, `keel migrate-db`.
#[async_trait]
pub trait Copying {
    /// Writes a consistent copy of the whole database to `dest` (an SQLite file) while serving.
    async fn backup(&self, dest: &Path) -> Result<(), StoreError>;
    /// Every row, read in one consistent view (`keel migrate-db`).
    async fn export(&self) -> Result<Dump, StoreError>;
    /// Writes every row of `dump` into this database, which must be empty; all or nothing.
    async fn import(&self, dump: &Dump) -> Result<(), StoreError>;
}

/// Several servers on one database: nothing to do for one server (the defaults).
#[async_trait]
pub trait Sharing {
    /// Whether other servers may write to this database too (then the Snapshot follows the log).
    fn shared(&self) -> bool {
        false
    }
    /// On a shared database: records that these logins' machines sent a heartbeat at `at_ms`
    /// (Unix ms), for the other servers' expiry. Nothing to do for one server.
    async fn record_heartbeats(&self, _logins: &[String], _at_ms: i64) -> Result<(), StoreError> {
        Ok(())
    }
    /// The heartbeats other servers recorded: (login, Unix ms).
    async fn heartbeats(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(Vec::new())
    }
    /// On a shared database: waits until no other server's writer is between its plan and its
    /// commit, and keeps them waiting until released — so a write is planned against the latest
    /// state, as a single server's are. `None` where there is no other server.
    /// `since`: this server's last seq; the lock brings back the log's tail after it.
    async fn lock_writers(&self, _since: u64) -> Result<Option<Box<dyn WriterLock>>, StoreError> {
        Ok(None)
    }
}

/// The most changes a writer lock brings back; fewer means it brought the whole tail.
pub(crate) const CAUGHT_UP_MAX: usize = 5_000;

/// Held while one server plans and commits writes on a shared database: one transaction that
/// several writes join (group commit), committed together.
#[async_trait]
pub trait WriterLock: Send {
    /// The changes after the `since` given when locking (at most a batch; more are read after).
    fn caught_up(&mut self) -> Vec<Change>;
    /// Writes inside the lock's transaction. A write that fails is undone alone and the
    /// transaction goes on — unless the connection was lost with it (`broken`).
    async fn write(&mut self, principal: &str, writes: Vec<Write>) -> Result<Vec<Change>, StoreError>;
    /// The transaction and the lock were lost: nothing written under it will commit.
    fn broken(&self) -> bool;
    /// Commits everything written and releases the lock.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
    /// Rolls back whatever is uncommitted and releases the lock.
    async fn release(self: Box<Self>);
}

/// Copies everything `from` holds into `to`, which must be empty.
pub(crate) async fn copy(from: &dyn Store, to: &dyn Store) -> Result<Dump, StoreError> {
    let dump = from.export().await?;
    to.import(&dump).await?;
    Ok(dump)
}
