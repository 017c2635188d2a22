//! `GET /api/v1/watch`: the live, resumable change feed; `GET /poll`: the prologin mdbsync feed.
//!
//! Each subscriber gets a producer task that writes lines into a bounded queue, which the HTTP body
//! drains. The producer subscribes to the Change broadcast *before* it reads the Snapshot, so every
//! change after the Snapshot's seq reaches it; it then sends either a snapshot or the log since the
//! client's seq, then live changes. It never skips a seq: a gap, a lag beyond the broadcast ring,
//! or a client that stops reading ends the stream with a reason line, and the client resumes from
//! its last seq. Writers and other subscribers never wait for a subscriber.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use keel_model::wire::{MachineWire, UserRecord};
use keel_model::{Change, Kind, Machine, Op, Snapshot, User};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::auth::Caller;
use crate::{ApiError, AppState};

/// How watch streams behave (from the server's configuration).
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// A heartbeat line after this long without any other line.
    pub heartbeat: Duration,
    /// Chunks (of up to 64 KiB of lines) queued for one subscriber.
    pub buffer: usize,
    /// A subscriber that accepts no line for this long is cut off.
    pub stall_timeout: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(10),
            buffer: 1024,
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// What a watch request asks for.
#[derive(Debug, Default)]
struct Params {
    since: Option<u64>,
    kinds: Option<Vec<Kind>>,
    db_id: Option<String>,
}

impl Params {
    fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut p = Self::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "since" => {
                    p.since = Some(
                        v.parse()
                            .map_err(|_| ApiError::invalid("since", "must be a sequence number"))?,
                    );
                }
                "kinds" => {
                    let kinds = v
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| {
                            Kind::parse(s)
                                .filter(|k| k.is_public())
                                .ok_or_else(|| ApiError::invalid("kinds", format!("unknown kind {s:?}")))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    p.kinds = Some(kinds);
                }
                "db_id" => p.db_id = Some(v.into_owned()),
                other => {
                    return Err(ApiError::invalid(
                        other,
                        "unknown parameter; known: since, kinds, db_id",
                    ))
                }
            }
        }
        Ok(p)
    }

    fn wants(&self, kind: Kind) -> bool {
        kind.is_public() && self.kinds.as_ref().is_none_or(|k| k.contains(&kind))
    }
}

/// Where a stream starts: the log after a seq, or a snapshot.
enum Start {
    Resume(u64),
    Snapshot,
}

pub(crate) async fn watch(
    State(st): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    caller.reader(st.config.open_reads)?;
    let params = Params::parse(q.as_deref())?;
    let rx = st.db.subscribe(); // before the Snapshot: no change can fall between the two
    let snap = st.db.snapshot();
    let start = decide_start(&st, &params, &snap).await?;
    let (tx, lines) = mpsc::channel(st.config.watch.buffer.max(1));
    let reason = Arc::new(Mutex::new(None));
    let producer = Producer {
        st: st.clone(),
        params,
        tx,
        reason: reason.clone(),
        last: 0,
        out: Vec::new(),
        one: None,
    };
    tokio::spawn(producer.run(start, snap, rx));
    Ok(ndjson(body(lines, reason), st.db.db_id()))
}

async fn decide_start(st: &AppState, p: &Params, snap: &Snapshot) -> Result<Start, ApiError> {
    let Some(since) = p.since else {
        return Ok(Start::Snapshot);
    };
    if p.db_id.as_deref().is_some_and(|id| id != st.db.db_id()) || since > snap.seq() {
        return Ok(Start::Snapshot); // another database (a restore), or a seq this one never had
    }
    let first = st.db.store().first_seq().await?;
    Ok(if since == snap.seq() || (first > 0 && since + 1 >= first) {
        Start::Resume(since)
    } else {
        Start::Snapshot
    })
}

fn ndjson(body: Body, db_id: &str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    if let Ok(v) = HeaderValue::from_str(db_id) {
        resp.headers_mut().insert("x-keel-db-id", v);
    }
    resp
}

