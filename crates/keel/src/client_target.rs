//! Where a client command (`keel machine list`…) finds keel and its token, so that `keel` on the
//! gateway just works: the flags (`--url`, `--token`, `--data-dir`) and their `KEEL_*` variables
//! first, then the user's client file (`~/.config/keel/cli.toml`), then the server's own config
//! file (`--config`, `KEEL_CONFIG`, `/etc/keel/keel.toml`): its `listen` address and the admin
//! token in its `data_dir`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::config::{expand_home, FileConfig, SYSTEM_CONFIG};
use keel_client::data_dir as files;

/// Why a client command went without a token (the admin token's file could not be read).
static NO_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// What to tell someone whose request was refused for want of a token: which file could not be
/// read, and the ways to give one.
pub fn missing_token_hint() -> Option<String> {
    let why = NO_TOKEN.get()?;
    Some(format!(
        "no token was sent: {why}\n  give one with --token or KEEL_TOKEN, or `token_file = \"PATH\"` in {}; \
         an admin makes one with `keel token create --name NAME --role readonly` (or admin) (on keel's host, root \
         and the keel user can read the first admin token in the data directory)",
        cli_file_path().map_or_else(|| "~/.config/keel/cli.toml".to_owned(), |p| p.display().to_string())
    ))
}

/// `~/.config/keel/cli.toml` (or `$KEEL_CLI_CONFIG`): for a user who runs commands away from
/// keel's host, or with a token of their own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliFile {
    /// keel's URL.
    pub url: Option<String>,
    /// A file whose first line is the token to use.
    pub token_file: Option<PathBuf>,
    /// For an `https://` URL: the site CA's PEM file…
    pub ca_file: Option<PathBuf>,
    /// …or the SHA-256 fingerprint of keel's certificate (what `keel serve` prints).
    pub pin: Option<String>,
}

/// What the flags said (each `None` when not given).
#[derive(Debug, Default)]
pub struct Given<'a> {
    pub url: Option<&'a str>,
    pub token: Option<&'a str>,
    pub data_dir: Option<&'a Path>,
    pub ca_file: Option<&'a Path>,
    pub pin: Option<&'a str>,
    /// `--config`/`KEEL_CONFIG`: must be readable. Without it the system file is read when it
    /// is there and readable (a user outside keel's group just gets the defaults).
    pub config: Option<&'a Path>,
    /// The client file's path (default: [`cli_file_path`]).
    pub cli_file: Option<PathBuf>,
}

/// The URL, token and (for HTTPS) trust a client command uses.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub token: Option<String>,
    pub trust: Option<keel_client::tls::Trust>,
}

/// `$KEEL_CLI_CONFIG`, else `$XDG_CONFIG_HOME/keel/cli.toml`, else `~/.config/keel/cli.toml`.
pub fn cli_file_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KEEL_CLI_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("keel/cli.toml"))
}

fn read_cli_file(path: &Path) -> anyhow::Result<CliFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("invalid client file {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CliFile::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read client file {}", path.display())),
    }
}

/// The server's config as a client sees it: an explicit file must load; the system file is used
/// only when this user may read it.
pub fn server_file(explicit: Option<&Path>) -> anyhow::Result<Option<FileConfig>> {
    match explicit {
        Some(p) => FileConfig::read(p).map(Some),
        None => Ok(FileConfig::read(Path::new(SYSTEM_CONFIG)).ok()),
    }
}

/// Where the server of this config is reached: a port 0 (a test's, or a free port) is the one it
/// wrote in its data directory.
fn server_url(listen: SocketAddr, data_dir: &Path) -> String {
    let bound = (listen.port() == 0)
        .then(|| std::fs::read_to_string(data_dir.join(files::LISTEN_ADDR)).ok())
        .flatten()
        .and_then(|a| a.trim().parse().ok());
    local_url(bound.unwrap_or(listen))
}

/// Where keel is reached from its own host: a wildcard listen address becomes loopback.
pub fn local_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

