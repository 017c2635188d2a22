//! What every backend's commit decides the same way: each write's seq, version check, stamped
//! record and Change, from the record as it is in the database (read inside the transaction).

use keel_model::{Change, Op};
use serde_json::Value;

use crate::store::Write;
use crate::StoreError;

/// A write decided in full: its Change, and what the tables need.
pub(crate) struct Planned {
    pub(crate) change: Change,
    pub(crate) uniques: Vec<(&'static str, String)>,
    pub(crate) before: Option<String>,
    pub(crate) after: Option<String>,
}

/// Decides one write: checks its expected version, stamps its version (and new id), builds its Change.
pub(crate) fn plan(
    w: Write,
    seq: u64,
    principal: &str,
    time: &str,
    current: Option<&(u64, Value)>,
) -> Result<Planned, StoreError> {
    let fresh = w.key.is_none();
    let key = w.key.clone().unwrap_or_else(|| seq.to_string());
    let (cur_version, before) = current.map_or((0, None), |(v, d)| (*v, Some(d.clone())));
    check_version(&w, &key, cur_version, before.is_some())?;
    let after = match (w.op, w.after) {
        (Op::Put, Some(mut after)) => {
            stamp(&mut after, seq, fresh);
            Some(after)
        }
        _ => None,
    };
    Ok(Planned {
        before: before.as_ref().map(Value::to_string),
        after: after.as_ref().map(Value::to_string),
        uniques: if w.op == Op::Put { w.uniques } else { Vec::new() },
        change: Change {
            seq,
            time: time.to_owned(),
            principal: principal.to_owned(),
            kind: w.kind,
            op: w.op,
            key,
            before,
            after,
        },
    })
}

fn check_version(w: &Write, key: &str, current: u64, exists: bool) -> Result<(), StoreError> {
    match w.expected_version {
        Some(0) if exists => Err(StoreError::Conflict(format!("{} {key} already exists", w.kind))),
        Some(v) if v != 0 && !exists => Err(StoreError::NotFound(format!("{} {key}", w.kind))),
        Some(v) if v != 0 && v != current => Err(StoreError::VersionMismatch { expected: v, current }),
        None if w.op == Op::Delete && !exists => Err(StoreError::NotFound(format!("{} {key}", w.kind))),
        _ => Ok(()),
    }
}

/// Sets the record's `version` (and, for a new record, its `id`) to the change's seq.
pub(crate) fn stamp(after: &mut Value, seq: u64, assign_id: bool) {
    if let Value::Object(map) = after {
        map.insert("version".into(), Value::from(seq));
        if assign_id {
            map.insert("id".into(), Value::from(seq));
        }
    }
}

/// Splits planned writes into batches written one multi-row statement per table: a key at most
/// once per batch (inside a batch, statements go table by table rather than write by write, and
/// an upsert may not touch one row twice) and at most about `max_params` bound values.
pub(crate) fn batches(planned: &[Planned], max_params: usize) -> Vec<&[Planned]> {
    let mut out = Vec::new();
    let (mut start, mut params) = (0, 0usize);
    let mut keys = std::collections::HashSet::new();
    for (i, p) in planned.iter().enumerate() {
        let cost = 14 + 4 * p.uniques.len();
        if i > start
            && (params.saturating_add(cost) > max_params || keys.contains(&(p.change.kind, p.change.key.as_str())))
        {
            out.push(&planned[start..i]);
            (start, params) = (i, 0);
            keys.clear();
        }
        keys.insert((p.change.kind, p.change.key.as_str()));
        params = params.saturating_add(cost);
    }
    out.push(&planned[start..]);
    out
}

/// What a batch writes to each table: records replaced (their old unique values go), unique
/// values claimed, records put, records deleted. A record replaced is one that was read in the
/// transaction: a write with a key that finds no record (an import's new user) holds no unique
/// value yet, and looking for some would cost an index search per row.
pub(crate) struct ChunkRows<'a> {
    pub(crate) replaced: Vec<&'a Planned>,
    pub(crate) uniques: Vec<(&'a Planned, &'a (&'static str, String))>,
    pub(crate) puts: Vec<&'a Planned>,
    pub(crate) deletes: Vec<&'a Planned>,
}

impl<'a> ChunkRows<'a> {
    pub(crate) fn of(chunk: &'a [Planned]) -> Self {
        Self {
            replaced: chunk.iter().filter(|p| p.before.is_some()).collect(),
            uniques: chunk
                .iter()
                .flat_map(|p| p.uniques.iter().map(move |u| (p, u)))
                .collect(),
            puts: chunk.iter().filter(|p| p.change.op == Op::Put).collect(),
            deletes: chunk.iter().filter(|p| p.change.op == Op::Delete).collect(),
        }
    }
}
