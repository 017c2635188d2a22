//! keel.toml: the file's shape (every key optional, unknown keys refused) and, in `load`, the one
//! function that turns file, `KEEL_*` variables and flags into the validated [`ServeConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use keel_model::Pools;
use serde::Deserialize;

mod load;

pub use load::{expand_home, load, ConfigErrors, Flags, Listener, Propagation, ServeConfig, Tls};

/// The production config file, read when it exists and no `--config` is given.
pub const SYSTEM_CONFIG: &str = "/etc/keel/keel.toml";

/// The config file's shape. Every field is optional; unknown fields are errors naming the field.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub open_reads: Option<bool>,
    /// Worker threads of the runtime (default: one per core).
    pub workers: Option<usize>,
    /// A PostgreSQL URL (several servers on one database); default: SQLite in the data directory.
    pub database: Option<String>,
    pub pools: Option<Pools>,
    #[serde(default)]
    pub watch: WatchFile,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default)]
    pub logging: LoggingFile,
    #[serde(default)]
    pub propagation: PropagationFile,
    #[serde(default)]
    pub dns: DnsFile,
    #[serde(default)]
    pub tftp: TftpFile,
    #[serde(default)]
    pub netboot: NetbootFile,
    #[serde(default)]
    pub presence: PresenceFile,
    #[serde(default)]
    pub sso: SsoFile,
    #[serde(default)]
    pub web: WebFile,
    #[serde(default)]
    pub rpc: RpcFile,
    #[serde(default)]
    pub sync: SyncFile,
    #[serde(default)]
    pub homes: HomesFile,
    #[serde(default)]
    pub tls: TlsFile,
    #[serde(default)]
    pub http: HttpFile,
}

/// `[tls]`: HTTPS beside the plain HTTP listener (docs/tls.md).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// Where HTTPS is served (e.g. "0.0.0.0:443"); without it, no TLS.
    pub listen: Option<SocketAddr>,
    /// The certificate chain (PEM) and its key; without them keel makes a site CA and a
    /// certificate for `names` in DATA_DIR/tls on first start.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Names and addresses the generated certificate is for (default: localhost, 127.0.0.1 and
    /// the listen address when it is not a wildcard).
    pub names: Option<Vec<String>>,
    /// Send browsers from the plain listener's pages to HTTPS (308); machine-facing routes
    /// (API, RPC, /poll, netboot, /sso, /healthz, /metrics) are never redirected (default false).
    pub redirect_web: Option<bool>,
}

/// `[homes]`: homes on home file servers (docs/homes.md).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomesFile {
    /// The program (and arguments) that moves a home between two HFS, run by
    /// `keel users move-home` with KEEL_LOGIN, KEEL_UID, KEEL_FROM_HFS, KEEL_TO_HFS set.
    pub move_hook: Option<Vec<String>>,
    /// How long the move hook may run (default 3600).
    pub move_timeout_secs: Option<u64>,
    /// How long a first login waits for its home to be created on its HFS (default 3; keep it
    /// below the machines' PAM hook timeout, keel-agent presence `timeout_secs`, default 5).
    pub login_wait_secs: Option<u64>,
}

impl HomesFile {
    pub fn config(&self) -> keel_server::homes::HomesConfig {
        let d = keel_server::homes::HomesConfig::default();
        keel_server::homes::HomesConfig {
            move_hook: self.move_hook.clone().filter(|h| !h.is_empty()),
            move_timeout: self
                .move_timeout_secs
                .map_or(d.move_timeout, std::time::Duration::from_secs),
            login_wait: self
                .login_wait_secs
                .map_or(d.login_wait, std::time::Duration::from_secs),
        }
    }
}

/// `[http]`: what one HTTP client can hold.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    /// Connections open at once (default 4096); over it a new one is closed at once. keel raises
    /// its open-file limit to the hard limit at start; the unit's LimitNOFILE must allow this
    /// plus the database, DNS and TFTP.
    pub max_connections: Option<usize>,
    /// Seconds to send a request's headers (default 10).
    pub header_timeout_secs: Option<u64>,
    /// Seconds to send a request's body once its headers are in (default 30).
    pub body_timeout_secs: Option<u64>,
    /// Seconds a response may stay unread before its connection is closed (default 30): a client
    /// that stops reading (a kernel download, a watch stream) holds nothing for long.
    pub write_timeout_secs: Option<u64>,
    /// Connections one address may hold at once (default 256); a trusted proxy's
    /// (`[sso] trusted_proxies`, `[web] sso_proxies`: nginx speaks for many) `max_per_proxy`
    /// (default 2048).
    pub max_per_source: Option<usize>,
    pub max_per_proxy: Option<usize>,
    /// The last connections of `max_connections` (default 256) go only to addresses that hold
    /// fewer than 4: whoever floods, the others still get in.
    pub reserve: Option<usize>,
}

