//! Switches, settings, propagation status with force and block.

use std::collections::BTreeSet;

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use keel_model::{Setting, SETTINGS};

use super::{html, saved, Errors, Form, Me, Nav, TextField, WebError, WebRole};
use crate::WebState;

pub(crate) struct SwitchRow {
    pub name: String,
    pub chassis: String,
    pub room: String,
    pub rfs: u32,
    pub hfs: u32,
}

#[derive(Template)]
#[template(path = "web/switches.html")]
struct SwitchesPage {
    nav: Nav,
    rows: Vec<SwitchRow>,
}

pub(crate) async fn switches(State(st): State<WebState>, me: Me) -> Result<Response, WebError> {
    me.admin("the switches page")?;
    let snap = st.app.db.snapshot();
    let rows = snap
        .switches()
        .map(|s| SwitchRow {
            name: s.name.to_string(),
            chassis: s.chassis.clone(),
            room: s.room.clone(),
            rfs: s.rfs,
            hfs: s.hfs,
        })
        .collect();
    Ok(html(&SwitchesPage { nav: me.nav(), rows }))
}

#[derive(Template)]
#[template(path = "web/switch.html")]
struct SwitchPage {
    nav: Nav,
    /// `None` for a new switch.
    name: Option<String>,
    fields: Vec<TextField>,
    version: u64,
    errors: Errors,
}

fn switch_page(me: &Me, name: Option<String>, f: &[(&str, String)], version: u64, errors: Errors) -> Response {
    let v = |k: &str| f.iter().find(|(n, _)| *n == k).map_or("", |(_, v)| v.as_str());
    let mut fields = Vec::new();
    if name.is_none() {
        fields.push(TextField::new("name", "Name", v("name"), "letters, digits and -"));
    }
    fields.extend([
        TextField::new(
            "chassis",
            "Chassis id (LLDP)",
            v("chassis"),
            "as the switch announces it",
        ),
        TextField::new("room", "Room", v("room"), ""),
        TextField::new("rfs", "RFS", v("rfs"), "a number"),
        TextField::new("hfs", "HFS", v("hfs"), "a number"),
    ]);
    html(&SwitchPage {
        nav: me.nav(),
        name,
        fields,
        version,
        errors,
    })
}

const SWITCH_FIELDS: [&str; 5] = ["name", "chassis", "room", "rfs", "hfs"];

fn typed(f: &Form) -> Vec<(&'static str, String)> {
    SWITCH_FIELDS
        .iter()
        .map(|k| (*k, f.get(k).unwrap_or("").to_owned()))
        .collect()
}

pub(crate) async fn new_switch(me: Me) -> Result<Response, WebError> {
    me.admin("adding switches")?;
    Ok(switch_page(&me, None, &[], 0, Errors::default()))
}

pub(crate) async fn create_switch(State(st): State<WebState>, me: Me, body: Bytes) -> Result<Response, WebError> {
    let f = me.admin_form(&body, "adding switches")?;
    let fields = keel_model::input::Fields::new(f.json(&SWITCH_FIELDS), keel_model::input::Strictness::Lenient)
        .map_err(keel_store::StoreError::from);
    let r = match fields {
        Ok(fields) => st.app.db.create_switch(&me.principal(), fields).await,
        Err(e) => Err(e),
    };
    saved(
        r,
        |_| "/switches".into(),
        |errors| switch_page(&me, None, &typed(&f), 0, errors),
    )
}

