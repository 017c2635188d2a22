//! The data directory: private (0700, files 0600), locked while a server runs on it, holding the
//! first admin token and the secrets keel makes on first start.

use std::fs::{File, OpenOptions};
use std::path::Path;

use anyhow::Context;
use keel_client::data_dir as files;
use keel_model::Role;
use keel_store::{Db, NewToken};

/// The data directory holds the database, its WAL, backups, tokens and secrets: it is created
/// 0700 and everything keel creates in it is 0600 from the moment it exists (the process's umask
/// is 077, set in `main`, so SQLite's own `-wal` and `-shm` files are born private too). A
/// directory and database left wider by an older keel are narrowed here; a directory that is not
/// keel's is only warned about.
pub fn private_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if meta.mode() & 0o077 != 0 {
        // Narrowed only when it is keel's own (an older keel's data directory, of this user):
        // `--data-dir /tmp` must not make /tmp private.
        let keels = dir.join(files::DB).exists() || dir.join(files::LOCK).exists();
        if keels && meta.uid() == rustix::process::getuid().as_raw() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} private (0700)", dir.display()))?;
            tracing::warn!(dir = %dir.display(), "the data directory was readable by others; now 0700");
        } else {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", meta.mode() & 0o777),
                "the data directory is readable by others: keel's files in it are 0600, but give keel a directory of its own (0700)"
            );
        }
    }
    for name in [files::DB, &format!("{}-wal", files::DB), &format!("{}-shm", files::DB)] {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o077 != 0 => {
                tracing::warn!(path = %path.display(), "was readable by others; now 0600");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// One server per data directory: a second `keel serve` (or a `keel restore`) fails clearly. The
/// holder's process id is written in the file (what `keel reload` signals).
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join(files::LOCK);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.try_lock()
        .map_err(|_| anyhow::anyhow!("another keel is using {} (it holds {})", dir.display(), path.display()))?;
    let mut f = f;
    f.set_len(0)
        .and_then(|()| std::io::Write::write_all(&mut f, format!("{}\n", std::process::id()).as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(f)
}

/// On first start (no token at all), creates an admin token in the data directory, mode 0600.
pub(super) async fn ensure_admin_token(db: &Db, dir: &Path) -> anyhow::Result<()> {
    if !db.store().tokens().await?.is_empty() {
        return Ok(());
    }
    let (secret, row) = db
        .create_token(NewToken {
            name: "admin".into(),
            role: Role::Admin,
            facilities: vec![],
            host: None,
            expires: None,
        })
        .await?;
    let path = dir.join(files::ADMIN_TOKEN);
    crate::private_file::write(&path, format!("{secret}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "keel: first start: created admin token {} in {} (mode 0600)",
        row.id,
        path.display()
    );
    Ok(())
}

/// Makes a new file readable by keel only (0600) holding `line`, flushed to disk; an existing
/// file is an error (a secret is never overwritten).
pub fn create_private_file(path: &Path, line: &str) -> anyhow::Result<()> {
    crate::private_file::create_new(path, line).with_context(|| format!("cannot create {}", path.display()))
}

/// A secret file's first line; a new random secret (mode 0600) when the file does not exist.
pub(super) fn read_or_create_secret(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let s = text.lines().next().unwrap_or("").trim().to_owned();
            anyhow::ensure!(
                s.len() >= 16,
                "{}: the secret must be at least 16 characters",
                path.display()
            );
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = [0u8; 24];
            getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let secret = hex::encode(raw);
            create_private_file(path, &secret)?;
            tracing::info!(file = %path.display(), "made the presence secret; machines send it with presence calls");
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// A new data directory is 0700; an older keel's is narrowed, with its database; a
    /// directory that is not keel's (`--data-dir /tmp`) keeps its mode, with a warning.
    #[test]
    fn the_data_directory_is_made_private_only_when_it_is_keels() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("fresh/data");
        private_data_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let old = root.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join(files::DB), b"").unwrap();
        for p in [&old, &old.join(files::DB)] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        private_data_dir(&old).unwrap();
        assert_eq!((mode(&old), mode(&old.join(files::DB))), (0o700, 0o600));
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_data_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o755, "not keel's: left as it is");
    }
}
