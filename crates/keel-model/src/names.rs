//! Validated names: hostnames (RFC 1123, lower case) and MAC addresses (canonical form).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// A lower-case RFC 1123 host name: dot-separated labels of `a-z`, `0-9` and `-`, each 1–63
/// characters, not starting or ending with `-`; at most 253 characters in all.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hostname(String);

impl Hostname {
    pub fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        let err = |m: &str| Err(ValidationError::new(field, format!("{m} (got {s:?})")));
        if s.is_empty() {
            return err("must not be empty");
        }
        if s.len() > 253 {
            return err("is longer than 253 characters");
        }
        for label in s.split('.') {
            if label.is_empty() || label.len() > 63 {
                return err("each dot-separated label must have 1 to 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return err("may contain only lower-case letters a-z, digits and '-'");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return err("a label must not start or end with '-'");
            }
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Hostname {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse("hostname", &s)
    }
}

impl From<Hostname> for String {
    fn from(h: Hostname) -> Self {
        h.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A MAC address, stored as `aa:bb:cc:dd:ee:ff`. Accepts `aa:bb:…`, `AA-BB-…` and `aabb.ccdd.eeff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mac([u8; 6]);

impl Mac {
    pub fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        let bad = || {
            ValidationError::new(
                field,
                format!("is not a MAC address like aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF or aabb.ccdd.eeff (got {s:?})"),
            )
        };
        let t = s.trim();
        let hex: String = if t.len() == 17 && (t.split(':').count() == 6 || t.split('-').count() == 6) {
            let sep = if t.contains(':') { ':' } else { '-' };
            if t.split(sep).any(|p| p.len() != 2) {
                return Err(bad());
            }
            t.split(sep).collect()
        } else if t.len() == 14 && t.split('.').count() == 3 && t.split('.').all(|p| p.len() == 4) {
            t.split('.').collect()
        } else {
            return Err(bad());
        };
        // from_str_radix accepts a leading '+': check the digits first.
        if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl TryFrom<String> for Mac {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse("mac", &s)
    }
}

impl From<Mac> for String {
    fn from(m: Mac) -> Self {
        m.to_string()
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_mac(input: &str, expect: Option<&str>) {
        let got = Mac::parse("mac", input).ok().map(|m| m.to_string());
        assert_eq!(got.as_deref(), expect, "input {input:?}");
    }

    #[test]
    fn macs() {
        let canon = Some("aa:bb:cc:0d:ee:ff");
        for (input, expect) in [
            ("aa:bb:cc:0d:ee:ff", canon),
            ("AA-BB-CC-0D-EE-FF", canon),
            ("aabb.cc0d.eeff", canon),
            ("AABB.CC0D.EEFF", canon),
            ("aa:bb:cc:dd:ee", None),
            ("aa:bb:cc:dd:ee:fg", None),
            ("aa:bb-cc:dd:ee:ff", None),
            ("a:bb:cc:dd:ee:fff", None),
            ("", None),
            ("aabbccddeeff", None),
            ("ää:bb:cc:dd:ee:f", None),
            ("+a:bb:cc:dd:ee:ff", None),
        ] {
            check_mac(input, expect);
        }
    }

    #[test]
    fn hostnames() {
        for (input, ok) in [
            ("gw", true),
            ("r00p01", true),
            ("a-b.c", true),
            ("Gw", false),
            ("a b", false),
            ("-a", false),
            ("a-", false),
            ("", false),
            ("a..b", false),
            ("é", false),
            (&"a".repeat(64), false),
        ] {
            assert_eq!(Hostname::parse("hostname", input).is_ok(), ok, "input {input:?}");
        }
    }
}

/// Issue 19: the validators on any string (`fuzz_*`, see docs/security.md): no panic, and what
/// they accept can be one field of every file it reaches (no control character, no separator of
/// passwd, hosts, zones or iPXE).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn one_word(s: &str) -> bool {
        !s.chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, ':' | ',' | ';' | '#' | '$' | '"'))
    }

    proptest! {
        #[test]
        fn fuzz_name_and_value_validators(s in prop_oneof![any::<String>(), "[a-zA-Z0-9.:$/=_-]{0,100}", "\\$6\\$(rounds=[0-9]{1,10}\\$)?[a-zA-Z0-9./]{1,17}\\$[a-zA-Z0-9./:\\n]{80,90}"]) {
            if let Ok(h) = Hostname::parse("hostname", &s) {
                prop_assert!(one_word(h.as_str()) && h.as_str().len() <= 253);
            }
            if let Ok(l) = crate::Login::parse("login", &s) {
                prop_assert!(one_word(l.as_str()) && l.as_str().len() <= 31);
            }
            let _ = Mac::parse("mac", &s);
            if crate::is_sha512_crypt(&s) {
                prop_assert!(!s.chars().any(|c| c.is_control() || c == ':' || c.is_whitespace()));
            }
            if let Ok(r) = crate::check_room(&s) {
                prop_assert!(one_word(&r));
            }
            if let Ok(k) = crate::check_ssh_key(&s) {
                prop_assert!(!k.chars().any(char::is_control));
            }
        }
    }
}
