//! Site-wide settings: a fixed set of known keys, each with a typed value and a default.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ValidationError;

/// A known setting key, its value type and its default.
#[derive(Debug, Clone, Copy)]
pub struct SettingSpec {
    pub key: &'static str,
    pub default: bool,
    pub help: &'static str,
}

/// The settings keel knows. Unknown keys are refused, so a typo never silently does nothing.
pub const SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        key: "contest_mode",
        default: false,
        help: "contest running: contestants lose internet access and unknown users are refused",
    },
    SettingSpec {
        key: "allow_self_registration",
        default: false,
        help: "machines may register themselves without a token (open only while installing the site)",
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

    pub fn as_bool(&self) -> bool {
        self.value.as_bool().unwrap_or(false)
    }
}
