//! `keel backup FILE` (online, through the API) and `keel restore FILE` (offline, on the data dir).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use keel_client::data_dir as files;
use keel_client::Client;
use keel_model::Kind;
use keel_store::{build_snapshot, records_of, replay_log, SqliteStore};
use serde_json::json;

use crate::outln;
use crate::output::print_json;
use crate::serve::lock_data_dir;

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where to write the backup (an SQLite database file).
    pub file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A file written by `keel backup`.
    pub file: PathBuf,
}

pub async fn backup(c: &Client, args: &BackupArgs, json: bool) -> anyhow::Result<()> {
    let bytes = c.backup().await?;
    let tmp = args.file.with_extension("partial");
    write_synced(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.file).with_context(|| format!("cannot write {}", args.file.display()))?;
    let (store, summary) = verify(&args.file).await.context("the backup does not verify")?;
    store.close().await;
    if json {
        return print_json(&json!({
            "file": args.file,
            "bytes": bytes.len(),
            "seq": summary.seq,
            "machines": summary.machines,
            "also_save": ALSO_SAVE,
        }));
    }
    outln!(
        "backup of seq {} ({} machines, {} bytes) written to {}",
        summary.seq,
        summary.machines,
        bytes.len(),
        args.file.display()
    )?;
    outln!("the database alone does not restore a site: also save, from the data directory (no route serves them):")?;
    for f in ALSO_SAVE {
        outln!("  {f}")?;
    }
    Ok(())
}

/// What a site needs besides its database to come back whole, in the data directory (or where
/// keel.toml puts them): secrets never leave keel's host through an API.
const ALSO_SAVE: [&str; 5] = [
    "bundle.key ([propagation] key_file): the signing key every agent trusts",
    "tls/ca.key and tls/ca.pem: keel's site CA, which clients trust",
    "presence.secret ([presence] secret_file): the secret every machine's presence hook sends",
    "admin.token: the first admin token (other tokens are in the database)",
    "the config file (/etc/keel/keel.toml) and the secret files it names ([rpc], [sync])",
];

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

struct Summary {
    seq: u64,
    machines: usize,
}

/// Checks a database file: SQLite's integrity check, then that its records equal the change log
/// replayed up to its seq (when the log reaches back to the start).
async fn verify(file: &Path) -> anyhow::Result<(SqliteStore, Summary)> {
    let store = SqliteStore::open_single(file).await?;
    let check = store.integrity_check().await?;
    if check != "ok" {
        bail!("integrity check failed: {check}");
    }
    let (snap, _) = build_snapshot(&store).await?;
    if let Some(replayed) = replay_log(&store).await? {
        if replayed.seq() != snap.seq() {
            bail!(
                "the change log ends at seq {} but the records are at seq {}",
                replayed.seq(),
                snap.seq()
            );
        }
        for kind in Kind::ALL {
            if records_of(&replayed, kind) != records_of(&snap, kind) {
                bail!(
                    "the {kind} records differ from the change log replayed to seq {}",
                    snap.seq()
                );
            }
        }
    }
    Ok((
        store,
        Summary {
            seq: snap.seq(),
            machines: snap.machine_count(),
        },
    ))
}

pub async fn restore(data_dir: &Path, args: &RestoreArgs, json: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let _lock = lock_data_dir(data_dir).context("stop keel before restoring")?;
    let staged = data_dir.join(format!("{}.restoring", files::DB));
    std::fs::copy(&args.file, &staged).with_context(|| format!("cannot read {}", args.file.display()))?;
    let (store, summary) = match verify(&staged).await {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e.context(format!(
                "{} is not a usable backup; nothing was changed",
                args.file.display()
            )));
        }
    };
    // A new id: watchers of the old database must start from a snapshot, not resume.
    let db_id = store.renew_db_id().await?;
    store.checkpoint_and_detach_wal().await?;
    store.close().await;
    let kept = swap_in(data_dir, &staged)?;
    if json {
        return print_json(
            &json!({"seq": summary.seq, "machines": summary.machines, "db_id": db_id, "previous": kept}),
        );
    }
    outln!(
        "restored seq {} ({} machines) into {}; new database id {db_id}",
        summary.seq,
        summary.machines,
        data_dir.display()
    )?;
    if let Some(k) = kept {
        outln!("the previous database was kept as {}", k.display())?;
    }
    Ok(())
}

/// Moves the current database (and its -wal/-shm) aside, then renames the staged file into place.
fn swap_in(dir: &Path, staged: &Path) -> anyhow::Result<Option<PathBuf>> {
    let current = dir.join(files::DB);
    let mut kept = None;
    if current.exists() {
        let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let aside = dir.join(format!("{}.before-restore-{stamp}", files::DB));
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", current.display()));
            if from.exists() {
                std::fs::rename(&from, format!("{}{suffix}", aside.display()))?;
            }
        }
        kept = Some(aside);
    }
    std::fs::rename(staged, &current)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(kept)
}
