//! What keel's tests and benchmarks start for real, each stopped and removed when dropped:
//! [`TestPg`], a throwaway PostgreSQL on a free loopback port (keel-store's tests, the end-to-end
//! tests, `keel bench postgres`), and [`Sshd`], an OpenSSH server on loopback with its own keys
//! (the end-to-end tests, `keel bench propagation`). Std only; a missing program is an error
//! naming its Debian package, never a skip.

#![forbid(unsafe_code)]

mod pg;
mod sshd;

pub use pg::TestPg;
pub use sshd::Sshd;

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
