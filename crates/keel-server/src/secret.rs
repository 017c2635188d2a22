//! A secret from the configuration (presence, RPC, sync subscribers): used where it is checked,
//! never printed. The configuration structs derive `Debug`, and a `{:?}` of one in a log line or a
//! panic message would otherwise write the secret out (docs/security.md: never log secrets).

use std::fmt;

/// A configured shared secret. `Debug` shows `Secret(<redacted>)`; [`Secret::expose`] gives the
/// value to the code that checks a caller against it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}
