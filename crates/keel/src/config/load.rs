//! `load`: the one way `keel serve`'s configuration is made — defaults < config file < `KEEL_*`
//! variables < flags — and checked whole before anything opens. It reads the config file and the
//! files it names (secrets, certificates, the signing key, when they exist) and nothing else: no
//! database, no lock, no port. `keel serve --check`, a start and a reload all call it, so a file
//! that passes `--check` is a file keel starts with.
//!
//! Errors are collected, not stopped at: every one is returned, each naming the file, the line
//! and the key (`/etc/keel/keel.toml:12: [dns] zone: …`). A value from a flag names the flag.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_server::ServerConfig;
use serde::Serialize;

use super::{FileConfig, HttpLimits, SYSTEM_CONFIG};

/// What `load` reads besides the file: the command line, with the `KEEL_*` variables clap reads
/// into the same fields (a flag wins over its variable).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--config`: the file; without it /etc/keel/keel.toml if it exists, else the defaults.
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub dns_listen: Option<SocketAddr>,
    pub tftp_listen: Option<SocketAddr>,
    pub example_site: bool,
    pub open_reads: bool,
    pub database: Option<String>,
    pub workers: Option<usize>,
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// The file it is in (none for a flag).
    pub file: Option<PathBuf>,
    /// 1-based, when the key is in the file.
    pub line: Option<usize>,
    /// The key, as a TOML path (`dns.zone`), or the flag (`--workers`); empty for the file itself.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: ", file.display())?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, _) => {}
        }
        if !self.key.is_empty() {
            match self.key.rsplit_once('.') {
                _ if self.key.starts_with("--") => write!(f, "{}: ", self.key)?,
                Some((section, key)) => write!(f, "[{section}] {key}: ")?,
                None => write!(f, "{}: ", self.key)?,
            }
        }
        f.write_str(&self.message)
    }
}

/// Every error found, in the file's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "invalid configuration ({n} error{})", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The validated configuration `keel serve` runs with: every value decided, every derived value
/// computed. Files keel makes on first start (secrets, the signing key, the site CA) are not made
/// here; `keel serve` makes them.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The file read, if any: a reload reads it again.
    pub file: Option<PathBuf>,
    /// The file as TOML, for a reload to tell what changed.
    pub raw: toml::Table,
    pub flags: Flags,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub example_site: bool,
    pub workers: Option<usize>,
    pub database: Option<String>,
    pub http: HttpLimits,
    pub pools: keel_model::Pools,
    /// `[logging] level` (an `EnvFilter` directive list); `RUST_LOG` wins over it.
    pub log_level: String,
    pub keep_changes: u64,
    pub keep_days: Option<u64>,
    /// What keel-server's routes need. The presence secret is `None` here when its file is yet
    /// to be made (first start): `keel serve` makes it.
    pub server: ServerConfig,
    /// What keel-web's pages and iPXE menus need.
    pub pages: keel_web::Config,
    /// `[presence] proof` as the file sets it; unset, the database's age decides
    /// (`Db::default_proof_policy`).
    pub presence_proof: Option<keel_model::ProofPolicy>,
    pub propagation: Option<Propagation>,
    pub dns: Option<Listener<keel_dns::DnsConfig>>,
    pub tftp: Option<Listener<keel_tftp::TftpConfig>>,
    pub tls: Option<Tls>,
}

/// A UDP service: where it listens and how it behaves.
#[derive(Debug, Clone)]
pub struct Listener<T> {
    pub listen: SocketAddr,
    /// The address was asked for: failing to bind it is an error, not a warning.
    pub explicit: bool,
    pub config: T,
}

/// `[propagation]`, decided.
#[derive(Debug, Clone)]
pub struct Propagation {
    pub engine: keel_propagate::EngineConfig,
    pub services: BTreeMap<String, keel_propagate::Service>,
    pub key_file: PathBuf,
    pub local_command: Option<Vec<String>>,
    pub ssh: keel_propagate::SshConfig,
}

