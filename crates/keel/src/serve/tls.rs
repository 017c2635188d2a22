//! HTTPS: the certificate keel serves, from the site's files or from a site CA keel makes on
//! first start (DATA_DIR/tls: ca.pem to give clients, the keys 0600), and the rustls acceptor.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// What serving HTTPS needs, and what to tell the admin.
pub(super) struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The certificate being served, replaced by a reload.
    pub cert: Arc<LiveCert>,
    /// The served certificate's SHA-256 (what `--pin` takes).
    pub fingerprint: String,
    /// The site CA to hand to clients, when keel made it.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The certificate and key every new handshake gets: read again from their files by a reload
/// (a renewed certificate needs no restart); connections already open keep theirs.
#[derive(Debug)]
pub(super) struct LiveCert {
    current: arc_swap::ArcSwap<CertifiedKey>,
    /// keel's site CA's directory, when keel made the certificate (a reload renews it if due).
    site_ca: Option<PathBuf>,
    cert: PathBuf,
    key: PathBuf,
}

impl LiveCert {
    /// Reads the files again (keel's own certificate renewed first, if due) and serves what they
    /// hold from the next handshake; the fingerprint. A pair that does not load changes nothing.
    pub fn reload(&self) -> anyhow::Result<String> {
        if let Some(dir) = &self.site_ca {
            renew_if_due(dir)?;
        }
        let (certified, fingerprint) = certified_key(&self.cert, &self.key)?;
        self.current.store(Arc::new(certified));
        Ok(fingerprint)
    }
}

impl rustls::server::ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_pem(cert: &Path, key: &Path) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("cannot read the key {}", key.display()))?;
    Ok((certs, key))
}

/// The chain and key as rustls serves them (the key checked against the certificate), and the
/// certificate's fingerprint.
fn certified_key(cert: &Path, key: &Path) -> anyhow::Result<(CertifiedKey, String)> {
    let (certs, key) = read_pem(cert, key)?;
    let fingerprint = keel_client::tls::fingerprint(certs[0].as_ref());
    let certified = CertifiedKey::from_der(certs, key, &keel_client::tls::provider())
        .with_context(|| format!("{} and its key do not go together", cert.display()))?;
    Ok((certified, fingerprint))
}

/// Whether a certificate and key from keel.toml would serve (`keel serve --check`).
pub fn check_certificate(cert: &Path, key: &Path) -> anyhow::Result<()> {
    certified_key(cert, key).map(|_| ())
}

fn default_names(listen: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        names.push(listen.ip().to_string());
    }
    names
}

/// How long keel's site CA is valid: long enough to be handed to clients once.
const CA_DAYS: i64 = 3652;
/// How long the certificate keel serves is valid; renewed when fewer than [`RENEW_DAYS`] remain.
const LEAF_DAYS: i64 = 365;
const RENEW_DAYS: i64 = 30;

/// `days` from now, and a day back (clocks of clients a little behind still accept it).
fn validity(params: &mut rcgen::CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

/// Makes the site CA (10 years) and a certificate it signs for `names` (1 year), in `dir` (keys
/// private).
fn create_site_ca(dir: &Path, names: Vec<String>) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "keel site CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca, CA_DAYS);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    crate::private_file::write(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes())?;
    // The CA's certificate is public: clients need ca.pem.
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    std::fs::set_permissions(dir.join("ca.pem"), std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let mut leaf = CertificateParams::new(names)?;
    leaf.distinguished_name.push(DnType::CommonName, "keel");
    write_leaf(dir, leaf, &ca_cert, &ca_key, LEAF_DAYS)
}

/// Signs `leaf` (valid `days` from now) with the site CA and writes it with a new key.
fn write_leaf(
    dir: &Path,
    mut leaf: rcgen::CertificateParams,
    ca_cert: &rcgen::Certificate,
    ca_key: &rcgen::KeyPair,
    days: i64,
) -> anyhow::Result<()> {
    validity(&mut leaf, days);
    let key = rcgen::KeyPair::generate()?;
    let cert = leaf.signed_by(&key, ca_cert, ca_key)?;
    crate::private_file::write(&dir.join("key.pem.new"), key.serialize_pem().as_bytes())?;
    std::fs::write(dir.join("cert.pem.new"), format!("{}{}", cert.pem(), ca_cert.pem()))?;
    std::fs::set_permissions(
        dir.join("cert.pem.new"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    // The key first: a crash between the renames leaves the old certificate with the new key,
    // which the next start sees does not go together and renews again.
    std::fs::rename(dir.join("key.pem.new"), dir.join("key.pem"))?;
    std::fs::rename(dir.join("cert.pem.new"), dir.join("cert.pem"))?;
    Ok(())
}

/// Renews the certificate keel's site CA signed when fewer than 30 days of it remain (or it no
/// longer goes with its key): same names, same CA, a new key and a year more. Pins of the old
/// certificate stop matching; clients that trust ca.pem see no change. Says what it did.
fn renew_if_due(dir: &Path) -> anyhow::Result<()> {
    use rcgen::{CertificateParams, KeyPair};
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).with_context(|| format!("cannot read {}", dir.join(name).display()))
    };
    let cert_pem = read("cert.pem")?;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).context("cert.pem holds no certificate")?;
    let current = CertificateParams::from_ca_cert_der(&der).context("cannot read cert.pem")?;
    let left = current.not_after - time::OffsetDateTime::now_utc();
    let matches = certified_key(&dir.join("cert.pem"), &dir.join("key.pem")).is_ok();
    if left > time::Duration::days(RENEW_DAYS) && matches {
        return Ok(());
    }
    let ca_key = KeyPair::from_pem(&read("ca.key")?).context("ca.key is not a key")?;
    let ca_params = CertificateParams::from_ca_cert_pem(&read("ca.pem")?).context("cannot read ca.pem")?;
    let ca_left = ca_params.not_after - time::OffsetDateTime::now_utc();
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let mut leaf = CertificateParams::default();
    leaf.subject_alt_names = current.subject_alt_names.clone();
    leaf.distinguished_name.push(rcgen::DnType::CommonName, "keel");
    let old = keel_client::tls::fingerprint(der.as_ref());
    write_leaf(dir, leaf, &ca_cert, &ca_key, LEAF_DAYS)?;
    let new_pem = read("cert.pem")?;
    let new = CertificateDer::from_pem_slice(new_pem.as_bytes()).context("the new cert.pem")?;
    tracing::warn!(
        days_left = left.whole_days(),
        old = %old,
        new = %keel_client::tls::fingerprint(new.as_ref()),
        "renewed the site certificate (clients that pin the old fingerprint must take the new one; those trusting ca.pem see no change)"
    );
    if ca_left < time::Duration::days(365) {
        tracing::warn!(
            days_left = ca_left.whole_days(),
            "keel's site CA expires within a year: make a new one (move DATA_DIR/tls away and restart) and give clients its ca.pem"
        );
    }
    Ok(())
}

