//! Sessions of the web pages, as stored: outside the change log, like tokens.

/// One logged-in person's session. `id` is the sha256 (hex) of the secret in their cookie.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WebSession {
    pub id: String,
    pub login: String,
    /// What the pages let them do, as the web layer wrote it (opaque here).
    pub role: String,
    /// When it was last used (Unix ms).
    pub last_ms: i64,
}

/// The key deriving the CSRF token of people logged in through nginx's SSO (they hold no
/// session): in the database, so a page from one server and its form posted to another agree.
pub const WEB_SSO_KEY: &str = "web_sso_key";

/// The secrets `Store::meta_secret` makes on demand; no other key of `meta` is ever handed out.
pub(crate) const SECRETS: [&str; 1] = [WEB_SSO_KEY];

/// Wrong passwords given for one login since its last right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailures {
    pub count: u32,
    /// When the last one was (Unix ms).
    pub last_ms: i64,
}

/// The same SQL for both backends (`$n` placeholders: SQLite reads them as named parameters,
/// numbered by first appearance, which is their number here).
macro_rules! web_session_sql {
    ($pool:ty) => {
        use crate::{StoreError, WebSession};

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

        pub(crate) async fn login_failures(pool: &$pool, login: &str) -> Result<Option<super::LoginFailures>, StoreError> {
            let row: Option<(i64, i64)> =
                sqlx::query_as("SELECT failures, last_ms FROM login_failures WHERE login = $1")
                    .bind(login)
                    .fetch_optional(pool)
                    .await?;
            Ok(row.map(|(n, last_ms)| super::LoginFailures {
                count: u32::try_from(n).unwrap_or(u32::MAX),
                last_ms,
            }))
        }

        pub(crate) async fn login_failed(pool: &$pool, login: &str, at_ms: i64, forget_before_ms: i64) -> Result<(), StoreError> {
            sqlx::query("DELETE FROM login_failures WHERE last_ms < $1")
                .bind(forget_before_ms)
                .execute(pool)
                .await?;
            sqlx::query(
                "INSERT INTO login_failures (login, failures, last_ms) VALUES ($1, 1, $2) \
                 ON CONFLICT (login) DO UPDATE SET failures = login_failures.failures + 1, last_ms = excluded.last_ms",
            )
            .bind(login)
            .bind(at_ms)
            .execute(pool)
            .await?;
            Ok(())
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
            if !super::SECRETS.contains(&key) {
                return Err(StoreError::Corrupt(format!("{key} is not a secret keel keeps")));
            }
            let fresh = crate::token::random_hex()?;
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
    web_session_sql!(sqlx::SqlitePool);
}

pub(crate) mod pg {
    web_session_sql!(sqlx::PgPool);
}
