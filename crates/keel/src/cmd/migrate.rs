//! `keel migrate-db`: moves a site between backends (SQLite ↔ PostgreSQL) with nothing lost —
//! every record, unique value, the whole Change log (same seqs), tokens, propagation state and
//! the database id — then reads the copy back and checks it equals the original, row for row.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use keel_store::{PgStore, SqliteStore, Store};
use serde_json::json;

use crate::outln;
use crate::output::print_json;
use crate::serve::redact;

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
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
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

pub async fn run(args: &MigrateArgs, json: bool) -> anyhow::Result<()> {
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
