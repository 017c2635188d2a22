//! keel.toml: the file's shape and, in `load`, the one function that turns file, `KEEL_*`
//! variables and flags into the validated [`ServeConfig`].
//!
//! Each section *is* the config type of the crate that owns it (`[dns]` is
//! `keel_dns::DnsConfig`, `[propagation]` is `keel_propagate::EngineConfig`, …): it deserializes
//! straight from its table with `#[serde(default, deny_unknown_fields)]`, its doc comments are
//! the keys' documentation, and its `Default` is the one place each default is written.
//! `reference` makes docs/keel.md's table, keel.toml(5) and `keel serve --print-defaults` from
//! them; tidy refuses a default written anywhere else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use keel_model::Pools;
use serde::{Deserialize, Serialize};

mod load;
pub mod reference;

pub use load::{expand_home, load, ConfigErrors, Flags, Listener, Propagation, ServeConfig, Tls};

/// The production config file, read when it exists and no `--config` is given.
pub const SYSTEM_CONFIG: &str = "/etc/keel/keel.toml";

/// keel.toml. Every key is optional; unknown keys are errors naming the key.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// The HTTP address: API, pages, netboot, /sso (production: 0.0.0.0:80).
    pub listen: SocketAddr,
    /// keel's data directory: its database, secrets, signing key, site CA, TFTP and boot files.
    /// The files other keys place in it by default are relative paths, taken under it.
    pub data_dir: PathBuf,
    /// Serve REST reads without a token (the prologin RPC `query` is always open).
    pub open_reads: bool,
    /// Worker threads of the runtime (default: one per core).
    pub workers: Option<usize>,
    /// A PostgreSQL URL, for several servers on one database (default: SQLite in the data
    /// directory).
    pub database: Option<String>,
    /// IP pools per machine type and uid pools per group.
    pub pools: Pools,
    /// What one HTTP client can hold.
    pub http: HttpLimits,
    /// The change feed (`GET /api/v1/watch`, `/poll`).
    pub watch: keel_server::WatchConfig,
    /// Retention of the change log, and the access log.
    pub log: LogConfig,
    /// keel's own log lines.
    pub logging: LoggingConfig,
    /// The engine that pushes services to destinations.
    pub propagation: keel_propagate::EngineConfig,
    /// The built-in authoritative DNS.
    pub dns: keel_dns::DnsConfig,
    /// The read-only TFTP server for network boot.
    pub tftp: keel_tftp::TftpConfig,
    /// The iPXE scripts of `GET /boot/{mac}` and the files they load.
    pub netboot: keel_web::netboot::NetbootConfig,
    /// Sessions, their expiry, and how machines prove who they are.
    pub presence: keel_server::presence::PresenceConfig,
    /// nginx `auth_request` answers.
    pub sso: keel_server::sso::SsoConfig,
    /// The administration pages.
    pub web: keel_web::WebConfig,
    /// prologin's RPC clients' shared secret.
    pub rpc: RpcConfig,
    /// prologin's `/poll` feeds (mdbsync, udbsync).
    pub sync: SyncConfig,
    /// Homes on home file servers.
    pub homes: keel_server::homes::HomesConfig,
    /// HTTPS beside the plain HTTP listener.
    pub tls: TlsConfig,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("keel-data"),
            open_reads: false,
            workers: None,
            database: None,
            pools: Pools::default(),
            http: HttpLimits::default(),
            watch: keel_server::WatchConfig::default(),
            log: LogConfig::default(),
            logging: LoggingConfig::default(),
            propagation: keel_propagate::EngineConfig::default(),
            dns: keel_dns::DnsConfig::default(),
            tftp: keel_tftp::TftpConfig::default(),
            netboot: keel_web::netboot::NetbootConfig::default(),
            presence: keel_server::presence::PresenceConfig::default(),
            sso: keel_server::sso::SsoConfig::default(),
            web: keel_web::WebConfig::default(),
            rpc: RpcConfig::default(),
            sync: SyncConfig::default(),
            homes: keel_server::homes::HomesConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// `[tls]`: HTTPS beside the plain HTTP listener (docs/tls.md).
