//! User accounts' building blocks: validated logins, groups, and uid pools that never reuse a uid.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// A login: `^[a-z_][a-z0-9_]{0,30}$` (what every Unix tool accepts).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Login(String);

impl Login {
    pub fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if first_ok && rest_ok && s.len() <= 31 {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new(
                field,
                format!("must be 1 to 31 of a-z, 0-9 and _, not starting with a digit (got {s:?})"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Login {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse("login", &s)
    }
}

impl From<Login> for String {
    fn from(l: Login) -> Self {
        l.0
    }
}

impl fmt::Display for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's group: contestants, organisers, or root admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    User,
    Orga,
    Root,
}

impl Group {
    pub const ALL: [Self; 3] = [Self::User, Self::Orga, Self::Root];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Orga => "orga",
            Self::Root => "root",
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Group {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|g| g.as_str() == s)
            .ok_or_else(|| ValidationError::new("group", format!("must be one of user, orga, root (got {s:?})")))
    }
}

/// A range of uids, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

/// The uid pools of the three groups. A uid is never reused: the next one is above every uid the
/// pool ever gave (a deleted user's files must not pass to a newcomer, DESIGN.md invariant 9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UidPools {
    pub user: UidRange,
    pub orga: UidRange,
    pub root: UidRange,
}

impl Default for UidPools {
    fn default() -> Self {
        Self {
            user: UidRange {
                first: 10001,
                last: 10999,
            },
            orga: UidRange {
                first: 11001,
                last: 11999,
            },
            root: UidRange {
                first: 12001,
                last: 12999,
            },
        }
    }
}

impl UidPools {
    pub fn of(&self, group: Group) -> UidRange {
        match group {
            Group::User => self.user,
            Group::Orga => self.orga,
            Group::Root => self.root,
        }
    }

    /// The next uid for `group`, given the highest uid its pool ever handed out (kept by the
    /// store, since the users who had them may be gone).
    pub fn next(&self, group: Group, high_water: Option<u32>) -> Result<u32, ValidationError> {
        let range = self.of(group);
        let next = match high_water {
            Some(h) if h >= range.first => h.checked_add(1),
            _ => Some(range.first),
        };
        next.filter(|n| *n <= range.last).ok_or_else(|| {
            ValidationError::new(
                "uid",
                format!(
                    "the {group} uid pool {}–{} is used up (uids are never reused)",
                    range.first, range.last
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins() {
        for (s, ok) in [
            ("jdoe", true),
            ("_x", true),
            ("a1_b", true),
            ("1a", false),
            ("Jdoe", false),
            ("", false),
            ("é", false),
            ("a-b", false),
        ] {
            assert_eq!(Login::parse("login", s).is_ok(), ok, "{s:?}");
        }
        assert!(Login::parse("login", &"a".repeat(31)).is_ok());
        assert!(Login::parse("login", &"a".repeat(32)).is_err());
    }

    #[test]
    fn uids_are_never_reused() {
        let p = UidPools::default();
        assert_eq!(p.next(Group::User, None).unwrap(), 10001);
        assert_eq!(p.next(Group::User, Some(10041)).unwrap(), 10042);
        assert_eq!(p.next(Group::Orga, Some(5)).unwrap(), 11001);
        assert_eq!(p.next(Group::Root, Some(12999)).unwrap_err().field, "uid");
    }
}
