use keel_model::{ValidationError, ValidationErrors};

/// Errors of the storage layer. Database details are kept for logs, never shown to callers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("{0}")]
    InvalidMany(ValidationErrors),
    /// The principal may not do this (a manager outside their facilities).
    #[error("{0}")]
    Forbidden(String),
    /// A login the presence rules refuse (423 on the API, the reason shown at the machine).
    #[error("{0}")]
    Refused(keel_model::Refusal),
    #[error("{0} not found")]
    NotFound(String),
    /// The record changed since the caller read it (`If-Match` failed).
    #[error("version mismatch: the record is at version {current}, not {expected}")]
    VersionMismatch { expected: u64, current: u64 },
    /// A unique value is already held (the database caught what the Snapshot check missed).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database did not confirm a commit (its connection was lost, or the COMMIT failed).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<keel_model::RightsError> for StoreError {
    fn from(e: keel_model::RightsError) -> Self {
        match e {
            keel_model::RightsError::Forbidden(why) => Self::Forbidden(why),
            keel_model::RightsError::Invalid(v) => Self::Invalid(v),
        }
    }
}

impl From<ValidationErrors> for StoreError {
    fn from(e: ValidationErrors) -> Self {
        match <[ValidationError; 1]>::try_from(e.0) {
            Ok([one]) => Self::Invalid(one),
            Err(many) => Self::InvalidMany(ValidationErrors(many)),
        }
    }
}
