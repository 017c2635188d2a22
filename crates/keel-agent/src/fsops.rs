//! Writing the host's files: atomically, only when changed, with a journal that lets the next run
//! undo an interrupted one.
//!
//! A run's changes form one transaction. Before the first target is touched, the previous contents
//! of every target are saved in one file, `<state>/<service>.journal` (written to a temp file,
//! synced, renamed: the journal exists whole or not at all). Then every new file is written to a
//! temp file beside its target and synced, all are renamed into place, and each directory is
//! synced once. The rename of the journal to `<service>.prev` is the commit; a journal found at the
//! start of a run means the last one was interrupted, and it is rolled back before anything else.
//! The agent's own state file (serial, managed names) is one of the targets, so it moves with the
//! files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::out::{Code, Fail};

/// One file to put in place (`data`) or remove (`None`).
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) target: PathBuf,
    pub(crate) data: Option<Vec<u8>>,
    pub(crate) mode: u32,
}

fn io(what: &str, path: &Path, e: &std::io::Error) -> Fail {
    Fail::new(Code::Io, format!("{what} {}: {e}", path.display()))
}

/// The current contents of a target; a symlink or anything but a regular file is refused, so a
/// planted link can never redirect a write (or a read of secrets) elsewhere.
pub(crate) fn read_target(path: &Path) -> Result<Option<Vec<u8>>, Fail> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", path, &e)),
        Ok(m) if m.file_type().is_symlink() => Err(Fail::new(
            Code::ServiceData,
            format!("{} is a symbolic link; refusing to follow it", path.display()),
        )),
        Ok(m) if !m.is_file() => Err(Fail::new(
            Code::ServiceData,
            format!("{} is not a regular file", path.display()),
        )),
        Ok(_) => fs::read(path).map(Some).map_err(|e| io("reading", path, &e)),
    }
}

/// Replaces `path` by `data` through a temp file in the same directory. The owner of the file it
/// replaces is kept (e.g. /etc/shadow's group); the mode is the one asked for.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), Fail> {
    let tmp = stage(path, data, mode)?;
    publish(&tmp, path)?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    sync_dir(dir).map_err(|e| io("syncing", dir, &e))
}

/// A new file, born at most 0600 (narrower if `mode` is): a secret such as shadow is never
/// readable by others, not even between its creation and its chmod to `mode`, which the caller
/// does once it is written.
pub(crate) fn create_private(path: &Path, mode: u32) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o600)
        .open(path)
}

/// Writes `data` to a durable temp file beside `path` (same owner as `path`, mode `mode`).
fn stage(path: &Path, data: &[u8], mode: u32) -> Result<PathBuf, Fail> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(|e| io("creating", dir, &e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.keel-tmp"));
    let _ = fs::remove_file(&tmp); // a leftover of a crash (remove_file never follows a link)
    let owner = fs::symlink_metadata(path).ok().map(|m| (m.uid(), m.gid()));
    // The target's own mode (0644 for passwd, 0640 for shadow) is set once the owner is right,
    // before the rename makes it the live file.
    let mut f = create_private(&tmp, mode).map_err(|e| io("creating", &tmp, &e))?;
    let done = (|| {
        if let Some((uid, gid)) = owner {
            let m = f.metadata()?;
            if (m.uid(), m.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            }
        }
        f.write_all(data)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        synced(f.sync_all())
    })();
    if let Err(e) = done {
        let _ = fs::remove_file(&tmp);
        return Err(io("writing", path, &e));
    }
    Ok(tmp)
}

/// Moves a staged temp file over its target (atomic; the directory still needs a sync).
fn publish(tmp: &Path, path: &Path) -> Result<(), Fail> {
    fs::rename(tmp, path).map_err(|e| {
        let _ = fs::remove_file(tmp);
        io("writing", path, &e)
    })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    synced(fs::File::open(dir)?.sync_all())
}

/// fsyncs made by this process: the run's output line says how many (what durability costs).
static FSYNCS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn synced(r: std::io::Result<()>) -> std::io::Result<()> {
    FSYNCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    r
}

/// How many fsyncs this process has made so far.
pub(crate) fn fsyncs() -> usize {
    FSYNCS.load(std::sync::atomic::Ordering::Relaxed)
}

fn remove(path: &Path) -> Result<(), Fail> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", path, &e)),
        _ => Ok(()),
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    target: PathBuf,
    mode: u32,
    /// Length of the saved previous contents in the journal, or none: the target did not exist.
    len: Option<u64>,
}

