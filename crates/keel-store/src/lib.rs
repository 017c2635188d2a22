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
mod migrations;
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

pub use keel_model::rfc3339;

#[cfg(test)]
mod tests;
