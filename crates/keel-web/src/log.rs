//! The change log: who changed what, when, with a diff — newest first, 50 a page.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::{html, Me, Nav, WebError};
use crate::WebState;

const PAGE: u64 = 50;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LogQuery {
    page: u64,
}

pub(crate) struct Field {
    pub name: String,
    pub before: String,
    pub after: String,
}

pub(crate) struct Entry {
    pub seq: u64,
    pub time: String,
    pub principal: String,
    pub kind: String,
    pub key: String,
    /// created, changed, deleted
    pub what: &'static str,
    pub fields: Vec<Field>,
}

#[derive(Template)]
#[template(path = "web/log.html")]
struct LogPage {
    nav: Nav,
    entries: Vec<Entry>,
    page: u64,
    pages: u64,
}

fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The fields that differ between two versions of a record (the version counter aside).
pub(crate) fn diff(before: Option<&Value>, after: Option<&Value>) -> Vec<Field> {
    let empty = serde_json::Map::new();
    let b = before.and_then(Value::as_object).unwrap_or(&empty);
    let a = after.and_then(Value::as_object).unwrap_or(&empty);
    let mut names: Vec<&String> = b.keys().chain(a.keys()).filter(|k| *k != "version").collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| Field {
            name: k.clone(),
            before: show(b.get(k)),
            after: show(a.get(k)),
        })
        .collect()
}

pub(crate) async fn page(State(st): State<WebState>, me: Me, Query(q): Query<LogQuery>) -> Result<Response, WebError> {
    me.admin("the change log")?;
    let last = st.app.db.snapshot().seq();
    let pages = last.div_ceil(PAGE).max(1);
    let page = q.page.clamp(1, pages);
    let upto = last.saturating_sub((page - 1) * PAGE);
    let from = upto.saturating_sub(PAGE);
    let mut changes = st
        .app
        .db
        .store()
        .changes_since(from, u32::try_from(upto - from).unwrap_or(50))
        .await?;
    changes.reverse();
    let entries = changes
        .into_iter()
        .filter(|c| c.kind.is_public())
        .map(|c| {
            let before = c.before.as_ref().map(|v| keel_model::wire::public_record(c.kind, v));
            let after = c.after.as_ref().map(|v| keel_model::wire::public_record(c.kind, v));
            Entry {
                seq: c.seq,
                time: c.time.clone(),
                principal: c.principal.clone(),
                kind: c.kind.to_string(),
                // Machines are keyed by id; their hostname says more.
                key: after
                    .as_ref()
                    .or(before.as_ref())
                    .and_then(|r| r["hostname"].as_str())
                    .filter(|_| c.kind == keel_model::Kind::Machine)
                    .map_or_else(|| c.key.clone(), str::to_owned),
                what: match (&before, &after) {
                    (None, _) => "created",
                    (_, None) => "deleted",
                    _ => "changed",
                },
                fields: diff(before.as_ref(), after.as_ref()),
            }
        })
        .collect();
    Ok(html(&LogPage {
        nav: me.nav(),
        entries,
        page,
        pages,
    }))
}
