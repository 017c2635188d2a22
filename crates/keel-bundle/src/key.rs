//! The server's signing key and the public keys agents trust.
//!
//! On disk and in configs both are base64 of the 32 raw bytes (a secret key file holds the seed),
//! so an admin can paste a public key into `agent.toml`.

use base64::Engine;
use ed25519_dalek::{Signer, Verifier};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a key must be base64 of 32 bytes")]
    Malformed,
    #[error("no randomness available: {0}")]
    Random(String),
}

/// 32 bytes from base64 (surrounding whitespace ignored).
fn decode32(s: &str) -> Result<[u8; 32], KeyError> {
    B64.decode(s.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(KeyError::Malformed)
}

/// The server's ed25519 signing key.
pub struct SecretKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

impl SecretKey {
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Reads the base64 seed (surrounding whitespace ignored).
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&decode32(s)?)))
    }

    /// The seed as base64, for the key file. Never log this.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0.to_bytes())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

/// A public key an agent trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        ed25519_dalek::VerifyingKey::from_bytes(&decode32(s)?)
            .map(Self)
            .map_err(|_| KeyError::Malformed)
    }

    /// Strict verification (no malleable or small-order signatures).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
            return false;
        };
        self.0.verify_strict(msg, &sig).is_ok() && self.0.verify(msg, &sig).is_ok()
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&B64.encode(self.0.to_bytes()))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_roundtrip() {
        let k = SecretKey::generate().unwrap();
        let again = SecretKey::from_base64(&k.to_base64()).unwrap();
        let sig = again.sign(b"hello");
        let public = PublicKey::from_base64(&k.public().to_string()).unwrap();
        assert!(public.verify(b"hello", &sig));
        assert!(!public.verify(b"hellO", &sig));
        assert!(!public.verify(b"hello", &sig[..63]));
        assert!(PublicKey::from_base64("AAAA").is_err());
    }
}
