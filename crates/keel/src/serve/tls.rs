//! HTTPS: the certificate keel serves, from the site's files or from a site CA keel makes on
//! first start (DATA_DIR/tls: ca.pem to give clients, the keys 0600), and the rustls acceptor.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFile;

/// What serving HTTPS needs, and what to tell the admin.
pub(super) struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The served certificate's SHA-256 (what `--pin` takes).
    pub fingerprint: String,
    /// The site CA to hand to clients, when keel made it.
    pub ca_file: Option<std::path::PathBuf>,
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

fn default_names(listen: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        names.push(listen.ip().to_string());
    }
    names
}

/// Makes the site CA and a certificate it signs for `names`, in `dir` (keys private).
fn create_site_ca(dir: &Path, names: Vec<String>) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "keel site CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut leaf = CertificateParams::new(names)?;
    leaf.distinguished_name.push(DnType::CommonName, "keel");
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key)?;
    crate::private_file::write(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes())?;
    crate::private_file::write(&dir.join("key.pem"), key.serialize_pem().as_bytes())?;
    // The certificates are public: clients need ca.pem.
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(dir.join("cert.pem"), format!("{}{}", cert.pem(), ca_cert.pem()))?;
    for f in ["ca.pem", "cert.pem"] {
        std::fs::set_permissions(dir.join(f), std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    }
    Ok(())
}

/// The site's certificate, or keel's own site CA (made once, then reused).
pub(super) fn load(cfg: &TlsFile, data_dir: &Path, listen: SocketAddr) -> anyhow::Result<Tls> {
    let (cert, key, ca_file) = match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), None),
        (None, None) => {
            let dir = data_dir.join("tls");
            if !dir.join("cert.pem").exists() {
                let names = cfg.names.clone().unwrap_or_else(|| default_names(listen));
                create_site_ca(&dir, names).context("cannot make the site CA")?;
                println!(
                    "keel: made a site CA for HTTPS: give {} to clients",
                    dir.join("ca.pem").display()
                );
            }
            (dir.join("cert.pem"), dir.join("key.pem"), Some(dir.join("ca.pem")))
        }
        _ => anyhow::bail!("[tls] cert_file and key_file go together (or neither: keel makes a site CA)"),
    };
    let (certs, key) = read_pem(&cert, &key)?;
    let fingerprint = keel_client::tls::fingerprint(certs[0].as_ref());
    let config = rustls::ServerConfig::builder_with_provider(keel_client::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not go together")?;
    Ok(Tls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        fingerprint,
        ca_file,
    })
}
