//! `keel migrate-db`: moves a site between backends (SQLite ↔ PostgreSQL) with nothing lost —
//! every record, unique value, the whole Change log (same seqs), tokens, propagation state and
//! the database id — then reads the copy back and checks it equals the original, row for row.
//! Offline, like `keel restore`: it holds the data directory's lock (and that of the directory
//! of an SQLite file it reads or writes), so it refuses while a server runs there.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use keel_store::{PgStore, SqliteStore, Store};
use serde_json::json;

use crate::outln;
use crate::output::print_json;
use crate::serve::{lock_data_dir, redact};

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The site's database now: an SQLite file (e.g. keel-data/keel.db; stop keel first) or a
    /// postgres:// URL.
    #[arg(long)]
    from: String,
    /// Where it goes: a new SQLite file or an empty PostgreSQL database.
    #[arg(long)]
    to: String,
}

async fn open(spec: &str, create: bool) -> anyhow::Result<Arc<dyn Store>> {
    if is_postgres(spec) {
        return Ok(Arc::new(
            PgStore::open(spec)
                .await
                .with_context(|| format!("cannot open {}", redact(spec)))?,
        ));
    }
    let path = PathBuf::from(spec);
    anyhow::ensure!(create || path.exists(), "{}: no such SQLite database", path.display());
    anyhow::ensure!(
        !create || !path.exists(),
        "{}: already exists; keel copies only into a new database",
        path.display()
    );
    Ok(Arc::new(
        SqliteStore::open_single(&path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?,
    ))
}

/// The locks of the directories a migration touches: the data directory (when there is one) and
/// the directory of each SQLite file — a `keel serve` there holds the same lock.
fn lock_all(data_dir: &Path, args: &MigrateArgs) -> anyhow::Result<Vec<std::fs::File>> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if data_dir.is_dir() {
        dirs.push(data_dir.to_owned());
    }
    for spec in [&args.from, &args.to] {
        if is_postgres(spec) {
            continue;
        }
        let parent = Path::new(spec).parent().filter(|p| !p.as_os_str().is_empty());
        let dir = parent.unwrap_or(Path::new(".")).to_owned();
        let same = |d: &PathBuf| d.canonicalize().ok() == dir.canonicalize().ok();
        if dir.is_dir() && !dirs.iter().any(same) {
            dirs.push(dir);
        }
    }
    dirs.iter()
        .map(|d| lock_data_dir(d).context("stop keel before migrating its database"))
        .collect()
}

fn is_postgres(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

pub async fn run(args: &MigrateArgs, data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let _locks = lock_all(data_dir, args)?;
    let from = open(&args.from, false).await?;
    let to = open(&args.to, true).await?;
    eprintln!("keel: reading {}", redact(&args.from));
    let dump = from.export().await.context("cannot read the source")?;
    eprintln!(
        "keel: writing {} records, {} changes, {} tokens to {}",
        dump.objects.len(),
        dump.changes.len(),
        dump.tokens.len(),
        redact(&args.to)
    );
    to.import(&dump)
        .await
        .context("cannot write the destination (nothing was kept)")?;
    let back = to.export().await.context("cannot read the copy back")?;
    anyhow::ensure!(back == dump, "the copy differs from the original: do not use it");
    let summary = json!({
        "records": dump.objects.len(),
        "unique_values": dump.uniques.len(),
        "changes": dump.changes.len(),
        "seq": dump.seq,
        "tokens": dump.tokens.len(),
        "db_id": dump.db_id,
        "verified": true,
    });
    if json {
        print_json(&summary)?;
    } else {
        outln!(
            "keel: migrated {} records and {} changes (seq {}), verified row for row; point keel at {}",
            dump.objects.len(),
            dump.changes.len(),
            dump.seq,
            redact(&args.to)
        )?;
    }
    Ok(())
}
