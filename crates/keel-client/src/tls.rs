//! What a client trusts when keel is reached over HTTPS: the site's CA (a PEM file), the SHA-256
//! fingerprint of the certificate keel serves (what `keel serve` prints), or — given neither — the
//! system's store (Debian's /etc/ssl/certs/ca-certificates.crt, which `update-ca-certificates`
//! writes, or `$SSL_CERT_FILE`): a site that installed its CA there, or serves a certificate from a
//! public CA, needs no flag. keel-client carries no root store of its own; a certificate that
//! matches none is refused before any request is sent.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest;

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Certificates chaining to the CA(s) in this PEM file, for the URL's host name.
    CaFile(PathBuf),
    /// Exactly this certificate: `sha256:` and 64 hex digits (colons allowed), as keel prints it.
    Pin(String),
    /// The system's trust store ([`system_store`]).
    System,
}

/// Where the system's trusted CAs are: `$SSL_CERT_FILE`, else Debian's bundle.
pub fn system_store() -> PathBuf {
    std::env::var_os("SSL_CERT_FILE").map_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"), PathBuf::from)
}

/// Why a trust setting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA file {path}: {why}")]
    CaFile { path: String, why: String },
    #[error("not a certificate fingerprint: {0:?} (expected sha256: and 64 hex digits)")]
    BadPin(String),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// ring, as the rest of keel (signatures): no C toolchain for aws-lc-rs. rustls marks it
/// deprecated for its lack of post-quantum key exchange, which keel's site CA does not need yet.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 fingerprint of a DER certificate, as keel prints it: `sha256:` + lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(der)))
}

fn parse_pin(pin: &str) -> Result<String, TlsError> {
    let hexpart = pin
        .strip_prefix("sha256:")
        .unwrap_or(pin)
        .replace(':', "")
        .to_ascii_lowercase();
    if hexpart.len() == 64 && hexpart.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(format!("sha256:{hexpart}"))
    } else {
        Err(TlsError::BadPin(pin.to_owned()))
    }
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let bad = |why: String| TlsError::CaFile {
        path: path.display().to_string(),
        why,
    };
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        store
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    Ok(store)
}

/// The rustls configuration for `trust`.
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    Ok(match trust {
        Trust::CaFile(path) => builder.with_root_certificates(roots(path)?).with_no_client_auth(),
        Trust::System => builder
            .with_root_certificates(roots(&system_store()).map_err(|e| TlsError::CaFile {
                path: system_store().display().to_string(),
                why: format!("{e}; give --ca-file or --pin"),
            })?)
            .with_no_client_auth(),
        Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin: parse_pin(pin)?,
                provider: provider(),
            }))
            .with_no_client_auth(),
    })
}

/// Accepts exactly the pinned certificate (whatever its names or issuer: the pin is the trust),
/// and checks the handshake's signatures with it as usual.
#[derive(Debug)]
struct Pinned {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity.as_ref());
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate is {got}, not the pinned {}",
                self.pin
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_normalised_and_checked() {
        let hex64 = "ab".repeat(32);
        assert_eq!(
            parse_pin(&format!("sha256:{hex64}")).unwrap(),
            format!("sha256:{hex64}")
        );
        let colons: String = hex64
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_pin(&colons).unwrap(), format!("sha256:{hex64}"));
        for bad in ["", "sha256:", "sha256:xyz", &"a".repeat(63)] {
            assert!(parse_pin(bad).is_err(), "{bad:?}");
        }
    }
}
