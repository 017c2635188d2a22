//! The SQL that is the same on both backends, as their implementations of the traits it fills
//! whole: `ChangeLog` (reading and trimming the log), `Credentials` (tokens, web sessions, the
//! login throttle's counts, secrets in `meta`) and `EngineState`. What differs — loading and
//! committing (`Records`), copying, several servers — is in `sqlite.rs`, `pg.rs`, `copy.rs`.

/// The same SQL for both backends (`$n` placeholders: SQLite reads them as named parameters,
/// numbered by first appearance, which is their number here). `$store` has a `pool` field;
/// `$rows` is the module whose row decoders (`codec::decoders!`) read its rows.
macro_rules! common_sql {
    ($store:ty, $rows:path, $read_view:expr) => {
        const _: () = {
            use crate::codec::{to_i64, to_u64};
            use crate::{StoreError, TokenRow, WebSession};
            use async_trait::async_trait;
            use $rows as backend;

            #[async_trait]
            impl crate::store::Records for $store {
                /// The records and the counter in one consistent view (`$read_view` sets it up
                /// where the default isolation does not give one).
                async fn load(&self) -> Result<crate::Loaded, StoreError> {
                    use sqlx::Row as _;
                    let mut tx = self.pool.begin().await?;
                    if let Some(statement) = $read_view {
                        sqlx::query(statement).execute(&mut *tx).await?;
                    }
                    let db_id: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'db_id'")
                        .fetch_one(&mut *tx)
                        .await?;
                    let seq: i64 = sqlx::query_scalar("SELECT seq FROM counter WHERE id = 1")
                        .fetch_one(&mut *tx)
                        .await?;
                    let rows = sqlx::query("SELECT kind, data FROM objects")
                        .fetch_all(&mut *tx)
                        .await?;
                    let records = rows
                        .iter()
                        .map(|r| {
                            Ok((
                                crate::codec::parse_kind(r.try_get("kind")?)?,
                                crate::codec::parse_json(r.try_get("data")?)?,
                            ))
                        })
                        .collect::<Result<Vec<_>, StoreError>>()?;
                    let last_machine: i64 = sqlx::query_scalar(
                        "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM changes WHERE kind = 'machine'",
                    )
                    .fetch_one(&mut *tx)
                    .await?;
                    let first: i64 = sqlx::query_scalar("SELECT CAST(COALESCE(MIN(seq), 0) AS BIGINT) FROM changes")
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(crate::Loaded {
                        db_id,
                        seq: to_u64(seq),
                        records,
                        machines_seq: machines_seq(to_u64(last_machine), to_u64(first)),
                    })
                }

                async fn commit(
                    &self,
                    principal: &str,
                    writes: Vec<crate::Write>,
                ) -> Result<Vec<keel_model::Change>, StoreError> {
                    self.commit_writes(principal, writes).await
                }
            }

            #[async_trait]
            impl crate::store::ChangeLog for $store {
                async fn changes_since(&self, since: u64, limit: u32) -> Result<Vec<keel_model::Change>, StoreError> {
                    let rows = sqlx::query(
                        "SELECT seq, time, principal, kind, op, key, before, after FROM changes \
                     WHERE seq > $1 ORDER BY seq LIMIT $2",
                    )
                    .bind(to_i64(since))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(backend::change_from_row).collect()
                }

                async fn newest_changes(
                    &self,
                    before: Option<u64>,
                    limit: u32,
                ) -> Result<Vec<keel_model::Change>, StoreError> {
                    // The primary key's order, read backwards from `before`: O(log n + limit).
                    let rows = sqlx::query(
                        "SELECT seq, time, principal, kind, op, key, before, after FROM changes \
                     WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                    )
                    .bind(before.map_or(i64::MAX, to_i64))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(backend::change_from_row).collect()
                }

                async fn first_seq(&self) -> Result<u64, StoreError> {
                    let s: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM changes")
                        .fetch_one(&self.pool)
                        .await?;
                    Ok(s.map_or(0, to_u64))
                }

                /// All but the newest `keep` changes and those older than `older_than`, never the newest.
                async fn trim_log(&self, keep: u64, older_than: Option<&str>) -> Result<u64, StoreError> {
                    let r = sqlx::query(
                        "DELETE FROM changes WHERE seq < (SELECT MAX(seq) FROM changes) \
                     AND (seq <= (SELECT MAX(seq) FROM changes) - $1 OR time < $2)",
                    )
                    .bind(to_i64(keep.max(1)))
                    .bind(older_than.unwrap_or(""))
                    .execute(&self.pool)
                    .await?;
                    Ok(r.rows_affected())
                }
            }

            #[async_trait]
            impl crate::store::Credentials for $store {
                async fn insert_token(&self, t: &TokenRow) -> Result<(), StoreError> {
                    sqlx::query(
                        "INSERT INTO tokens (id, hash, name, role, facilities, host, created, expires, revoked) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(&t.id)
                    .bind(&t.hash)
                    .bind(&t.name)
                    .bind(t.role.as_str())
                    .bind(serde_json::to_string(&t.facilities).map_err(|e| StoreError::Corrupt(e.to_string()))?)
                    .bind(&t.host)
                    .bind(&t.created)
                    .bind(&t.expires)
                    .bind(&t.revoked)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn token(&self, id: &str) -> Result<Option<TokenRow>, StoreError> {
                    let row = sqlx::query("SELECT * FROM tokens WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(backend::token_from_row).transpose()
                }

                async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
                    let rows = sqlx::query("SELECT * FROM tokens ORDER BY created, id")
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(backend::token_from_row).collect()
                }

                async fn revoke_token(&self, id: &str, at: &str) -> Result<bool, StoreError> {
                    let r = sqlx::query("UPDATE tokens SET revoked = COALESCE(revoked, $1) WHERE id = $2")
                        .bind(at)
                        .bind(id)
                        .execute(&self.pool)
                        .await?;
                    Ok(r.rows_affected() == 1)
                }

                async fn put_web_session(&self, s: &WebSession) -> Result<(), StoreError> {
                    sqlx::query("INSERT INTO web_sessions (id, login, role, last_ms) VALUES ($1, $2, $3, $4)")
                        .bind(&s.id)
                        .bind(&s.login)
                        .bind(&s.role)
                        .bind(s.last_ms)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn web_session(&self, id: &str) -> Result<Option<WebSession>, StoreError> {
                    Ok(
                        sqlx::query_as("SELECT id, login, role, last_ms FROM web_sessions WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&self.pool)
                            .await?,
                    )
                }

                /// A later use only: servers touching one session at once never move it back.
                async fn touch_web_session(&self, id: &str, last_ms: i64) -> Result<(), StoreError> {
                    sqlx::query("UPDATE web_sessions SET last_ms = $1 WHERE id = $2 AND last_ms < $1")
                        .bind(last_ms)
                        .bind(id)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn end_web_sessions(&self, id: Option<&str>, unused_before_ms: i64) -> Result<u64, StoreError> {
                    let r = sqlx::query("DELETE FROM web_sessions WHERE id = $1 OR last_ms < $2")
                        .bind(id.unwrap_or(""))
                        .bind(unused_before_ms)
                        .execute(&self.pool)
                        .await?;
                    Ok(r.rows_affected())
                }

                async fn login_attempt(
                    &self,
                    key: &str,
                    at_ms: i64,
                    forget_before_ms: i64,
                ) -> Result<crate::LoginFailures, StoreError> {
                    sqlx::query("DELETE FROM login_failures WHERE last_ms < $1")
                        .bind(forget_before_ms)
                        .execute(&self.pool)
                        .await?;
                    // In an UPDATE's SET every column names the row as it was: prev_ms takes the old
                    // last_ms. The whole is one statement, so concurrent tries are counted one by one.
                    let (n, prev_ms): (i64, i64) = sqlx::query_as(
                        "INSERT INTO login_failures (login, failures, last_ms, prev_ms) VALUES ($1, 1, $2, 0) \
                     ON CONFLICT (login) DO UPDATE SET failures = login_failures.failures + 1, \
                     prev_ms = login_failures.last_ms, last_ms = excluded.last_ms \
                     RETURNING failures, prev_ms",
                    )
                    .bind(key)
                    .bind(at_ms)
                    .fetch_one(&self.pool)
                    .await?;
                    Ok(crate::LoginFailures {
                        count: u32::try_from(n).unwrap_or(u32::MAX),
                        prev_ms,
                    })
                }

                async fn login_succeeded(&self, login: &str) -> Result<(), StoreError> {
                    sqlx::query("DELETE FROM login_failures WHERE login = $1")
                        .bind(login)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn meta_flag(&self, key: &str) -> Result<bool, StoreError> {
                    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM meta WHERE key = $1")
                        .bind(key)
                        .fetch_one(&self.pool)
                        .await?;
                    Ok(n > 0)
                }

                async fn clear_meta_flag(&self, key: &str) -> Result<(), StoreError> {
                    sqlx::query("DELETE FROM meta WHERE key = $1")
                        .bind(key)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                /// Made on first use; when two servers race, both read back the one that was stored.
                async fn meta_secret(&self, key: &str) -> Result<String, StoreError> {
                    if !crate::web_session::SECRETS.contains(&key) {
                        return Err(StoreError::Corrupt(format!("{key} is not a secret keel keeps")));
                    }
                    let fresh = crate::token::random_hex(24)?;
                    sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                        .bind(key)
                        .bind(&fresh)
                        .execute(&self.pool)
                        .await?;
                    Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                        .bind(key)
                        .fetch_one(&self.pool)
                        .await?)
                }
            }

            #[async_trait]
            impl crate::store::EngineState for $store {
                async fn prop_state(&self) -> Result<Vec<(String, String)>, StoreError> {
                    Ok(sqlx::query_as("SELECT key, data FROM prop_state ORDER BY key")
                        .fetch_all(&self.pool)
                        .await?)
                }

                /// All rows in one transaction.
                async fn put_prop_state(&self, rows: &[(String, String)]) -> Result<(), StoreError> {
                    let mut tx = self.pool.begin().await?;
                    for (k, v) in rows {
                        sqlx::query(
                            "INSERT INTO prop_state (key, data) VALUES ($1, $2) \
                         ON CONFLICT (key) DO UPDATE SET data = excluded.data",
                        )
                        .bind(k)
                        .bind(v)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }
            }
        };
    };
}

// SQLite: a read transaction sees one snapshot of the WAL already.
common_sql!(crate::SqliteStore, crate::codec::sqlite, None::<&str>);
// PostgreSQL: read committed would let a commit land between the counter and the records.
common_sql!(
    crate::PgStore,
    crate::codec::pg,
    Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
);

/// The DNS zone serial's seq: the last machine change's, or — when a trimmed log no longer holds
/// one — the seq just before the first kept change, which is at least as high.
fn machines_seq(last_machine: u64, first: u64) -> u64 {
    if last_machine == 0 && first > 1 {
        first - 1
    } else {
        last_machine
    }
}
