//! `keel-agent apply`: one bundle from stdin, checked and applied, in the order the security
//! argument needs — signature, whitelist, ignore list, version, lock, recovery, serial, hooks,
//! files — with one exit code.

use std::io::Read;
use std::path::{Path, PathBuf};

use keel_bundle::{Bundle, BundleError, DeltaError, Limits};
use keel_model::service::Version;

use crate::config::Config;
use crate::fsops::{self, Change, Journal};
use crate::hooks::{self, Phase};
use crate::out::{Code, Fail, Out};
use crate::services::{self, State};

/// Applies the bundle read from `input`; returns the exit code after writing its lines to `out`.
pub fn apply(cfg: &Config, input: impl Read, out: &mut Out<'_>) -> Code {
    match run(cfg, input, out) {
        Ok(code) => code,
        Err(f) => {
            out.error(f.code, &f.message);
            f.code
        }
    }
}

fn run(cfg: &Config, input: impl Read, out: &mut Out<'_>) -> Result<Code, Fail> {
    let limits = Limits {
        max_total_bytes: cfg.max_bundle_bytes,
        ..Limits::default()
    };
    // A stream runs many applies in one process: this run's fsyncs are the difference.
    let (fsyncs_before, cpu_before) = (fsops::fsyncs(), cpu_now());
    let mut bundle = Bundle::read_from(input, &cfg.trusted_keys, limits).map_err(refusal)?;
    // A copy (a few names and numbers): a delta's files are filled in further down.
    let m = &bundle.manifest.clone();
    out.name = m.service.clone();
    check_whitelist(cfg, &m.destination, &m.facility)?;
    if cfg.ignore_services.iter().any(|s| s == &m.service) {
        out.info("service ignored on this host (ignore_services)");
        return Ok(Code::Ok);
    }
    check_version(cfg, &m.service, m.version, out)?;
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| Fail::new(Code::Io, format!("state dir: {e}")))?;
    let _lock = lock(&cfg.state_dir, &m.service)?;
    let journal = Journal::new(&cfg.state_dir, &m.service);
    if journal.recover()? {
        out.info("rolled back a run that was interrupted");
    }
    let state_path = state_file(cfg, &m.facility, &m.service);
    let state: State = match fsops::read_target(&state_path)? {
        Some(b) => {
            serde_json::from_slice(&b).map_err(|e| Fail::new(Code::Io, format!("{}: {e}", state_path.display())))?
        }
        None => State::default(),
    };
    let digest = m.digest();
    let unfinished = Unfinished::path(&state_path);
    let again = m.serial == state.serial && digest == state.digest;
    if again && !Unfinished::holds(&unfinished, m.serial) {
        out.info(&format!("serial {} already applied; nothing to do", m.serial));
        return Ok(Code::Ok);
    }
    if again {
        out.info(&format!(
            "serial {} was applied but not finished (a home or a post hook failed): finishing it",
            m.serial
        ));
    } else if m.serial <= state.serial {
        return Err(Fail::new(
            Code::Replay,
            format!(
                "serial {} is not above {}, the last applied: refused (replay)",
                m.serial, state.serial
            ),
        ));
    }
    // The shadow suite's lock, so passwd, useradd and friends never write alongside us.
    let _pwd = if m.service == keel_model::service::PASSWD {
        Some(pwd_lock(cfg)?)
    } else {
        None
    };
    let disk = services::HostFiles::default();
    if bundle.is_delta() {
        resolve(cfg, &mut bundle, &state, &disk)?;
        out.info(&format!("a delta onto serial {}, the base held here", state.serial));
    }
    let plan = services::plan(cfg, &bundle, &state, &disk)?;
    let mut env = hook_env(cfg, &bundle);
    let hook_dir = cfg.hooks_dir.join(format!("{}.d", m.service));
    let _staging = if hooks::any(&hook_dir) {
        let s = Staging::write(&cfg.state_dir, &bundle)?;
        env.push(("KEEL_STAGING_DIR", s.0.display().to_string()));
        Some(s)
    } else {
        None
    };
    hooks::run(&hook_dir, Phase::Pre, &env, out)?;
    let new_state = State {
        serial: m.serial,
        digest,
        managed: plan.managed,
    };
    let mut changes = plan.changes;
    let changed = changes.len();
    changes.push(Change {
        target: state_path,
        data: Some(serde_json::to_vec(&new_state).map_err(|e| Fail::new(Code::Io, e.to_string()))?),
        mode: 0o600,
    });
    if let Err(e) = journal.apply(&changes) {
        journal.recover()?;
        return Err(e);
    }
    if let Err(e) = hooks::run(&hook_dir, Phase::Mid, &env, out) {
        journal.recover()?;
        return Err(e);
    }
    journal.commit()?;
    // Until the homes and post hooks are through, the run is unfinished: the same bundle again
    // finishes it rather than answering "already applied".
    Unfinished::mark(&unfinished, m.serial)?;
    let homes_failed = create_homes(&plan.homes, &cfg.skel, out);
    for note in &plan.notes {
        out.info(note);
    }
    out.info(&format!(
        "serial {} applied: {changed} file(s) changed, {} fsync(s), {:.1} ms CPU{}",
        m.serial,
        fsops::fsyncs() - fsyncs_before,
        (cpu_now() - cpu_before).as_secs_f64() * 1000.0,
        if plan.homes.is_empty() {
            String::new()
        } else {
            format!(", {} home(s) checked", plan.homes.len())
        }
    ));
    if let Err(f) = hooks::run(&hook_dir, Phase::Post, &env, out) {
        out.error(f.code, &f.message);
        return Ok(Code::PostHookFailed);
    }
    if homes_failed > 0 {
        out.error(
            Code::HomesFailed,
            &format!("{homes_failed} home(s) could not be made; the next run tries again"),
        );
        return Ok(Code::HomesFailed);
    }
    Unfinished::clear(&unfinished)?;
    Ok(Code::Ok)
}

