//! The API's paths, for every client of keel: written here (and in keel-server's router) only.
//! Keys are percent-encoded as one path segment each, so a hostname or login can never change
//! the route.

/// The REST API's prefix.
pub const API: &str = "/api/v1";

/// A kind of record served as a collection: `GET|POST /api/v1/{kind}` and
/// `GET|PUT|PATCH|DELETE /api/v1/{kind}/{key}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Records {
    Machines,
    Switches,
    Users,
    Hosts,
    Facilities,
    Destinations,
    Settings,
    Tokens,
    Roles,
}

impl Records {
    pub fn path(self) -> &'static str {
        match self {
            Self::Machines => "machines",
            Self::Switches => "switches",
            Self::Users => "users",
            Self::Hosts => "hosts",
            Self::Facilities => "facilities",
            Self::Destinations => "destinations",
            Self::Settings => "settings",
            Self::Tokens => "tokens",
            Self::Roles => "roles",
        }
    }

    pub fn collection(self) -> String {
        format!("{API}/{}", self.path())
    }

    /// The path of one record; each part of its key is one path segment ([`segment`]).
    pub fn record(self, key: &[&str]) -> Result<String, InvalidKey> {
        let mut path = self.collection();
        for part in key {
            path.push('/');
            path.push_str(&segment(part)?);
        }
        Ok(path)
    }
}

/// One path segment (a hostname, a login, a key), percent-encoded: only unreserved characters
/// pass, so `/`, `?` and `#` can never change the route. A key that is empty or only dots is
/// refused: URLs treat `..` (even as `%2E%2E`) as "up one".
pub fn segment(s: &str) -> Result<String, InvalidKey> {
    if s.bytes().all(|b| b == b'.') {
        return Err(InvalidKey(s.to_owned()));
    }
    Ok(s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect())
}

/// A record key that cannot be one path segment: empty, `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a record name: {0:?}")]
pub struct InvalidKey(pub String);

/// Presence: `POST` opens a session (the machine's secret authenticates it).
pub const SESSIONS: &str = "/api/v1/sessions";
/// Presence: `POST` trades the password a person typed on a machine for a one-time proof.
pub const PROOFS: &str = "/api/v1/proofs";
/// Presence: `POST` says which sessions a machine still has.
pub const SESSIONS_HEARTBEAT: &str = "/api/v1/sessions/heartbeat";

/// Presence: `DELETE` closes `login`'s session on the calling machine.
pub fn session(login: &str) -> Result<String, InvalidKey> {
    Ok(format!("{SESSIONS}/{}", segment(login)?))
}

/// Homes: `POST` moves `login`'s home to another HFS (the site's hook copies the files).
pub fn move_home(login: &str) -> Result<String, InvalidKey> {
    Ok(format!("{}/move-home", Records::Users.record(&[login])?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_stay_one_segment() {
        assert_eq!(
            Records::Machines.record(&["r01p01.prolo"]).unwrap(),
            "/api/v1/machines/r01p01.prolo"
        );
        assert_eq!(
            Records::Users.record(&["../tokens"]).unwrap(),
            "/api/v1/users/..%2Ftokens"
        );
        assert_eq!(
            Records::Destinations.record(&["f", "passwd", "root@h?x#y"]).unwrap(),
            "/api/v1/destinations/f/passwd/root%40h%3Fx%23y"
        );
        assert_eq!(session("j.doe/x").unwrap(), "/api/v1/sessions/j.doe%2Fx");
        for dots in ["..", ".", ""] {
            assert!(Records::Users.record(&[dots]).is_err(), "{dots:?}");
            assert!(session(dots).is_err(), "{dots:?}");
        }
    }
}