/// A service's journal: one file, `<service>.journal` — a JSON line listing the targets, then the
/// previous contents of each, back to back. Written whole and durable before any target is
/// touched; renamed to `<service>.prev` when the run is final.
pub(crate) struct Journal {
    tmp: PathBuf,
    live: PathBuf,
    prev: PathBuf,
    dir: PathBuf,
}

impl Journal {
    pub(crate) fn new(state_dir: &Path, service: &str) -> Self {
        Self {
            tmp: state_dir.join(format!("{service}.journal.tmp")),
            live: state_dir.join(format!("{service}.journal")),
            prev: state_dir.join(format!("{service}.prev")),
            dir: state_dir.to_owned(),
        }
    }

    /// Undoes an interrupted run, if there was one; returns whether there was.
    pub(crate) fn recover(&self) -> Result<bool, Fail> {
        let _ = fs::remove_file(&self.tmp); // never renamed: nothing was touched
        let raw = match fs::read(&self.live) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io("reading", &self.live, &e)),
        };
        let corrupt = |why: &str| Fail::new(Code::Io, format!("{}: {why}", self.live.display()));
        let nl = raw
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| corrupt("no index"))?;
        let entries: Vec<Entry> = serde_json::from_slice(&raw[..nl]).map_err(|e| corrupt(&e.to_string()))?;
        let mut at = nl + 1;
        let mut saved = Vec::with_capacity(entries.len());
        for e in &entries {
            let data = match e.len {
                Some(n) => {
                    let end = usize::try_from(n)
                        .ok()
                        .and_then(|n| at.checked_add(n))
                        .ok_or_else(|| corrupt("bad length"))?;
                    let d = raw.get(at..end).ok_or_else(|| corrupt("truncated"))?;
                    at = end;
                    Some(d)
                }
                None => None,
            };
            saved.push(data);
        }
        for (e, data) in entries.iter().zip(saved).rev() {
            match data {
                Some(d) => write_atomic(&e.target, d, e.mode)?,
                None => remove(&e.target)?,
            }
        }
        fs::remove_file(&self.live).map_err(|e| io("removing", &self.live, &e))?;
        sync_dir(&self.dir).map_err(|e| io("syncing", &self.dir, &e))?;
        Ok(true)
    }

    /// Saves what `changes` will replace, then applies them. Nothing is touched if saving fails.
    /// Every new file is written and synced before the first rename, and each directory is
    /// synced once at the end.
    pub(crate) fn apply(&self, changes: &[Change]) -> Result<(), Fail> {
        let mut entries = Vec::with_capacity(changes.len());
        let mut olds = Vec::new();
        for c in changes {
            let old = read_target(&c.target)?;
            let mode = fs::symlink_metadata(&c.target).map_or(c.mode, |m| m.mode() & 0o7777);
            entries.push(Entry {
                target: c.target.clone(),
                mode,
                len: old.as_ref().map(|o| o.len() as u64),
            });
            olds.extend(old.unwrap_or_default());
        }
        let mut journal = serde_json::to_vec(&entries).map_err(|e| Fail::new(Code::Io, e.to_string()))?;
        journal.push(b'\n');
        journal.extend(olds);
        let tmp = stage(&self.tmp, &journal, 0o600)?;
        publish(&tmp, &self.live)?;
        sync_dir(&self.dir).map_err(|e| io("syncing", &self.dir, &e))?;
        let mut staged = Vec::with_capacity(changes.len());
        for c in changes {
            if let Some(data) = &c.data {
                staged.push((stage(&c.target, data, c.mode)?, &c.target));
            }
        }
        for (tmp, target) in &staged {
            publish(tmp, target)?;
        }
        for c in changes.iter().filter(|c| c.data.is_none()) {
            remove(&c.target)?;
        }
        let mut dirs: Vec<&Path> = changes.iter().filter_map(|c| c.target.parent()).collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            sync_dir(d).map_err(|e| io("syncing", d, &e))?;
        }
        Ok(())
    }

    /// Makes the applied run final; its journal becomes the kept previous version.
    pub(crate) fn commit(&self) -> Result<(), Fail> {
        fs::rename(&self.live, &self.prev).map_err(|e| io("renaming", &self.live, &e))?;
        sync_dir(&self.dir).map_err(|e| io("syncing", &self.dir, &e))
    }
}