/// Turns a delta into the full state, onto the base it names only: the serial this host last
/// applied, and its files as they are on disk now (`services::held`). Anything else is
/// `BaseMismatch`, and the engine sends the full state.
fn resolve(cfg: &Config, bundle: &mut Bundle, state: &State, disk: &services::HostFiles) -> Result<(), Fail> {
    let on = bundle.manifest.base.as_ref().map_or(0, |b| b.serial);
    if on != state.serial {
        return Err(Fail::new(
            Code::BaseMismatch,
            format!(
                "the delta is on serial {on}, this host last applied {}: the full state is needed",
                state.serial
            ),
        ));
    }
    let service = bundle.manifest.service.clone();
    match bundle.resolve(|path| services::held(cfg, &service, path, state, disk))? {
        Ok(()) => Ok(()),
        Err(e @ DeltaError::Mismatch(_)) => {
            Err(Fail::new(Code::BaseMismatch, format!("{e}: the full state is needed")))
        }
        Err(e) => Err(Fail::new(Code::BadBundle, e.to_string())),
    }
}

/// The CPU time this process has used (user and system): a run's output says what it took.
fn cpu_now() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    std::time::Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// A marker beside a service's state file: the serial whose files were applied but whose homes
/// or post hooks failed. Outside the journal on purpose: the files stay applied (they are right),
/// only the steps after them are owed.
struct Unfinished;

impl Unfinished {
    fn path(state_path: &Path) -> PathBuf {
        state_path.with_extension("unfinished")
    }

    fn holds(path: &Path, serial: u64) -> bool {
        std::fs::read_to_string(path).is_ok_and(|s| s.trim().parse() == Ok(serial))
    }

    fn mark(path: &Path, serial: u64) -> Result<(), Fail> {
        fsops::write_atomic(path, format!("{serial}\n").as_bytes(), 0o600)
    }

