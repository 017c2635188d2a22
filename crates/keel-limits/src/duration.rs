//! keel.toml writes a duration as a whole number in the unit its key names (`timeout_secs = 30`,
//! `debounce_ms = 2000`, `idle_hours = 8`); the config types hold `Duration`s. These serde adapters
//! (`#[serde(with = "keel_limits::duration::secs")]`) turn one into the other, so a config type
//! deserializes straight from its section and its `Default` is the only place a default is written.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

macro_rules! unit {
    ($name:ident, $doc:literal, $from:expr, $to:expr) => {
        #[doc = $doc]
        pub mod $name {
            use super::*;

            pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
                let to: fn(&Duration) -> u64 = $to;
                s.serialize_u64(to(d))
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
                let from: fn(u64) -> Duration = $from;
                u64::deserialize(d).map(from)
            }
        }
    };
}

unit!(secs, "Whole seconds.", Duration::from_secs, |d| d.as_secs());
unit!(millis, "Whole milliseconds.", Duration::from_millis, |d| u64::try_from(
    d.as_millis()
)
.unwrap_or(u64::MAX));
unit!(
    hours,
    "Whole hours.",
    |h| Duration::from_secs(h.saturating_mul(3600)),
    |d| d.as_secs() / 3600
);

/// Whole seconds where 0 means never (`refresh_secs = 0`): `None`.
pub mod secs_or_never {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.map_or(0, |d| d.as_secs()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        u64::deserialize(d).map(|s| (s > 0).then(|| Duration::from_secs(s)))
    }
}

/// Whole seconds, or unset (a default derived from another key, computed where it is used).
pub mod opt_secs {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|s| s.map(Duration::from_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
    struct T {
        #[serde(with = "secs")]
        a: Duration,
        #[serde(with = "millis")]
        b: Duration,
        #[serde(with = "hours")]
        c: Duration,
        #[serde(with = "secs_or_never")]
        d: Option<Duration>,
    }

    #[test]
    fn each_unit_reads_and_writes_its_number() {
        let t: T = serde_json::from_str(r#"{"a": 30, "b": 2000, "c": 8, "d": 0}"#).unwrap();
        assert_eq!(
            t,
            T {
                a: Duration::from_secs(30),
                b: Duration::from_millis(2000),
                c: Duration::from_secs(8 * 3600),
                d: None
            }
        );
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"a":30,"b":2000,"c":8,"d":0}"#);
        assert!(serde_json::from_str::<T>(r#"{"a": -1, "b": 1, "c": 1, "d": 1}"#).is_err());
    }
}
