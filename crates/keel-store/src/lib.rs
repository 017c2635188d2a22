//! keel's storage: the `Store` trait and its SQLite backend, the Change log, tokens, and `Db`,
//! which keeps the live Snapshot and broadcasts committed Changes.
//!
//! Only this crate names sqlx.

mod codec;
mod commit_plan;
mod common_sql;
pub mod copy;
mod db;
mod error;
mod fault;
mod ops;
pub mod pg;
mod presence_ops;
mod prop_ops;

mod sqlite;
mod sqlite_commit;
mod store;
pub mod token;
mod web_session;

pub use db::{build_snapshot, records_of, replay_log, Db};
pub use error::StoreError;
pub use ops::{ImportReport, OnExisting};
pub use pg::PgStore;
pub use presence_ops::Opened;
pub use sqlite::SqliteStore;
pub use store::{ChangeLog, Copying, Credentials, EngineState, Loaded, Records, Sharing, Store, Write};
pub use token::{AuthError, NewToken, TokenRow};
pub use web_session::{LoginFailures, WebSession, PRESENCE_PROOF_KEY, WEB_SSO_KEY};

/// The current time as RFC 3339 UTC (what the change log records).
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// A time as RFC 3339 UTC with a fixed six-digit fraction, so that times compare as strings.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".to_owned())
}

#[cfg(test)]
mod tests;