    fn clear(path: &Path) -> Result<(), Fail> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Fail::new(Code::Io, format!("{}: {e}", path.display()))),
        }
    }
}

/// The bundle's files, unpacked for the hooks to check before they replace anything (e.g.
/// `named-checkzone` on new zones); removed when the run ends.
struct Staging(PathBuf);

impl Staging {
    fn write(state_dir: &Path, b: &Bundle) -> Result<Self, Fail> {
        use std::os::unix::fs::PermissionsExt;
        let dir = state_dir.join(format!("{}.staging", b.manifest.service));
        let io = |e: std::io::Error| Fail::new(Code::Io, format!("staging {}: {e}", dir.display()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io)?;
        }
        // The staged files include shadow: the directory is 0700 and each file is born at most
        // 0600, taking the bundle's mode only once written (hooks see the modes the host will).
        let private_dirs = || {
            let mut d = std::fs::DirBuilder::new();
            std::os::unix::fs::DirBuilderExt::mode(d.recursive(true), 0o700);
            d
        };
        private_dirs().create(&dir).map_err(io)?;
        let staging = Self(dir.clone());
        for f in &b.manifest.files {
            // Paths were checked by Bundle::open: relative, no `..`, no links.
            let path = dir.join(&f.path);
            if let Some(parent) = path.parent() {
                private_dirs().create(parent).map_err(io)?;
            }
            let mut file = fsops::create_private(&path, f.mode).map_err(io)?;
            std::io::Write::write_all(&mut file, &b.files[&f.path]).map_err(io)?;
            file.set_permissions(std::fs::Permissions::from_mode(f.mode))
                .map_err(io)?;
        }
        Ok(staging)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn refusal(e: BundleError) -> Fail {
    let code = match e {
        BundleError::BadSignature => Code::BadSignature,
        BundleError::Format(_) => Code::UnknownFormat,
        _ => Code::BadBundle,
    };
    Fail::new(code, e.to_string())
}

/// Invariant 7: the destination's host part is one of this host's names, or the facility is
/// trusted as a whole.
fn check_whitelist(cfg: &Config, destination: &str, facility: &str) -> Result<(), Fail> {
    let host = keel_bundle::destination_host(destination);
    if cfg.dns_alias_whitelist.contains(&host) || cfg.facility_whitelist.iter().any(|f| f == facility) {
        return Ok(());
    }
    Err(Fail::new(
        Code::NotWhitelisted,
        format!(
            "destination {host:?} is not in dns_alias_whitelist and facility {facility:?} is not in facility_whitelist: refused"
        ),
    ))
}

fn check_version(cfg: &Config, service: &str, got: Version, out: &mut Out<'_>) -> Result<(), Fail> {
    let configured = cfg
        .services
        .get(service)
        .and_then(|s| s.version.as_deref()?.parse::<Version>().ok());
    let built_in = keel_model::service::agent_major(service).map(|m| Version::new(m, 0));
    let Some(want) = configured.or(built_in) else {
        return Ok(()); // a custom service without a pinned version
    };
    if want.major != got.major {
        return Err(Fail::new(
            Code::WrongMajor,
            format!("version {got} refused: this host implements {service} {}.x", want.major),
        ));
    }
    if want.minor != got.minor {
        out.info(&format!(
            "version {got}; this host knows {want} (minor difference, applied)"
        ));
    }
    Ok(())
}

/// A lock file, created if missing, never truncated.
fn lock_file(path: &Path) -> Result<std::fs::File, Fail> {
    std::os::unix::fs::OpenOptionsExt::mode(&mut std::fs::OpenOptions::new(), 0o600)
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Fail::new(Code::Io, format!("{}: {e}", path.display())))
}

/// One run per service at a time: an exclusive `flock`, released when the process ends however
/// it ends.
fn lock(state_dir: &Path, service: &str) -> Result<std::fs::File, Fail> {
    let path = state_dir.join(format!("{service}.lock"));
    let f = lock_file(&path)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(Fail::new(
            Code::Locked,
            format!("another run of {service} is in progress (lock {} held)", path.display()),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(Fail::new(Code::Io, format!("{}: {e}", path.display()))),
    }
}

/// `lckpwdf`'s lock: a POSIX record lock on /etc/.pwd.lock (OFD locks conflict with it), waited
/// for up to 15 s like glibc does.
fn pwd_lock(cfg: &Config) -> Result<std::fs::File, Fail> {
    let path = cfg.target("/etc/.pwd.lock");
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let f = lock_file(&path)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match rustix::fs::fcntl_lock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(f),
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => {
                return Err(Fail::new(
                    Code::Locked,
                    format!("{} is held by another program (passwd, useradd…): {e}", path.display()),
                ))
            }
        }
    }
}

