//! Presence proofs (issue 31): a session opened by a machine carries proof from the person.
//!
//! The machines' presence secret is on every netbooted machine, so anyone who reads it could log
//! *anyone* in on their own seat, and keel's SSO would then vouch that the seat is that person.
//! With `[presence] proof`, the PAM `auth` line sends the password keel-agent was given (over TLS)
//! to `POST /api/v1/proofs`; keel checks it (throttled, like every password page) and answers a
//! proof that the `session` line presents with the login. A proof names its login and machine,
//! expires after [`TTL_MS`] and is taken once.
//!
//! A proof is `<expiry ms>.<nonce>.<mac>`, the MAC an HMAC-SHA256 under a key kept in the
//! database (so every server on a shared database checks every server's proofs). Taken proofs
//! are remembered by this server until they expire.

use std::collections::HashMap;

use hmac::Mac as _;

use crate::{ApiError, AppState};

/// How long a proof may wait for its session line (PAM runs them a moment apart; a slow
/// desktop login may take a few seconds more).
pub(crate) const TTL_MS: i64 = 120_000;

/// The database key the proofs' MAC key is stored under.
const KEY_NAME: &str = keel_store::PRESENCE_PROOF_KEY;

/// Taken proofs, bounded. Each costs a right password (a slow hash, throttled), so more unexpired
/// proofs than this within [`TTL_MS`] means a machine is minting them in a loop: past it, expired
/// ones are forgotten, and if none has expired a proof is refused (forgetting an unexpired one
/// would let it be replayed).
const MAX_TAKEN: usize = 100_000;

#[derive(Default)]
pub(crate) struct Proofs {
    key: tokio::sync::OnceCell<String>,
    taken: parking_lot::Mutex<HashMap<String, i64>>,
}

impl Proofs {
    async fn key(&self, st: &AppState) -> Result<&str, ApiError> {
        let key = self
            .key
            .get_or_try_init(|| st.db.store().meta_secret(KEY_NAME))
            .await
            .map_err(|e| ApiError::Internal(format!("cannot read the presence proof key: {e}")))?;
        Ok(key.as_str())
    }

    /// A fresh proof that `login` gave their password on `hostname`.
    pub(crate) async fn issue(&self, st: &AppState, login: &str, hostname: &str) -> Result<String, ApiError> {
        let key = self.key(st).await?;
        let expiry = crate::auth::now_ms() + TTL_MS;
        let nonce = keel_store::token::random_hex(12).map_err(|e| ApiError::Internal(e.to_string()))?;
        let mac = mac(key, login, hostname, expiry, &nonce);
        Ok(format!("{expiry}.{nonce}.{mac}"))
    }

    /// Takes `proof` for `login` on `hostname`: true once, if it is keel's, unexpired and theirs.
    pub(crate) async fn take(&self, st: &AppState, proof: &str, login: &str, hostname: &str) -> bool {
        let Ok(key) = self.key(st).await else {
            return false;
        };
        let mut parts = proof.splitn(3, '.');
        let (Some(expiry), Some(nonce), Some(sent)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        let Ok(expiry) = expiry.parse::<i64>() else {
            return false;
        };
        let now = crate::auth::now_ms();
        let ours = mac(key, login, hostname, expiry, nonce);
        if expiry < now || !crate::auth::same_secret(ours.as_bytes(), sent.as_bytes()) {
            return false;
        }
        remember(&mut self.taken.lock(), MAX_TAKEN, ours, expiry, now)
    }
}

/// Notes `mac` as taken until `expiry`: false if it was taken before, or if `max` unexpired
/// proofs are taken already.
fn remember(taken: &mut HashMap<String, i64>, max: usize, mac: String, expiry: i64, now: i64) -> bool {
    if taken.len() >= max {
        taken.retain(|_, until| *until >= now);
        if taken.len() >= max {
            tracing::warn!("presence proofs: {max} taken within {TTL_MS} ms; refusing until some expire");
            return false;
        }
    }
    taken.insert(mac, expiry).is_none()
}

fn mac(key: &str, login: &str, hostname: &str, expiry: i64, nonce: &str) -> String {
    // The key is any length (HMAC takes every length): new_from_slice cannot fail.
    let Ok(mut m) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()) else {
        return String::new();
    };
    // NUL cannot be in a login, a hostname or the numbers: the fields cannot run into each other.
    for part in [login, hostname, &expiry.to_string(), nonce] {
        m.update(part.as_bytes());
        m.update(b"\0");
    }
    hex::encode(m.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_proof_is_taken_once_and_a_full_memory_forgets_only_the_expired() {
        let mut taken = std::collections::HashMap::new();
        assert!(super::remember(&mut taken, 2, "a".into(), 10, 0));
        assert!(!super::remember(&mut taken, 2, "a".into(), 10, 0), "replayed");
        assert!(super::remember(&mut taken, 2, "b".into(), 20, 0));
        // Full, none expired: refused rather than forgetting one that could then be replayed.
        assert!(!super::remember(&mut taken, 2, "c".into(), 30, 5));
        assert!(taken.contains_key("a") && taken.contains_key("b"));
        // Once "a" has expired it is forgotten, and there is room; "b" is still remembered.
        assert!(super::remember(&mut taken, 2, "c".into(), 30, 11));
        assert!(!taken.contains_key("a") && taken.contains_key("b"));
    }

    #[test]
    fn the_mac_binds_every_field() {
        let base = super::mac("k", "alice", "pc1", 5, "n");
        assert_eq!(base.len(), 64);
        for other in [
            super::mac("k2", "alice", "pc1", 5, "n"),
            super::mac("k", "alicf", "pc1", 5, "n"),
            super::mac("k", "alice", "pc2", 5, "n"),
            super::mac("k", "alice", "pc1", 6, "n"),
            super::mac("k", "alice", "pc1", 5, "m"),
            super::mac("k", "alicep", "c1", 5, "n"),
        ] {
            assert_ne!(base, other);
        }
    }
}
