//! Machines: a searchable, sortable, filtered, paginated list; add, edit (faulty with a reason),
//! delete with confirmation, bulk actions.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use keel_model::input::{Fields, Strictness};
use keel_model::{Machine, MachinePatch, MachineType, Snapshot};
use serde::Deserialize;

use super::{html, saved, Errors, Form, Me, Nav, TextField, WebError};
use crate::WebState;

/// Rows per page: a 10,000-machine site is 200 pages, each rendered from the Snapshot in
/// milliseconds.
pub(crate) const PAGE: usize = 50;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ListQuery {
    q: String,
    room: String,
    mtype: String,
    faulty: String,
    sort: String,
    page: usize,
    done: String,
}

/// One row of the list.
pub(crate) struct Row {
    pub hostname: String,
    pub aliases: String,
    pub ip: String,
    pub mac: String,
    pub mtype: &'static str,
    pub room: String,
    pub faulty: bool,
    pub reason: String,
    pub login: String,
}

#[derive(Template)]
#[template(path = "web/machines.html")]
struct ListPage {
    nav: Nav,
    rows: Vec<Row>,
    total: usize,
    matching: usize,
    page: usize,
    pages: usize,
    q: ListQuery,
    rooms: Vec<String>,
    types: Vec<&'static str>,
    /// The query string without `page` (for the pager's links).
    base: String,
    done: String,
}

fn matches(m: &Machine, q: &ListQuery) -> bool {
    let text = q.q.to_ascii_lowercase();
    (text.is_empty()
        || m.names().any(|n| n.as_str().contains(&text))
        || m.ip.to_string().starts_with(&text)
        || m.mac.to_string().contains(&text))
        && (q.room.is_empty() || m.room == q.room)
        && (q.mtype.is_empty() || m.mtype.as_str() == q.mtype)
        && match q.faulty.as_str() {
            "yes" => m.is_faulty,
            "no" => !m.is_faulty,
            _ => true,
        }
}

fn row(snap: &Snapshot, m: &Machine) -> Row {
    Row {
        hostname: m.hostname.to_string(),
        aliases: m.aliases.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        ip: m.ip.to_string(),
        mac: m.mac.to_string(),
        mtype: m.mtype.as_str(),
        room: m.room.clone(),
        faulty: m.is_faulty,
        reason: m.faulty_reason.clone(),
        login: snap
            .session_on(m.hostname.as_str())
            .map(|s| s.login.to_string())
            .unwrap_or_default(),
    }
}

pub(crate) async fn list(State(st): State<WebState>, me: Me, Query(q): Query<ListQuery>) -> Result<Response, WebError> {
    me.admin("the machines page")?;
    let snap = st.app.db.snapshot();
    let mut found: Vec<&Machine> = snap.machines().filter(|m| matches(m, &q)).collect();
    match q.sort.as_str() {
        "ip" => found.sort_by_key(|m| m.ip),
        "room" => found.sort_by(|a, b| (&a.room, &a.hostname).cmp(&(&b.room, &b.hostname))),
        "type" => found.sort_by(|a, b| (a.mtype, &a.hostname).cmp(&(b.mtype, &b.hostname))),
        _ => {} // by hostname: the Snapshot's order
    }
    let pages = found.len().div_ceil(PAGE).max(1);
    let page = q.page.clamp(1, pages);
    let rows = found
        .iter()
        .skip((page - 1) * PAGE)
        .take(PAGE)
        .map(|m| row(&snap, m))
        .collect();
    let mut rooms: Vec<String> = snap.machines().map(|m| m.room.clone()).collect();
    rooms.sort();
    rooms.dedup();
    let base = form_urlencoded::Serializer::new(String::new())
        .append_pair("q", &q.q)
        .append_pair("room", &q.room)
        .append_pair("mtype", &q.mtype)
        .append_pair("faulty", &q.faulty)
        .append_pair("sort", &q.sort)
        .finish();
    Ok(html(&ListPage {
        nav: me.nav(),
        rows,
        total: snap.machine_count(),
        matching: found.len(),
        page,
        pages,
        rooms,
        types: MachineType::ALL.iter().map(|t| t.as_str()).collect(),
        base,
        done: q.done.clone(),
        q,
    }))
}

