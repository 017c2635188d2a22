//! What keel's tests and benchmarks start for real, each stopped and removed when dropped:
//! [`TestPg`], a throwaway PostgreSQL on a free loopback port (keel-store's tests, the end-to-end
//! tests, `keel bench postgres`), and [`Sshd`], an OpenSSH server on loopback with its own keys
//! (the end-to-end tests, `keel bench propagation`); [`KeelProcess`], a real `keel serve` on
//! loopback (the end-to-end tests and every benchmark); `dns_query`, the bytes of a DNS query;
//! and [`flood`], one source flooding keel and another's probes (the hostile test, `keel bench
//! flood`).
//! Plain blocking processes (`eventually` alone runs on the caller's tokio); a missing program is an error
//! naming its Debian package, never a skip.

#![forbid(unsafe_code)]

pub mod flood;
mod keel;
mod pg;
mod sshd;
mod wait;

pub use keel::{wait_for_file, KeelCommand, KeelProcess};
pub use pg::TestPg;
pub use sshd::Sshd;
pub use wait::{eventually, wait_until};

pub mod guard;

/// A DNS query for `name` (type A, class IN, recursion desired), as a client sends it over UDP
/// (RFC 1035 4.1): what the DNS tests and `keel bench dns` ask keel without a resolver library.
pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).unwrap_or(63));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Why a test server could not be started (the message names what to install or fix).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl Error {
    fn msg(m: impl Into<String>) -> Self {
        Self(m.into())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