fn state_file(cfg: &Config, facility: &str, service: &str) -> PathBuf {
    cfg.state_dir.join(facility).join(format!("{service}.json"))
}

fn hook_env(cfg: &Config, b: &Bundle) -> Vec<(&'static str, String)> {
    let m = &b.manifest;
    vec![
        ("KEEL_SERVICE", m.service.clone()),
        ("KEEL_FACILITY", m.facility.clone()),
        ("KEEL_SERIAL", m.serial.to_string()),
        ("KEEL_VERSION", m.version.to_string()),
        ("KEEL_ROOT", cfg.root_dir.display().to_string()),
        ("KEEL_SERVICE_DIR", cfg.service_dir(&m.service).display().to_string()),
    ]
}

/// Creates missing homes, each with a copy of the skeleton. Existing ones are left alone; an owner
/// change needs root, so without it the home keeps the agent's owner and a line says so. Returns
/// how many homes failed (each with an Error line).
fn create_homes(homes: &[services::Home], skel: &Path, out: &mut Out<'_>) -> usize {
    use std::os::unix::fs::DirBuilderExt;
    let root = rustix::process::geteuid().is_root();
    let mut created = 0;
    let mut failed = 0;
    for h in homes {
        if std::fs::symlink_metadata(&h.path).is_ok() {
            continue;
        }
        if let Some(parent) = h.path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = std::fs::DirBuilder::new().mode(h.mode).create(&h.path) {
            out.error(Code::HomesFailed, &format!("creating {}: {e}", h.path.display()));
            failed += 1;
            continue;
        }
        created += 1;
        let owner = root.then_some((h.uid, h.gid));
        // The owner first: a skeleton copied into a home left the agent's would be the user's
        // home with root's files in it.
        let made = owner
            .map_or(Ok(()), |(uid, gid)| {
                std::os::unix::fs::chown(&h.path, Some(uid), Some(gid))
            })
            .map_err(|e| format!("chown {}: {e}", h.path.display()))
            .and_then(|()| {
                copy_skel(skel, &h.path, owner).map_err(|e| format!("skeleton into {}: {e}", h.path.display()))
            });
        if let Err(e) = made {
            // Removed, so that the next run makes it whole rather than skip it as existing.
            let _ = std::fs::remove_dir_all(&h.path);
            out.error(Code::HomesFailed, &e);
            failed += 1;
            created -= 1;
        }
    }
    if created > 0 {
        out.info(&format!(
            "{created} home(s) created{}",
            if root {
                ""
            } else {
                " (not root: owners left as the agent's)"
            }
        ));
    }
    failed
}

/// Copies the skeleton into a home the agent has just created (so nobody else has written in it):
/// directories, regular files (with their mode) and symbolic links as links, never followed; each
/// given to `owner` when there is one. Other file types are skipped. A missing skeleton copies
/// nothing.
fn copy_skel(from: &Path, to: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir(&dst)?;
            std::fs::set_permissions(&dst, std::fs::symlink_metadata(&src)?.permissions())?;
            copy_skel(&src, &dst, owner)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else {
            continue;
        }
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&dst, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}
