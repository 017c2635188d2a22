//! The SQL that is the same on both backends: reading and trimming the change log, and the rows
//! kept outside it — tokens, web sessions, the login throttle's counts, secrets in `meta`.
//! (Commits, loading and copying differ: `sqlite_commit.rs`, `pg.rs`, `copy.rs`.)

/// The same SQL for both backends (`$n` placeholders: SQLite reads them as named parameters,
/// numbered by first appearance, which is their number here). `$backend` is the module whose
/// row decoders (`rows::decoders!`) read its rows.
macro_rules! common_sql {
    ($pool:ty, $backend:path) => {
        use crate::sqlite::{to_i64, to_u64};
        use crate::{StoreError, TokenRow, WebSession};
        use $backend as backend;

        pub(crate) async fn changes_since(
            pool: &$pool,
            since: u64,
            limit: u32,
        ) -> Result<Vec<keel_model::Change>, StoreError> {
            let rows = sqlx::query(
                "SELECT seq, time, principal, kind, op, key, before, after FROM changes \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(to_i64(since))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.iter().map(backend::change_from_row).collect()
        }

        pub(crate) async fn first_seq(pool: &$pool) -> Result<u64, StoreError> {
            let s: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM changes")
                .fetch_one(pool)
                .await?;
            Ok(s.map_or(0, to_u64))
        }

        /// All but the newest `keep` changes and those older than `older_than`, never the newest.
        pub(crate) async fn trim_log(pool: &$pool, keep: u64, older_than: Option<&str>) -> Result<u64, StoreError> {
            let r = sqlx::query(
                "DELETE FROM changes WHERE seq < (SELECT MAX(seq) FROM changes) \
                 AND (seq <= (SELECT MAX(seq) FROM changes) - $1 OR time < $2)",
            )
            .bind(to_i64(keep.max(1)))
            .bind(older_than.unwrap_or(""))
            .execute(pool)
            .await?;
            Ok(r.rows_affected())
        }

        pub(crate) async fn insert_token(pool: &$pool, t: &TokenRow) -> Result<(), StoreError> {
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
            .execute(pool)
            .await?;
            Ok(())
        }

        pub(crate) async fn token(pool: &$pool, id: &str) -> Result<Option<TokenRow>, StoreError> {
            let row = sqlx::query("SELECT * FROM tokens WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(backend::token_from_row).transpose()
        }

        pub(crate) async fn tokens(pool: &$pool) -> Result<Vec<TokenRow>, StoreError> {
            let rows = sqlx::query("SELECT * FROM tokens ORDER BY created, id")
                .fetch_all(pool)
                .await?;
            rows.iter().map(backend::token_from_row).collect()
        }

        pub(crate) async fn revoke_token(pool: &$pool, id: &str, at: &str) -> Result<bool, StoreError> {
            let r = sqlx::query("UPDATE tokens SET revoked = COALESCE(revoked, $1) WHERE id = $2")
                .bind(at)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(r.rows_affected() == 1)
        }

        pub(crate) async fn put(pool: &$pool, s: &WebSession) -> Result<(), StoreError> {
            sqlx::query("INSERT INTO web_sessions (id, login, role, last_ms) VALUES ($1, $2, $3, $4)")
                .bind(&s.id)
                .bind(&s.login)
                .bind(&s.role)
                .bind(s.last_ms)
                .execute(pool)
                .await?;
            Ok(())
        }

        pub(crate) async fn get(pool: &$pool, id: &str) -> Result<Option<WebSession>, StoreError> {
            Ok(
                sqlx::query_as("SELECT id, login, role, last_ms FROM web_sessions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?,
            )
        }

        /// A later use only: servers touching one session at once never move it back.
        pub(crate) async fn touch(pool: &$pool, id: &str, last_ms: i64) -> Result<(), StoreError> {
            sqlx::query("UPDATE web_sessions SET last_ms = $1 WHERE id = $2 AND last_ms < $1")
                .bind(last_ms)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        }

        pub(crate) async fn end(pool: &$pool, id: Option<&str>, unused_before_ms: i64) -> Result<u64, StoreError> {
            let r = sqlx::query("DELETE FROM web_sessions WHERE id = $1 OR last_ms < $2")
                .bind(id.unwrap_or(""))
                .bind(unused_before_ms)
                .execute(pool)
                .await?;
            Ok(r.rows_affected())
        }

        pub(crate) async fn login_attempt(
            pool: &$pool,
            key: &str,
            at_ms: i64,
            forget_before_ms: i64,
        ) -> Result<crate::LoginFailures, StoreError> {
            sqlx::query("DELETE FROM login_failures WHERE last_ms < $1")
                .bind(forget_before_ms)
                .execute(pool)
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
            .fetch_one(pool)
            .await?;
            Ok(crate::LoginFailures {
                count: u32::try_from(n).unwrap_or(u32::MAX),
                prev_ms,
            })
        }

        pub(crate) async fn login_succeeded(pool: &$pool, login: &str) -> Result<(), StoreError> {
            sqlx::query("DELETE FROM login_failures WHERE login = $1")
                .bind(login)
                .execute(pool)
                .await?;
            Ok(())
        }

        /// Made on first use; when two servers race, both read back the one that was stored.
        pub(crate) async fn meta_secret(pool: &$pool, key: &str) -> Result<String, StoreError> {
            if !crate::web_session::SECRETS.contains(&key) {
                return Err(StoreError::Corrupt(format!("{key} is not a secret keel keeps")));
            }
            let fresh = crate::token::random_hex(24)?;
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(key)
                .bind(&fresh)
                .execute(pool)
                .await?;
            Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                .bind(key)
                .fetch_one(pool)
                .await?)
        }
    };
}

pub(crate) mod sqlite {
    common_sql!(sqlx::SqlitePool, crate::sqlite);
}

pub(crate) mod pg {
    common_sql!(sqlx::PgPool, crate::pg);
}