/// What `serve_http` enforces on each connection.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: std::time::Duration,
    pub body_timeout: std::time::Duration,
    pub write_timeout: std::time::Duration,
    pub max_per_source: usize,
    pub max_per_proxy: usize,
    pub reserve: usize,
    /// The addresses of the proxies (their share is `max_per_proxy`).
    pub proxies: Vec<ipnet::IpNet>,
}

impl HttpFile {
    pub fn limits(&self, proxies: Vec<ipnet::IpNet>) -> HttpLimits {
        let secs = |v: Option<u64>, d| std::time::Duration::from_secs(v.unwrap_or(d).max(1));
        let max_connections = self.max_connections.unwrap_or(4096).max(1);
        HttpLimits {
            max_connections,
            header_timeout: secs(self.header_timeout_secs, 10),
            body_timeout: secs(self.body_timeout_secs, 30),
            write_timeout: secs(self.write_timeout_secs, 30),
            max_per_source: self.max_per_source.unwrap_or(256).max(1),
            max_per_proxy: self.max_per_proxy.unwrap_or(2048).max(1),
            reserve: self.reserve.unwrap_or(256).min(max_connections / 2),
            proxies,
        }
    }
}

/// `[rpc]`: prologin's RPC clients' shared secret.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcFile {
    /// A file whose first line is the shared secret; calls whose `hmac` it signs act as `principal`
    /// (an admin). Without it, `hmac` is accepted and ignored, as before.
    pub secret_file: Option<std::path::PathBuf>,
    /// The name the change log records for signed calls (default `prologin-rpc`).
    pub principal: Option<String>,
}

/// `[sync]`: prologin's `/poll` feeds (mdbsync, udbsync).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncFile {
    /// A file whose first line is prologin's sync subscriber secret: `/poll` then needs a valid
    /// `hmac` query parameter, as prologin's sync servers did. Without it, `/poll` is open to
    /// the site's network (like the RPC `query`).
    pub subscriber_secret_file: Option<std::path::PathBuf>,
}

/// `[web]`: the administration pages.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebFile {
    /// Mark the session cookie Secure (default true: HTTPS only, localhost exempt). A site serving
    /// the pages over plain HTTP on its LAN sets false.
    pub secure_cookies: Option<bool>,
    /// Take nginx's SSO login (`X-SSO-User`) as the web login (default false). Needs
    /// `sso_proxies`: only those addresses may vouch for a login.
    pub trust_sso: Option<bool>,
    /// The addresses of the nginx that sets `X-SSO-User` (no default: a local user on keel's host
    /// could otherwise claim any login through loopback).
    pub sso_proxies: Option<Vec<ipnet::IpNet>>,
    /// A session unused for this long ends (default 8).
    pub idle_hours: Option<u64>,
}

impl WebFile {
    pub fn config(&self) -> anyhow::Result<keel_web::WebConfig> {
        let d = keel_web::WebConfig::default();
        let sso_proxies = match (self.trust_sso.unwrap_or(false), &self.sso_proxies) {
            (false, _) => Vec::new(),
            (true, Some(p)) if !p.is_empty() => p.clone(),
            (true, _) => anyhow::bail!(
                "needs sso_proxies = [\"ADDRESS/32\", …]: the nginx that sets X-SSO-User \
                 (loopback is not trusted by default: any local user could claim a login through it)"
            ),
        };
        Ok(keel_web::WebConfig {
            secure_cookies: self.secure_cookies.unwrap_or(d.secure_cookies),
            sso_proxies,
            idle: self
                .idle_hours
                .map_or(d.idle, |h| std::time::Duration::from_secs(h.max(1) * 3600)),
        })
    }
}

