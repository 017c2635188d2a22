//! Passwords: generation, SHA-512-crypt hashing, verification.
//!
//! One hash per user, `$6$` with 5000 rounds (invariant 5): shadow and PAM read it, the
//! web login verifies it. The CLI generates and hashes at import; the server only receives hashes.

/// Characters a generated password may use: like `pwgen -B`, none that is easily mistaken for
/// another when printed (0/O/Q/D, 1/l/I, 2/Z, 5/S, 6/G, 8/B).
const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const UPPER: &[u8] = b"ACEFHJKLMNPRTUVWXY";
const DIGITS: &[u8] = b"3479";

/// The hash rounds: crypt's default, written without a `rounds=` field.
const ROUNDS: usize = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the system's random generator failed: {0}")]
    Random(String),
    #[error("a password must have 4 to 128 characters, not {0}")]
    Length(usize),
    #[error("hashing failed")]
    Hash,
}

/// A fresh password of `len` characters with at least one capital and one digit and no
/// look-alike characters (as `pwgen -cnB len`), from the OS's cryptographic RNG.
pub fn generate(len: usize) -> Result<String, PasswordError> {
    if !(4..=128).contains(&len) {
        return Err(PasswordError::Length(len));
    }
    let all: Vec<u8> = [LOWER, UPPER, DIGITS].concat();
    loop {
        let pw: Vec<u8> = (0..len).map(|_| pick(&all)).collect::<Result<_, _>>()?;
        if pw.iter().any(|c| UPPER.contains(c)) && pw.iter().any(|c| DIGITS.contains(c)) {
            return Ok(pw.into_iter().map(char::from).collect());
        }
    }
}

/// A uniformly random element of `set` (rejection sampling: no modulo bias).
fn pick(set: &[u8]) -> Result<u8, PasswordError> {
    let n = u8::try_from(set.len()).map_err(|_| PasswordError::Length(set.len()))?;
    let limit = u8::MAX - (u8::MAX % n);
    loop {
        let mut b = [0u8; 1];
        getrandom::fill(&mut b).map_err(|e| PasswordError::Random(e.to_string()))?;
        if b[0] < limit {
            return Ok(set[usize::from(b[0] % n)]);
        }
    }
}

/// The SHA-512-crypt hash of `password`, with a fresh random salt: `$6$<salt>$<hash>`.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let params = sha_crypt::Sha512Params::new(ROUNDS).map_err(|_| PasswordError::Hash)?;
    sha_crypt::sha512_simple(password, &params).map_err(|_| PasswordError::Hash)
}

/// True if `password` matches the stored SHA-512-crypt `hash` (compared in constant time).
pub fn verify(password: &str, hash: &str) -> bool {
    sha_crypt::sha512_check(password, hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl passwd -6 -salt saltsalt Pa55word`, computed by the system's crypt.
    const OPENSSL: &str =
        "$6$saltsalt$W8/of8d2LyqjgMBUekC8rz9KqwXuk/zM2UFVSqjBrgi3iOHzUpki1KXdE9sy4UjXzKwFKfQDgDGi8qHdDVLoh/";

    #[test]
    fn verifies_what_the_system_crypt_made() {
        assert!(verify("Pa55word", OPENSSL));
        assert!(!verify("Pa55wore", OPENSSL));
    }

    #[test]
    fn hashes_verify_and_are_salted() {
        let (a, b) = (hash("élan vital").unwrap(), hash("élan vital").unwrap());
        assert_ne!(a, b, "a fresh salt each time");
        assert!(a.starts_with("$6$") && !a.contains("rounds="));
        assert!(verify("élan vital", &a) && verify("élan vital", &b));
        assert!(!verify("elan vital", &a));
    }

    #[test]
    fn generated_passwords_are_pwgen_like() {
        for len in [4, 8, 10, 32] {
            for _ in 0..200 {
                let pw = generate(len).unwrap();
                assert_eq!(pw.len(), len);
                assert!(
                    pw.bytes().any(|c| c.is_ascii_uppercase()) && pw.bytes().any(|c| c.is_ascii_digit()),
                    "{pw}"
                );
                assert!(
                    !pw.bytes().any(|c| b"0OQD1lI2Z5S6G8B".contains(&c)),
                    "look-alike in {pw}"
                );
            }
        }
        assert!(generate(3).is_err());
    }
}
