//! One SQLite commit in two round trips (for up to about 1,000 records), whatever it writes:
//!
//! 1. `BEGIN IMMEDIATE; UPDATE counter … RETURNING seq;` plus a `SELECT` of each record being
//!    replaced — the seqs are taken from the counter row inside the transaction (invariant 8);
//! 2. every record, unique value and Change row, as multi-row statements in one batch (more
//!    batches for a large import), the last batch ending with `COMMIT`.
//!
//! The crash-test fault point sits between the two: after the seqs are taken, before any record
//! is written or committed, on the same path as every commit.
//!
//! A small commit that only creates records (a registration) needs nothing read first: it is one
//! round trip, with the seqs used inside SQL (`run_fresh`).
//!
//! sqlx hands each statement to SQLite's worker thread and back; on this hardware that round trip
//! costs about as much as the fsync, so fewer round trips is what makes durable writes fast.
//! The transaction is opened by hand, so `OpenTx` guarantees it never outlives an error or a
//! cancelled future: it rolls back on error and, if dropped while open, closes the connection
//! (SQLite then rolls back) instead of returning it to the pool mid-transaction.

use std::collections::HashMap;

use keel_model::{Change, Op};
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::{Row, Sqlite, SqlitePool};

use crate::codec::{parse_json, to_i64, to_u64};
use crate::commit_plan::{batches, plan, stamp, ChunkRows, Planned};
use crate::store::Write;
use crate::{fault, now_rfc3339, StoreError};

struct OpenTx {
    conn: PoolConnection<Sqlite>,
    open: bool,
}

impl Drop for OpenTx {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

pub(crate) async fn commit(pool: &SqlitePool, principal: &str, writes: Vec<Write>) -> Result<Vec<Change>, StoreError> {
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = OpenTx {
        conn: pool.acquire().await?,
        open: false,
    };
    let result = run(&mut tx, principal, writes).await;
    if result.is_err() && tx.open && sqlx::query("ROLLBACK").execute(&mut *tx.conn).await.is_ok() {
        tx.open = false;
    }
    result
}

async fn run(tx: &mut OpenTx, principal: &str, writes: Vec<Write>) -> Result<Vec<Change>, StoreError> {
    // Small creations take the one-round-trip path; its per-row subqueries make SQLite's
    // statement preparation slow for large batches, where the round trip saved no longer counts.
    if writes.len() <= FRESH_MAX
        && writes
            .iter()
            .all(|w| w.key.is_none() && w.op == Op::Put && w.after.is_some())
    {
        return run_fresh(tx, principal, writes).await;
    }
    let time = now_rfc3339();
    let t0 = std::time::Instant::now();
    let (last, current) = begin(tx, &writes).await?;
    let t1 = t0.elapsed().as_micros() as u64;
    let first = last + 1 - writes.len() as u64;
    let planned = writes
        .into_iter()
        .enumerate()
        .map(|(i, w)| plan(w, first + i as u64, principal, &time, current.get(&i)))
        .collect::<Result<Vec<_>, _>>()?;
    fault::in_commit().await;
    // SQLite allows 32,766 bound values per statement.
    let chunks = batches(&planned, 30_000);
    let mut written = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        written += chunk.len();
        if let Err(e) = write_chunk(tx, chunk, i + 1 == chunks.len()).await {
            return Err(match e {
                ChunkError::Unique => conflict(tx, planned_claims(&planned[..written])).await,
                ChunkError::Store(e) => e,
            });
        }
    }
    // The last batch ended with COMMIT, and it succeeded.
    tx.open = false;
    tracing::debug!(
        begin_us = t1,
        total_us = t0.elapsed().as_micros() as u64,
        writes = planned.len(),
        "committed"
    );
    Ok(planned.into_iter().map(|p| p.change).collect())
}

