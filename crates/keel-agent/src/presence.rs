//! `keel-agent presence`: the machine side of presence (the original's *presenced*).
//!
//! - `pam`: run by `pam_exec` at authentication, session open and close. At authentication
//!   (`expose_authtok`) it sends the password the person typed to keel over HTTPS and keeps the
//!   one-time proof keel answers (root's, in `proof_dir`); at open it asks keel to log the user in
//!   on this machine with that proof; a refusal prints keel's reason (pam_exec's `stdout` shows
//!   it) and fails the session. When keel cannot be reached, a per-group policy decides.
//! - `heartbeat`: every `interval_secs`, tells keel who utmp says is logged in here.
//!
//! Configuration: `/etc/keel/presence.toml` (see `contrib/presence.toml`). Machines booted from
//! one NFS root share it: the hostname comes from the system, the site secret from a file.

use keel_client::routes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

/// What to do with a login when keel cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unreachable {
    /// Let the user in.
    Open,
    /// Refuse the login.
    Closed,
    /// Refuse while the last known `contest_mode` is on; let in otherwise.
    Contest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    /// keel's base URL, e.g. `http://gw` or `https://gw` (machines reach keel by IP or `hosts`,
    /// never its DNS).
    pub url: String,
    /// For an `https://` URL, the site CA (PEM) keel's certificate must chain to (required then:
    /// the presence secret never goes to a server nobody vouched for).
    pub ca_file: Option<PathBuf>,
    /// The site's presence secret (keel's `<data_dir>/presence.secret`), first line.
    #[serde(default = "default_secret_file")]
    pub secret_file: PathBuf,
    /// This machine's name in keel (default: the system's short hostname).
    pub hostname: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Who is logged in (heartbeat).
    #[serde(default = "default_utmp")]
    pub utmp_file: PathBuf,
    /// The last `contest_mode` keel told the heartbeat (for the `contest` policy while unreachable).
    #[serde(default = "default_state")]
    pub state_file: PathBuf,
    /// Accounts below this uid are the machine's own: never asked about, never reported.
    #[serde(default = "default_min_uid")]
    pub min_uid: u32,
    /// The policy when keel is unreachable, by the host's group name; `default` for the rest.
    #[serde(default = "default_policy")]
    pub unreachable: BTreeMap<String, Unreachable>,
    /// Where the proof of the `auth` step waits for the `session` step (root's, 0700).
    #[serde(default = "default_proof_dir")]
    pub proof_dir: PathBuf,
}

fn default_secret_file() -> PathBuf {
    "/etc/keel/presence.secret".into()
}
fn default_timeout() -> u64 {
    5
}
fn default_interval() -> u64 {
    15
}
fn default_utmp() -> PathBuf {
    "/var/run/utmp".into()
}
fn default_state() -> PathBuf {
    "/var/lib/keel-agent/presence.json".into()
}
fn default_proof_dir() -> PathBuf {
    "/run/keel-agent/proofs".into()
}
fn default_min_uid() -> u32 {
    1000
}
fn default_policy() -> BTreeMap<String, Unreachable> {
    BTreeMap::from([
        ("roots".into(), Unreachable::Open),
        ("orga".into(), Unreachable::Open),
        ("user".into(), Unreachable::Contest),
        ("default".into(), Unreachable::Open),
    ])
}

/// Why presence could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    #[error("keel is unreachable: {0}")]
    Unreachable(String),
    /// keel answered with an error (not a refusal).
    #[error("keel answered {status}: {message}")]
    Server { status: u16, message: String },
}