pub(crate) async fn edit_switch(
    State(st): State<WebState>,
    me: Me,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response, WebError> {
    me.admin("editing switches")?;
    let s = st
        .app
        .db
        .snapshot()
        .switch(&name)
        .cloned()
        .ok_or_else(|| WebError::NotFound(format!("switch {name}")))?;
    let values = [
        ("chassis", s.chassis.clone()),
        ("room", s.room.clone()),
        ("rfs", s.rfs.to_string()),
        ("hfs", s.hfs.to_string()),
    ];
    Ok(switch_page(&me, Some(name), &values, s.version, Errors::default()))
}

pub(crate) async fn save_switch(
    State(st): State<WebState>,
    me: Me,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let f = me.admin_form(&body, "editing switches")?;
    let version = f.version();
    let r = if f.get("delete") == Some("on") {
        st.app.db.delete_switch(&me.principal(), &name, version).await
    } else {
        let mut v = f.json(&SWITCH_FIELDS[1..]);
        v["name"] = name.clone().into();
        for k in ["chassis", "room"] {
            if v.get(k).is_none() {
                v[k] = "".into();
            }
        }
        match keel_model::input::Fields::new(v, keel_model::input::Strictness::Lenient) {
            Ok(fields) => st.app.db.edit_switch(&me.principal(), &name, version, fields).await,
            Err(e) => Err(e.into()),
        }
    };
    saved(
        r,
        |_| "/switches".into(),
        |errors| switch_page(&me, Some(name), &typed(&f), version, errors),
    )
}

pub(crate) struct SettingRow {
    pub key: &'static str,
    pub on: bool,
    /// When it turns itself off (`2026-06-01 18:00 UTC`), or empty.
    pub until: String,
    /// It may be turned on for a time only.
    pub timed: bool,
    pub help: &'static str,
    pub version: u64,
    /// Shown in red beside the switch.
    pub warning: &'static str,
}

#[derive(Template)]
#[template(path = "web/settings.html")]
struct SettingsPage {
    nav: Nav,
    rows: Vec<SettingRow>,
    error: String,
}

fn settings_page(st: &WebState, me: &Me, error: String) -> Response {
    let snap = st.app.db.snapshot();
    let rows = SETTINGS
        .iter()
        .map(|spec| {
            let s = snap.setting(spec.key).unwrap_or_else(|_| Setting::default_for(spec));
            let on = s.on_at(&keel_store::now_rfc3339());
            SettingRow {
                key: spec.key,
                on,
                until: s
                    .until()
                    .filter(|_| on)
                    .map(|t| format!("{} {} UTC", &t[..10], &t[11..16]))
                    .unwrap_or_default(),
                timed: spec.until,
                help: spec.help,
                version: s.version,
                warning: match spec.key {
                    "allow_self_registration" => {
                        "While on, any machine on the network can register itself without a token: \
                         turn it on only while installing the site, and off right after."
                    }
                    "contest_mode" => "Turning it on cuts contestants' internet, including open connections.",
                    _ => "",
                },
            }
        })
        .collect();
    html(&SettingsPage {
        nav: me.nav(),
        rows,
        error,
    })
}

pub(crate) async fn settings(State(st): State<WebState>, me: Me) -> Result<Response, WebError> {
    me.admin("the settings page")?;
    Ok(settings_page(&st, &me, String::new()))
}

pub(crate) async fn save_setting(State(st): State<WebState>, me: Me, body: Bytes) -> Result<Response, WebError> {
    let f = me.admin_form(&body, "changing settings")?;
    let key = f.get("key").unwrap_or("");
    let on = f.get("value") == Some("on");
    // "Turn on for N hours": stored as the end time (the setting closes itself then).
    let value = match f
        .get("for_hours")
        .and_then(|h| h.parse::<u8>().ok())
        .filter(|h| on && *h > 0)
    {
        Some(hours) => {
            let end = time::OffsetDateTime::now_utc() + time::Duration::hours(i64::from(hours));
            serde_json::Value::String(keel_model::rfc3339(end))
        }
        None => serde_json::Value::Bool(on),
    };
    let version = f.version();
    match st.app.db.set_setting(&me.principal(), key, value, Some(version)).await {
        Ok(s) => {
            tracing::info!(by = %me.login, key = %s.key, value = %s.value, "setting changed on the web page");
            Ok(Redirect::to("/settings").into_response())
        }
        Err(keel_store::StoreError::VersionMismatch { .. }) => Ok(settings_page(
            &st,
            &me,
            format!("{key} was changed by someone else meanwhile: look at its value now and choose again."),
        )),
        Err(keel_store::StoreError::Invalid(e)) => Ok(settings_page(&st, &me, e.to_string())),
        Err(e) => Err(e.into()),
    }
}

pub(crate) struct DestRow {
    pub facility: String,
    pub service: String,
    pub state: String,
    pub destination: String,
    pub status: String,
    pub at: String,
    pub last_error: String,
    pub blocked: bool,
}

#[derive(Template)]
#[template(path = "web/propagation.html")]
struct PropagationPage {
    nav: Nav,
    rows: Vec<DestRow>,
    facilities: Vec<String>,
    engine: bool,
}

/// A serde enum's name (`DONE`, `SENDERROR`, …).
fn name<T: serde::Serialize>(t: &T) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn visible(me: &Me, facility: &str) -> bool {
    match &me.role {
        WebRole::Admin => true,
        WebRole::Manager(f) => f.iter().any(|x| x == facility),
    }
}

pub(crate) async fn propagation(State(st): State<WebState>, me: Me) -> Result<Response, WebError> {
    let snap = st.app.db.snapshot();
    let facilities: Vec<String> = snap
        .facilities()
        .filter(|f| visible(&me, &f.name))
        .map(|f| f.name.clone())
        .collect();
    let mut rows = Vec::new();
    if let Some(engine) = st.app.engine() {
        for t in engine.status(None).into_iter().filter(|t| visible(&me, &t.facility)) {
            let blocked_service = snap
                .facility(&t.facility)
                .is_some_and(|f| f.blocked.contains(&t.service));
            if t.results.is_empty() {
                rows.push(DestRow {
                    facility: t.facility.clone(),
                    service: t.service.clone(),
                    state: name(&t.state),
                    destination: String::new(),
                    status: String::new(),
                    at: t.finished.clone().unwrap_or_default(),
                    last_error: t.error.clone().unwrap_or_default(),
                    blocked: blocked_service,
                });
            }
            for (dest, r) in &t.results {
                let key = format!("{}/{}/{dest}", t.facility, t.service);
                rows.push(DestRow {
                    facility: t.facility.clone(),
                    service: t.service.clone(),
                    state: name(&t.state),
                    destination: dest.clone(),
                    status: name(&r.status),
                    at: r.at.clone(),
                    last_error: r.last_error.clone().unwrap_or_default(),
                    blocked: blocked_service || snap.destination(&key).is_some_and(|d| d.blocked),
                });
            }
        }
    }
    Ok(html(&PropagationPage {
        nav: me.nav(),
        rows,
        facilities,
        engine: st.app.engine().is_some(),
    }))
}

/// The facility a form names, if this person runs it (refused and logged otherwise).
fn runs(st: &WebState, me: &Me, f: &Form) -> Result<String, WebError> {
    let facility = f.get("facility").unwrap_or("").to_owned();
    if st.app.db.snapshot().facility(&facility).is_none() {
        return Err(WebError::NotFound(format!("facility {facility}")));
    }
    if !visible(me, &facility) {
        keel_limits::refused!(WARN, login = %me.login, %facility, "web: refused (not a manager of this facility)");
        return Err(WebError::Forbidden(format!(
            "{} does not manage facility {facility}",
            me.login
        )));
    }
    Ok(facility)
}

pub(crate) async fn force(State(st): State<WebState>, me: Me, body: Bytes) -> Result<Response, WebError> {
    let f = Form::checked(&body, &me)?;
    let facility = runs(&st, &me, &f)?;
    let engine = st
        .app
        .engine()
        .ok_or_else(|| WebError::Forbidden("propagation is switched off on this server".into()))?;
    let service = f.get("service").filter(|s| !s.is_empty());
    engine
        .force(&facility, service)
        .map_err(|e| WebError::NotFound(format!("{e:?}")))?;
    tracing::info!(by = %me.login, %facility, ?service, "propagation forced on the web page");
    Ok(Redirect::to("/propagation").into_response())
}

/// Blocks or unblocks a service on a facility, or one destination.
pub(crate) async fn block(State(st): State<WebState>, me: Me, body: Bytes) -> Result<Response, WebError> {
    let f = Form::checked(&body, &me)?;
    let facility = runs(&st, &me, &f)?;
    let service = f.get("service").unwrap_or("").to_owned();
    let blocked = f.get("blocked") == Some("on");
    let who = me.principal();
    let snap = st.app.db.snapshot();
    let services: BTreeSet<String> = st.app.engine().map_or_else(
        || keel_gen::BuiltIn::ALL.iter().map(|b| b.name().to_owned()).collect(),
        keel_propagate::Engine::service_names,
    );
    match f.get("destination").filter(|d| !d.is_empty()) {
        Some(d) => {
            let key = format!("{facility}/{service}/{d}");
            let mut dest = snap
                .destination(&key)
                .cloned()
                .ok_or_else(|| WebError::NotFound(format!("destination {key}")))?;
            let version = dest.version;
            dest.blocked = blocked;
            st.app.db.put_destination(&who, dest, version, &services).await?;
        }
        None => {
            let mut fac = snap
                .facility(&facility)
                .cloned()
                .ok_or_else(|| WebError::NotFound(format!("facility {facility}")))?;
            let version = fac.version;
            fac.blocked.retain(|s| s != &service);
            if blocked {
                fac.blocked.push(service.clone());
            }
            st.app.db.put_facility(&who, fac, version, &services).await?;
        }
    }
    tracing::info!(by = %me.login, %facility, %service, blocked, "propagation block changed on the web page");
    Ok(Redirect::to("/propagation").into_response())
}