/// The machine form's values (what was typed, so an error keeps it).
#[derive(Debug, Default, Clone)]
pub(crate) struct MachineForm {
    pub hostname: String,
    pub aliases: String,
    pub ip: String,
    pub mac: String,
    pub mtype: String,
    pub room: String,
    pub rfs: String,
    pub hfs: String,
    pub faulty: bool,
    pub reason: String,
    pub boot: String,
    pub version: u64,
}

impl MachineForm {
    fn of(m: &Machine) -> Self {
        Self {
            hostname: m.hostname.to_string(),
            aliases: m.aliases.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            ip: m.ip.to_string(),
            mac: m.mac.to_string(),
            mtype: m.mtype.as_str().to_owned(),
            room: m.room.clone(),
            rfs: m.rfs.to_string(),
            hfs: m.hfs.to_string(),
            faulty: m.is_faulty,
            reason: m.faulty_reason.clone(),
            boot: m.boot.map(|b| b.as_str().to_owned()).unwrap_or_default(),
            version: m.version,
        }
    }

    fn from(f: &Form) -> Self {
        let s = |n: &str| f.get(n).unwrap_or("").to_owned();
        Self {
            hostname: s("hostname"),
            aliases: s("aliases"),
            ip: s("ip"),
            mac: s("mac"),
            mtype: s("mtype"),
            room: s("room"),
            rfs: s("rfs"),
            hfs: s("hfs"),
            faulty: f.get("is_faulty") == Some("on"),
            reason: s("faulty_reason"),
            boot: s("boot"),
            version: f.version(),
        }
    }
}

#[derive(Template)]
#[template(path = "web/machine.html")]
struct MachinePage {
    nav: Nav,
    /// `None` for a new machine.
    name: Option<String>,
    m: MachineForm,
    fields: Vec<TextField>,
    errors: Errors,
    types: Vec<&'static str>,
}

fn form_page(me: &Me, name: Option<String>, m: MachineForm, errors: Errors) -> Response {
    let fields = vec![
        TextField::new(
            "hostname",
            "Hostname",
            &m.hostname,
            "letters, digits and -, e.g. r01p01",
        ),
        TextField::new("aliases", "Aliases", &m.aliases, "comma-separated"),
        TextField::new("mac", "MAC address", &m.mac, "aa:bb:cc:dd:ee:ff, any common notation"),
        TextField::new(
            "ip",
            "IP address",
            &m.ip,
            "empty: the lowest free address of the type's pool",
        ),
        TextField::new("room", "Room", &m.room, ""),
        TextField::new("rfs", "RFS (NFS root server)", &m.rfs, "a number"),
        TextField::new("hfs", "HFS (home server)", &m.hfs, "a number"),
    ];
    html(&MachinePage {
        nav: me.nav(),
        name,
        m,
        fields,
        errors,
        types: MachineType::ALL.iter().map(|t| t.as_str()).collect(),
    })
}

pub(crate) async fn new_page(me: Me) -> Result<Response, WebError> {
    me.admin("adding machines")?;
    let m = MachineForm {
        mtype: "user".into(),
        ..MachineForm::default()
    };
    Ok(form_page(&me, None, m, Errors::default()))
}

/// The model's patch from the form (the API's rules: every error names its field).
fn patch(f: &Form, edit: bool) -> Result<MachinePatch, keel_store::StoreError> {
    let mut v = f.json(&[
        "hostname",
        "aliases",
        "ip",
        "mac",
        "mtype",
        "room",
        "rfs",
        "hfs",
        "faulty_reason",
    ]);
    if edit {
        v["is_faulty"] = serde_json::Value::Bool(f.get("is_faulty") == Some("on"));
        v["boot"] = f.get("boot").unwrap_or("auto").into();
        // Emptied fields are meant: no aliases, no reason.
        for k in ["aliases", "faulty_reason"] {
            if v.get(k).is_none() {
                v[k] = "".into();
            }
        }
    } else if let Some(b) = f.get("boot").filter(|b| !b.is_empty()) {
        v["boot"] = b.into();
    }
    Ok(MachinePatch::from_fields(Fields::new(v, Strictness::Lenient)?)?)
}

pub(crate) async fn create(State(st): State<WebState>, me: Me, body: Bytes) -> Result<Response, WebError> {
    let f = me.admin_form(&body, "adding machines")?;
    let result = match patch(&f, false) {
        Ok(p) => st.app.db.create_machine(&me.principal(), p).await,
        Err(e) => Err(e),
    };
    saved(
        result,
        |m| format!("/machines?done=added+{}", m.hostname),
        |errors| form_page(&me, None, MachineForm::from(&f), errors),
    )
}

