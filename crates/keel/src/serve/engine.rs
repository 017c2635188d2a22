//! Starting the propagation engine for `keel serve`: its key, its services, its senders.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use keel_bundle::SecretKey;
use keel_propagate::{Engine, Senders};
use keel_store::Db;

use crate::config::Propagation;

/// Reads the signing key, or makes one (mode 0600) on first start.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<SecretKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            SecretKey::from_base64(&text).with_context(|| format!("{}: not a keel signing key", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::generate()?;
            super::data_dir::create_private_file(path, &key.to_base64())?;
            tracing::info!(public_key = %key.public(), "made the bundle signing key; agents must trust this public key");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// `keel-agent apply`: the keel-agent installed beside this binary, else this binary's own
/// `keel agent apply` (the same agent, built in).
fn default_local_command() -> Vec<String> {
    let exe = std::env::current_exe().ok();
    let beside = exe
        .as_ref()
        .and_then(|p| p.parent().map(|d| d.join("keel-agent")))
        .filter(|p| p.exists());
    match (beside, exe) {
        (Some(agent), _) => vec![agent.display().to_string(), "apply".into()],
        (None, Some(keel)) => vec![keel.display().to_string(), "agent".into(), "apply".into()],
        (None, None) => vec!["keel-agent".into(), "apply".into()],
    }
}

/// The example site's agent: keel's own host, writing under the data directory, so that a new
/// user sees real files appear (`<data>/example-agent/root/etc/bind/keel`, `…/etc/hosts`).
fn example_agent(data_dir: &Path, key: &SecretKey) -> anyhow::Result<Vec<String>> {
    let dir = std::fs::canonicalize(data_dir)?.join("example-agent");
    std::fs::create_dir_all(dir.join("root/etc"))?;
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "# Written by keel serve --example-site.\nfqdn = \"gw.prolo\"\ndns_alias_whitelist = [\"local\"]\n\
             trusted_keys = [\"{}\"]\nroot_dir = \"{}\"\n[services.dns]\ndir = \"/etc/bind/keel\"\n[services.dhcp]\ndir = \"/etc/dhcp/keel\"\n",
            key.public(),
            dir.join("root").display()
        ),
    )?;
    println!(
        "keel: the example site's facility gw propagates dns, dhcp and hosts to {}",
        dir.join("root").display()
    );
    let exe = std::env::current_exe()?;
    Ok(vec![
        exe.display().to_string(),
        "agent".into(),
        "--config".into(),
        cfg.display().to_string(),
        "apply".into(),
    ])
}

pub async fn start(db: Arc<Db>, p: &Propagation, data_dir: &Path, example: bool) -> anyhow::Result<Engine> {
    let key = load_or_create_key(&p.key_file)?;
    let local = match &p.local_command {
        Some(c) => c.clone(),
        None if example => example_agent(data_dir, &key)?,
        None => default_local_command(),
    };
    let mut ssh = p.ssh.clone();
    if ssh.control_dir.is_none() && !ssh.control_persist.is_empty() {
        let dir = data_dir.join("ssh");
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        ssh.control_dir = Some(dir);
    }
    let senders = Senders { ssh, local };
    Ok(Engine::start(db, p.engine.clone(), key, Arc::new(senders), p.services.clone()).await?)
}
