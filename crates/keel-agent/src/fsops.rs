//! Writing the host's files: atomically, only when changed, with a journal that lets the next run
//! undo an interrupted one.
//!
//! A run's changes form one transaction. Before the first target is touched, the previous contents
//! of every target are saved in `<state>/<service>.journal/` (prepared in `.journal.tmp`, then
//! renamed: the journal exists whole or not at all). Each target is then replaced by temp file →
//! fsync → rename → fsync of the directory. The rename of the journal to `<service>.prev` is the
//! commit; a journal found at the start of a run means the last one was interrupted, and it is
//! rolled back before anything else. The agent's own state file (serial, managed names) is one of
//! the targets, so it moves with the files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(|e| io("creating", dir, &e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.keel-tmp"));
    let _ = fs::remove_file(&tmp); // a leftover of a crash (remove_file never follows a link)
    let owner = fs::symlink_metadata(path).ok().map(|m| (m.uid(), m.gid()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io("creating", &tmp, &e))?;
    let done = (|| {
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            let m = f.metadata()?;
            if (m.uid(), m.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            }
        }
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if let Err(e) = done {
        let _ = fs::remove_file(&tmp);
        return Err(io("writing", path, &e));
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
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
    /// The saved previous contents (a file of the journal), or none: the target did not exist.
    saved: Option<String>,
    mode: u32,
}

/// The journal directories of a service.
pub(crate) struct Journal {
    tmp: PathBuf,
    live: PathBuf,
    prev: PathBuf,
}

impl Journal {
    pub(crate) fn new(state_dir: &Path, service: &str) -> Self {
        Self {
            tmp: state_dir.join(format!("{service}.journal.tmp")),
            live: state_dir.join(format!("{service}.journal")),
            prev: state_dir.join(format!("{service}.prev")),
        }
    }

    /// Undoes an interrupted run, if there was one; returns whether there was.
    pub(crate) fn recover(&self) -> Result<bool, Fail> {
        if self.tmp.exists() {
            fs::remove_dir_all(&self.tmp).map_err(|e| io("removing", &self.tmp, &e))?;
        }
        let index = self.live.join("journal.json");
        if !self.live.exists() {
            return Ok(false);
        }
        let entries: Vec<Entry> = match fs::read(&index) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| Fail::new(Code::Io, format!("{}: {e}", index.display())))?
            }
            Err(e) => return Err(io("reading", &index, &e)),
        };
        for e in entries.iter().rev() {
            match &e.saved {
                Some(name) => {
                    let old = self.live.join(name);
                    let data = fs::read(&old).map_err(|err| io("reading", &old, &err))?;
                    write_atomic(&e.target, &data, e.mode)?;
                }
                None => remove(&e.target)?,
            }
        }
        fs::remove_dir_all(&self.live).map_err(|e| io("removing", &self.live, &e))?;
        Ok(true)
    }

    /// Saves what `changes` will replace, then applies them. Nothing is touched if saving fails.
    pub(crate) fn apply(&self, changes: &[Change]) -> Result<(), Fail> {
        let mut entries = Vec::with_capacity(changes.len());
        fs::create_dir_all(&self.tmp).map_err(|e| io("creating", &self.tmp, &e))?;
        for (i, c) in changes.iter().enumerate() {
            let saved = match read_target(&c.target)? {
                Some(old) => {
                    let name = format!("{i}");
                    let p = self.tmp.join(&name);
                    let mut f = fs::File::create(&p).map_err(|e| io("creating", &p, &e))?;
                    f.write_all(&old)
                        .and_then(|()| f.sync_all())
                        .map_err(|e| io("writing", &p, &e))?;
                    let mode = fs::symlink_metadata(&c.target).map_or(0o600, |m| m.mode() & 0o7777);
                    entries.push(Entry {
                        target: c.target.clone(),
                        saved: Some(name),
                        mode,
                    });
                    continue;
                }
                None => None,
            };
            entries.push(Entry {
                target: c.target.clone(),
                saved,
                mode: c.mode,
            });
        }
        let index = self.tmp.join("journal.json");
        let json = serde_json::to_vec(&entries).map_err(|e| Fail::new(Code::Io, e.to_string()))?;
        write_atomic(&index, &json, 0o600)?;
        fs::rename(&self.tmp, &self.live).map_err(|e| io("renaming", &self.tmp, &e))?;
        if let Some(dir) = self.live.parent() {
            sync_dir(dir).map_err(|e| io("syncing", dir, &e))?;
        }
        for c in changes {
            match &c.data {
                Some(data) => write_atomic(&c.target, data, c.mode)?,
                None => remove(&c.target)?,
            }
        }
        Ok(())
    }

    /// Makes the applied run final; its journal becomes the kept previous version.
    pub(crate) fn commit(&self) -> Result<(), Fail> {
        if self.prev.exists() {
            fs::remove_dir_all(&self.prev).map_err(|e| io("removing", &self.prev, &e))?;
        }
        fs::rename(&self.live, &self.prev).map_err(|e| io("renaming", &self.live, &e))?;
        if let Some(dir) = self.live.parent() {
            sync_dir(dir).map_err(|e| io("syncing", dir, &e))?;
        }
        Ok(())
    }
}