/// `[tls]`, decided: HTTPS at `listen` with the site's files or keel's site CA.
#[derive(Debug, Clone)]
pub struct Tls {
    pub listen: SocketAddr,
    /// The site's certificate chain and key; none: keel's site CA in DATA_DIR/tls.
    pub files: Option<(PathBuf, PathBuf)>,
    /// Names the site CA's certificate is for.
    pub names: Option<Vec<String>>,
    pub redirect_web: bool,
}

/// Errors as (key, message), before they are given their file and line.
#[derive(Default)]
struct Found(Vec<(String, String)>);

impl Found {
    fn add(&mut self, key: &str, message: impl fmt::Display) {
        self.0.push((key.to_owned(), message.to_string()));
    }

    /// The value, or `None` with the error recorded under `key`.
    fn ok<T, E: fmt::Display>(&mut self, key: &str, r: Result<T, E>) -> Option<T> {
        r.map_err(|e| self.add(key, e)).ok()
    }
}

/// The file `load` reads for these flags: `--config`, else the system file if it exists.
pub fn config_path(flags: &Flags) -> Option<PathBuf> {
    flags
        .config
        .clone()
        .or_else(|| Path::new(SYSTEM_CONFIG).exists().then(|| PathBuf::from(SYSTEM_CONFIG)))
}

/// Reads and checks the whole configuration; every error, or a config `keel serve` can run with.
pub fn load(flags: &Flags) -> Result<ServeConfig, ConfigErrors> {
    let path = config_path(flags);
    let text = match &path {
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: Some(p.clone()),
                line: None,
                key: String::new(),
                message: format!("cannot read the config file: {e}"),
            }])
        })?,
        None => String::new(),
    };
    let at = |key: String, message: String| ConfigError {
        file: path.clone(),
        line: if key.starts_with("--") {
            None
        } else {
            line_of(&text, &key)
        },
        key,
        message,
    };
    let file: FileConfig = toml::from_str(&text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.clone(),
            line: e.span().map(|s| line_at(&text, s.start)),
            key: String::new(),
            message: e.message().trim().to_owned(),
        }])
    })?;
    let raw: toml::Table = toml::from_str(&text).unwrap_or_default();
    let mut found = Found::default();
    let cfg = decide(file, &raw, flags, &mut found);
    if found.0.is_empty() {
        if let Some(mut cfg) = cfg {
            cfg.file = path;
            cfg.raw = raw;
            return Ok(cfg);
        }
    }
    let mut errors: Vec<ConfigError> = found.0.into_iter().map(|(k, m)| at(k, m)).collect();
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    Err(ConfigErrors(errors))
}

