//! `keel log`: the change log — the newest changes by default, as `journalctl -n` shows them
//! (in order, the last one at the bottom); `--since`/`--oldest` read forward from a seq.

use keel_client::Client;
use keel_model::Change;
use serde_json::Value;

use crate::outln;
use crate::output::{print_json, table};

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Show the changes after this sequence number, oldest first.
    #[arg(long, conflicts_with = "oldest")]
    since: Option<u64>,
    /// Show the oldest changes kept (default: the newest).
    #[arg(long)]
    oldest: bool,
    /// At most this many changes (1–10000).
    #[arg(long, short = 'n', default_value_t = 100)]
    limit: u32,
}

pub async fn run(c: &Client, args: &LogArgs, json: bool) -> anyhow::Result<()> {
    let changes: Vec<Change> = match (args.since, args.oldest) {
        (Some(since), _) => c.changes(since, args.limit).await?,
        (None, true) => c.changes(0, args.limit).await?,
        (None, false) => {
            let mut newest: Vec<Change> = c.newest_changes(None, args.limit).await?;
            newest.reverse();
            newest
        }
    };
    if json {
        return print_json(&changes);
    }
    let rows = changes
        .iter()
        .map(|ch| {
            vec![
                ch.seq.to_string(),
                ch.time.get(..19).map_or_else(|| ch.time.clone(), |t| format!("{t}Z")),
                ch.principal.clone(),
                format!("{} {}", ch.op.as_str(), ch.kind),
                name_of(ch),
                diff(ch.before.as_ref(), ch.after.as_ref()),
            ]
        })
        .collect();
    outln!("{}", table(&["seq", "time", "by", "change", "record", "fields"], rows))?;
    Ok(())
}

fn name_of(ch: &Change) -> String {
    let rec = ch.after.as_ref().or(ch.before.as_ref());
    rec.and_then(|r| {
        r.get("hostname")
            .or_else(|| r.get("login"))
            .or_else(|| r.get("name"))
            .or_else(|| r.get("key"))
    })
    .and_then(Value::as_str)
    .map_or_else(|| ch.key.clone(), str::to_owned)
}

/// `field: old → new` for each changed field (version excluded); creations and deletions in a word.
fn diff(before: Option<&Value>, after: Option<&Value>) -> String {
    match (before, after) {
        (None, Some(_)) => return "created".to_owned(),
        (Some(_), None) => return "deleted".to_owned(),
        _ => {}
    }
    let empty = serde_json::Map::new();
    let b = before.and_then(Value::as_object).unwrap_or(&empty);
    let a = after.and_then(Value::as_object).unwrap_or(&empty);
    let mut keys: Vec<&String> = b
        .keys()
        .chain(a.keys())
        .filter(|k| *k != "version" && *k != "id")
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| match (b.get(k), a.get(k)) {
            (Some(x), Some(y)) => format!("{k}: {x} → {y}"),
            (None, Some(y)) => format!("{k}: {y}"),
            (Some(x), None) => format!("{k}: {x} → ∅"),
            (None, None) => String::new(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}