/// The site's certificate, or keel's own site CA (made once, then reused).
pub(super) fn load(cfg: &crate::config::Tls, data_dir: &Path) -> anyhow::Result<Tls> {
    let (cert, key, ca_file) = match &cfg.files {
        Some((c, k)) => (c.clone(), k.clone(), None),
        None => {
            let dir = data_dir.join("tls");
            if dir.join("cert.pem").exists() {
                renew_if_due(&dir).context("cannot renew the site certificate")?;
            } else {
                let names = cfg.names.clone().unwrap_or_else(|| default_names(cfg.listen));
                create_site_ca(&dir, names).context("cannot make the site CA")?;
                println!(
                    "keel: made a site CA for HTTPS: give {} to clients",
                    dir.join("ca.pem").display()
                );
            }
            (dir.join("cert.pem"), dir.join("key.pem"), Some(dir.join("ca.pem")))
        }
    };
    let (certified, fingerprint) = certified_key(&cert, &key)?;
    let live = Arc::new(LiveCert {
        current: arc_swap::ArcSwap::from_pointee(certified),
        site_ca: ca_file.as_ref().and_then(|c| c.parent().map(Path::to_path_buf)),
        cert,
        key,
    });
    let config = rustls::ServerConfig::builder_with_provider(keel_client::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(live.clone());
    Ok(Tls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        cert: live,
        fingerprint,
        ca_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_after(dir: &Path, name: &str) -> time::OffsetDateTime {
        let pem = std::fs::read_to_string(dir.join(name)).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        rcgen::CertificateParams::from_ca_cert_der(&der).unwrap().not_after
    }

    /// The served certificate chains to ca.pem for `name`, now.
    fn chains(dir: &Path, name: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), keel_client::tls::provider())
                .build()
                .unwrap();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("cert.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &chain[0],
            &chain[1..],
            &server,
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .is_ok()
    }

    /// Issue 30: the site CA was valid until 4096. Now 10 years, its certificate one, renewed
    /// (same names, same CA) once fewer than 30 days remain; a certificate with time left stays.
    #[test]
    fn the_site_certificate_lasts_a_year_and_is_renewed_near_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        create_site_ca(d, vec!["localhost".into(), "gw.prolo".into()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let days = |t: time::OffsetDateTime| (t - now).whole_days();
        assert!((3650..=3652).contains(&days(not_after(d, "ca.pem"))));
        assert!((364..=365).contains(&days(not_after(d, "cert.pem"))));
        assert!(chains(d, "gw.prolo"));
        let before = std::fs::read(d.join("cert.pem")).unwrap();
        renew_if_due(d).unwrap();
        assert_eq!(std::fs::read(d.join("cert.pem")).unwrap(), before, "a year left: kept");

        // Ten days left: renewed, for a year, still chaining to the same ca.pem.
        let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(d.join("ca.key")).unwrap()).unwrap();
        let ca = rcgen::CertificateParams::from_ca_cert_pem(&std::fs::read_to_string(d.join("ca.pem")).unwrap())
            .unwrap()
            .self_signed(&ca_key)
            .unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "gw.prolo".into()]).unwrap();
        leaf.distinguished_name.push(rcgen::DnType::CommonName, "keel");
        write_leaf(d, leaf, &ca, &ca_key, 10).unwrap();
        assert!(days(not_after(d, "cert.pem")) <= 10);
        renew_if_due(d).unwrap();
        assert!((364..=365).contains(&days(not_after(d, "cert.pem"))));
        assert!(chains(d, "gw.prolo") && chains(d, "localhost"), "same names, same CA");
        assert!(certified_key(&d.join("cert.pem"), &d.join("key.pem")).is_ok());
    }
}
