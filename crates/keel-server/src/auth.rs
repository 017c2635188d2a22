//! Who is calling: the bearer token, checked on every request that carries one.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use keel_model::{Principal, Role};

use keel_store::Db;

use crate::{ApiError, AppState};

/// The authenticated caller, if a token was sent. A bad token is refused at once (401), even on
/// a route that would serve an anonymous caller: a client must learn its token is wrong.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Principal>);

/// Any router whose state holds the server's (keel-web's pages and map too).
impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Ok(Self(None));
        };
        // Only a request with a token pays for the state's clone (its Arcs).
        let state = AppState::from_ref(state);
        let value = value
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed Authorization header"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(ApiError::Unauthorized("expected 'Authorization: Bearer <token>'"))?;
        match state.db.authenticate(token).await? {
            Ok(p) => Ok(Self(Some(p))),
            Err(reason) => {
                // The token itself is never logged; its refusal is.
                keel_limits::refused!(WARN, %reason, path = %parts.uri.path(), "token refused");
                Err(ApiError::Unauthorized("invalid, revoked or expired token"))
            }
        }
    }
}

impl Caller {
    /// Any authenticated principal.
    pub fn authenticated(&self) -> Result<&Principal, ApiError> {
        self.0
            .as_ref()
            .ok_or(ApiError::Unauthorized("this endpoint needs a token"))
    }

    /// An admin: the only role that changes the machine database.
    pub fn admin(&self) -> Result<&Principal, ApiError> {
        let p = self.authenticated()?;
        if p.role == Role::Admin {
            Ok(p)
        } else {
            Err(ApiError::Forbidden(format!(
                "{} ({}) may not change this; an admin token is needed",
                p.name, p.role
            )))
        }
    }

    /// A reader: anyone authenticated, or anyone at all when reads are open.
    pub fn reader(&self, open_reads: bool) -> Result<(), ApiError> {
        if open_reads {
            Ok(())
        } else {
            self.authenticated().map(|_| ())
        }
    }
}

/// Wrong passwords per login (the password pages and the password API): after `FREE_FAILURES`,
/// a wait of 1 s doubling to a minute since the last one. Counted in the database, so a restart does
/// not reset it and every server on a shared database counts the same tries; unknown logins are
/// counted like known ones (the same work: nothing tells them apart). Counts untouched for an hour
/// are forgotten. A database error lets the try through (logged): the hash's cost still bounds
/// the rate.
pub(crate) struct Throttle;

/// Wrong passwords allowed before waiting is imposed.
const FREE_FAILURES: u32 = 5;

/// A count not raised for this long is forgotten.
const FORGET_AFTER_MS: i64 = 3_600_000;

/// Now, in Unix milliseconds: the times kept in the database and shared between servers.
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Throttle {
    /// Counts a try of `login`'s password *before* it is checked (one statement in the store, so
    /// parallel guesses each count), and says how long to wait if this try may not be checked.
    /// The store keys counts by a digest of the login: a megabyte "login" costs 64 bytes.
    pub(crate) async fn attempt(db: &Db, login: &str) -> Option<std::time::Duration> {
        let now = now_ms();
        let n = match db.store().login_attempt(&key(login), now, now - FORGET_AFTER_MS).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(%e, "cannot count a password try");
                return None;
            }
        };
        let before = n.count.saturating_sub(1);
        let penalty_ms = 1000i64 << (before.checked_sub(FREE_FAILURES)?).min(6);
        // A count raised by a server whose clock is ahead never makes the wait longer.
        let left = penalty_ms - now.saturating_sub(n.prev_ms).max(0);
        (left > 0).then(|| std::time::Duration::from_millis(left.unsigned_abs()))
    }

    pub(crate) async fn succeeded(db: &Db, login: &str) {
        if let Err(e) = db.store().login_succeeded(&key(login)).await {
            tracing::error!(%e, "cannot reset the login throttle");
        }
    }
}

/// What checking a password someone typed found.
pub enum PasswordCheck {
    Right,
    Wrong,
    /// Too many wrong tries of this login lately: not checked; try again after this.
    Wait(std::time::Duration),
}

/// Checks `login`'s password, throttled ([`Throttle`]): the one path of the password pages, the
/// password API and presence proofs. An unknown login, and a user without a password, cost the
/// same work as a wrong password and answer the same.
pub async fn check_password(st: &crate::AppState, login: &str, password: String) -> PasswordCheck {
    if let Some(wait) = Throttle::attempt(&st.db, login).await {
        return PasswordCheck::Wait(wait);
    }
    let stored = st
        .db
        .snapshot()
        .user(login)
        .map(|u| u.password_hash.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DUMMY_HASH.to_owned());
    let right = tokio::task::spawn_blocking(move || keel_password::verify(&password, &stored))
        .await
        .unwrap_or(false);
    if !right {
        return PasswordCheck::Wrong;
    }
    Throttle::succeeded(&st.db, login).await;
    PasswordCheck::Right
}

/// A valid hash of a password nobody has, to verify against when the login is unknown.
const DUMMY_HASH: &str =
    "$6$saltsalt$W8/of8d2LyqjgMBUekC8rz9KqwXuk/zM2UFVSqjBrgi3iOHzUpki1KXdE9sy4UjXzKwFKfQDgDGi8qHdDVLoh/";

/// The throttle's key for a login: fixed-size, whatever was sent.
fn key(login: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(login.as_bytes()))
}

/// A login as a stranger typed it, for a log line or a page: at most 32 characters (a real login
/// has at most 31), so a huge one is neither logged nor stored whole.
pub fn shown(login: &str) -> String {
    login.chars().take(32).collect()
}

pub use keel_store::token::same_secret;