fn first_line(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read token file {}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// Resolves the URL and token, each from the first source that has one.
pub fn resolve(given: &Given<'_>) -> anyhow::Result<Target> {
    let cli = match given.cli_file.clone().or_else(cli_file_path) {
        Some(p) => read_cli_file(&p)?,
        None => CliFile::default(),
    };
    // No server file: its defaults (keel on this host, at its default address).
    let server = server_file(given.config)?.unwrap_or_default();
    let trust = match (given.ca_file, given.pin, &cli.ca_file, &cli.pin) {
        (Some(f), _, _, _) => Some(keel_client::tls::Trust::CaFile(f.to_path_buf())),
        (None, Some(p), _, _) => Some(keel_client::tls::Trust::Pin(p.to_owned())),
        (None, None, Some(f), _) => Some(keel_client::tls::Trust::CaFile(f.clone())),
        (None, None, None, Some(p)) => Some(keel_client::tls::Trust::Pin(p.clone())),
        (None, None, None, None) => None,
    };
    let dir = expand_home(given.data_dir.unwrap_or(&server.data_dir));
    let url = given
        .url
        .map(str::to_owned)
        .or(cli.url)
        .unwrap_or_else(|| server_url(server.listen, &dir));
    let token = match (given.token, &cli.token_file) {
        (Some(t), _) => Some(t.to_owned()),
        (None, Some(f)) => Some(first_line(&expand_home(f))?),
        // Unreadable (not keel's group, another data directory): no token, and why, for the
        // server's 401 to be explained.
        (None, None) => {
            let path = dir.join(files::ADMIN_TOKEN);
            match first_line(&path) {
                Ok(t) => Some(t),
                Err(e) => {
                    let _ = NO_TOKEN.set(format!("{e:#}"));
                    None
                }
            }
        }
    };
    Ok(Target { url, token, trust })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the gateway: no flag, the server's file says where keel listens and keeps its token.
    #[test]
    fn the_server_file_gives_the_url_and_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join(files::ADMIN_TOKEN), "admin-token\n").unwrap();
        let config = dir.path().join("keel.toml");
        let toml = format!("listen = \"0.0.0.0:80\"\ndata_dir = \"{}\"\n", data.display());
        std::fs::write(&config, toml).unwrap();
        let none = dir.path().join("no-cli.toml");
        let given = Given {
            config: Some(&config),
            cli_file: Some(none.clone()),
            ..Given::default()
        };
        let t = resolve(&given).unwrap();
        assert_eq!(t.url, "http://127.0.0.1:80");
        assert_eq!(t.token.as_deref(), Some("admin-token"));
        // The user's client file comes before the server's; the flags before both.
        let cli = dir.path().join("cli.toml");
        let token_file = dir.path().join("mine.token");
        std::fs::write(&token_file, "my-token\n").unwrap();
        std::fs::write(
            &cli,
            format!(
                "url = \"http://keel.example:8080\"\ntoken_file = \"{}\"\n",
                token_file.display()
            ),
        )
        .unwrap();
        let given = Given {
            config: Some(&config),
            cli_file: Some(cli.clone()),
            ..Given::default()
        };
        assert_eq!(
            resolve(&given).unwrap(),
            Target {
                url: "http://keel.example:8080".into(),
                token: Some("my-token".into()),
                trust: None,
            }
        );
        let given = Given {
            url: Some("http://flag:1"),
            token: Some("flag-token"),
            config: Some(&config),
            cli_file: Some(cli),
            ..Given::default()
        };
        assert_eq!(resolve(&given).unwrap().url, "http://flag:1");
        // Nothing anywhere: the defaults.
        let given = Given {
            config: Some(&dir.path().join("empty.toml")),
            cli_file: Some(none),
            ..Given::default()
        };
        std::fs::write(dir.path().join("empty.toml"), "").unwrap();
        let default = FileConfig::default().listen;
        assert_eq!(resolve(&given).unwrap().url, format!("http://{default}"));
    }

    #[test]
    fn a_bad_client_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let cli = dir.path().join("cli.toml");
        std::fs::write(&cli, "ulr = \"x\"\n").unwrap();
        let empty = dir.path().join("keel.toml");
        std::fs::write(&empty, "").unwrap();
        let given = Given {
            config: Some(&empty),
            cli_file: Some(cli),
            ..Given::default()
        };
        let e = format!("{:#}", resolve(&given).unwrap_err());
        assert!(e.contains("cli.toml") && e.contains("ulr"), "{e}");
        assert_eq!(local_url("[::]:8080".parse().unwrap()), "http://[::1]:8080");
        assert_eq!(local_url("10.0.0.1:80".parse().unwrap()), "http://10.0.0.1:80");
    }
}