/// `[presence]`: sessions, their expiry, and how machines prove who they are.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceFile {
    /// A session without a heartbeat for this long is closed (default 30).
    pub timeout_secs: Option<u64>,
    /// After a start, heartbeats rebuild sessions and logins wait this long (default: timeout).
    pub recovery_secs: Option<u64>,
    /// The site secret machines send with presence calls (default `<data_dir>/presence.secret`,
    /// made on first start, mode 0600).
    pub secret_file: Option<PathBuf>,
    /// `/map` without a token (default true: the site's network sees who sits where).
    pub map_public: Option<bool>,
    /// Which sessions a machine opens only with proof of the person's password: `off`,
    /// `password` (users who have one), `required` (default for a data directory made by this
    /// version; `off` for an older one).
    pub proof: Option<keel_model::ProofPolicy>,
    /// Proxies whose client-address header presence believes (default none: machines call keel
    /// directly; `[sso] trusted_proxies` is nginx's, not the machines').
    pub trusted_proxies: Option<Vec<ipnet::IpNet>>,
}

/// `[sso]`: nginx `auth_request` answers.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoFile {
    /// The header nginx puts the client's address in (default `X-Real-IP`); presence reads it
    /// too, from its own `trusted_proxies`.
    pub client_header: Option<String>,
    /// Peers whose client header is believed (default 127.0.0.1 and ::1).
    pub trusted_proxies: Option<Vec<ipnet::IpNet>>,
    /// Machines that always map to a login: `hostname = "login"`.
    #[serde(default)]
    pub overrides: std::collections::HashMap<String, String>,
}

impl SsoFile {
    pub fn client_addr(&self) -> keel_server::presence::ClientAddrConfig {
        let d = keel_server::presence::ClientAddrConfig::default();
        keel_server::presence::ClientAddrConfig {
            header: self
                .client_header
                .as_deref()
                .map_or(d.header, |h| h.trim().to_ascii_lowercase()),
            trusted_proxies: self.trusted_proxies.clone().unwrap_or(d.trusted_proxies),
        }
    }
}

/// `[netboot]`: the iPXE scripts of `GET /boot/{mac}` and the files they load.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetbootFile {
    /// Kernels and initrds, served at /boot/files/ (default `<data_dir>/boot`).
    pub files_dir: Option<PathBuf>,
    /// Site templates (`nfsroot.ipxe`, `local.ipxe`, …) replacing the shipped ones.
    pub templates: Option<PathBuf>,
    /// The URL machines reach keel at (default: the request's Host).
    pub base_url: Option<String>,
    /// Kernel and initrd of RFS N under files_dir (`{rfs}` replaced; defaults rfs{rfs}/vmlinuz,
    /// rfs{rfs}/initrd.img).
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    /// The NFS export of an RFS (default /export/nfsroot).
    pub nfs_path: Option<String>,
    /// More kernel arguments.
    pub cmdline: Option<String>,
    /// iPXE lines for machines in `install` mode.
    pub install: Option<String>,
    /// The type of a machine that registers itself (default `user`): never the machine's choice.
    pub self_registration_type: Option<keel_model::MachineType>,
}

impl NetbootFile {
    pub fn config(&self, data_dir: &Path) -> keel_web::netboot::NetbootConfig {
        let d = keel_web::netboot::NetbootConfig::default();
        keel_web::netboot::NetbootConfig {
            files_dir: self.files_dir.clone().unwrap_or_else(|| data_dir.join("boot")),
            templates_dir: self.templates.clone(),
            base_url: self.base_url.clone().map(|u| u.trim_end_matches('/').to_owned()),
            kernel: self.kernel.clone().unwrap_or(d.kernel),
            initrd: self.initrd.clone().unwrap_or(d.initrd),
            nfs_path: self.nfs_path.clone().unwrap_or(d.nfs_path),
            cmdline: self.cmdline.clone().unwrap_or(d.cmdline),
            install: self.install.clone().unwrap_or(d.install),
        }
    }
}

/// `[tftp]`: the read-only TFTP server for network boot.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TftpFile {
    /// Serve TFTP (default true).
    pub enabled: Option<bool>,
    /// Default 127.0.0.1:6969; production 0.0.0.0:69.
    pub listen: Option<SocketAddr>,
    /// The directory served (default `<data_dir>/tftp`, created if missing).
    pub root: Option<PathBuf>,
    /// Milliseconds before a block is resent, unless the client asks otherwise (default 1000).
    pub retransmit_ms: Option<u64>,
    /// Transfers at once, at most (default 512); more requests are answered "busy".
    pub max_transfers: Option<usize>,
    /// Transfers at once from one address (default 4); more are answered "busy".
    pub max_per_source: Option<usize>,
}

