//! `keel watch`: print the snapshot, then changes as they happen (resuming across disconnects).

use crate::outln;
use keel_client::{Client, WatchEvent, WatchOptions};
use keel_model::Kind;
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Resume after this sequence number instead of starting with a snapshot.
    #[arg(long)]
    since: Option<u64>,
    /// Only these kinds (comma-separated: machine, switch, setting, user, host, facility,
    /// destination, session).
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
    /// Stop at the first interruption instead of reconnecting.
    #[arg(long)]
    no_reconnect: bool,
}

pub async fn run(c: &Client, args: &WatchArgs, json: bool) -> anyhow::Result<()> {
    let kinds = args
        .kinds
        .iter()
        .map(|k| {
            Kind::parse(k).filter(|k| k.is_public()).ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().filter(|k| k.is_public()).map(|k| k.as_str()).collect();
                anyhow::anyhow!("unknown kind {k:?}: one of {}", known.join(", "))
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = WatchOptions {
        since: args.since,
        kinds: (!kinds.is_empty()).then_some(kinds),
        reconnect: !args.no_reconnect,
        ..WatchOptions::default()
    };
    let mut watch = c.watch(opts);
    loop {
        let ev = watch.next().await?;
        if json {
            outln!("{}", event_json(&ev))?;
        } else {
            outln!("{}", event_text(&ev))?;
        }
    }
}

fn event_json(ev: &WatchEvent) -> Value {
    match ev {
        WatchEvent::SnapshotBegin { seq, db_id } => json!({"type": "snapshot_begin", "seq": seq, "db_id": db_id}),
        WatchEvent::Record { kind, data } => json!({"kind": kind, "op": "put", "data": data}),
        WatchEvent::SnapshotEnd { seq } => json!({"type": "snapshot_end", "seq": seq}),
        WatchEvent::Change { seq, kind, op, data } => json!({"seq": seq, "kind": kind, "op": op, "data": data}),
    }
}

fn event_text(ev: &WatchEvent) -> String {
    let name = |d: &Value| {
        d.get("hostname")
            .or_else(|| d.get("login"))
            .or_else(|| d.get("name"))
            .or_else(|| d.get("key"))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    match ev {
        WatchEvent::SnapshotBegin { seq, .. } => format!("snapshot at seq {seq}:"),
        WatchEvent::Record { kind, data } => format!("  {kind} {}", name(data)),
        WatchEvent::SnapshotEnd { seq } => format!("end of snapshot (seq {seq}); waiting for changes"),
        WatchEvent::Change { seq, kind, op, data } => format!("{seq} {} {kind} {}", op.as_str(), name(data)),
    }
}