/// Decides every value, recording what is wrong in `found`. `raw` tells a key the file gives
/// from one left at its default (an address asked for must be bound).
fn decide(file: FileConfig, raw: &toml::Table, flags: &Flags, found: &mut Found) -> Option<ServeConfig> {
    let data_dir = expand_home(flags.data_dir.as_ref().unwrap_or(&file.data_dir));
    let workers = flags.workers.or(file.workers);
    if workers == Some(0) {
        found.add(
            flag_or_key(flags.workers.is_some(), "--workers", "workers"),
            "must be at least 1",
        );
    }
    let database = flags.database.clone().or_else(|| file.database.clone());
    if let Some(url) = &database {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            found.add(
                flag_or_key(flags.database.is_some(), "--database", "database"),
                format!(
                    "must be a postgres:// URL (got {:?}); SQLite in the data directory is the default",
                    crate::serve::redact(url)
                ),
            );
        }
    }
    let mut pools = file.pools.clone();
    check_pools(&pools, found);
    check_dhcp(&mut pools, &file.propagation.gen.dhcp, found);
    found.ok("logging.level", crate::logging::parse_level(&file.logging.level));
    let web = web(&file, found);
    let dns = dns(&file, raw, flags, found);
    let tftp = tftp(&file, raw, flags, &data_dir, found);
    let netboot = netboot(&file, &data_dir, found);
    let gen = &file.propagation.gen;
    let mut reserved_names = vec![file.dns.ns.clone(), gen.dns.ns.clone()];
    reserved_names.dedup();
    let registration = keel_server::Registration {
        machine_type: file.netboot.self_registration_type,
        // The site's own names a machine registering itself may not take: the name its NS
        // records give, and the DHCP range's names for unknown machines (`dhcp-192-168-0-99`).
        reserved_names,
        reserved_prefixes: vec![format!("{}-", gen.dns.unknown_prefix)],
    };
    let propagation = file
        .propagation
        .enabled
        .then(|| propagation(&file, &data_dir, found))
        .flatten();
    let tls = file.tls.listen.map(|listen| Tls {
        listen,
        files: tls_files(&file, found),
        names: file.tls.names.clone(),
        redirect_web: file.tls.redirect_web,
    });
    let presence = presence(&file, &data_dir, found);
    let rpc_secret = rpc_secret(&file, found);
    let subscriber_secret = file
        .sync
        .subscriber_secret_file
        .as_deref()
        .and_then(|p| found.ok("sync.subscriber_secret_file", first_line(p, "sync subscriber secret")))
        .map(Into::into);
    let http = http(&file, found);
    let homes = keel_server::homes::HomesConfig {
        move_hook: file.homes.move_hook.clone().filter(|h| !h.is_empty()),
        ..file.homes.clone()
    };
    let presence = presence?;
    let server = ServerConfig {
        open_reads: flags.open_reads || file.open_reads,
        data_dir: data_dir.clone(),
        watch: keel_server::WatchConfig {
            subscriber_secret,
            ..file.watch.clone()
        },
        registration,
        client_addr: file.sso.client_addr(),
        sso: file.sso.clone(),
        rpc_secret,
        homes,
        access_log: file.log.access,
        presence,
    };
    Some(ServeConfig {
        file: None,
        raw: toml::Table::new(),
        flags: flags.clone(),
        listen: flags.listen.unwrap_or(file.listen),
        data_dir,
        example_site: flags.example_site,
        workers,
        database,
        http,
        pools,
        log_level: file.logging.level.clone(),
        keep_changes: file.log.keep_changes,
        keep_days: file.log.keep_days,
        server,
        pages: keel_web::Config { web: web?, netboot },
        presence_proof: file.presence.proof_setting,
        propagation,
        dns,
        tftp,
        tls,
    })
}

fn flag_or_key<'a>(from_flag: bool, flag: &'a str, key: &'a str) -> &'a str {
    if from_flag {
        flag
    } else {
        key
    }
}

/// Whether the file gives `key` (a dotted path), rather than leaving it at its default.
fn given(raw: &toml::Table, key: &str) -> bool {
    let mut table = raw;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        match (table.get(part), parts.peek()) {
            (Some(_), None) => return true,
            (Some(toml::Value::Table(t)), Some(_)) => table = t,
            _ => return false,
        }
    }
    false
}

/// A count or a duration a check needs above zero (a zero timeout would close every
/// connection; zero connections would serve no one).
fn at_least<T: PartialOrd + fmt::Debug>(found: &mut Found, key: &str, value: T, min: T) {
    if value < min {
        found.add(key, format!("must be at least {min:?}"));
    }
}

fn web(file: &FileConfig, found: &mut Found) -> Option<keel_web::WebConfig> {
    let web = file.web.clone();
    if web.trust_sso && web.sso_proxies.is_empty() {
        found.add(
            "web.trust_sso",
            "needs sso_proxies = [\"ADDRESS/32\", …]: the nginx that sets X-SSO-User \
             (loopback is not trusted by default: any local user could claim a login through it)",
        );
        return None;
    }
    at_least(found, "web.idle_hours", web.idle, Duration::from_secs(3600));
    Some(web)
}

