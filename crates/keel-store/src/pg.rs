//! The PostgreSQL backend, for sites with several keel servers on one database.
//!
//! The same tables as SQLite (migrations in `migrations/postgres`). A commit takes its seqs by
//! updating the counter row, whose row lock makes writers on every server commit one after the
//! other in seq order (invariant 8); records being replaced are read `FOR UPDATE` in the
//! same transaction, so version checks hold across servers; the unique values table refuses what
//! a stale Snapshot let through. Each commit ends with `NOTIFY keel_changes`, which other servers
//! LISTEN to — as a wake-up only: they read the log itself, so a lost notification loses nothing.

use std::path::Path;

use async_trait::async_trait;
use keel_model::Change;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;

use crate::codec::pg::change_from_row;
use crate::codec::{parse_json, to_i64, to_u64};
use crate::commit_plan::{batches, plan, ChunkRows, Planned};
use crate::store::{Copying, Sharing, Write};
use crate::{fault, now_rfc3339, StoreError};

/// The channel commits notify on.
pub const CHANNEL: &str = "keel_changes";

pub struct PgStore {
    pub(crate) pool: PgPool,
    url: String,
    /// The connection whose session takes the cross-server writer lock (one round trip to take,
    /// one to release; PostgreSQL releases it if this server dies).
    writer: std::sync::Arc<tokio::sync::Mutex<Option<sqlx::postgres::PgConnection>>>,
}