#[derive(Debug, Default, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Where HTTPS is served (e.g. "0.0.0.0:443"); without it, no TLS.
    pub listen: Option<SocketAddr>,
    /// The certificate chain (PEM); with `key_file`, or neither: keel then makes a site CA and a
    /// certificate for `names` in DATA_DIR/tls on first start.
    pub cert_file: Option<PathBuf>,
    /// The certificate's key (PEM).
    pub key_file: Option<PathBuf>,
    /// Names and addresses the generated certificate is for (default: localhost, 127.0.0.1 and
    /// the listen address when it is not a wildcard).
    pub names: Option<Vec<String>>,
    /// Send browsers from the plain listener's pages to HTTPS (308); machine-facing routes (API,
    /// RPC, /poll, netboot, /sso, /healthz, /metrics) are never redirected.
    pub redirect_web: bool,
}

/// `[http]`: what one HTTP client can hold, and what `serve_http` enforces on each connection.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// Connections open at once; over it a new one is closed at once. keel raises its open-file
    /// limit to the hard limit at start; the unit's LimitNOFILE must allow this plus the
    /// database, DNS, TFTP and three per ssh session (`[propagation.ssh] max_channels`).
    pub max_connections: usize,
    /// Time to send a request's headers.
    #[serde(rename = "header_timeout_secs", with = "keel_limits::duration::secs")]
    #[schemars(with = "u64")]
    pub header_timeout: std::time::Duration,
    /// Time to send a request's body once its headers are in.
    #[serde(rename = "body_timeout_secs", with = "keel_limits::duration::secs")]
    #[schemars(with = "u64")]
    pub body_timeout: std::time::Duration,
    /// A response unread this long closes its connection: a client that stops reading (a kernel
    /// download, a watch stream) holds nothing for long.
    #[serde(rename = "write_timeout_secs", with = "keel_limits::duration::secs")]
    #[schemars(with = "u64")]
    pub write_timeout: std::time::Duration,
    /// Connections one address may hold at once.
    pub max_per_source: usize,
    /// Connections a trusted proxy (`[sso] trusted_proxies`, `[web] sso_proxies`: nginx speaks
    /// for many) may hold at once.
    pub max_per_proxy: usize,
    /// The last connections of `max_connections` go only to addresses that hold fewer than 4:
    /// whoever floods, the others still get in (at most half of `max_connections`).
    pub reserve: usize,
    /// The addresses of the proxies (their share is `max_per_proxy`): from `[sso]` and `[web]`.
    #[serde(skip)]
    #[schemars(skip)]
    pub proxies: Vec<ipnet::IpNet>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(30),
            write_timeout: std::time::Duration::from_secs(30),
            max_per_source: 256,
            max_per_proxy: 2048,
            reserve: 256,
            proxies: Vec::new(),
        }
    }
}

/// `[rpc]`: prologin's RPC clients' shared secret.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// A file whose first line is the shared secret; calls whose `hmac` it signs act as
    /// `principal` (an admin). Without it, `hmac` is accepted and ignored, as prologin did.
    pub secret_file: Option<PathBuf>,
    /// The name the change log records for signed calls.
    pub principal: String,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            secret_file: None,
            principal: "prologin-rpc".into(),
        }
    }
}

/// `[sync]`: prologin's `/poll` feeds (mdbsync, udbsync).
#[derive(Debug, Default, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// A file whose first line is prologin's sync subscriber secret: `/poll` then needs a valid
    /// `hmac` query parameter, as prologin's sync servers did. Without it, `/poll` is open to
    /// the site's network (like the RPC `query`).
    pub subscriber_secret_file: Option<PathBuf>,
}

/// `[logging]`: keel's own log lines (not the change log, which is `[log]`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// Which lines are written: a level (`error`, `warn`, `info`, `debug`, `trace`) or a list of
    /// directives (`info,keel_store=debug`). `RUST_LOG` wins when set. Changes on a reload.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

/// `[log]`: retention of the change log (a watcher older than what is kept gets a snapshot), and
/// the access log.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Keep at most this many changes.
    pub keep_changes: u64,
    /// Drop changes older than this many days (default: no age limit).
    pub keep_days: Option<u64>,
    /// Log every HTTP request (client, method, path without its query, status, time) at info
    /// level, target `keel::access`.
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            keep_changes: 1_000_000,
            keep_days: None,
            access: false,
        }
    }
}

impl FileConfig {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}
