//! `GET /map`: rooms → machines → who is logged in, updating live. `GET /map.json?since=SEQ`
//! answers at once when the state is newer than `SEQ`, else waits (up to 25 s) for the next
//! machine, session or setting change (whether registration is open is on the map too): the page long-polls it, so it follows logins within a round trip.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_model::{Kind, Snapshot};
use serde::{Deserialize, Serialize};

use keel_server::{ApiError, Caller};

use crate::WebState;

const PAGE: &str = include_str!("../templates/map/map.html");
const WAIT: Duration = Duration::from_secs(25);

#[derive(Debug, Serialize)]
struct Seat {
    hostname: String,
    mtype: &'static str,
    faulty: bool,
    login: Option<String>,
}

#[derive(Debug, Serialize)]
struct MapData {
    seq: u64,
    rooms: BTreeMap<String, Vec<Seat>>,
    registration: Registration,
}

/// Whether machines may register themselves now, and until when (None: until an organiser
/// closes it): the organisers installing the room see it on the map.
#[derive(Debug, Serialize)]
struct Registration {
    open: bool,
    until: Option<String>,
}

fn map_of(snap: &Snapshot) -> MapData {
    let mut rooms: BTreeMap<String, Vec<Seat>> = BTreeMap::new();
    for m in snap.machines() {
        rooms.entry(m.room.clone()).or_default().push(Seat {
            hostname: m.hostname.to_string(),
            mtype: m.mtype.as_str(),
            faulty: m.is_faulty,
            login: snap.session_on(m.hostname.as_str()).map(|s| s.login.to_string()),
        });
    }
    let setting = snap.setting("allow_self_registration").ok();
    let registration = Registration {
        open: snap.registration_open(&keel_store::now_rfc3339()),
        until: setting.as_ref().and_then(|s| s.until()).map(str::to_owned),
    };
    MapData {
        seq: snap.seq(),
        rooms,
        registration,
    }
}

fn check(st: &WebState, caller: &Caller) -> Result<(), ApiError> {
    caller.reader(st.app.presence.config().map_public || st.app.config.open_reads)
}

pub(crate) async fn page(State(st): State<WebState>, caller: Caller) -> Result<Response, ApiError> {
    check(&st, &caller)?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Since {
    since: Option<u64>,
}

pub(crate) async fn data(
    State(st): State<WebState>,
    caller: Caller,
    Query(q): Query<Since>,
) -> Result<Response, ApiError> {
    check(&st, &caller)?;
    let mut rx = st.app.db.subscribe();
    if let Some(since) = q.since {
        if st.app.db.snapshot().seq() <= since {
            let wait = async {
                loop {
                    match rx.recv().await {
                        Ok(c) if matches!(c.kind, Kind::Machine | Kind::Session | Kind::Setting) => return,
                        Ok(_) => {}
                        // Lagged: something changed, answer now. Closed: the server stops.
                        Err(_) => return,
                    }
                }
            };
            tokio::select! {
                () = wait => {}
                () = tokio::time::sleep(WAIT) => {}
                () = st.app.stopping() => {}
            }
        }
    }
    let body = map_of(&st.app.db.snapshot());
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}