impl PgStore {
    /// Connects and brings the schema up to date. Migrations take PostgreSQL's advisory lock
    /// (sqlx), so servers starting together migrate once.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(connect_options(url)?)
            .await?;
        match crate::migrations::postgres().run(&pool).await {
            Ok(()) => {}
            // Migrations only add (tables, columns with defaults, indexes): an older server keeps
            // working beside a newer one's schema, but never runs a schema it does not know.
            Err(sqlx::migrate::MigrateError::VersionMissing(v)) => {
                return Err(StoreError::Corrupt(format!(
                    "the database's schema is at version {v}, newer than this keel knows: upgrade this server                      (servers on one database must run the same or a newer keel)"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        sqlx::query("INSERT INTO meta (key, value) VALUES ('db_id', $1) ON CONFLICT (key) DO NOTHING")
            .bind(uuid::Uuid::new_v4().to_string())
            .execute(&pool)
            .await?;
        Ok(Self {
            pool,
            url: url.to_owned(),
            writer: std::sync::Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A listener on the commit channel (its own connection).
    pub async fn listener(&self) -> Result<sqlx::postgres::PgListener, StoreError> {
        let mut l = sqlx::postgres::PgListener::connect(&self.url).await?;
        l.listen(CHANNEL).await?;
        Ok(l)
    }

    /// The database's URL (for the propagation lock's own connection).
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// How every connection of keel's is opened. Plans are made for each statement's values, never
/// cached generic: the commit's statements join `UNNEST` of array parameters to the tables, and a
/// generic plan made while a table was small (a hash join, a sequential scan) stayed on as it
/// grew — a single create cost 2 ms at 1,000 users and 50 ms at 100,000.
fn connect_options(url: &str) -> Result<sqlx::postgres::PgConnectOptions, StoreError> {
    let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
    Ok(opts.options([("plan_cache_mode", "force_custom_plan")]))
}

async fn write_chunk(tx: &mut sqlx::PgConnection, chunk: &[Planned]) -> Result<(), sqlx::Error> {
    let strings = |f: &dyn Fn(&Planned) -> String, of: &[&Planned]| of.iter().map(|p| f(p)).collect::<Vec<String>>();
    let kind = |p: &Planned| p.change.kind.as_str().to_owned();
    let key = |p: &Planned| p.change.key.clone();
    let all: Vec<&Planned> = chunk.iter().collect();
    let ChunkRows {
        replaced,
        uniques,
        puts,
        deletes,
    } = ChunkRows::of(chunk);
    if !replaced.is_empty() {
        // Before the new unique values go in (a separate statement: one statement's parts all
        // see the same snapshot, so its INSERT would still find the values its DELETE removes).
        sqlx::query("DELETE FROM uniques u USING UNNEST($1::text[], $2::text[]) AS r(kind, key) WHERE u.kind = r.kind AND u.key = r.key")
            .bind(strings(&kind, &replaced))
            .bind(strings(&key, &replaced))
            .execute(&mut *tx)
            .await?;
    }
    // Unique values, records, deletions, Change rows and the wake-up for other servers (sent at
    // COMMIT) in one statement: one round trip.
    sqlx::query(
        "WITH u AS (INSERT INTO uniques (space, value, kind, key) \
           SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) RETURNING 1), \
         o AS (INSERT INTO objects (kind, key, version, data) \
           SELECT * FROM UNNEST($5::text[], $6::text[], $7::bigint[], $8::text[]) \
           ON CONFLICT (kind, key) DO UPDATE SET version = excluded.version, data = excluded.data RETURNING 1), \
         d AS (DELETE FROM objects ob USING UNNEST($9::text[], $10::text[]) AS x(kind, key) \
           WHERE ob.kind = x.kind AND ob.key = x.key RETURNING 1), \
         ch AS (INSERT INTO changes (seq, time, principal, kind, op, key, before, after) \
           SELECT * FROM UNNEST($11::bigint[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], \
           $17::text[], $18::text[]) RETURNING seq) \
         SELECT pg_notify('keel_changes', (SELECT MAX(seq) FROM ch)::text)",
    )
    .bind(uniques.iter().map(|(_, (s, _))| (*s).to_owned()).collect::<Vec<_>>())
    .bind(uniques.iter().map(|(_, (_, v))| v.clone()).collect::<Vec<_>>())
    .bind(uniques.iter().map(|(p, _)| kind(p)).collect::<Vec<_>>())
    .bind(uniques.iter().map(|(p, _)| key(p)).collect::<Vec<_>>())
    .bind(strings(&kind, &puts))
    .bind(strings(&key, &puts))
    .bind(puts.iter().map(|p| to_i64(p.change.seq)).collect::<Vec<_>>())
    .bind(strings(&|p| p.after.clone().unwrap_or_default(), &puts))
    .bind(strings(&kind, &deletes))
    .bind(strings(&key, &deletes))
    .bind(all.iter().map(|p| to_i64(p.change.seq)).collect::<Vec<_>>())
    .bind(strings(&|p| p.change.time.clone(), &all))
    .bind(strings(&|p| p.change.principal.clone(), &all))
    .bind(strings(&kind, &all))
    .bind(strings(&|p| p.change.op.as_str().to_owned(), &all))
    .bind(strings(&key, &all))
    .bind(all.iter().map(|p| p.before.clone()).collect::<Vec<Option<String>>>())
    .bind(all.iter().map(|p| p.after.clone()).collect::<Vec<Option<String>>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A unique value already held, named from PostgreSQL's detail.
fn conflict(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            let detail = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|p| p.detail().map(str::to_owned))
                .unwrap_or_else(|| "a unique value is already used".into());
            return StoreError::Conflict(detail);
        }
    }
    e.into()
}

/// Plain SQL (no parameters: our own integers inlined) in one round trip; its rows. A concrete
/// function: the generic executor call inside `async_trait` methods trips on lifetimes.
async fn raw_rows(conn: &mut sqlx::PgConnection, sql: &str) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
    use sqlx::Executor;
    conn.fetch_all(sqlx::raw_sql(sql)).await
}

/// A commit's work inside a transaction (the caller ends it with COMMIT or ROLLBACK): `start`
/// (BEGIN, a savepoint) and the seqs in one round trip, the records being replaced read FOR
/// UPDATE, then every row and the wake-up in one statement per chunk.
async fn write_tx(
    conn: &mut sqlx::PgConnection,
    start: &str,
    principal: &str,
    writes: Vec<Write>,
) -> Result<Vec<Change>, StoreError> {
    if writes.is_empty() {
        raw_rows(conn, start).await?;
        return Ok(Vec::new());
    }
    let time = now_rfc3339();
    // The count is our own integer: inlined, so the start and the counter update are one round trip.
    let sql = format!(
        "{start}; UPDATE counter SET seq = seq + {} WHERE id = 1 RETURNING seq",
        writes.len()
    );
    let rows = raw_rows(conn, &sql).await?;
    let last: i64 = rows
        .last()
        .ok_or_else(|| StoreError::Corrupt("no counter row".into()))?
        .try_get("seq")?;
    let keyed: Vec<(usize, &Write)> = writes.iter().enumerate().filter(|(_, w)| w.key.is_some()).collect();
    let mut current = std::collections::HashMap::new();
    if !keyed.is_empty() {
        let rows = sqlx::query(
            "SELECT w.idx, o.version, o.data FROM UNNEST($1::bigint[], $2::text[], $3::text[]) AS w(idx, kind, key) \
             JOIN objects o ON o.kind = w.kind AND o.key = w.key FOR UPDATE OF o",
        )
        .bind(keyed.iter().map(|(i, _)| *i as i64).collect::<Vec<_>>())
        .bind(
            keyed
                .iter()
                .map(|(_, w)| w.kind.as_str().to_owned())
                .collect::<Vec<_>>(),
        )
        .bind(
            keyed
                .iter()
                .map(|(_, w)| w.key.clone().unwrap_or_default())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            let idx = usize::try_from(r.try_get::<i64, _>("idx")?).unwrap_or(usize::MAX);
            current.insert(idx, (to_u64(r.try_get("version")?), parse_json(r.try_get("data")?)?));
        }
    }
    let first = to_u64(last) + 1 - writes.len() as u64;
    let planned = writes
        .into_iter()
        .enumerate()
        .map(|(i, w)| plan(w, first + i as u64, principal, &time, current.get(&i)))
        .collect::<Result<Vec<_>, _>>()?;
    fault::in_commit().await;
    // UNNEST takes whole arrays: no bound on values, only on a key appearing twice.
    for chunk in batches(&planned, usize::MAX) {
        write_chunk(&mut *conn, chunk).await.map_err(conflict)?;
    }
    Ok(planned.into_iter().map(|p| p.change).collect())
}

impl PgStore {
    /// Commits `writes` in one transaction (the `Records` trait's `commit`).
    pub(crate) async fn commit_writes(&self, principal: &str, writes: Vec<Write>) -> Result<Vec<Change>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let result = write_tx(&mut conn, "BEGIN", principal, writes).await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        if let Err(e) = raw_rows(&mut conn, end).await {
            conn.close_on_drop(); // never back to the pool mid-transaction
            return Err(e.into());
        }
        result
    }
}

#[async_trait]
impl Copying for PgStore {
    async fn backup(&self, dest: &Path) -> Result<(), StoreError> {
        // A consistent copy as an SQLite file: what `keel restore` and `keel migrate-db` read.
        let to = crate::SqliteStore::open_single(dest).await?;
        crate::store::copy(self, &to).await?;
        to.close().await;
        Ok(())
    }

    async fn export(&self) -> Result<crate::copy::Dump, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        let d = crate::copy::export_pg(&mut tx).await;
        tx.commit().await?;
        d
    }

    async fn import(&self, dump: &crate::copy::Dump) -> Result<(), StoreError> {
        crate::copy::import_pg(&self.pool, dump).await
    }
}

#[async_trait]
impl Sharing for PgStore {
    fn shared(&self) -> bool {
        true
    }

    async fn record_heartbeats(&self, logins: &[String], at_ms: i64) -> Result<(), StoreError> {
        if logins.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO heartbeats (login, at_ms) SELECT l, $2 FROM UNNEST($1::text[]) AS l \
             ON CONFLICT (login) DO UPDATE SET at_ms = GREATEST(heartbeats.at_ms, excluded.at_ms)",
        )
        .bind(logins)
        .bind(at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn heartbeats(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as("SELECT login, at_ms FROM heartbeats")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn lock_writers(&self, since: u64) -> Result<Option<Box<dyn crate::store::WriterLock>>, StoreError> {
        use sqlx::Connection;
        let mut slot = self.writer.clone().lock_owned().await;
        if slot.is_none() {
            *slot = Some(sqlx::postgres::PgConnection::connect_with(&connect_options(&self.url)?).await?);
        }
        let conn = slot
            .as_mut()
            .ok_or_else(|| StoreError::Corrupt("no writer connection".into()))?;
        // The lock, then the log's tail after `since` (integers of our own, inlined): one round trip.
        let sql = format!(
            "SELECT pg_advisory_lock({WRITER_LOCK}); SELECT seq, time, principal, kind, op, key, before, after \
             FROM changes WHERE seq > {} ORDER BY seq LIMIT {}",
            to_i64(since),
            crate::store::CAUGHT_UP_MAX
        );
        let rows = match raw_rows(conn, &sql).await {
            Ok(rows) => rows,
            Err(e) => {
                *slot = None; // a broken connection: the next write opens a new one
                return Err(e.into());
            }
        };
        let caught_up = rows
            .iter()
            .filter(|r| r.try_get::<i64, _>("seq").is_ok())
            .map(change_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Box::new(PgWriterLock {
            slot,
            caught_up,
            locked: true,
            tx: Tx::None,
            broken: false,
        })))
    }
}

/// The advisory lock writers on every server take in turn ("keelwrit").
const WRITER_LOCK: i64 = 0x6b65_656c_7772_6974;

struct PgWriterLock {
    slot: tokio::sync::OwnedMutexGuard<Option<sqlx::postgres::PgConnection>>,
    caught_up: Vec<Change>,
    /// Still holding the advisory lock.
    locked: bool,
    tx: Tx,
    /// The connection failed: the transaction and the lock are gone with it.
    broken: bool,
}

/// Where the lock's transaction stands.
#[derive(Clone, Copy, PartialEq)]
enum Tx {
    None,
    /// Open; the last write's savepoint is still to be released.
    Open {
        savepoint: bool,
    },
}

impl PgWriterLock {
    fn conn(&mut self) -> Result<&mut sqlx::postgres::PgConnection, StoreError> {
        self.slot
            .as_mut()
            .ok_or_else(|| StoreError::Corrupt("no writer connection".into()))
    }

    /// Ends the session: PostgreSQL rolls back whatever is open and releases the lock.
    fn lose(&mut self) {
        *self.slot = None;
        self.locked = false;
        self.tx = Tx::None;
        self.broken = true;
    }

    /// Runs `sql` (the transaction's end, the unlock); on failure the connection is given up.
    async fn finish(&mut self, sql: &str) -> Result<(), StoreError> {
        let result = match self.conn() {
            Ok(conn) => raw_rows(conn, sql).await.map_err(StoreError::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => {
                self.locked = false;
                self.tx = Tx::None;
                Ok(())
            }
            Err(e) => {
                self.lose();
                Err(e)
            }
        }
    }
}

#[async_trait]
impl crate::store::WriterLock for PgWriterLock {
    fn caught_up(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.caught_up)
    }

    /// Each write runs under its own savepoint, so one that fails is undone alone and the
    /// transaction goes on; releasing the previous write's savepoint rides on the same round trip.
    async fn write(&mut self, principal: &str, writes: Vec<Write>) -> Result<Vec<Change>, StoreError> {
        let start = match self.tx {
            Tx::None => "BEGIN; SAVEPOINT w",
            Tx::Open { savepoint: false } => "SAVEPOINT w",
            Tx::Open { savepoint: true } => "RELEASE SAVEPOINT w; SAVEPOINT w",
        };
        let result = write_tx(self.conn()?, start, principal, writes).await;
        self.tx = Tx::Open {
            savepoint: result.is_ok(),
        };
        if result.is_err() {
            let undo = "ROLLBACK TO SAVEPOINT w; RELEASE SAVEPOINT w";
            let undone = match self.conn() {
                Ok(conn) => raw_rows(conn, undo).await.map(drop).map_err(StoreError::from),
                Err(e) => Err(e),
            };
            if let Err(e) = undone {
                tracing::warn!(%e, "undoing a failed write lost the writer connection");
                self.lose();
            }
        }
        result
    }

    fn broken(&self) -> bool {
        self.broken
    }

    /// COMMIT and the unlock in one round trip.
    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let sql = match self.tx {
            Tx::None => format!("SELECT pg_advisory_unlock({WRITER_LOCK})"),
            Tx::Open { .. } => format!("COMMIT; SELECT pg_advisory_unlock({WRITER_LOCK})"),
        };
        // On failure whether the COMMIT took effect is the log's to say (the caller reads it).
        self.finish(&sql).await
    }

    async fn release(mut self: Box<Self>) {
        if !self.locked {
            return;
        }
        let sql = match self.tx {
            Tx::None => format!("SELECT pg_advisory_unlock({WRITER_LOCK})"),
            Tx::Open { .. } => format!("ROLLBACK; SELECT pg_advisory_unlock({WRITER_LOCK})"),
        };
        if let Err(e) = self.finish(&sql).await {
            tracing::warn!(%e, "releasing the writer lock failed; closed its connection");
        }
    }
}

impl Drop for PgWriterLock {
    /// Dropped while holding the lock (a cancelled write): the connection's state is unknown,
    /// so it is closed rather than reused.
    fn drop(&mut self) {
        if self.locked {
            self.lose();
        }
    }
}

/// Keeps `db`'s Snapshot current with what other servers commit: woken by `NOTIFY keel_changes`,
/// and every 100 ms anyway (the log is the truth: a notification lost — while reconnecting, or
/// to a cancelled wait — costs at most 100 ms, one indexed query). Runs until the process ends.
pub async fn follow(db: std::sync::Arc<crate::Db>, url: String) {
    let mut listener: Option<sqlx::postgres::PgListener> = None;
    let mut last_look = std::time::Instant::now();
    loop {
        if listener.is_none() {
            listener = match sqlx::postgres::PgListener::connect(&url).await {
                Ok(mut l) => l.listen(CHANNEL).await.ok().map(|()| l),
                Err(e) => {
                    tracing::warn!(%e, "cannot listen for other servers' commits; polling");
                    None
                }
            };
        }
        match &mut listener {
            Some(l) => match tokio::time::timeout(POLL, l.recv()).await {
                // Most notifications are this server's own commits, already applied: then there
                // is nothing to read (and the writer lock is left to the writers).
                Ok(Ok(n))
                    if last_look.elapsed() < POLL
                        && n.payload().parse::<u64>().is_ok_and(|seq| seq <= db.snapshot().seq()) =>
                {
                    continue
                }
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => {
                    tracing::warn!(%e, "lost the notification connection; reconnecting");
                    listener = None;
                }
            },
            None => tokio::time::sleep(POLL).await,
        }
        last_look = std::time::Instant::now();
        if let Err(e) = db.catch_up().await {
            tracing::warn!(%e, "cannot read other servers' changes");
        }
    }
}

/// How often a follower looks at the log without a notification.
const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The advisory lock that makes one server of many run propagation.
const PROPAGATION_LOCK: i64 = 0x6b65_656c_7072_6f70; // "keelprop"

/// Holding the propagation lock: a connection of its own, whose session owns the lock. If the
/// holder dies, PostgreSQL ends the session and releases the lock; another server takes it.
pub struct Leadership {
    conn: sqlx::postgres::PgConnection,
}

impl Leadership {
    /// Waits (trying every `every`) until this process holds the lock.
    pub async fn acquire(url: &str, every: std::time::Duration) -> Self {
        use sqlx::Connection;
        loop {
            match sqlx::postgres::PgConnection::connect(url).await {
                Ok(mut conn) => {
                    let got: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                        .bind(PROPAGATION_LOCK)
                        .fetch_one(&mut conn)
                        .await;
                    if matches!(got, Ok(true)) {
                        return Self { conn };
                    }
                }
                Err(e) => tracing::warn!(%e, "cannot reach the database for the propagation lock"),
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Resolves when the lock's connection is lost (the lock may then be someone else's).
    pub async fn lost(mut self) {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            if sqlx::query("SELECT 1").execute(&mut self.conn).await.is_err() {
                return;
            }
        }
    }
}