fn dns(
    file: &FileConfig,
    raw: &toml::Table,
    flags: &Flags,
    found: &mut Found,
) -> Option<Listener<keel_dns::DnsConfig>> {
    if !file.dns.enabled {
        return None;
    }
    let mut config = file.dns.clone();
    config
        .normalize()
        .map_err(|e| found.add(&format!("dns.{}", e.field.trim_start_matches("dns.")), e.message))
        .ok()?;
    let gen = &file.propagation.gen;
    // The built-in DNS names the unknown machines' DHCP range as the `dns` service does for BIND.
    config.dynamic = gen
        .dhcp
        .unknown_range
        .filter(|_| gen.dns.unknown_names)
        .map(|(first, last)| keel_dns::DynamicNames {
            first,
            last,
            prefix: gen.dns.unknown_prefix.clone(),
        });
    Some(Listener {
        listen: flags.dns_listen.unwrap_or(config.listen),
        explicit: flags.dns_listen.is_some() || given(raw, "dns.listen"),
        config,
    })
}

fn tftp(
    file: &FileConfig,
    raw: &toml::Table,
    flags: &Flags,
    data_dir: &Path,
    found: &mut Found,
) -> Option<Listener<keel_tftp::TftpConfig>> {
    if !file.tftp.enabled {
        return None;
    }
    let mut config = file.tftp.clone();
    config.root = data_dir.join(&config.root);
    at_least(found, "tftp.retransmit_ms", config.timeout, Duration::from_millis(10));
    at_least(found, "tftp.max_transfers", config.max_transfers, 1);
    at_least(found, "tftp.max_per_source", config.max_per_source, 1);
    Some(Listener {
        listen: flags.tftp_listen.unwrap_or(config.listen),
        explicit: flags.tftp_listen.is_some() || given(raw, "tftp.listen"),
        config,
    })
}

fn netboot(file: &FileConfig, data_dir: &Path, found: &mut Found) -> keel_web::netboot::NetbootConfig {
    let mut netboot = file.netboot.clone();
    netboot.files_dir = data_dir.join(&netboot.files_dir);
    netboot.base_url = netboot.base_url.map(|u| u.trim_end_matches('/').to_owned());
    if let Some(dir) = &netboot.templates_dir {
        if !dir.is_dir() {
            found.add("netboot.templates", format!("{} is not a directory", dir.display()));
        }
    }
    if let Some(url) = &netboot.base_url {
        if !matches!(
            url::Url::parse(url).map(|u| u.scheme().to_owned()).as_deref(),
            Ok("http" | "https")
        ) {
            found.add("netboot.base_url", format!("{url:?} is not an http:// or https:// URL"));
        }
    }
    netboot
}

fn http(file: &FileConfig, found: &mut Found) -> HttpLimits {
    let mut http = file.http.clone();
    for (key, value) in [
        ("http.max_connections", http.max_connections),
        ("http.max_per_source", http.max_per_source),
        ("http.max_per_proxy", http.max_per_proxy),
    ] {
        at_least(found, key, value, 1);
    }
    for (key, value) in [
        ("http.header_timeout_secs", http.header_timeout),
        ("http.body_timeout_secs", http.body_timeout),
        ("http.write_timeout_secs", http.write_timeout),
    ] {
        at_least(found, key, value, Duration::from_secs(1));
    }
    http.reserve = http.reserve.min(http.max_connections / 2);
    http.proxies = proxies(file);
    http
}

/// The proxies that speak for many clients: their connections have a share of their own.
fn proxies(file: &FileConfig) -> Vec<ipnet::IpNet> {
    let mut p = file.sso.trusted_proxies.clone();
    p.extend(file.web.vouching_proxies().iter().copied());
    p
}

/// `~/…` in a path from the config, as a shell would expand it (HOME of the user keel runs as).
pub fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_owned(),
    }
}

