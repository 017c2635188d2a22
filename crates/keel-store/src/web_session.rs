//! Sessions of the web pages, as stored: outside the change log, like tokens.

/// One logged-in person's session. `id` is the sha256 (hex) of the secret in their cookie.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WebSession {
    pub id: String,
    pub login: String,
    /// What the pages let them do, as the web layer wrote it (opaque here).
    pub role: String,
    /// When it was last used (Unix ms).
    pub last_ms: i64,
}

/// The key deriving the CSRF token of people logged in through nginx's SSO (they hold no
/// session): in the database, so a page from one server and its form posted to another agree.
pub const WEB_SSO_KEY: &str = "web_sso_key";

/// The key of presence proofs' MAC (keel-server's `proof`): in the database, so a proof one
/// server issued is taken by another.
pub const PRESENCE_PROOF_KEY: &str = "presence_proof_key";

/// The secrets `Store::meta_secret` makes on demand; no other key of `meta` is ever handed out.
pub(crate) const SECRETS: [&str; 2] = [WEB_SSO_KEY, PRESENCE_PROOF_KEY];

/// Tries of one login's password since its last right one, this one included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailures {
    pub count: u32,
    /// When the try before this one was (Unix ms; 0 for the first).
    pub prev_ms: i64,
}