/// The HTTP body: every queued line, then the reason the stream ended, if any.
fn body(lines: mpsc::Receiver<Bytes>, reason: Arc<Mutex<Option<Bytes>>>) -> Body {
    let stream = futures_util::stream::unfold((lines, reason, false), |(mut lines, reason, done)| async move {
        if done {
            return None;
        }
        match lines.recv().await {
            Some(line) => Some((Ok::<_, std::convert::Infallible>(line), (lines, reason, false))),
            None => {
                let last = reason.lock().ok().and_then(|mut r| r.take())?;
                Some((Ok(last), (lines, reason, true)))
            }
        }
    });
    Body::from_stream(stream)
}

/// Why a producer stopped.
enum Stop {
    /// The client went away.
    Gone,
    /// The stream must end with this reason; the client resumes from its last seq.
    Cut(String),
}

struct Producer {
    st: AppState,
    params: Params,
    tx: mpsc::Sender<Bytes>,
    reason: Arc<Mutex<Option<Bytes>>>,
    /// The last seq the client has been given (or skipped, for kinds it did not ask for).
    last: u64,
    /// Lines not yet handed to the HTTP body: sent as one chunk, so a burst costs few writes.
    out: Vec<u8>,
    /// A single pending line, shared with the other subscribers (no copy); `out` takes over when
    /// a second line comes.
    one: Option<Bytes>,
}

/// Lines are handed to the HTTP body in chunks of about this size.
const CHUNK: usize = 64 * 1024;

impl Producer {
    async fn run(mut self, start: Start, snap: Arc<Snapshot>, mut rx: broadcast::Receiver<Arc<Change>>) {
        let metrics = self.st.metrics.clone();
        metrics.watch_subscribers.inc();
        let result = async {
            match start {
                Start::Snapshot => self.snapshot(&snap).await?,
                Start::Resume(since) => self.replay(since, snap.seq()).await?,
            }
            drop(snap); // an idle subscriber must not pin an old Snapshot in memory
            self.live(&mut rx).await
        }
        .await;
        metrics.watch_subscribers.dec();
        if let Err(Stop::Cut(reason)) = result {
            metrics.watch_cut.inc();
            tracing::info!(%reason, last = self.last, "watch stream cut");
            let line = line(&json!({"type": "error", "reason": reason, "seq": self.last}));
            if let Ok(mut r) = self.reason.lock() {
                *r = Some(line);
            }
        }
    }

    /// Bytes waiting to be handed to the body.
    fn pending(&self) -> usize {
        self.out.len() + self.one.as_ref().map_or(0, Bytes::len)
    }

    /// Queues a line that other subscribers share: alone, it is sent as is.
    fn push_shared(&mut self, line: Bytes) {
        if self.out.is_empty() && self.one.is_none() {
            self.one = Some(line);
            self.st.metrics.watch_events.inc();
        } else {
            self.push(&line);
        }
    }

    fn push(&mut self, line: &[u8]) {
        if let Some(first) = self.one.take() {
            self.out.extend_from_slice(&first);
        }
        self.out.extend_from_slice(line);
        self.st.metrics.watch_events.inc();
    }