/// Pools whose networks would make two types hand out the same address are refused (user and orga
/// may share one network, as prologin's did), as are uid ranges that are empty or overlap.
fn check_pools(pools: &keel_model::Pools, found: &mut Found) {
    use keel_model::MachineType as T;
    for (i, a) in T::ALL.iter().enumerate() {
        for b in &T::ALL[i + 1..] {
            let (na, nb) = (pools.of(*a).network, pools.of(*b).network);
            let shared = matches!((a, b), (T::User, T::Orga) | (T::Orga, T::User)) && na == nb;
            if !shared && (na.contains(&nb.network()) || nb.contains(&na.network())) {
                found.add(
                    &format!("pools.{b}.network"),
                    format!("{nb} overlaps the {a} pool {na}: a machine's address would be in two pools"),
                );
            }
        }
    }
    let groups = keel_model::Group::ALL;
    for (i, g) in groups.iter().enumerate() {
        let r = pools.uids.of(*g);
        if r.first > r.last {
            found.add(
                &format!("pools.uids.{g}.first"),
                format!("{} is above last ({})", r.first, r.last),
            );
        }
        for h in &groups[i + 1..] {
            let s = pools.uids.of(*h);
            if r.first <= s.last && s.first <= r.last {
                found.add(
                    &format!("pools.uids.{h}.first"),
                    format!(
                        "the {h} uid range {}–{} overlaps the {g} range {}–{}",
                        s.first, s.last, r.first, r.last
                    ),
                );
            }
        }
    }
}

/// The DHCP range for unknown machines lies inside one pool's network (that pool never allocates
/// it) and an explicit site network holds every pool, router and the range: a range outside every
/// pool was silently left out of dhcpd.conf before (issue 32).
fn check_dhcp(pools: &mut keel_model::Pools, dhcp: &keel_gen::DhcpOptions, found: &mut Found) {
    const KEY: &str = "propagation.generators.dhcp.unknown_range";
    if let Some((first, last)) = dhcp.unknown_range {
        let inside =
            |n: &ipnet::Ipv4Net| n.contains(&first) && n.contains(&last) && first > n.network() && last < n.broadcast();
        if first > last {
            found.add(KEY, format!("starts at {first}, after its end {last}"));
        } else if let Some(net) = pools.networks().into_iter().find(inside) {
            for t in keel_model::MachineType::ALL {
                let pool = pools.of_mut(t);
                if pool.network == net {
                    pool.dynamic = Some((first, last));
                }
            }
        } else {
            found.add(
                KEY,
                format!(
                    "{first}–{last} is not inside one pool's network (between its network and broadcast addresses): unknown machines would get no address; pools: {}",
                    pools.networks().iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }
    if dhcp.site_network.is_some() {
        if let Err(why) = keel_gen::dhcp_site_network(&pools.networks(), dhcp) {
            found.add("propagation.generators.dhcp.site_network", why);
        }
    }
}

fn propagation(file: &FileConfig, data_dir: &Path, found: &mut Found) -> Option<Propagation> {
    let p = &file.propagation;
    let services = found.ok("propagation.services", keel_propagate::registry(&p.services));
    let key_file = data_dir.join(&p.key_file);
    // Made on first start when missing; one that exists must be a key.
    if let Ok(text) = std::fs::read_to_string(&key_file) {
        if let Err(e) = keel_bundle::SecretKey::from_base64(&text) {
            found.add(
                "propagation.key_file",
                format!("{} is not a keel signing key: {e}", key_file.display()),
            );
        }
    } else if key_file.exists() {
        found.add("propagation.key_file", format!("cannot read {}", key_file.display()));
    }
    if p.local_command.as_ref().is_some_and(Vec::is_empty) {
        found.add(
            "propagation.local_command",
            "is empty: give the program and its arguments",
        );
    }
    at_least(found, "propagation.recheck_secs", p.recheck, Duration::from_secs(1));
    at_least(found, "propagation.parallel", p.parallel, 1);
    Some(Propagation {
        engine: p.clone(),
        services: services?,
        key_file,
        local_command: p.local_command.clone(),
        ssh: p.ssh.clone(),
    })
}

fn tls_files(file: &FileConfig, found: &mut Found) -> Option<(PathBuf, PathBuf)> {
    match (&file.tls.cert_file, &file.tls.key_file) {
        (Some(c), Some(k)) => {
            if let Err(e) = crate::serve::check_certificate(c, k) {
                found.add("tls.cert_file", format!("{e:#}"));
            }
            Some((c.clone(), k.clone()))
        }
        (None, None) => None,
        _ => {
            found.add(
                "tls.cert_file",
                "cert_file and key_file go together (or neither: keel makes a site CA)",
            );
            None
        }
    }
}

fn presence(file: &FileConfig, data_dir: &Path, found: &mut Found) -> Option<keel_server::presence::PresenceConfig> {
    let mut presence = file.presence.clone();
    presence.secret_file = data_dir.join(&presence.secret_file);
    at_least(found, "presence.timeout_secs", presence.timeout, Duration::from_secs(1));
    let secret_file = &presence.secret_file;
    presence.secret = match std::fs::read_to_string(secret_file) {
        Ok(text) => {
            let s = text.lines().next().unwrap_or("").trim().to_owned();
            if s.len() < 16 {
                found.add(
                    "presence.secret_file",
                    format!("{}: the secret must be at least 16 characters", secret_file.display()),
                );
            }
            Some(s.into())
        }
        // Made on first start.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            found.add(
                "presence.secret_file",
                format!("cannot read {}: {e}", secret_file.display()),
            );
            None
        }
    };
    // Unset: `keel serve` asks the database (ServeConfig::presence_proof).
    presence.proof = presence.proof_setting.unwrap_or_default();
    presence.client_addr = keel_server::presence::ClientAddrConfig {
        trusted_proxies: presence.trusted_proxies.clone(),
        ..file.sso.client_addr()
    };
    Some(presence)
}

/// The first line of a secret file, which must not be empty.
fn first_line(path: &Path, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        return Err(format!("{}: the {what} is empty", path.display()));
    }
    Ok(secret)
}

