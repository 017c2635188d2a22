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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UidRange {
    /// The first uid of the range.
    pub first: u32,
    /// The last uid of the range (included).
    pub last: u32,
}

/// The uid pools of the three groups. A uid is never reused: the next one is above every uid the
/// pool ever gave (a deleted user's files must not pass to a newcomer, invariant 9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UidPools {
    /// Contestants' uids.
    pub user: UidRange,
    /// Organisers' uids.
    pub orga: UidRange,
    /// Roots' uids.
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

/// A user account. The password exists only as its SHA-512-crypt hash, which leaves keel only
/// toward what needs it (shadow files, the login check), never on read APIs or watch streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub login: Login,
    pub firstname: String,
    pub lastname: String,
    pub group: Group,
    pub uid: u32,
    pub shell: String,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// `$6$…`, or empty for an account that cannot log in with a password yet.
    #[serde(default)]
    pub password_hash: String,
    /// True once the user chose their own password (then sheets leave it alone unless forced).
    #[serde(default)]
    pub password_changed: bool,
    /// The home file server (`hfsN`) the user's home lives on; none until assigned (at import, or
    /// at the first login from the machine's `hfs`). It then changes only by a move (the store's
    /// `move_home`, which runs the site's hook), never by an edit: the home's files are there.
    #[serde(default)]
    pub hfs: Option<u32>,
    pub version: u64,
}

impl User {
    /// The user as read APIs show it: everything but the hash, and whether there is one.
    pub fn public_json(&self) -> serde_json::Value {
        serde_json::to_value(crate::wire::PublicUser::from(self)).unwrap_or_default()
    }
}

/// A counter that only grows, kept in the database (the uid high-water marks: `uid.user`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub key: String,
    pub value: u64,
    pub version: u64,
}

impl Counter {
    /// The counter of a group from before each uid range had its own (still read: see
    /// `Snapshot::new_user`).
    pub fn uid_key(group: Group) -> String {
        format!("uid.{group}")
    }

    /// The counter of one uid range of a group: `uid.user.10001-10999`.
    pub fn uid_range_key(group: Group, range: UidRange) -> String {
        format!("uid.{group}.{}-{}", range.first, range.last)
    }

    /// The range of a counter key's `FIRST-LAST` part.
    pub fn parse_uid_range(s: &str) -> Option<UidRange> {
        let (first, last) = s.split_once('-')?;
        Some(UidRange {
            first: first.parse().ok()?,
            last: last.parse().ok()?,
        })
    }
}

/// The fields a caller may give when creating or editing a user; `None` means "not given".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    pub login: Option<Login>,
    pub firstname: Option<String>,
    pub lastname: Option<String>,
    pub group: Option<Group>,
    pub shell: Option<String>,
    pub ssh_keys: Option<Vec<String>>,
    pub password_hash: Option<String>,
    pub password_changed: Option<bool>,
    pub hfs: Option<u32>,
}

impl UserPatch {
    /// Reads and validates each given field. A password is only ever accepted hashed.
    pub fn from_fields(mut f: crate::input::Fields) -> Result<Self, ValidationError> {
        if f.take_value("password").is_some() {
            return Err(ValidationError::new(
                "password",
                "keel stores no plaintext: send password_hash ($6$…)",
            ));
        }
        let patch = Self {
            login: f.opt_str("login")?.map(|s| Login::parse("login", &s)).transpose()?,
            firstname: f
                .opt_str("firstname")?
                .map(|s| check_gecos("firstname", s.trim()))
                .transpose()?,
            lastname: f
                .opt_str("lastname")?
                .map(|s| check_gecos("lastname", s.trim()))
                .transpose()?,
            group: f.opt_str("group")?.map(|s| s.parse()).transpose()?,
            shell: f.opt_str("shell")?.map(|s| check_shell(&s)).transpose()?,
            ssh_keys: f
                .opt_str_lines("ssh_keys")?
                .map(|keys| keys.iter().map(|k| check_ssh_key(k)).collect::<Result<Vec<_>, _>>())
                .transpose()?,
            password_hash: f.opt_str("password_hash")?.map(|h| check_hash(&h)).transpose()?,
            password_changed: f.opt_bool("password_changed")?,
            hfs: f.opt_u32("hfs")?,
        };
        f.finish()?;
        Ok(patch)
    }

    /// Builds a new user with `uid` (decided by the Snapshot from the pools).
    pub fn create(self, uid: u32) -> Result<User, ValidationError> {
        let login = self.login.ok_or_else(|| ValidationError::new("login", "is required"))?;
        Ok(User {
            firstname: self.firstname.unwrap_or_else(|| login.to_string()),
            lastname: self.lastname.unwrap_or_else(|| login.to_string()),
            login,
            group: self.group.ok_or_else(|| ValidationError::new("group", "is required"))?,
            uid,
            shell: self.shell.unwrap_or_else(|| "/bin/bash".to_owned()),
            ssh_keys: self.ssh_keys.unwrap_or_default(),
            password_hash: self.password_hash.unwrap_or_default(),
            password_changed: self.password_changed.unwrap_or(false),
            hfs: self.hfs,
            version: 0,
        })
    }