impl PresenceConfig {
    pub fn load(path: &Path) -> Result<Self, PresenceError> {
        let err = |message: String| PresenceError::Config {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut cfg: Self = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        cfg.url = cfg.url.trim_end_matches('/').to_owned();
        if cfg.url.starts_with("https://") && cfg.ca_file.is_none() {
            return Err(err(
                "an https:// url needs ca_file (the site CA, keel's DATA_DIR/tls/ca.pem)".into(),
            ));
        }
        if !cfg.url.starts_with("http://") && !cfg.url.starts_with("https://") {
            return Err(err(format!("url must be http://… or https://… (got {:?})", cfg.url)));
        }
        for (k, v) in default_policy() {
            cfg.unreachable.entry(k).or_insert(v);
        }
        Ok(cfg)
    }

    fn secret(&self) -> Result<String, PresenceError> {
        let text = std::fs::read_to_string(&self.secret_file).map_err(|e| PresenceError::Config {
            path: self.secret_file.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(text.lines().next().unwrap_or("").trim().to_owned())
    }

    /// This machine's name: configured, else the kernel's hostname up to the first dot.
    pub fn hostname(&self) -> String {
        self.hostname.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .split('.')
                .next()
                .unwrap_or("")
                .to_owned()
        })
    }
}

/// keel's answer: status and JSON body.
struct Reply {
    status: u16,
    body: serde_json::Value,
}

/// Trusts only the site CA in `ca` (ring, as keel).
fn tls_config(ca: &Path) -> Result<ureq::tls::TlsConfig, PresenceError> {
    let bad = |message: String| PresenceError::Config {
        path: ca.display().to_string(),
        message,
    };
    let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    #[allow(deprecated)] // ring: see keel_client::tls::provider
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .unversioned_rustls_crypto_provider(provider)
        .build())
}

fn call(
    cfg: &PresenceConfig,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Reply, PresenceError> {
    let mut builder = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(cfg.timeout_secs.max(1))))
        .http_status_as_error(false);
    if let Some(ca) = &cfg.ca_file {
        builder = builder.tls_config(tls_config(ca)?);
    }
    let agent: ureq::Agent = builder.build().into();
    let url = format!("{}{path}", cfg.url);
    let secret = cfg.secret()?;
    let unreachable = |e: ureq::Error| PresenceError::Unreachable(e.to_string());
    let mut resp = match (method, body) {
        ("POST", Some(b)) => agent
            .post(&url)
            .header("x-keel-presence-secret", &secret)
            .header("content-type", "application/json")
            .send(b.to_string())
            .map_err(unreachable)?,
        _ => agent
            .delete(&url)
            .header("x-keel-presence-secret", &secret)
            .call()
            .map_err(unreachable)?,
    };
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Ok(Reply {
        status,
        body: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    })
}

/// What the PAM hook decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow(String),
    Refuse(String),
}

/// A proof waits at most this long for its session step (keel's own limit is 120 s).
const PROOF_TTL: Duration = Duration::from_secs(120);

/// The `auth` step: `password` (what the person typed, from pam_exec's `expose_authtok`) for a
/// proof keel issues, kept for the `session` step. Only over HTTPS with the site CA: a password
/// never crosses the network in clear.
pub fn prove(cfg: &PresenceConfig, login: &str, password: &str) -> Result<(), PresenceError> {
    let path = proof_path(cfg, login)?;
    if !cfg.url.starts_with("https://") {
        return Err(PresenceError::Config {
            path: "url".into(),
            message: "a password goes to keel only over https:// (keel's [tls] listen, with ca_file)".into(),
        });
    }
    let body = json!({"login": login, "hostname": cfg.hostname(), "password": password});
    let r = call(cfg, "POST", routes::PROOFS, Some(body))?;
    let proof = match r.body["proof"].as_str() {
        Some(p) if r.status == 201 => p.to_owned(),
        _ => {
            return Err(PresenceError::Server {
                status: r.status,
                message: message(&r.body, "no proof"),
            })
        }
    };
    keep_proof(&path, &proof).map_err(|message| PresenceError::Config {
        path: path.display().to_string(),
        message,
    })
}

/// Where `login`'s proof waits: a file named after the login, which must look like one
/// (PAM_USER is whatever was typed at the prompt: no `/`, no `..`, nothing but a-z, 0-9, `_`).
fn proof_path(cfg: &PresenceConfig, login: &str) -> Result<PathBuf, PresenceError> {
    let plain = login
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !plain || login.is_empty() || login.len() > 31 {
        return Err(PresenceError::Config {
            path: "PAM_USER".into(),
            message: format!("not a keel login: {:?}", login.chars().take(32).collect::<String>()),
        });
    }
    Ok(cfg.proof_dir.join(login))
}

