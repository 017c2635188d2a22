//! The services the engine knows — built-ins (pure generators of keel-gen) and custom ones (a
//! command) — and GEN itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use keel_gen::BuiltIn;
use keel_model::service::{File, Version};
use keel_model::{Facility, Kind, Snapshot};
use serde::Deserialize;

use crate::{GenError, ServiceError};

/// A custom service from keel.toml: `[propagation.services.NAME]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomService {
    /// The generator: run with the facility's data as JSON on stdin and the output directory as
    /// its last argument (and in `KEEL_OUT_DIR`); every regular file it leaves there is shipped.
    pub command: Vec<String>,
    /// `major.minor`.
    #[serde(default = "one_zero")]
    pub version: String,
    /// Which changes schedule it (default: machine and user).
    #[serde(default = "default_kinds")]
    pub kinds: Vec<Kind>,
    /// Debounce in milliseconds (default: the engine's).
    pub debounce_ms: Option<u64>,
    /// GEN timeout in seconds.
    #[serde(default = "gen_timeout")]
    pub timeout_secs: u64,
}

fn one_zero() -> String {
    "1.0".into()
}

fn default_kinds() -> Vec<Kind> {
    vec![Kind::Machine, Kind::User]
}

fn gen_timeout() -> u64 {
    60
}

/// A service as the engine runs it.
#[derive(Debug, Clone)]
pub enum Service {
    BuiltIn(BuiltIn),
    Custom(String, CustomService),
}

impl Service {
    pub fn name(&self) -> &str {
        match self {
            Self::BuiltIn(b) => b.name(),
            Self::Custom(n, _) => n,
        }
    }

    pub fn version(&self) -> Version {
        match self {
            Self::BuiltIn(b) => b.version(),
            Self::Custom(_, c) => c.version.parse().unwrap_or(Version::new(1, 0)),
        }
    }

    pub fn affected_by(&self, kind: Kind) -> bool {
        match self {
            Self::BuiltIn(b) => b.affected_by(kind),
            Self::Custom(_, c) => c.kinds.contains(&kind),
        }
    }

    pub fn debounce(&self, default: Duration) -> Duration {
        match self {
            Self::Custom(
                _,
                CustomService {
                    debounce_ms: Some(ms), ..
                },
            ) => Duration::from_millis(*ms),
            Self::BuiltIn(b) => b.debounce().unwrap_or(default),
            Self::Custom(..) => default,
        }
    }
}

/// Every service, by name.
pub fn registry(custom: &BTreeMap<String, CustomService>) -> Result<BTreeMap<String, Service>, ServiceError> {
    let mut all: BTreeMap<String, Service> = BuiltIn::ALL
        .into_iter()
        .map(|b| (b.name().to_owned(), Service::BuiltIn(b)))
        .collect();
    for (name, c) in custom {
        keel_model::propagation::check_name("propagation.services", name)?;
        if all.contains_key(name) {
            return Err(ServiceError::BuiltInName(name.clone()));
        }
        if c.command.is_empty() {
            return Err(ServiceError::NoProgram(name.clone()));
        }
        c.version.parse::<Version>().map_err(|reason| ServiceError::Version {
            name: name.clone(),
            reason,
        })?;
        all.insert(name.clone(), Service::Custom(name.clone(), c.clone()));
    }
    Ok(all)
}

/// GEN for one facility: the service's files, or why not.
pub async fn generate(
    service: &Service,
    snap: &Snapshot,
    pools: &keel_model::Pools,
    facility: &Facility,
    opts: &keel_gen::Options,
) -> Result<Vec<File>, GenError> {
    let users: Vec<_> = snap.users().filter(|u| facility.receives(u)).collect();
    match service {
        Service::BuiltIn(b) => {
            let input = keel_gen::Input {
                facility: &facility.name,
                users,
                machines: snap.machines().collect(),
                reverse_zones: pools.reverse_zones(),
                serial: snap.machines_seq(),
                networks: pools.networks(),
                sessions: snap
                    .sessions()
                    .filter_map(|s| Some((snap.machine_by_name(s.hostname.as_str())?, snap.user(s.login.as_str())?)))
                    .collect(),
                contest_mode: snap.flag("contest_mode"),
                hfs: facility.hfs,
                service_names: service_names(snap),
                hfs_servers: hfs_servers(snap),
            };
            Ok(b.generate(&input, opts)?)
        }
        Service::Custom(_, c) => {
            let data = serde_json::json!({
                "facility": facility,
                "users": users.iter().map(|u| u.public_json()).collect::<Vec<_>>(),
                "machines": snap.machines().collect::<Vec<_>>(),
                "hosts": snap.hosts_of(&facility.name).collect::<Vec<_>>(),
                "settings": snap.settings(),
                "seq": snap.seq(),
            });
            custom(c, serde_json::to_vec(&data)?).await
        }
    }
}