    /// Applies the given fields over an existing user (login, group and uid do not change).
    pub fn apply(self, old: &User) -> Result<User, ValidationError> {
        if self.login.as_ref().is_some_and(|l| *l != old.login) {
            return Err(ValidationError::new(
                "login",
                "a login cannot be changed; create a new user",
            ));
        }
        if self.group.is_some_and(|g| g != old.group) {
            return Err(ValidationError::new(
                "group",
                "a group cannot be changed: its uid pool would not match",
            ));
        }
        if let (Some(new), Some(now)) = (self.hfs, old.hfs) {
            if new != now {
                return Err(ValidationError::new(
                    "hfs",
                    format!(
                        "the home is on hfs{now}; it moves only by `keel users move-home` \
                         (POST /api/v1/users/{}/move-home), which runs the site's move hook",
                        old.login
                    ),
                ));
            }
        }
        let mut u = old.clone();
        u.hfs = self.hfs.or(u.hfs);
        u.firstname = self.firstname.unwrap_or(u.firstname);
        u.lastname = self.lastname.unwrap_or(u.lastname);
        u.shell = self.shell.unwrap_or(u.shell);
        u.ssh_keys = self.ssh_keys.unwrap_or(u.ssh_keys);
        u.password_hash = self.password_hash.unwrap_or(u.password_hash);
        u.password_changed = self.password_changed.unwrap_or(u.password_changed);
        Ok(u)
    }
}

/// The `rounds=` a hash may ask for. glibc accepts 1,000–999,999,999, but every login (keel's web
/// login, each host's PAM) pays for them: a hash that costs seconds to verify is a denial of
/// service, so keel refuses more than ten times glibc's default of 5,000.
pub const SHA512_ROUNDS: std::ops::RangeInclusive<u32> = 1_000..=50_000;

/// True if `s` is exactly a SHA-512-crypt hash: `$6$[rounds=N$]SALT$HASH`, where N is decimal
/// digits within [`SHA512_ROUNDS`] (no sign, no leading zero), SALT 1–16 and HASH exactly 86
/// characters of crypt's base64 (`a-z A-Z 0-9 . /`). Nothing else can pass, so a hash is always
/// one field of a shadow line (no `:`, no line break).
pub fn is_sha512_crypt(s: &str) -> bool {
    let b64 = |p: &str| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    let Some(rest) = s.strip_prefix("$6$") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('$').collect();
    let (salt, hash) = match parts.as_slice() {
        [salt, hash] => (salt, hash),
        [rounds, salt, hash] if rounds_ok(rounds) => (salt, hash),
        _ => return false,
    };
    (1..=16).contains(&salt.len()) && b64(salt) && hash.len() == 86 && b64(hash)
}

/// `rounds=N` with N canonical decimal digits inside [`SHA512_ROUNDS`].
fn rounds_ok(segment: &str) -> bool {
    let Some(n) = segment.strip_prefix("rounds=") else {
        return false;
    };
    let canonical = !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0');
    canonical && n.parse::<u32>().is_ok_and(|r| SHA512_ROUNDS.contains(&r))
}

fn check_hash(h: &str) -> Result<String, ValidationError> {
    if h.is_empty() || is_sha512_crypt(h) {
        Ok(h.to_owned())
    } else {
        Err(ValidationError::new(
            "password_hash",
            format!(
                "must be a SHA-512-crypt hash ($6$[rounds=N$]salt$hash, rounds {}–{}) or empty",
                SHA512_ROUNDS.start(),
                SHA512_ROUNDS.end()
            ),
        ))
    }
}

/// A first or last name: it becomes part of passwd's GECOS field, so no `:` (passwd's separator)
/// and no `,` (GECOS's own), besides what every text refuses (control characters, length).
fn check_gecos(field: &str, s: &str) -> Result<String, ValidationError> {
    let s = crate::input::check_text(field, s, 128)?;
    if s.contains([':', ',']) {
        return Err(ValidationError::new(
            field,
            "must not contain ':' or ',' (separators of /etc/passwd)",
        ));
    }
    Ok(s)
}

fn check_shell(s: &str) -> Result<String, ValidationError> {
    let ok =
        s.starts_with('/') && s.len() <= 256 && !s.chars().any(|c| c.is_control() || c.is_whitespace() || c == ':');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(ValidationError::new(
            "shell",
            format!("must be an absolute path without spaces or ':' (got {s:?})"),
        ))
    }
}