fn keep_proof(path: &Path, proof: &str) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let dir = path.parent().unwrap_or(Path::new("/"));
    let private = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        // Open to others (made by someone else, or by hand): narrowed before a proof goes in.
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)));
    private.map_err(|e| format!("{}: {e}", dir.display()))?;
    crate::fsops::write_atomic(path, proof.as_bytes(), 0o600).map_err(|f| f.message)
}

/// The proof the `auth` step left for `login`, taken (removed) whether used or not; none if it
/// is older than a proof lives.
fn take_proof(cfg: &PresenceConfig, login: &str) -> Option<String> {
    let path = proof_path(cfg, login).ok()?;
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < PROOF_TTL);
    let proof = std::fs::read_to_string(&path).ok();
    let _ = std::fs::remove_file(&path);
    proof.filter(|_| fresh).map(|p| p.trim().to_owned())
}

/// Session open: ask keel (with the `auth` step's proof, if any); apply the policy if keel
/// cannot be reached.
pub fn open(cfg: &PresenceConfig, login: &str, groups: &[String]) -> Verdict {
    let host = cfg.hostname();
    let body = json!({"login": login, "hostname": host, "proof": take_proof(cfg, login)});
    match call(cfg, "POST", routes::SESSIONS, Some(body)) {
        Ok(r) if r.status == 201 || r.status == 200 => Verdict::Allow(format!("{login} logged in on {host}")),
        Ok(r) if r.status == 423 => Verdict::Refuse(message(&r.body, "refused")),
        Ok(r) => policy(
            cfg,
            groups,
            &format!("keel answered {}: {}", r.status, message(&r.body, "error")),
        ),
        Err(e) => policy(cfg, groups, &e.to_string()),
    }
}

/// Session close: best effort, never blocks a logout.
pub fn close(cfg: &PresenceConfig, login: &str) -> Result<(), PresenceError> {
    let path = routes::session(login).map_err(|e| PresenceError::Config {
        path: "login".into(),
        message: e.to_string(),
    })?;
    let r = call(cfg, "DELETE", &path, None)?;
    if r.status == 204 {
        Ok(())
    } else {
        Err(PresenceError::Server {
            status: r.status,
            message: message(&r.body, "error"),
        })
    }
}

fn message(body: &serde_json::Value, fallback: &str) -> String {
    body["error"].as_str().unwrap_or(fallback).to_owned()
}