    /// Hands the pending lines to the body, waiting at most the stall timeout for room.
    async fn flush(&mut self) -> Result<(), Stop> {
        let chunk = match self.one.take() {
            Some(line) => line,
            None if self.out.is_empty() => return Ok(()),
            None => Bytes::from(std::mem::take(&mut self.out)),
        };
        let chunk = match self.tx.try_send(chunk) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop::Gone),
            Err(mpsc::error::TrySendError::Full(chunk)) => chunk,
        };
        let timeout = self.st.config.watch.stall_timeout;
        match tokio::time::timeout(timeout, self.tx.send(chunk)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => Err(Stop::Cut(format!(
                "too slow: accepted nothing for {} s",
                timeout.as_secs()
            ))),
        }
    }

    async fn push_flushing(&mut self, line: &[u8]) -> Result<(), Stop> {
        self.push(line);
        if self.pending() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn snapshot(&mut self, snap: &Snapshot) -> Result<(), Stop> {
        let seq = snap.seq();
        self.push(&line(
            &json!({"type": "snapshot_begin", "seq": seq, "db_id": self.st.db.db_id()}),
        ));
        let kinds: Vec<Kind> = Kind::ALL.into_iter().filter(|k| self.params.wants(*k)).collect();
        for kind in kinds {
            for data in keel_store::records_of(snap, kind) {
                self.push_flushing(&line(&json!({"seq": seq, "kind": kind, "op": "put", "data": data})))
                    .await?;
            }
        }
        self.last = seq;
        self.push(&line(&json!({"type": "snapshot_end", "seq": seq})));
        self.flush().await
    }

    /// Sends the logged changes after `since` up to `until` (the Snapshot's seq).
    async fn replay(&mut self, since: u64, until: u64) -> Result<(), Stop> {
        self.last = since;
        while self.last < until {
            let batch = self
                .st
                .db
                .store()
                .changes_since(self.last, 1000)
                .await
                .map_err(|e| Stop::Cut(e.to_string()))?;
            if batch.is_empty() {
                return Err(Stop::Cut("the change log ended early".into()));
            }
            for c in batch.iter().filter(|c| c.seq <= until) {
                self.change(c)?;
                if self.pending() >= CHUNK {
                    self.flush().await?;
                }
            }
        }
        self.flush().await
    }

    /// Queues one change, in order; a gap is never skipped silently.
    fn change(&mut self, c: &Change) -> Result<(), Stop> {
        if c.seq <= self.last {
            return Ok(()); // already in the snapshot or the replay
        }
        if c.seq != self.last + 1 {
            return Err(Stop::Cut(format!(
                "changes {} to {} are no longer available; resume",
                self.last + 1,
                c.seq - 1
            )));
        }
        if self.params.wants(c.kind) {
            let line = self.st.watch_lines.line(c);
            self.push_shared(line);
        }
        self.last = c.seq;
        Ok(())
    }

    /// Live changes until the client goes, falls behind, or the server stops. The timers and
    /// wakers live outside the loop: a change fanned out to a thousand subscribers must not cost a
    /// thousand timer registrations.
    async fn live(&mut self, rx: &mut broadcast::Receiver<Arc<Change>>) -> Result<(), Stop> {
        let heartbeat = self.st.config.watch.heartbeat;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let st = self.st.clone();
        let mut stopping = std::pin::pin!(st.stopping());
        let mut quiet = true; // nothing sent since the last tick
        loop {
            tokio::select! {
                r = rx.recv() => {
                    self.received(r.map_err(Into::into))?;
                    // Take what else is already there, then write it all at once.
                    while self.pending() < CHUNK {
                        match rx.try_recv() {
                            Err(broadcast::error::TryRecvError::Empty) => break,
                            r => self.received(r.map_err(|e| match e {
                                broadcast::error::TryRecvError::Lagged(n) => Lag::Behind(n),
                                _ => Lag::Closed,
                            }))?,
                        }
                    }
                    quiet &= self.pending() == 0;
                    self.flush().await?;
                }
                _ = ticks.tick() => {
                    if self.tx.is_closed() {
                        return Err(Stop::Gone);
                    }
                    if quiet {
                        self.push(&line(&json!({"type": "heartbeat", "seq": self.last})));
                        self.flush().await?;
                    }
                    quiet = true;
                }
                () = &mut stopping => return Err(Stop::Cut("server shutting down; resume elsewhere or later".into())),
            }
        }
    }

    fn received(&mut self, r: Result<Arc<Change>, Lag>) -> Result<(), Stop> {
        match r {
            Ok(c) => self.change(&c),
            Err(Lag::Behind(n)) => Err(Stop::Cut(format!("too slow: fell {n} changes behind"))),
            Err(Lag::Closed) => Err(Stop::Cut("server shutting down".into())),
        }
    }
}

/// Why the broadcast gave no change.
enum Lag {
    Behind(u64),
    Closed,
}

impl From<broadcast::error::RecvError> for Lag {
    fn from(e: broadcast::error::RecvError) -> Self {
        match e {
            broadcast::error::RecvError::Lagged(n) => Self::Behind(n),
            broadcast::error::RecvError::Closed => Self::Closed,
        }
    }
}