/// A small commit that only creates records (a registration, an add): nothing to read first, so
/// the seqs are taken and used inside SQL — `seq` from the counter row, stamped into each record
/// with `json_set` exactly as `stamp` does — and the whole commit is one round trip. Armed for a
/// crash test, the fault point splits it after the counter update, still inside the transaction.
async fn run_fresh(tx: &mut OpenTx, principal: &str, writes: Vec<Write>) -> Result<Vec<Change>, StoreError> {
    let time = now_rfc3339();
    let n = writes.len();
    let afters: Vec<String> = writes
        .iter()
        .map(|w| w.after.as_ref().map(Value::to_string).unwrap_or_default())
        .collect();
    let begin = "BEGIN IMMEDIATE; UPDATE counter SET seq = seq + ? WHERE id = 1;";
    tx.open = true;
    let armed = fault::armed();
    if armed {
        sqlx::query(begin).bind(n as i64).execute(&mut *tx.conn).await?;
        fault::in_commit().await;
    }
    let sql = format!(
        "{}{}SELECT seq FROM counter WHERE id = 1; COMMIT;",
        if armed { "" } else { begin },
        fresh_sql(&writes, n)
    );
    let mut q = sqlx::query(&sql).persistent(n == 1);
    if !armed {
        q = q.bind(n as i64);
    }
    // In the order of `fresh_sql`: all unique values, then all records, then all Changes.
    for w in &writes {
        for (space, value) in &w.uniques {
            q = q.bind(*space).bind(value.as_str()).bind(w.kind.as_str());
        }
    }
    for (w, after) in writes.iter().zip(&afters) {
        q = q.bind(w.kind.as_str()).bind(after.as_str());
    }
    for (w, after) in writes.iter().zip(&afters) {
        q = q
            .bind(time.as_str())
            .bind(principal)
            .bind(w.kind.as_str())
            .bind(after.as_str());
    }
    let rows = match q.fetch_all(&mut *tx.conn).await {
        Ok(rows) => rows,
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            // OR ROLLBACK: SQLite has already rolled the transaction back.
            tx.open = false;
            return Err(conflict(tx, fresh_claims(&writes)).await);
        }
        Err(e) => return Err(e.into()),
    };
    tx.open = false;
    let seq: i64 = rows
        .last()
        .ok_or_else(|| StoreError::Corrupt("no counter row".into()))?
        .try_get("seq")?;
    Ok(fresh_changes(writes, to_u64(seq), principal, &time))
}

/// The most records a one-round-trip creation takes (see `run`).
const FRESH_MAX: usize = 16;

/// The inserts of a batch of fresh writes; `left` writes remain from the first of this batch, so
/// write i of the batch has seq = counter - (left - 1 - i).
fn fresh_sql(batch: &[Write], left: usize) -> String {
    let seq = |i: usize| format!("(SELECT seq - {} FROM counter WHERE id = 1)", left - 1 - i);
    let mut uniques = Vec::new();
    let mut objects = Vec::new();
    let mut changes = Vec::new();
    for (i, w) in batch.iter().enumerate() {
        let s = seq(i);
        let key = format!("CAST({s} AS TEXT)");
        let stamped = format!("json_set(?, '$.version', {s}, '$.id', {s})");
        uniques.extend(w.uniques.iter().map(|_| format!("(?, ?, ?, {key})")));
        objects.push(format!("(?, {key}, {s}, {stamped})"));
        changes.push(format!("({s}, ?, ?, ?, 'put', {key}, NULL, {stamped})"));
    }
    let mut sql = String::new();
    if !uniques.is_empty() {
        sql += &format!(
            "INSERT OR ROLLBACK INTO uniques (space, value, kind, key) VALUES {};",
            uniques.join(", ")
        );
    }
    sql += &format!(
        "INSERT OR ROLLBACK INTO objects (kind, key, version, data) VALUES {};",
        objects.join(", ")
    );
    sql += &format!(
        "INSERT OR ROLLBACK INTO changes (seq, time, principal, kind, op, key, before, after) VALUES {};",
        changes.join(", ")
    );
    sql
}

/// The Changes of a committed fresh batch whose last seq is `last`: built in Rust exactly as SQL
/// stored them.
fn fresh_changes(writes: Vec<Write>, last: u64, principal: &str, time: &str) -> Vec<Change> {
    let first = last + 1 - writes.len() as u64;
    writes
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            let seq = first + i as u64;
            let mut after = w.after.unwrap_or(Value::Null);
            stamp(&mut after, seq, true);
            Change {
                seq,
                time: time.to_owned(),
                principal: principal.to_owned(),
                kind: w.kind,
                op: Op::Put,
                key: seq.to_string(),
                before: None,
                after: Some(after),
            }
        })
        .collect()
}