fn rpc_secret(file: &FileConfig, found: &mut Found) -> Option<keel_server::rpc::RpcSecret> {
    let path = file.rpc.secret_file.as_deref()?;
    let secret = found.ok("rpc.secret_file", first_line(path, "RPC secret"))?;
    Some(keel_server::rpc::RpcSecret {
        secret: secret.into(),
        principal: keel_model::Principal {
            name: file.rpc.principal.clone(),
            ..keel_model::Principal::system()
        },
    })
}

/// The 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The line of `key` (a dotted path: `dns.zone`, `propagation.services.x.command`) in the file:
/// the deepest part of the path that the file has. None for a key the file does not hold (a
/// default that a check refused: the error still names the key).
fn line_of(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut line = None;
    for part in key.split('.') {
        let Some((k, item)) = table.get_key_value(part) else {
            break;
        };
        let span = k.span().or_else(|| item.span());
        if let Some(s) = span {
            line = Some(line_at(text, s.start));
        }
        match item.as_table_like() {
            Some(t) => table = t,
            None => break,
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<ServeConfig, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(&path, text).unwrap();
        load(&Flags {
            config: Some(path),
            data_dir: Some(dir.path().join("data")),
            ..Flags::default()
        })
    }

    #[test]
    fn every_error_is_named_with_its_line() {
        let text = "listen = \"127.0.0.1:9001\"\n\n[dns]\nzone = \"bad zone!\"\n\n[web]\ntrust_sso = true\n\n[logging]\nlevel = \"keel=loud\"\n";
        let errors = load_text(text).unwrap_err().0;
        let seen: Vec<(Option<usize>, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            seen,
            [
                (Some(4), "dns.zone"),
                (Some(7), "web.trust_sso"),
                (Some(10), "logging.level")
            ],
            "{errors:#?}"
        );
        let shown = errors[0].to_string();
        assert!(shown.contains("keel.toml:4: [dns] zone: "), "{shown}");
    }

    /// Regression (issue 32): a range for unknown machines outside every pool was dropped from
    /// dhcpd.conf without a word; now it is refused, and a range inside a pool is never allocated.
    #[test]
    fn the_unknown_range_lies_in_a_pool_which_never_allocates_it() {
        let range = |r: &str| format!("[propagation.generators.dhcp]\nunknown_range = {r}\n");
        let cfg = load_text(&range("[\"192.168.1.100\", \"192.168.1.249\"]")).unwrap();
        let service = cfg.pools.of(keel_model::MachineType::Service);
        assert!(service.admits("192.168.1.99".parse().unwrap()));
        assert!(!service.admits("192.168.1.100".parse().unwrap()));
        let refused = cfg
            .pools
            .check(keel_model::MachineType::Service, "192.168.1.150".parse().unwrap());
        assert!(refused.unwrap_err().message.contains("unknown machines"));
        for bad in [
            "[\"192.168.250.1\", \"192.168.250.250\"]",
            "[\"192.168.1.200\", \"192.168.1.100\"]",
            "[\"192.168.1.0\", \"192.168.1.10\"]",
            "[\"192.168.1.250\", \"192.168.2.10\"]",
        ] {
            let e = load_text(&range(bad)).unwrap_err().0;
            assert_eq!(
                (e.len(), e[0].key.as_str(), e[0].line),
                (1, "propagation.generators.dhcp.unknown_range", Some(2)),
                "{bad}: {e:#?}"
            );
        }
        let site = |n: &str| format!("[propagation.generators.dhcp]\nsite_network = \"{n}\"\n");
        assert!(load_text(&site("192.168.0.0/22")).is_ok());
        let e = load_text(&site("192.168.0.0/23")).unwrap_err().0;
        assert!(
            e[0].message.contains("does not hold the pool network 192.168.2.0/24"),
            "{e:#?}"
        );
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let e = load_text("[dns]\nzone = \"prolo\"\nttl = \"sixty\"\n").unwrap_err().0;
        assert_eq!((e.len(), e[0].line), (1, Some(3)), "{e:#?}");
        let e = load_text("[dns]\nzonee = \"prolo\"\n").unwrap_err().0;
        assert!(e[0].message.contains("zonee") && e[0].line == Some(2), "{e:#?}");
    }

    #[test]
    fn a_good_file_loads_and_flags_win() {
        let cfg = load_text("listen = \"127.0.0.1:9001\"\n[dns]\nlisten = \"127.0.0.1:9053\"\n").unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(
            cfg.dns.as_ref().map(|d| d.listen.to_string()).as_deref(),
            Some("127.0.0.1:9053")
        );
        assert!(cfg.dns.as_ref().is_some_and(|d| d.explicit));
        let e = load(&Flags {
            workers: Some(0),
            ..Flags::default()
        })
        .unwrap_err();
        assert_eq!(e.0[0].to_string(), "--workers: must be at least 1");
    }

    #[test]
    fn overlapping_pools_are_refused() {
        let e = load_text("[pools.service]\nnetwork = \"192.168.0.0/23\"\n")
            .unwrap_err()
            .0;
        assert!(
            e.iter().any(|e| e.key == "pools.service.network" && e.line == Some(2)),
            "{e:#?}"
        );
        assert!(
            load_text("[pools.orga]\nnetwork = \"192.168.0.0/24\"\n").is_ok(),
            "user and orga may share"
        );
    }

    #[test]
    fn home_is_expanded() {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        if let Some(home) = home {
            assert_eq!(expand_home(Path::new("~/keel")), home.join("keel"));
        }
        assert_eq!(expand_home(Path::new("/srv/~x")), Path::new("/srv/~x"));
    }
}
