//! Site-wide settings: a fixed set of known keys, each with a typed value and a default.
//! `allow_self_registration` may also hold an end time: open until then (`keel registration open
//! --for 2h`), closed after it by the clock of whoever reads it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ValidationError;

/// A known setting key, its value type and its default.
#[derive(Debug, Clone, Copy)]
pub struct SettingSpec {
    pub key: &'static str,
    pub default: bool,
    pub help: &'static str,
    /// The value may be an end time (RFC 3339): on until then.
    pub until: bool,
}

/// The settings keel knows. Unknown keys are refused, so a typo never silently does nothing.
pub const SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        key: "contest_mode",
        default: false,
        help: "contest running: contestants lose internet access and unknown users are refused",
        until: false,
    },
    SettingSpec {
        key: "allow_self_registration",
        default: false,
        help: "machines may register themselves without a token (open only while installing the site; \
               an end time instead of true closes it then)",
        until: true,
    },
];

/// A setting's current value; `version` 0 means it was never set (the default applies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    pub key: String,
    pub value: Value,
    pub version: u64,
}

impl Setting {
    pub fn spec(key: &str) -> Result<&'static SettingSpec, ValidationError> {
        SETTINGS.iter().find(|s| s.key == key).ok_or_else(|| {
            let known: Vec<_> = SETTINGS.iter().map(|s| s.key).collect();
            ValidationError::new("key", format!("unknown setting {key:?}; known: {}", known.join(", ")))
        })
    }

    /// The default value of a known key.
    pub fn default_for(spec: &SettingSpec) -> Self {
        Self {
            key: spec.key.to_owned(),
            value: Value::Bool(spec.default),
            version: 0,
        }
    }

    /// Validates a new value for `key`.
    pub fn new(key: &str, value: Value) -> Result<Self, ValidationError> {
        let spec = Self::spec(key)?;
        let value = match value {
            Value::Bool(b) => Value::Bool(b),
            Value::String(s) if matches!(s.as_str(), "true" | "on" | "1") => Value::Bool(true),
            Value::String(s) if matches!(s.as_str(), "false" | "off" | "0") => Value::Bool(false),
            Value::String(s) if spec.until => Value::String(canonical_time(&s).ok_or_else(|| {
                ValidationError::new(
                    "value",
                    format!(
                        "{} must be true, false or an end time such as 2026-06-01T18:00:00Z, got {s:?}",
                        spec.key
                    ),
                )
            })?),
            other => {
                return Err(ValidationError::new(
                    "value",
                    format!("{} must be true or false, got {other}", spec.key),
                ))
            }
        };
        Ok(Self {
            key: spec.key.to_owned(),
            value,
            version: 0,
        })
    }

    /// On, whatever the time (an end time counts as on: ask [`Setting::on_at`] when it matters).
    pub fn as_bool(&self) -> bool {
        self.value.as_bool().unwrap_or_else(|| self.until().is_some())
    }

    /// The end time of a setting that is on until then.
    pub fn until(&self) -> Option<&str> {
        self.value.as_str()
    }

    /// On at `now` (RFC 3339 as [`rfc3339`] writes it): true, or an end time still ahead.
    pub fn on_at(&self, now: &str) -> bool {
        match self.until() {
            Some(end) => now < end,
            None => self.value.as_bool().unwrap_or(false),
        }
    }
}

/// A time as RFC 3339 UTC with a fixed six-digit fraction, so that times compare as strings (the
/// change log's times, sessions', a setting's end).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".to_owned())
}

/// Any RFC 3339 time, written as [`rfc3339`] writes it; None if it is not one.
pub fn canonical_time(s: &str) -> Option<String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_registration_may_hold_an_end_time_that_closes_it() {
        let s = Setting::new(
            "allow_self_registration",
            Value::String("2026-06-01T20:00:00+02:00".into()),
        )
        .unwrap();
        assert_eq!(s.until(), Some("2026-06-01T18:00:00.000000Z"));
        assert!(s.on_at("2026-06-01T17:59:59.999999Z"));
        assert!(!s.on_at("2026-06-01T18:00:00.000000Z"));
        assert!(Setting::new("allow_self_registration", Value::Bool(true))
            .unwrap()
            .on_at("9999"));
        assert!(Setting::new("allow_self_registration", Value::String("soon".into())).is_err());
        assert!(Setting::new("allow_self_registration", Value::String("2026-13-01T00:00:00Z".into())).is_err());
        // Only the setting that says so takes a time.
        assert!(Setting::new("contest_mode", Value::String("2026-06-01T18:00:00Z".into())).is_err());
    }
}