/// The key types OpenSSH accepts in authorized_keys.
const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Checks an OpenSSH public key line `TYPE BASE64 [comment]` (comment kept): a known type, a
/// well-formed base64 blob that starts with that same type, no newline.
pub fn check_ssh_key(line: &str) -> Result<String, ValidationError> {
    let bad = |why: &str| {
        ValidationError::new(
            "ssh_keys",
            format!("{why} (got {:?})", line.chars().take(40).collect::<String>()),
        )
    };
    let line = line.trim();
    if line.chars().any(char::is_control) {
        return Err(bad("a key is one line"));
    }
    let mut parts = line.splitn(3, ' ');
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(bad("expected 'TYPE BASE64 [comment]'"));
    };
    if !SSH_KEY_TYPES.contains(&kind) {
        return Err(bad("unknown key type"));
    }
    let decoded = decode_base64(blob).ok_or_else(|| bad("the key is not valid base64"))?;
    // The blob starts with the type as an SSH string: 4-byte big-endian length, then the name.
    let named = decoded.get(4..4 + kind.len()).is_some_and(|n| n == kind.as_bytes())
        && decoded.get(..4) == Some(&u32::try_from(kind.len()).unwrap_or(0).to_be_bytes()[..]);
    if named {
        Ok(line.to_owned())
    } else {
        Err(bad("the key's content does not match its type"))
    }
}

/// Standard base64 with padding (what OpenSSH writes).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[cfg(test)]
mod user_tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh3w1q3rDqB3sRrcB8xQ3W8N4Ckj0m0jbUuv5a1J6PB alice@laptop";

    #[test]
    fn ssh_keys() {
        assert_eq!(check_ssh_key(KEY).unwrap(), KEY);
        for bad in [
            "ssh-ed25519",
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIHh3w1q3rDqB3sRrcB8xQ3W8N4Ckj0m0jbUuv5a1J6PB",
            "ssh-ed25519 not*base64",
            "ssh-ed25519 AAAA\nssh-rsa AAAA",
        ] {
            assert!(check_ssh_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hashes_and_shells() {
        let h = "$6$saltsalt$W8/of8d2LyqjgMBUekC8rz9KqwXuk/zM2UFVSqjBrgi3iOHzUpki1KXdE9sy4UjXzKwFKfQDgDGi8qHdDVLoh/";
        assert!(is_sha512_crypt(h) && check_hash(h).is_ok() && check_hash("").is_ok());
        for bad in ["$1$abc$def", "$6$", "plain", "$6$sa!t$x"] {
            assert!(check_hash(bad).is_err(), "{bad}");
        }
        let tail = &h["$6$".len()..];
        for (rounds, ok) in [
            ("rounds=5000$", true),
            ("rounds=1000$", true),
            ("rounds=50000$", true),
            ("", true),
            ("rounds=999$", false),
            ("rounds=50001$", false),
            ("rounds=05000$", false),
            ("rounds=+5000$", false),
            ("rounds=$", false),
            ("rounds=5000:::::::\nadmin1::19000:0:99999:7:::\nzz:$", false),
            ("rounds=5000$rounds=5000$", false),
            ("junk$", false),
        ] {
            let hash = format!("$6${rounds}{tail}");
            assert_eq!(is_sha512_crypt(&hash), ok, "{hash:?}");
        }
    }

    #[test]
    fn names_cannot_hold_passwd_separators() {
        for (name, ok) in [
            ("Élodie", true),
            ("Jean-Luc", true),
            ("a:b", false),
            ("a,b", false),
            ("a\nb", false),
        ] {
            assert_eq!(check_gecos("firstname", name).is_ok(), ok, "{name:?}");
        }
        assert!(check_shell("/bin/zsh").is_ok());
        for bad in ["bash", "/bin/ba sh", "/bin/a:b", ""] {
            assert!(check_shell(bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod hfs_tests {
    use super::*;
    use crate::input::{Fields, Strictness};

    fn patch(v: serde_json::Value) -> UserPatch {
        UserPatch::from_fields(Fields::new(v, Strictness::Strict).unwrap()).unwrap()
    }

    /// A home's HFS is set once by an edit (import, first login); after that only a move changes
    /// it, since the home's files are on that server.
    #[test]
    fn an_hfs_is_set_once_and_never_changed_by_an_edit() {
        let u = patch(serde_json::json!({"login": "zoe", "group": "user"}))
            .create(10001)
            .unwrap();
        assert_eq!(u.hfs, None);
        let u = patch(serde_json::json!({"hfs": 2})).apply(&u).unwrap();
        assert_eq!(u.hfs, Some(2));
        assert_eq!(patch(serde_json::json!({"hfs": 2})).apply(&u).unwrap().hfs, Some(2));
        assert_eq!(
            patch(serde_json::json!({"shell": "/bin/sh"})).apply(&u).unwrap().hfs,
            Some(2)
        );
        let e = patch(serde_json::json!({"hfs": 3})).apply(&u).unwrap_err();
        assert_eq!(e.field, "hfs");
        assert!(e.message.contains("move-home"), "{}", e.message);
    }
}