/// The unreachable-keel policy for a user of `groups` (their first group with a policy wins).
pub fn policy(cfg: &PresenceConfig, groups: &[String], why: &str) -> Verdict {
    let rule = groups
        .iter()
        .find_map(|g| cfg.unreachable.get(g))
        .or_else(|| cfg.unreachable.get("default"))
        .copied()
        .unwrap_or(Unreachable::Open);
    let contest = last_contest_mode(cfg);
    let closed = match rule {
        Unreachable::Open => false,
        Unreachable::Closed => true,
        Unreachable::Contest => contest,
    };
    if closed {
        Verdict::Refuse(format!(
            "{why}; logins of your group are refused while keel cannot be reached"
        ))
    } else {
        Verdict::Allow(format!("{why}; login allowed by the unreachable policy"))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    contest_mode: bool,
}

/// The last `contest_mode` a heartbeat learnt; on when unknown (the safe side for contestants).
fn last_contest_mode(cfg: &PresenceConfig) -> bool {
    std::fs::read(&cfg.state_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<State>(&b).ok())
        .is_none_or(|s| s.contest_mode)
}

/// One heartbeat: the logins utmp shows (but the machine's own accounts, below `min_uid`), sent
/// to keel; keel's `contest_mode` remembered. Returns keel's answer.
pub fn heartbeat(cfg: &PresenceConfig) -> Result<serde_json::Value, PresenceError> {
    let mut logins: Vec<String> = crate::utmp::logged_in(&cfg.utmp_file)
        .into_iter()
        .filter(|l| uid_of(l).is_none_or(|u| u >= cfg.min_uid))
        .collect();
    logins.sort();
    logins.dedup();
    let body = json!({"hostname": cfg.hostname(), "logins": logins});
    let r = call(cfg, "POST", routes::SESSIONS_HEARTBEAT, Some(body))?;
    if r.status != 200 {
        return Err(PresenceError::Server {
            status: r.status,
            message: message(&r.body, "error"),
        });
    }
    if let Some(c) = r.body["contest_mode"].as_bool() {
        remember(cfg, c);
    }
    Ok(r.body)
}

fn remember(cfg: &PresenceConfig, contest_mode: bool) {
    let tmp = cfg.state_file.with_extension("tmp");
    if let Some(dir) = cfg.state_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let data = serde_json::to_vec(&State { contest_mode }).unwrap_or_default();
    if std::fs::write(&tmp, data).is_ok() {
        let _ = std::fs::rename(&tmp, &cfg.state_file);
    }
}

/// A user's uid and groups as the system resolves them (NSS: files, or whatever the host uses).
pub fn uid_of(login: &str) -> Option<u32> {
    let out = std::process::Command::new("id")
        .args(["-u", "--", login])
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

pub fn groups_of(login: &str) -> Vec<String> {
    std::process::Command::new("id")
        .args(["-Gn", "--", login])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> PresenceConfig {
        let p = dir.join("presence.toml");
        std::fs::write(
            &p,
            format!(
                "url = \"http://127.0.0.1:1/\"\nsecret_file = \"{0}/s\"\nstate_file = \"{0}/state.json\"\ntimeout_secs = 1\n\
                 [unreachable]\nuser = \"contest\"\nguests = \"closed\"\n",
                dir.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.join("s"), "secret-secret-secret\n").unwrap();
        PresenceConfig::load(&p).unwrap()
    }

    #[test]
    fn unreachable_policy_by_group_and_last_contest_mode() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        let refused = |g: &[&str]| {
            let g: Vec<String> = g.iter().map(|s| s.to_string()).collect();
            matches!(open(&c, "alice", &g), Verdict::Refuse(_))
        };
        // Nothing known yet: contest assumed on.
        assert!(refused(&["user"]));
        assert!(!refused(&["orga"]) && !refused(&["roots"]) && !refused(&["other"]));
        assert!(refused(&["guests"]));
        remember(&c, false);
        assert!(!refused(&["user"]));
        remember(&c, true);
        assert!(refused(&["user"]));
    }

    #[test]
    fn a_password_goes_only_over_https_and_a_proof_only_to_its_login() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.proof_dir = dir.path().join("proofs");
        let e = prove(&c, "alice", "pw").unwrap_err().to_string();
        assert!(e.contains("https://"), "{e}");
        for bad in ["../etc/passwd", "a/b", "", ".", "..", "Alice", "a\0b", &"x".repeat(40)] {
            assert!(proof_path(&c, bad).is_err(), "{bad:?}");
        }
        let path = proof_path(&c, "alice").unwrap();
        keep_proof(&path, "1.2.3").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&c.proof_dir), mode(&path)), (0o700, 0o600));
        assert_eq!(take_proof(&c, "bob"), None);
        assert_eq!(take_proof(&c, "alice").as_deref(), Some("1.2.3"));
        assert_eq!(take_proof(&c, "alice"), None, "taken once");
        // One left behind by an auth step long ago is not presented.
        keep_proof(&path, "4.5.6").unwrap();
        let old = std::time::SystemTime::now() - PROOF_TTL - Duration::from_secs(1);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(take_proof(&c, "alice"), None);
        assert!(!path.exists());
    }

    #[test]
    fn the_shipped_example_loads() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/presence.toml");
        let c = PresenceConfig::load(&example).unwrap();
        assert!(c.url.starts_with("https://"), "proofs need HTTPS: {}", c.url);
    }

    #[test]
    fn config_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.toml");
        std::fs::write(&p, "url = \"ftp://x\"\n").unwrap();
        let e = PresenceConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("p.toml") && e.contains("http://"), "{e}");
        // HTTPS, but nothing to check the server against: refused (the secret would go anywhere).
        std::fs::write(&p, "url = \"https://x\"\n").unwrap();
        let e = PresenceConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("ca_file"), "{e}");
        std::fs::write(&p, "url = \"http://x\"\nbogus = 1\n").unwrap();
        assert!(PresenceConfig::load(&p).unwrap_err().to_string().contains("bogus"));
    }
}
