//! The store `keel serve` runs on: SQLite in the data directory, or PostgreSQL when a URL is given.

use std::sync::Arc;

use anyhow::Context;
use keel_client::data_dir as files;
use keel_store::SqliteStore;

use crate::config::ServeConfig;

/// SQLite in the data directory, or PostgreSQL when a URL is given (then also its URL, for the
/// follower and the propagation lock).
pub(super) async fn open_store(cfg: &ServeConfig) -> anyhow::Result<(Arc<dyn keel_store::Store>, Option<String>)> {
    match cfg.database.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = keel_store::PgStore::open(url)
                .await
                .with_context(|| format!("cannot open the PostgreSQL database {}", redact(url)))?;
            tracing::info!(database = %redact(url), "using PostgreSQL");
            Ok((Arc::new(store), Some(url.to_owned())))
        }
        Some(other) => anyhow::bail!(
            "--database must be a postgres:// URL (got {:?}); SQLite is the default",
            redact(other)
        ),
        None => {
            let store = SqliteStore::open(&cfg.data_dir.join(files::DB))
                .await
                .context("cannot open the database")?;
            Ok((Arc::new(store), None))
        }
    }
}

/// A database URL without its password, for logs and errors: the password in the authority and a
/// `password=` query parameter (libpq takes both) become `***`. Text that is not a URL (a file
/// path given to `migrate-db`) is shown as it is; a URL too broken to parse is not shown at all.
pub fn redact(text: &str) -> String {
    if !text.contains("://") {
        return text.to_owned();
    }
    let Ok(mut url) = url::Url::parse(text) else {
        return "<an unparsable URL>".to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" { "***".into() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_the_logs() {
        let cases = [
            ("postgres://keel@db/keel", "postgres://keel@db/keel"),
            (
                "postgres://keel:s3cret@db:5432/keel",
                "postgres://keel:***@db:5432/keel",
            ),
            (
                "postgresql://k:p%40ss@h/d?sslmode=require&password=x",
                "postgresql://k:***@h/d?sslmode=require&password=***",
            ),
            ("/var/backups/site.db", "/var/backups/site.db"),
            ("postgres://k:pw@[::1/d", "<an unparsable URL>"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
            assert!(!redact(url).contains("s3cret") && !redact(url).contains("p%40ss"));
        }
    }
}
