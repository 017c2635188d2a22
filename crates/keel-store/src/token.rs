//! API tokens: random, shown once, stored only as a SHA-256 hash, scoped by role, optionally expiring.
//!
//! A token reads `keel_<id>_<secret>`: `id` finds the row, the secret is checked against its hash.
//! SHA-256 suffices here (unlike for passwords): the secret is 256 random bits, not guessable.

use keel_model::{Principal, Role};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::StoreError;

/// A stored token (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRow {
    pub id: String,
    #[serde(skip_serializing)]
    pub hash: String,
    pub name: String,
    pub role: Role,
    pub facilities: Vec<String>,
    pub host: Option<String>,
    pub created: String,
    pub expires: Option<String>,
    pub revoked: Option<String>,
}

impl TokenRow {
    pub fn principal(&self) -> Principal {
        Principal {
            name: self.name.clone(),
            role: self.role,
            kind: keel_model::PrincipalKind::Token,
            facilities: self.facilities.clone(),
            host: self.host.clone(),
        }
    }

    fn expired_at(&self, now: OffsetDateTime) -> bool {
        self.expires
            .as_deref()
            .and_then(|e| OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok())
            .is_some_and(|e| e <= now)
    }
}

/// Why a presented token was refused (callers answer 401 for all of them alike).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown token")]
    Unknown,
    #[error("revoked token")]
    Revoked,
    #[error("expired token")]
    Expired,
}

/// What to create a token for.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    pub facilities: Vec<String>,
    pub host: Option<String>,
    pub expires: Option<OffsetDateTime>,
}

/// Makes a fresh token: the secret string (to show once) and the row to store.
pub fn generate(new: NewToken, now: &str) -> Result<(String, TokenRow), StoreError> {
    let (id, secret) = (random_hex(6)?, random_hex(32)?);
    let expires = new
        .expires
        .map(|e| e.format(&time::format_description::well_known::Rfc3339))
        .transpose()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let row = TokenRow {
        hash: hash_secret(&secret),
        id: id.clone(),
        name: new.name,
        role: new.role,
        facilities: new.facilities,
        host: new.host,
        created: now.to_owned(),
        expires,
        revoked: None,
    };
    Ok((format!("keel_{id}_{secret}"), row))
}

/// Splits a presented token into (id, secret).
pub fn parse(token: &str) -> Result<(&str, &str), AuthError> {
    let rest = token.trim().strip_prefix("keel_").ok_or(AuthError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(AuthError::Malformed)?;
    let hexy = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if hexy(id, 12) && hexy(secret, 64) {
        Ok((id, secret))
    } else {
        Err(AuthError::Malformed)
    }
}

/// Checks a presented secret against its stored row.
pub fn verify(row: &TokenRow, secret: &str, now: OffsetDateTime) -> Result<Principal, AuthError> {
    if !same_secret(hash_secret(secret).as_bytes(), row.hash.as_bytes()) {
        return Err(AuthError::Unknown);
    }
    if row.revoked.is_some() {
        return Err(AuthError::Revoked);
    }
    if row.expired_at(now) {
        return Err(AuthError::Expired);
    }
    Ok(row.principal())
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether two secrets are equal, in a time that says nothing about how much of them matched
/// (nor their lengths: their digests are compared, with `subtle`). The one comparison of secrets
/// keel makes: tokens, the presence secret, CSRF tokens.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// `bytes` random bytes as hex, from the OS (its RNG failing is an I/O error).
pub fn random_hex(bytes: usize) -> Result<String, StoreError> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
    Ok(hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(expires: Option<OffsetDateTime>) -> NewToken {
        NewToken {
            name: "t".into(),
            role: Role::Admin,
            facilities: vec![],
            host: None,
            expires,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let now = OffsetDateTime::now_utc();
        let (tok, mut row) = generate(new(None), "2026-01-01T00:00:00Z").unwrap();
        let (id, secret) = parse(&tok).unwrap();
        assert_eq!(id, row.id);
        assert!(!row.hash.contains(secret));
        assert_eq!(verify(&row, secret, now).unwrap().role, Role::Admin);
        assert_eq!(verify(&row, &"0".repeat(64), now), Err(AuthError::Unknown));
        row.revoked = Some("x".into());
        assert_eq!(verify(&row, secret, now), Err(AuthError::Revoked));
        let (tok, row) = generate(new(Some(now - time::Duration::seconds(1))), "x").unwrap();
        assert_eq!(verify(&row, parse(&tok).unwrap().1, now), Err(AuthError::Expired));
        for bad in ["", "keel_", "keel_zz_zz", "bearer", "keel_0123456789ab_"] {
            assert_eq!(parse(bad), Err(AuthError::Malformed));
        }
    }
}
