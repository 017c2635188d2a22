//! Whole-database copies between backends (`keel migrate-db`, a PostgreSQL backup as an SQLite
//! file): every table's rows exactly as stored — records, unique values, the Change log, tokens,
//! propagation state, the counter and the database id — read in one consistent view and written
//! into an empty database in one transaction.

use crate::codec::to_u64;
use crate::{StoreError, TokenRow};

/// An object row: (kind, key, version, data).
pub type ObjectRow = (String, String, i64, String);
/// A unique-value row: (space, value, kind, key).
pub type UniqueRow = (String, String, String, String);

/// Every row of a keel database.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dump {
    pub db_id: String,
    pub seq: u64,
    pub objects: Vec<ObjectRow>,
    pub uniques: Vec<UniqueRow>,
    /// (seq, time, principal, kind, op, key, before, after), as stored.
    pub changes: Vec<ChangeRow>,
    pub tokens: Vec<TokenRow>,
    pub prop_state: Vec<(String, String)>,
}

pub type ChangeRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

/// The same reads on either backend (the SQL is the same; the connection types are not).
macro_rules! export_body {
    ($conn:expr, $tok:path) => {{
        let db_id: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'db_id'")
            .fetch_one(&mut *$conn)
            .await?;
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM counter WHERE id = 1")
            .fetch_one(&mut *$conn)
            .await?;
        let objects = sqlx::query_as("SELECT kind, key, version, data FROM objects ORDER BY kind, key")
            .fetch_all(&mut *$conn)
            .await?;
        let uniques = sqlx::query_as("SELECT space, value, kind, key FROM uniques ORDER BY space, value")
            .fetch_all(&mut *$conn)
            .await?;
        let changes =
            sqlx::query_as("SELECT seq, time, principal, kind, op, key, before, after FROM changes ORDER BY seq")
                .fetch_all(&mut *$conn)
                .await?;
        let prop_state = sqlx::query_as("SELECT key, data FROM prop_state ORDER BY key")
            .fetch_all(&mut *$conn)
            .await?;
        let rows = sqlx::query(
            "SELECT id, hash, name, role, facilities, host, created, expires, revoked FROM tokens ORDER BY id",
        )
        .fetch_all(&mut *$conn)
        .await?;
        let tokens = rows.iter().map($tok).collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Dump {
            db_id,
            seq: to_u64(seq),
            objects,
            uniques,
            changes,
            tokens,
            prop_state,
        })
    }};
}

pub(crate) async fn export_pg(tx: &mut sqlx::PgConnection) -> Result<Dump, StoreError> {
    export_body!(tx, crate::codec::pg::token_from_row)
}

pub(crate) async fn export_sqlite(tx: &mut sqlx::SqliteConnection) -> Result<Dump, StoreError> {
    export_body!(tx, crate::codec::sqlite::token_from_row)
}

fn not_empty() -> StoreError {
    StoreError::Conflict("the target database is not empty: keel copies only into a new database".into())
}

/// Refuses a target that holds anything: a copy goes into a new database only.
macro_rules! refuse_unless_empty {
    ($tx:expr) => {{
        let (seq, objects): (i64, i64) =
            sqlx::query_as("SELECT (SELECT seq FROM counter WHERE id = 1), (SELECT COUNT(*) FROM objects)")
                .fetch_one(&mut *$tx)
                .await?;
        if seq != 0 || objects != 0 {
            return Err(not_empty());
        }
    }};
}

/// The few rows both backends write one by one (tokens, propagation state), the counter and the
/// database id, then COMMIT; the SQL differs only in its placeholders (`sql`: one of the `*_TAIL`).
macro_rules! import_tail {
    ($tx:expr, $d:expr, $sql:expr) => {{
        let [tokens, prop_state, counter, meta] = $sql;
        for t in &$d.tokens {
            let facilities = serde_json::to_string(&t.facilities).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(tokens)
                .bind(&t.id)
                .bind(&t.hash)
                .bind(&t.name)
                .bind(t.role.as_str())
                .bind(facilities)
                .bind(&t.host)
                .bind(&t.created)
                .bind(&t.expires)
                .bind(&t.revoked)
                .execute(&mut *$tx)
                .await?;
        }
        for (k, v) in &$d.prop_state {
            sqlx::query(prop_state).bind(k).bind(v).execute(&mut *$tx).await?;
        }
        sqlx::query(counter)
            .bind(crate::codec::to_i64($d.seq))
            .execute(&mut *$tx)
            .await?;
        sqlx::query(meta).bind(&$d.db_id).execute(&mut *$tx).await?;
        $tx.commit().await?;
        Ok(())
    }};
}

