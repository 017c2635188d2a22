//! `/etc/keel/agent.toml`: who this host is, whom it trusts, and where things go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keel_bundle::PublicKey;
use keel_model::service::Version;
use serde::Deserialize;

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    fqdn: Option<String>,
    dns_alias_whitelist: Option<Vec<String>>,
    #[serde(default)]
    facility_whitelist: Vec<String>,
    #[serde(default)]
    trusted_keys: Vec<String>,
    root_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    hooks_dir: Option<PathBuf>,
    #[serde(default)]
    ignore_services: Vec<String>,
    max_bundle_bytes: Option<u64>,
    #[serde(default)]
    passwd: PasswdPolicy,
    #[serde(default)]
    homes: HomesFile,
    #[serde(default)]
    services: BTreeMap<String, ServiceConfig>,
}

/// `[homes]`: how the `homes` service fills a new home.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HomesFile {
    /// Copied into each new home (default `/etc/skel`; a missing directory copies nothing).
    skel: Option<PathBuf>,
}

/// What the `passwd` service may do to this host.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswdPolicy {
    /// Accept an account with uid 0 from keel (never by default: one more root is a backdoor).
    pub allow_uid0: bool,
    /// Accept two accounts sharing a uid.
    pub allow_duplicate_uids: bool,
}

/// Settings for one service (built-in or custom).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Where a custom service's files go (under `root_dir`); default `/var/lib/keel/services/NAME`.
    pub dir: Option<PathBuf>,
    /// The major.minor this host implements; a bundle of another major is refused.
    pub version: Option<String>,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub fqdn: String,
    /// Normalized host names this destination answers to (default: the FQDN).
    pub dns_alias_whitelist: Vec<String>,
    pub facility_whitelist: Vec<String>,
    pub trusted_keys: Vec<PublicKey>,
    /// Every target path lives under this (`/` in production; a prefix in tests).
    pub root_dir: PathBuf,
    pub state_dir: PathBuf,
    pub hooks_dir: PathBuf,
    pub ignore_services: Vec<String>,
    pub max_bundle_bytes: u64,
    pub passwd: PasswdPolicy,
    /// The skeleton copied into a new home (a target path, under `root_dir`).
    pub skel: PathBuf,
    pub services: BTreeMap<String, ServiceConfig>,
}

/// The largest bundle read when agent.toml sets no `max_bundle_bytes`.
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {field}: {message}")]
    Field {
        path: String,
        field: String,
        message: String,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let file: File = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let field = |field: &str, message: String| ConfigError::Field {
            path: shown.clone(),
            field: field.into(),
            message,
        };
        let fqdn = file
            .fqdn
            .filter(|f| !f.trim().is_empty())
            .ok_or_else(|| field("fqdn", "required: the name keel knows this host by".into()))?;
        let trusted_keys = file
            .trusted_keys
            .iter()
            .map(|k| PublicKey::from_base64(k).map_err(|e| field("trusted_keys", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if trusted_keys.is_empty() {
            return Err(field(
                "trusted_keys",
                "at least one key is needed (keel prints it: `keel propagation key`)".into(),
            ));
        }
        for (name, s) in &file.services {
            if let Some(v) = &s.version {
                v.parse::<Version>()
                    .map_err(|e| field(&format!("services.{name}.version"), e))?;
            }
            if let Some(dir) = &s.dir {
                if !dir.is_absolute() {
                    return Err(field(&format!("services.{name}.dir"), "must be absolute".into()));
                }
            }
        }
        let root_dir = file.root_dir.unwrap_or_else(|| PathBuf::from("/"));
        let conf_dir = path
            .parent()
            .map_or_else(|| PathBuf::from("/etc/keel"), Path::to_path_buf);
        let skel = file.homes.skel.unwrap_or_else(|| PathBuf::from("/etc/skel"));
        if !skel.is_absolute() {
            return Err(field("homes.skel", "must be absolute".into()));
        }
        let skel = under(&root_dir, &skel.to_string_lossy());
        let whitelist = file.dns_alias_whitelist.unwrap_or_else(|| vec![fqdn.clone()]);
        Ok(Self {
            dns_alias_whitelist: whitelist.iter().map(|d| keel_bundle::destination_host(d)).collect(),
            facility_whitelist: file.facility_whitelist,
            trusted_keys,
            state_dir: file
                .state_dir
                .unwrap_or_else(|| under(&root_dir, "/var/lib/keel-agent")),
            hooks_dir: file.hooks_dir.unwrap_or_else(|| conf_dir.join("agent.d")),
            root_dir,
            ignore_services: file.ignore_services,
            max_bundle_bytes: file.max_bundle_bytes.unwrap_or(DEFAULT_MAX_BUNDLE_BYTES),
            passwd: file.passwd,
            skel,
            services: file.services,
            fqdn,
        })
    }

    /// An absolute target path, placed under `root_dir`.
    pub fn target(&self, abs: &str) -> PathBuf {
        under(&self.root_dir, abs)
    }

    /// The directory a custom service's files go to.
    pub fn service_dir(&self, service: &str) -> PathBuf {
        let dir = self
            .services
            .get(service)
            .and_then(|s| s.dir.clone())
            .unwrap_or_else(|| PathBuf::from(format!("/var/lib/keel/services/{service}")));
        self.target(&dir.to_string_lossy())
    }
}

fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}
