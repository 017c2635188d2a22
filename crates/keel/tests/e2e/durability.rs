//! Durability: kill -9 inside a transaction, backup under write load, restore.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use keel_model::{Change, Kind, Op};
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{eventually, wait_for_file, Keel};

fn reg(i: u32) -> Value {
    json!({"args": [format!("m{i}"), format!("02:00:00:00:{:02x}:{:02x}", i >> 8, i & 0xff), 1, 1, "pasteur", "user"]})
}

/// Every change in the log, in order.
async fn all_changes(k: &Keel) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    loop {
        let since = out.last().map_or(0, |c| c.seq);
        let batch: Vec<Change> = k
            .admin()
            .get(&format!("/api/v1/changes?since={since}&limit=10000"))
            .await
            .unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

/// The machines' hostnames after replaying the change log.
fn replay_hostnames(changes: &[Change]) -> BTreeSet<String> {
    let mut by_key = std::collections::BTreeMap::new();
    for c in changes.iter().filter(|c| c.kind == Kind::Machine) {
        match c.op {
            Op::Put => by_key.insert(
                c.key.clone(),
                c.after.as_ref().unwrap()["hostname"].as_str().unwrap().to_owned(),
            ),
            Op::Delete => by_key.remove(&c.key),
        };
    }
    by_key.into_values().collect()
}

async fn hostnames(k: &Keel) -> BTreeSet<String> {
    let list: Value = k.anonymous().rpc("/call/query", json!({})).await.unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| m["hostname"].as_str().unwrap().to_owned())
        .collect()
}

/// kill -9 while registrations are in flight, one of them provably inside its transaction: after a
/// restart every acknowledged registration is there, none is half there, seqs are contiguous.
#[tokio::test]
async fn kill9_during_registrations_loses_no_acknowledged_write() {
    let marker = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    std::fs::remove_file(&marker).unwrap();
    let marker_s = marker.to_str().unwrap().to_owned();
    let mut k = Keel::start_with_env(
        &[],
        &[("KEEL_FAULT", "hang_in_commit:150"), ("KEEL_FAULT_MARKER", &marker_s)],
    );
    let acked = Arc::new(parking_lot::Mutex::new(BTreeSet::new()));
    // Requests each writer has sent and not heard back from (at most one each).
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let (client, acked, waiting) = (k.admin(), acked.clone(), waiting.clone());
        writers.push(tokio::spawn(async move {
            for i in (w * 1000)..(w * 1000 + 1000) {
                waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = client
                    .call::<Value>(Method::POST, "/call/register", Some(&reg(i)), None)
                    .await;
                waiting.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                match answer {
                    Ok(_) => {
                        acked.lock().insert(format!("m{i}"));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    let hit = tokio::task::spawn_blocking(move || wait_for_file(&marker, Duration::from_secs(60), || false))
        .await
        .unwrap();
    assert!(hit.is_some(), "the fault point was never reached");
    // The other writers are queued behind the one hanging inside its transaction.
    eventually(30, "every writer waiting on its request", async || {
        waiting.load(std::sync::atomic::Ordering::SeqCst) == 4
    })
    .await;
    k.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().clone();
    assert!(acked.len() >= 140, "only {} acknowledged", acked.len());
    k.restart(&[]);
    let changes = all_changes(&k).await;
    let seqs: Vec<u64> = changes.iter().map(|c| c.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "seqs are contiguous from 1"
    );
    assert_eq!(k.seq().await, seqs.len() as u64);
    let present = hostnames(&k).await;
    assert!(acked.is_subset(&present), "an acknowledged registration was lost");
    assert_eq!(
        present,
        replay_hostnames(&changes),
        "the records equal the log replayed"
    );
    assert_eq!(
        present.len(),
        149,
        "commits 1..=149 landed, the 150th hung and is not there"
    );
    // Writing goes on after the crash with the next seq.
    k.admin()
        .call::<Value>(Method::POST, "/call/register", Some(&reg(9999)), None)
        .await
        .unwrap();
    assert_eq!(k.seq().await, seqs.len() as u64 + 1);
}

/// `keel backup` under write load, then `keel restore` (offline) gives a consistent database that
/// equals its change log replayed, with a new database id.
#[tokio::test]
async fn backup_under_load_restores_consistently() {
    let mut k = Keel::start(&["--example-site"]);
    let old_id: Value = k.anonymous().get("/healthz").await.unwrap();
    let client = k.admin();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_w = stop.clone();
    let writer = tokio::spawn(async move {
        // At most 240: the example site's user pool is a /24.
        for i in 0..240u32 {
            if stop_w.load(std::sync::atomic::Ordering::SeqCst) {
                return i;
            }
            client
                .call::<Value>(Method::POST, "/call/register", Some(&reg(i)), None)
                .await
                .unwrap();
        }
        240
    });
    eventually(60, "40 registrations committed", async || k.seq().await >= 40).await;
    let file = k.dir.path().join("backup.db");
    let out = k.cli(&["backup", file.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writer.await.unwrap();
    assert!(written < 240, "the writer was still writing when the backup was taken");
    let backed_seq = summary["seq"].as_u64().unwrap();
    assert!(backed_seq > 8, "the backup was taken under load");

    // Restore refuses while the server runs.
    let data = k.data();
    let restore = |file: &std::path::Path| {
        std::process::Command::new(crate::support::KEEL)
            .args(["restore", file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = restore(&file);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop keel"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    k.stop();
    // A damaged file is refused and changes nothing.
    let bad = k.dir.path().join("bad.db");
    std::fs::write(&bad, b"not a database at all").unwrap();
    assert!(!restore(&bad).status.success());
    let out = restore(&file);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    k.restart(&[]);
    let health: Value = k.anonymous().get("/healthz").await.unwrap();
    assert_eq!(health["seq"].as_u64(), Some(backed_seq));
    assert_ne!(health["db_id"], old_id["db_id"], "a restored database has a new id");
    let changes = all_changes(&k).await;
    assert_eq!(changes.last().map(|c| c.seq), Some(backed_seq));
    assert_eq!(hostnames(&k).await, replay_hostnames(&changes));
}