fn line(v: &Value) -> Bytes {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

/// The serialized lines of recent changes, shared by all subscribers: fanning a change out to a
/// thousand watchers serializes it once.
#[derive(Default)]
pub(crate) struct LineCache {
    recent: Mutex<(std::collections::HashMap<u64, Bytes>, std::collections::VecDeque<u64>)>,
}

const LINE_CACHE: usize = 16_384;

impl LineCache {
    fn line(&self, c: &Change) -> Bytes {
        if let Some(b) = self.recent.lock().ok().and_then(|r| r.0.get(&c.seq).cloned()) {
            return b;
        }
        #[derive(serde::Serialize)]
        struct Line<'a> {
            seq: u64,
            kind: Kind,
            op: Op,
            data: &'a Option<Value>,
        }
        let data = if c.op == Op::Put { &c.after } else { &c.before };
        let data = &data.as_ref().map(|d| keel_model::wire::public_record(c.kind, d));
        let mut out = serde_json::to_vec(&Line {
            seq: c.seq,
            kind: c.kind,
            op: c.op,
            data,
        })
        .unwrap_or_default();
        out.push(b'\n');
        let b = Bytes::from(out);
        if let Ok(mut guard) = self.recent.lock() {
            let (map, order) = &mut *guard;
            if map.insert(c.seq, b.clone()).is_none() {
                order.push_back(c.seq);
                if order.len() > LINE_CACHE {
                    if let Some(old) = order.pop_front() {
                        map.remove(&old);
                    }
                }
            }
        }
        b
    }
}

/// `GET /poll` (prologin mdbsync/udbsync): first the whole machine (or user) set as one JSON array
/// of `{"type":"update","data":…}`, then one array line per batch of changes. No heartbeats.
pub(crate) async fn poll(
    State(st): State<AppState>,
    uri: axum::extract::OriginalUri,
    headers: axum::http::HeaderMap,
) -> Response {
    let kind = match crate::rpc::service_of(uri.path(), &headers) {
        crate::rpc::Service::Udb => Kind::User,
        crate::rpc::Service::Mdb => Kind::Machine,
    };
    let mut rx = st.db.subscribe();
    let snap = st.db.snapshot();
    let first: Vec<Value> = match kind {
        Kind::User => snap
            .users()
            .map(|u| json!({"type": "update", "data": UserRecord::from(u)}))
            .collect(),
        _ => snap
            .machines()
            .map(|m| json!({"type": "update", "data": MachineWire(m)}))
            .collect(),
    };
    let (tx, lines) = mpsc::channel::<Bytes>(st.config.watch.buffer.max(1));
    let stall = st.config.watch.stall_timeout;
    let task_st = st.clone();
    tokio::spawn(async move {
        let st = task_st;
        let mut last = snap.seq();
        let mut batch = vec![json!(first)];
        loop {
            for events in batch.drain(..) {
                if !matches!(tokio::time::timeout(stall, tx.send(line(&events))).await, Ok(Ok(()))) {
                    return;
                }
            }
            let stopping = st.stopping();
            let c = tokio::select! {
                r = rx.recv() => match r {
                    Ok(c) => c,
                    Err(_) => return, // lagged or closed: the client reconnects
                },
                () = stopping => return,
            };
            let mut events = Vec::new();
            let mut next = Some(c);
            while let Some(c) = next {
                if c.seq > last {
                    last = c.seq;
                    events.extend(poll_event(&c, kind));
                }
                next = rx.try_recv().ok();
            }
            if !events.is_empty() {
                batch.push(Value::Array(events));
            }
        }
    });
    ndjson(body(lines, Arc::new(Mutex::new(None))), st.db.db_id())
}

/// One change as an mdbsync/udbsync event, if it is of the kind this feed carries.
fn poll_event(c: &Change, kind: Kind) -> Option<Value> {
    if c.kind != kind {
        return None;
    }
    let (event, rec) = if c.op == Op::Put {
        ("update", &c.after)
    } else {
        ("delete", &c.before)
    };
    let rec = rec.clone()?;
    let data = match kind {
        Kind::User => json!(UserRecord::from(&serde_json::from_value::<User>(rec).ok()?)),
        _ => json!(MachineWire(&serde_json::from_value::<Machine>(rec).ok()?)),
    };
    Some(json!({"type": event, "data": data}))
}