fn find(st: &WebState, name: &str) -> Result<Machine, WebError> {
    st.app
        .db
        .snapshot()
        .machine_by_name(name)
        .cloned()
        .ok_or_else(|| WebError::NotFound(format!("machine {name}")))
}

pub(crate) async fn edit_page(
    State(st): State<WebState>,
    me: Me,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    me.admin("editing machines")?;
    let m = find(&st, &name)?;
    Ok(form_page(
        &me,
        Some(m.hostname.to_string()),
        MachineForm::of(&m),
        Errors::default(),
    ))
}

pub(crate) async fn save(
    State(st): State<WebState>,
    me: Me,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let f = me.admin_form(&body, "editing machines")?;
    let version = f.version();
    let result = match patch(&f, true) {
        Ok(p) => st.app.db.edit_machine(&me.principal(), &name, version, p).await,
        Err(e) => Err(e),
    };
    saved(
        result,
        |m| format!("/machines?done=saved+{}", m.hostname),
        |errors| form_page(&me, Some(name), MachineForm::from(&f), errors),
    )
}

#[derive(Template)]
#[template(path = "web/confirm.html")]
struct ConfirmPage {
    nav: Nav,
    title: String,
    question: String,
    action: String,
    version: u64,
    back: String,
}

pub(crate) async fn delete_page(
    State(st): State<WebState>,
    me: Me,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    me.admin("deleting machines")?;
    let m = find(&st, &name)?;
    Ok(html(&ConfirmPage {
        nav: me.nav(),
        title: format!("Delete {}?", m.hostname),
        question: format!(
            "Delete machine {} ({}, {})? Its address goes back to the pool; this cannot be undone.",
            m.hostname, m.ip, m.mac
        ),
        action: format!("/machines/{}/delete", m.hostname),
        version: m.version,
        back: format!("/machines/{}", m.hostname),
    }))
}

pub(crate) async fn delete(
    State(st): State<WebState>,
    me: Me,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let f = me.admin_form(&body, "deleting machines")?;
    let version = f.version();
    match st.app.db.delete_machine(&me.principal(), &name, version).await {
        Ok(m) => Ok(Redirect::to(&format!("/machines?done=deleted+{}", m.hostname)).into_response()),
        Err(keel_store::StoreError::VersionMismatch { .. }) => Err(WebError::Forbidden(format!(
            "{name} changed since you opened it: nothing was deleted. Look at it again first."
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Bulk actions on the checked rows: mark faulty (with a reason), clear faulty, delete.
pub(crate) async fn bulk(State(st): State<WebState>, me: Me, body: Bytes) -> Result<Response, WebError> {
    let f = me.admin_form(&body, "bulk actions on machines")?;
    let names = f.all("pick");
    let action = f.get("action").unwrap_or("");
    let reason = f.get("reason").unwrap_or("").to_owned();
    if action == "delete" && f.get("confirm") != Some("on") {
        return Err(WebError::Forbidden(
            "deleting several machines needs the confirmation box ticked: nothing was deleted".into(),
        ));
    }
    let who = me.principal();
    let mut done = 0;
    for name in &names {
        let Ok(m) = find(&st, name) else { continue };
        let r = match action {
            "faulty" | "fixed" => {
                let p = MachinePatch {
                    is_faulty: Some(action == "faulty"),
                    faulty_reason: Some(if action == "faulty" {
                        reason.clone()
                    } else {
                        String::new()
                    }),
                    ..MachinePatch::default()
                };
                st.app.db.edit_machine(&who, name, m.version, p).await.map(|_| ())
            }
            "delete" => st.app.db.delete_machine(&who, name, m.version).await.map(|_| ()),
            other => return Err(WebError::Forbidden(format!("unknown bulk action {other:?}"))),
        };
        if r.is_ok() {
            done += 1;
        }
    }
    let msg = format!("{action}: {done} of {} machine(s)", names.len());
    Ok(Redirect::to(&format!(
        "/machines?done={}",
        form_urlencoded::byte_serialize(msg.as_bytes()).collect::<String>()
    ))
    .into_response())
}