/// The service names each machine answers to by its roles, by machine id.
fn service_names(snap: &Snapshot) -> BTreeMap<u64, Vec<&'static str>> {
    let mut out: BTreeMap<u64, Vec<&'static str>> = BTreeMap::new();
    for r in snap.roles() {
        if let Some(keel_model::MachineRole::Service(name)) = r.role() {
            out.entry(r.machine).or_default().push(name);
        }
    }
    out
}

/// The machine of each `hfs/N` role, by N.
fn hfs_servers(snap: &Snapshot) -> BTreeMap<u32, &keel_model::Machine> {
    snap.roles()
        .filter_map(|r| match r.role()? {
            keel_model::MachineRole::Hfs(n) => Some((n, snap.machine(r.machine)?)),
            _ => None,
        })
        .collect()
}

/// What the task's status should say besides its state: for `dhcp` and `dns`, each machine whose
/// address is outside today's pools (it keeps it; `keel machine renumber` moves it) and what its
/// files then lack; for `automount`, each HFS number users have that no machine serves.
pub fn notes(service: &Service, snap: &Snapshot, pools: &keel_model::Pools) -> Vec<String> {
    if matches!(service, Service::BuiltIn(BuiltIn::Automount)) {
        let servers = hfs_servers(snap);
        let orphans: std::collections::BTreeSet<u32> = snap
            .users()
            .filter_map(|u| u.hfs)
            .filter(|n| !servers.contains_key(n))
            .collect();
        return orphans
            .into_iter()
            .map(|n| {
                format!("no machine has the role hfs/{n}: its users get no home entry (keel role set hfs/{n} MACHINE)")
            })
            .collect();
    }
    let what = match service {
        Service::BuiltIn(BuiltIn::Dhcp) => "no DHCP subnet serves its reservation",
        Service::BuiltIn(BuiltIn::Dns) => "it has no PTR record (no reverse zone holds it)",
        _ => return Vec::new(),
    };
    let networks = pools.networks();
    snap.machines_outside(pools)
        .map(|m| {
            let pool = pools.of(m.mtype);
            let served = networks.iter().any(|n| n.contains(&m.ip));
            let (whose, why) = if pool.is_dynamic(m.ip) {
                (
                    "inside the DHCP range for unknown machines of",
                    "the range may lease it to another machine",
                )
            } else if served {
                ("outside today's", "another pool's network still holds it")
            } else {
                ("outside today's", what)
            };
            format!(
                "machine {} has {}, {whose} {} pool {}: {why}; `keel machine renumber` moves it",
                m.hostname, m.ip, m.mtype, pool.network
            )
        })
        .collect()
}

async fn custom(c: &CustomService, input: Vec<u8>) -> Result<Vec<File>, GenError> {
    let dir = tempfile::tempdir()?;
    let Some((prog, args)) = c.command.split_first() else {
        return Err(GenError::Failed {
            code: "no command".into(),
            stderr: String::new(),
        });
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args).arg(dir.path()).env("KEEL_OUT_DIR", dir.path());
    let out = crate::send::run(
        cmd,
        input,
        std::sync::Arc::default(),
        Duration::from_secs(c.timeout_secs),
    )
    .await;
    if out.exit_code != Some(0) {
        let code = out
            .exit_code
            .map_or_else(|| "no exit code".to_owned(), |c| format!("exit code {c}"));
        return Err(GenError::Failed {
            code,
            stderr: out.stderr.trim().to_owned(),
        });
    }
    let mut files = Vec::new();
    collect(dir.path(), dir.path(), &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Every regular file under `dir`, as bundle files; links and other types are refused.
fn collect(root: &Path, dir: &Path, out: &mut Vec<File>) -> Result<(), GenError> {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        // Under `root` by construction (read_dir of a directory under it).
        let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
        let bad = |reason: String| GenError::BadFile {
            path: rel.clone(),
            reason,
        };
        if meta.is_dir() {
            collect(root, &path, out)?;
        } else if meta.is_file() {
            keel_bundle::check_rel_path(&rel).map_err(|e| bad(e.to_string()))?;
            let data = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
            out.push(File {
                path: rel,
                mode: meta.permissions().mode() & 0o777,
                data,
            });
        } else {
            return Err(bad("not a regular file (links are refused)".into()));
        }
    }
    Ok(())
}
