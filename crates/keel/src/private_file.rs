//! Files only keel's user may read — secrets, tokens, password sheets — written one way: opened
//! 0600 (an existing file is narrowed to 0600 before anything is written into it, whatever its
//! mode was), written, flushed to disk.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

fn open(path: &Path, new_only: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).mode(0o600);
    if new_only {
        o.create_new(true);
    } else {
        o.create(true).truncate(true);
    }
    let f = o.open(path)?;
    // `mode` applies to a file it creates only; an existing one keeps its bits otherwise.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Writes `bytes` to `path`, replacing what it held.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = open(path, false)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates `path` holding `line` and a newline; an existing file is an error (a secret is never
/// overwritten).
pub fn create_new(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = open(path, true)?;
    writeln!(f, "{line}")?;
    f.sync_all()
}