const PG_TAIL: [&str; 4] = [
    "INSERT INTO tokens (id, hash, name, role, facilities, host, created, expires, revoked) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    "INSERT INTO prop_state (key, data) VALUES ($1, $2)",
    "UPDATE counter SET seq = $1 WHERE id = 1",
    "UPDATE meta SET value = $1 WHERE key = 'db_id'",
];

const SQLITE_TAIL: [&str; 4] = [
    "INSERT INTO tokens (id, hash, name, role, facilities, host, created, expires, revoked) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "INSERT INTO prop_state (key, data) VALUES (?, ?)",
    "UPDATE counter SET seq = ? WHERE id = 1",
    "UPDATE meta SET value = ? WHERE key = 'db_id'",
];

pub(crate) async fn import_pg(pool: &sqlx::PgPool, d: &Dump) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    refuse_unless_empty!(tx);
    let col = |f: &dyn Fn(&ObjectRow) -> String| d.objects.iter().map(f).collect::<Vec<_>>();
    sqlx::query("INSERT INTO objects SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[])")
        .bind(col(&|o| o.0.clone()))
        .bind(col(&|o| o.1.clone()))
        .bind(d.objects.iter().map(|o| o.2).collect::<Vec<_>>())
        .bind(col(&|o| o.3.clone()))
        .execute(&mut *tx)
        .await?;
    let ucol = |f: &dyn Fn(&UniqueRow) -> String| d.uniques.iter().map(f).collect::<Vec<_>>();
    sqlx::query("INSERT INTO uniques SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])")
        .bind(ucol(&|u| u.0.clone()))
        .bind(ucol(&|u| u.1.clone()))
        .bind(ucol(&|u| u.2.clone()))
        .bind(ucol(&|u| u.3.clone()))
        .execute(&mut *tx)
        .await?;
    let c = &d.changes;
    sqlx::query(
        "INSERT INTO changes SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])",
    )
    .bind(c.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(c.iter().map(|r| r.1.clone()).collect::<Vec<_>>())
    .bind(c.iter().map(|r| r.2.clone()).collect::<Vec<_>>())
    .bind(c.iter().map(|r| r.3.clone()).collect::<Vec<_>>())
    .bind(c.iter().map(|r| r.4.clone()).collect::<Vec<_>>())
    .bind(c.iter().map(|r| r.5.clone()).collect::<Vec<_>>())
    .bind(c.iter().map(|r| r.6.clone()).collect::<Vec<_>>())
    .bind(c.iter().map(|r| r.7.clone()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    import_tail!(tx, d, PG_TAIL)
}

pub(crate) async fn import_sqlite(pool: &sqlx::SqlitePool, d: &Dump) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    refuse_unless_empty!(tx);
    for o in &d.objects {
        sqlx::query("INSERT INTO objects (kind, key, version, data) VALUES (?, ?, ?, ?)")
            .bind(&o.0)
            .bind(&o.1)
            .bind(o.2)
            .bind(&o.3)
            .execute(&mut *tx)
            .await?;
    }
    for u in &d.uniques {
        sqlx::query("INSERT INTO uniques (space, value, kind, key) VALUES (?, ?, ?, ?)")
            .bind(&u.0)
            .bind(&u.1)
            .bind(&u.2)
            .bind(&u.3)
            .execute(&mut *tx)
            .await?;
    }
    for c in &d.changes {
        sqlx::query(
            "INSERT INTO changes (seq, time, principal, kind, op, key, before, after) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(c.0)
        .bind(&c.1)
        .bind(&c.2)
        .bind(&c.3)
        .bind(&c.4)
        .bind(&c.5)
        .bind(&c.6)
        .bind(&c.7)
        .execute(&mut *tx)
        .await?;
    }
    import_tail!(tx, d, SQLITE_TAIL)
}
