//! How keel's values are stored, the same on both backends: kinds as text, records as JSON text,
//! seqs as signed 64-bit integers; and the decoders of a Change row and a token row, defined once
//! for each backend's row type (`codec::sqlite`, `codec::pg`).

use keel_model::Kind;
use serde_json::Value;

use crate::StoreError;

pub(crate) fn parse_kind(s: &str) -> Result<Kind, StoreError> {
    Kind::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown kind {s:?}")))
}

pub(crate) fn parse_json(s: &str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("stored JSON does not parse: {e}")))
}

/// A stored seq (never negative) as keel's.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A seq as the databases store it (signed 64-bit).
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Defines `change_from_row` and `token_from_row` for a backend's row type.
macro_rules! decoders {
    ($row:ty) => {
        pub(crate) fn change_from_row(r: &$row) -> Result<keel_model::Change, $crate::StoreError> {
            use sqlx::Row as _;
            let op = match r.try_get::<&str, _>("op")? {
                "put" => keel_model::Op::Put,
                "delete" => keel_model::Op::Delete,
                other => return Err($crate::StoreError::Corrupt(format!("unknown op {other:?}"))),
            };
            let json = |col: &str| -> Result<Option<serde_json::Value>, $crate::StoreError> {
                r.try_get::<Option<&str>, _>(col)?
                    .map($crate::codec::parse_json)
                    .transpose()
            };
            Ok(keel_model::Change {
                seq: $crate::codec::to_u64(r.try_get("seq")?),
                time: r.try_get("time")?,
                principal: r.try_get("principal")?,
                kind: $crate::codec::parse_kind(r.try_get("kind")?)?,
                op,
                key: r.try_get("key")?,
                before: json("before")?,
                after: json("after")?,
            })
        }

        pub(crate) fn token_from_row(r: &$row) -> Result<$crate::TokenRow, $crate::StoreError> {
            use sqlx::Row as _;
            let corrupt = |e: &dyn std::fmt::Display| $crate::StoreError::Corrupt(e.to_string());
            Ok($crate::TokenRow {
                id: r.try_get("id")?,
                hash: r.try_get("hash")?,
                name: r.try_get("name")?,
                role: <keel_model::Role as std::str::FromStr>::from_str(r.try_get("role")?).map_err(|e| corrupt(&e))?,
                facilities: serde_json::from_str(r.try_get("facilities")?).map_err(|e| corrupt(&e))?,
                host: r.try_get("host")?,
                created: r.try_get("created")?,
                expires: r.try_get("expires")?,
                revoked: r.try_get("revoked")?,
            })
        }
    };
}

pub(crate) mod sqlite {
    decoders!(sqlx::sqlite::SqliteRow);
}

pub(crate) mod pg {
    decoders!(sqlx::postgres::PgRow);
}