/// Opens the transaction, takes the seqs and reads the records being replaced (by write index).
async fn begin(tx: &mut OpenTx, writes: &[Write]) -> Result<(u64, HashMap<usize, (u64, Value)>), StoreError> {
    let mut sql = String::from("BEGIN IMMEDIATE; UPDATE counter SET seq = seq + ? WHERE id = 1 RETURNING seq;");
    let reads: Vec<(usize, &Write)> = writes.iter().enumerate().filter(|(_, w)| w.key.is_some()).collect();
    for chunk in reads.chunks(READ_ROWS) {
        sql += &read_sql(chunk.len());
    }
    let mut q = sqlx::query(&sql).persistent(reads.len() <= 1).bind(writes.len() as i64);
    for (i, w) in &reads {
        q = q.bind(*i as i64).bind(w.kind.as_str()).bind(w.key.as_deref());
    }
    tx.open = true;
    let rows = q.fetch_all(&mut *tx.conn).await?;
    let mut rows = rows.iter();
    let last: i64 = rows
        .next()
        .ok_or_else(|| StoreError::Corrupt("no counter row".into()))?
        .try_get("seq")?;
    let mut current = HashMap::new();
    for r in rows {
        let idx = usize::try_from(r.try_get::<i64, _>("idx")?).unwrap_or(usize::MAX);
        current.insert(idx, (to_u64(r.try_get("version")?), parse_json(r.try_get("data")?)?));
    }
    Ok((to_u64(last), current))
}

/// Records read per statement at the start of a commit (3 bound values each: under SQLite's
/// 32,766).
const READ_ROWS: usize = 10_000;

/// Reads `n` records by (kind, key) in one statement, each row tagged with its write's index.
/// One statement, never one per record: SQLite copies the rest of the text at each statement it
/// prepares, so 10,000 one-record statements cost 10,000 copies of up to 700 KB (a third of a
/// 10,000-user import, and quadratic in the import's size).
fn read_sql(n: usize) -> String {
    format!(
        "WITH w(idx, kind, key) AS (VALUES {}) \
         SELECT w.idx AS idx, o.version, o.data FROM w JOIN objects o ON o.kind = w.kind AND o.key = w.key;",
        rows(n, 3)
    )
}

/// Deletes the rows of `table` of `n` (kind, key) pairs in one statement. The pairs are a
/// subquery, not a bare `IN (VALUES …)` list: only then does SQLite search the index rather than
/// scan the table.
fn delete_sql(table: &str, n: usize) -> String {
    format!(
        "DELETE FROM {table} WHERE (kind, key) IN (SELECT column1, column2 FROM (VALUES {}));",
        rows(n, 2)
    )
}

/// `n` groups of `arity` placeholders: `(?, ?), (?, ?)`.
fn rows(n: usize, arity: usize) -> String {
    let one = format!("({})", vec!["?"; arity].join(", "));
    vec![one; n].join(", ")
}

/// Why a batch was not written.
enum ChunkError {
    /// A unique value is already held; the transaction is rolled back (OR ROLLBACK).
    Unique,
    Store(StoreError),
}

/// Writes the records, unique values and Change rows of `chunk` in one round trip (multi-row
/// statements), then commits if `last`. SQLite stops at the first failing statement, so an error
/// never reaches the COMMIT.
///
/// The inserts are `OR ROLLBACK`: a statement that may stop half-way with ABORT makes SQLite copy
/// every page it touches into a statement journal first, so that it can undo only that statement
/// (a tenth of a 10,000-user import at 100,000 users, growing with the indexes). A failed commit
/// is undone whole anyway, so the transaction is rolled back instead.
async fn write_chunk(tx: &mut OpenTx, chunk: &[Planned], last: bool) -> Result<(), ChunkError> {
    let ChunkRows {
        replaced,
        uniques,
        puts,
        deletes,
    } = ChunkRows::of(chunk);
    let mut sql = String::new();
    if !replaced.is_empty() {
        sql += &delete_sql("uniques", replaced.len());
    }
    if !uniques.is_empty() {
        sql += &format!(
            "INSERT OR ROLLBACK INTO uniques (space, value, kind, key) VALUES {};",
            rows(uniques.len(), 4)
        );
    }
    if !puts.is_empty() {
        sql += &format!(
            "INSERT OR ROLLBACK INTO objects (kind, key, version, data) VALUES {} \
             ON CONFLICT (kind, key) DO UPDATE SET version = excluded.version, data = excluded.data;",
            rows(puts.len(), 4)
        );
    }
    if !deletes.is_empty() {
        sql += &delete_sql("objects", deletes.len());
    }
    sql += &format!(
        "INSERT OR ROLLBACK INTO changes (seq, time, principal, kind, op, key, before, after) VALUES {};",
        rows(chunk.len(), 8)
    );
    if last {
        sql += "COMMIT;";
    }
    let mut q = sqlx::query(&sql).persistent(chunk.len() == 1);
    for p in &replaced {
        q = q.bind(p.change.kind.as_str()).bind(p.change.key.as_str());
    }
    for (p, (space, value)) in &uniques {
        q = q
            .bind(*space)
            .bind(value.as_str())
            .bind(p.change.kind.as_str())
            .bind(p.change.key.as_str());
    }
    for p in &puts {
        q = q
            .bind(p.change.kind.as_str())
            .bind(p.change.key.as_str())
            .bind(to_i64(p.change.seq))
            .bind(p.after.as_deref());
    }
    for p in &deletes {
        q = q.bind(p.change.kind.as_str()).bind(p.change.key.as_str());
    }
    for p in chunk {
        let c = &p.change;
        q = q
            .bind(to_i64(c.seq))
            .bind(c.time.as_str())
            .bind(c.principal.as_str())
            .bind(c.kind.as_str());
        q = q
            .bind(c.op.as_str())
            .bind(c.key.as_str())
            .bind(p.before.as_deref())
            .bind(p.after.as_deref());
    }
    match q.execute(&mut *tx.conn).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            tx.open = false;
            Err(ChunkError::Unique)
        }
        Err(e) => Err(ChunkError::Store(e.into())),
    }
}