/// `[dns]`: the built-in authoritative DNS.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    /// Serve DNS (default true).
    pub enabled: Option<bool>,
    /// UDP and TCP address (default 127.0.0.1:5353; production: 0.0.0.0:53).
    pub listen: Option<SocketAddr>,
    /// The forward zone (default `prolo`).
    pub zone: Option<String>,
    /// TTL of answers (default 60).
    pub ttl: Option<u32>,
    /// The machine named in NS records (default `gw`).
    pub ns: Option<String>,
    /// Resolvers for names outside keel's zones (`ip:port`); none: REFUSED.
    #[serde(default)]
    pub upstream: Vec<SocketAddr>,
    /// Networks whose queries for outside names are forwarded (default: loopback and the pools'
    /// networks); others get REFUSED, so keel is no open resolver.
    pub forward_clients: Option<Vec<ipnet::IpNet>>,
    /// Forwarded queries in flight at once (default 64); over it, SERVFAIL at once.
    pub max_forwards: Option<usize>,
    /// Forwarded queries per source address and minute (default 600); over it, REFUSED.
    pub forward_per_minute: Option<u32>,
    /// DNS-over-TCP connections at once (default 128); over it a new one is closed.
    pub max_tcp: Option<usize>,
}

impl DnsFile {
    /// With the generators' options: the built-in DNS names the unknown machines' DHCP range as
    /// the `dns` service does for BIND. The error names its key (`dns.zone`, `dns.ns`).
    pub fn config(&self, generators: &keel_gen::Options) -> Result<keel_dns::DnsConfig, keel_model::ValidationError> {
        let d = keel_dns::DnsConfig::default();
        let zone = self
            .zone
            .clone()
            .unwrap_or(d.zone)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        keel_model::propagation::check_fqdn("dns.zone", &zone)?;
        let ns = self.ns.clone().unwrap_or(d.ns);
        keel_model::Hostname::parse("dns.ns", &ns)?;
        Ok(keel_dns::DnsConfig {
            zone,
            ttl: self.ttl.unwrap_or(d.ttl),
            ns,
            upstream: self.upstream.clone(),
            forward_clients: self.forward_clients.clone().unwrap_or_default(),
            max_forwards: self.max_forwards.unwrap_or(d.max_forwards),
            forward_per_minute: self.forward_per_minute.unwrap_or(d.forward_per_minute),
            max_tcp: self.max_tcp.unwrap_or(d.max_tcp),
            dynamic: generators
                .dhcp
                .unknown_range
                .filter(|_| generators.dns.unknown_names)
                .map(|(first, last)| keel_dns::DynamicNames {
                    first,
                    last,
                    prefix: generators.dns.unknown_prefix.clone(),
                }),
        })
    }
}

impl TftpFile {
    pub fn config(&self, data_dir: &Path) -> keel_tftp::TftpConfig {
        keel_tftp::TftpConfig {
            max_transfers: self.max_transfers.unwrap_or(keel_tftp::MAX_TRANSFERS),
            max_per_source: self.max_per_source.unwrap_or(keel_tftp::MAX_PER_SOURCE),
            root: self.root.clone().unwrap_or_else(|| data_dir.join("tftp")),
            timeout: Duration::from_millis(self.retransmit_ms.unwrap_or(1000).max(10)),
        }
    }
}

