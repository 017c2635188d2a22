//! The propagation bundle: what the engine sends and `keel-agent` applies.
//!
//! A bundle is a tar of `MANIFEST.json`, `MANIFEST.sig` (the raw ed25519 signature of MANIFEST.json
//! by the server's key) and the files the manifest lists, regular files only; it travels
//! zstd-compressed ([`Encoding`]), and readers take either form. Reading is the
//! security boundary of every destination, so [`Bundle::open`] checks, in this order: the tar's
//! members (regular files, safe relative names, no duplicates, bounded sizes), the signature
//! against the trusted keys — *before* anything in the manifest is believed — then the manifest
//! (format, names, version) and that the files are exactly the listed ones with their digests.
//! Nothing taken from a bundle is ever handed to a shell; names are checked against strict
//! alphabets here so that later code cannot be tricked by them either.

#![forbid(unsafe_code)]

pub mod delta;
mod key;
mod manifest;
mod read;
mod write;

pub use delta::DeltaError;
pub use keel_model::propagation::destination_host;
/// The model's own checks, for the agent's re-parsing of what it applies (invariant 10).
pub use keel_model::{check_ssh_key, Hostname};
pub use key::{KeyError, PublicKey, SecretKey};
pub use manifest::{check_rel_path, FileEntry, Manifest, FORMAT, FORMAT_DELTA};
pub use read::{Bundle, BundleError, Limits};
pub use write::{build, manifest as manifest_for, BuildError, Delta, Encoding, Header, Prepared};

/// The lower-cased sha256 of `data`, in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
