//! Reading a Change or a token row: the same columns on every backend, one definition.

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
                    .map($crate::sqlite::parse_json)
                    .transpose()
            };
            Ok(keel_model::Change {
                seq: $crate::sqlite::to_u64(r.try_get("seq")?),
                time: r.try_get("time")?,
                principal: r.try_get("principal")?,
                kind: $crate::sqlite::parse_kind(r.try_get("kind")?)?,
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

pub(crate) use decoders;