/// `[propagation]`: the engine that pushes services to destinations.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropagationFile {
    /// Run the engine (default true).
    pub enabled: Option<bool>,
    /// Wait this long after a change before generating, so a burst becomes one run (default 2000).
    pub debounce_ms: Option<u64>,
    /// Sends in flight at once (default 64).
    pub parallel: Option<usize>,
    /// A send that takes longer is killed and counted as failed (default 120).
    pub send_timeout_secs: Option<u64>,
    /// How often failed destinations are looked at again (default 3600).
    pub recheck_secs: Option<u64>,
    /// Resend everything this often even if unchanged; 0 never (default 86400).
    pub refresh_secs: Option<u64>,
    /// First retry after a failure; doubles up to `retry_max_secs` (defaults 5 and 3600).
    pub retry_min_secs: Option<u64>,
    pub retry_max_secs: Option<u64>,
    /// Send bundles zstd-compressed (default true; a 10,000-user `passwd` goes from 2.2 to 0.9 MB).
    /// Set false only while some destination still runs a keel-agent that reads plain tars only.
    pub compress: Option<bool>,
    /// The ed25519 key bundles are signed with (default `<data_dir>/bundle.key`, made at first start).
    pub key_file: Option<PathBuf>,
    /// The agent command for `local` destinations (default: `keel-agent apply`, the keel-agent
    /// installed beside keel when there is one).
    pub local_command: Option<Vec<String>>,
    #[serde(default)]
    pub ssh: keel_propagate::SshConfig,
    #[serde(default)]
    pub generators: keel_gen::Options,
    /// Custom services: `[propagation.services.NAME] command = [...]`.
    #[serde(default)]
    pub services: std::collections::BTreeMap<String, keel_propagate::CustomService>,
}

impl PropagationFile {
    /// The engine's timings and generator options.
    pub fn engine_config(&self) -> keel_propagate::EngineConfig {
        let d = keel_propagate::EngineConfig::default();
        let secs = |v: Option<u64>, dflt: Duration| v.map_or(dflt, Duration::from_secs);
        keel_propagate::EngineConfig {
            debounce: self.debounce_ms.map_or(d.debounce, Duration::from_millis),
            parallel: self.parallel.unwrap_or(d.parallel),
            send_timeout: secs(self.send_timeout_secs, d.send_timeout),
            recheck: secs(self.recheck_secs, d.recheck).max(Duration::from_secs(1)),
            refresh: match self.refresh_secs {
                Some(0) => None,
                Some(s) => Some(Duration::from_secs(s)),
                None => d.refresh,
            },
            retry_min: secs(self.retry_min_secs, d.retry_min),
            retry_max: secs(self.retry_max_secs, d.retry_max),
            gen: self.generators.clone(),
            encoding: match self.compress {
                Some(false) => keel_bundle::Encoding::Tar,
                _ => keel_bundle::Encoding::Zstd,
            },
        }
    }
}

/// `[logging]`: keel's own log lines (not the change log, which is `[log]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingFile {
    /// Which lines are written: a level (`error`, `warn`, `info`, `debug`, `trace`) or a list of
    /// directives (`info,keel_store=debug`); default `info`. `RUST_LOG` wins when set. Changes
    /// on a reload.
    pub level: Option<String>,
}

/// `[watch]`: the change feed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchFile {
    /// Seconds between heartbeat lines on an idle stream (default 10).
    pub heartbeat_secs: Option<u64>,
    /// Chunks of up to 64 KiB of lines queued per subscriber (default 16).
    pub buffer: Option<usize>,
    /// Seconds a subscriber may accept nothing before it is cut off (default 30).
    pub stall_timeout_secs: Option<u64>,
    /// Watch and `/poll` streams open at once (default 2048); over it, 503.
    pub max_subscribers: Option<usize>,
}

/// `[log]`: retention of the change log. A watcher older than what is kept gets a snapshot.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// Keep at most this many changes (default 1,000,000).
    pub keep_changes: Option<u64>,
    /// Drop changes older than this many days (default: no age limit).
    pub keep_days: Option<u64>,
    /// Log every HTTP request (client, method, path without its query, status, time) at info
    /// level, target `keel::access` (default false).
    pub access: Option<bool>,
}

impl WatchFile {
    pub fn config(&self) -> keel_server::WatchConfig {
        let d = keel_server::WatchConfig::default();
        keel_server::WatchConfig {
            heartbeat: self.heartbeat_secs.map_or(d.heartbeat, std::time::Duration::from_secs),
            buffer: self.buffer.unwrap_or(d.buffer),
            stall_timeout: self
                .stall_timeout_secs
                .map_or(d.stall_timeout, std::time::Duration::from_secs),
            max_subscribers: self.max_subscribers.unwrap_or(d.max_subscribers),
            // Read from `[sync] subscriber_secret_file` when the server starts.
            subscriber_secret: None,
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

pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:5353";
pub const DEFAULT_TFTP_LISTEN: &str = "127.0.0.1:6969";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "keel-data";
