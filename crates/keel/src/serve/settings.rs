//! The settings of keel-server's routes that come from files: the presence secret (made on first
//! start) and prologin's RPC secret.

use anyhow::Context;
use keel_client::data_dir as files;

use crate::config::ServeConfig;

/// The presence settings; the site secret is read from its file, made on first start.
pub(super) fn presence_config(cfg: &ServeConfig) -> anyhow::Result<keel_server::presence::PresenceConfig> {
    let timeout = std::time::Duration::from_secs(cfg.presence.timeout_secs.unwrap_or(30).max(1));
    let path = cfg
        .presence
        .secret_file
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join(files::PRESENCE_SECRET));
    Ok(keel_server::presence::PresenceConfig {
        timeout,
        recovery: cfg
            .presence
            .recovery_secs
            .map_or(timeout, std::time::Duration::from_secs),
        secret: Some(super::data_dir::read_or_create_secret(&path)?.into()),
    })
}

/// The first line of a secret file, which must not be empty.
fn first_line(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    anyhow::ensure!(!secret.is_empty(), "{}: the {what} is empty", path.display());
    Ok(secret)
}

/// prologin's sync subscriber secret, when `[sync] subscriber_secret_file` names one.
pub(super) fn sync_secret(cfg: &ServeConfig) -> anyhow::Result<Option<keel_server::Secret>> {
    cfg.sync
        .subscriber_secret_file
        .as_deref()
        .map(|path| first_line(path, "sync subscriber secret").map(Into::into))
        .transpose()
}

/// prologin's RPC shared secret, when `[rpc] secret_file` names one.
pub(super) fn rpc_secret(cfg: &ServeConfig) -> anyhow::Result<Option<keel_server::rpc::RpcSecret>> {
    let Some(path) = &cfg.rpc.secret_file else {
        return Ok(None);
    };
    let secret = first_line(path, "RPC secret")?;
    Ok(Some(keel_server::rpc::RpcSecret {
        secret: secret.into(),
        principal: keel_model::Principal {
            name: cfg.rpc.principal.clone().unwrap_or_else(|| "prologin-rpc".into()),
            ..keel_model::Principal::system()
        },
    }))
}