/// Names the unique value, of those `claims` lists in order (space, value, and the claiming
/// record's kind and key: its own old values do not count), that is given twice or already held
/// (the rare path). The transaction is rolled back (OR ROLLBACK): this reads the committed
/// database, which is what the writes were checked against.
async fn conflict<'a>(
    tx: &mut OpenTx,
    claims: impl Iterator<Item = (&'static str, &'a str, &'a str, &'a str)>,
) -> StoreError {
    let mut seen = std::collections::HashSet::new();
    for (space, value, kind, key) in claims {
        if !seen.insert((space, value)) {
            return StoreError::Conflict(format!("{space} {value} is given twice"));
        }
        let held: Result<Option<String>, _> =
            sqlx::query_scalar("SELECT key FROM uniques WHERE space = ? AND value = ? AND NOT (kind = ? AND key = ?)")
                .bind(space)
                .bind(value)
                .bind(kind)
                .bind(key)
                .fetch_optional(&mut *tx.conn)
                .await;
        if let Ok(Some(_)) = held {
            return StoreError::Conflict(format!("{space} {value} is already used"));
        }
    }
    StoreError::Conflict("a unique value is already used".into())
}

/// The unique values the writes up to a failed batch claim, for `conflict`.
fn planned_claims(planned: &[Planned]) -> impl Iterator<Item = (&'static str, &str, &str, &str)> {
    planned.iter().flat_map(|p| {
        p.uniques
            .iter()
            .map(|(space, value)| (*space, value.as_str(), p.change.kind.as_str(), p.change.key.as_str()))
    })
}

/// The unique values a fresh batch claims, for `conflict`: its records have no key yet, so none
/// of their own values is in the database.
fn fresh_claims(writes: &[Write]) -> impl Iterator<Item = (&'static str, &str, &str, &str)> {
    writes.iter().flat_map(|w| {
        w.uniques
            .iter()
            .map(|(space, value)| (*space, value.as_str(), w.kind.as_str(), ""))
    })
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    /// Every per-record statement of a commit finds its rows through an index, never by a scan
    /// of the table (which would cost in proportion to the site: issue 23).
    #[tokio::test]
    async fn commit_statements_search_indexes_and_never_scan_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::SqliteStore::open(&dir.path().join("keel.db")).await.unwrap();
        for sql in [
            super::read_sql(2),
            super::delete_sql("uniques", 2),
            super::delete_sql("objects", 2),
        ] {
            let explain = format!("EXPLAIN QUERY PLAN {}", sql.trim_end_matches(';'));
            let mut q = sqlx::query(&explain);
            for v in ["1", "user", "a", "2", "user", "b"]
                .into_iter()
                .take(sql.matches('?').count())
            {
                q = q.bind(v);
            }
            let plan: Vec<String> = q
                .fetch_all(&store.pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect();
            let plan = plan.join(" | ");
            assert!(plan.contains("SEARCH"), "{sql}: {plan}");
            assert!(
                !plan.contains("SCAN objects") && !plan.contains("SCAN uniques"),
                "{sql}: {plan}"
            );
        }
    }
}
