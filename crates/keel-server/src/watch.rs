//! `GET /api/v1/watch`: the live, resumable change feed; `GET /poll`: the prologin mdbsync feed.
//!
//! A stream subscribes to the Change broadcast *before* it reads the Snapshot, so every change
//! after the Snapshot's seq reaches it. A producer task first sends either a snapshot or the log
//! since the client's seq into a bounded queue, which the HTTP body drains; then it hands the live
//! phase to the body itself ([`live`]): hyper's poll of the body takes changes straight from the
//! broadcast, so fanning a change out costs one task wake-up per subscriber, not two and a queue.
//! The producer stays on as the stream's watchdog. A stream never skips a seq: a gap, a lag beyond
//! the broadcast ring, or a client that stops reading ends it with a reason line, and the client
//! resumes from its last seq. Writers and other subscribers never wait for a subscriber.

mod live;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use keel_model::wire::{MachineWire, UserRecord, WatchControl, WatchLine, WatchRecord};
use keel_model::{Change, Kind, Machine, Op, Snapshot, User};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::auth::Caller;
use crate::{ApiError, AppState};

/// The `[watch]` table of keel.toml: how the change feed's streams behave. Its `Default` is the
/// one place these defaults are written.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    /// A heartbeat line after this long without any other line.
    #[serde(rename = "heartbeat_secs", with = "keel_limits::duration::secs")]
    #[schemars(with = "u64")]
    pub heartbeat: Duration,
    /// Chunks (of up to 64 KiB of lines) queued for one subscriber while it receives a snapshot
    /// or a replay (16: 1 MiB, what a subscriber that stops reading can hold).
    pub buffer: usize,
    /// A subscriber that accepts no line for this long while changes wait is cut off.
    #[serde(rename = "stall_timeout_secs", with = "keel_limits::duration::secs")]
    #[schemars(with = "u64")]
    pub stall_timeout: Duration,
    /// Watch and `/poll` streams open at once; over it a new one gets 503 at once.
    pub max_subscribers: usize,
    /// prologin's sync subscriber secret (`[sync] subscriber_secret_file`): when set, `/poll`
    /// needs a valid timeauth `hmac` query parameter, as prologin's sync servers did.
    #[serde(skip)]
    #[schemars(skip)]
    pub subscriber_secret: Option<crate::Secret>,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(10),
            buffer: 16,
            stall_timeout: Duration::from_secs(30),
            max_subscribers: 2048,
            subscriber_secret: None,
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

#[utoipa::path(get, path = "/watch", tag = "watch", responses((status = 200, description = "the change feed, one JSON object per line", content_type = "application/x-ndjson")))]
pub(crate) async fn watch(
    State(st): State<AppState>,
    caller: Caller,
    crate::presence::Peer(peer): crate::presence::Peer,
    headers: axum::http::HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    caller.reader(st.config.open_reads)?;
    let params = Params::parse(q.as_deref())?;
    let anonymous = caller.0.is_none().then(|| st.config.client_addr.client(peer, &headers));
    let guard = Subscribed::new(&st, anonymous)?;
    let rx = st.db.subscribe(); // before the Snapshot: no change can fall between the two
    let snap = st.db.snapshot();
    let start = decide_start(&st, &params, &snap).await?;
    let (tx, queue) = mpsc::channel(st.config.watch.buffer.max(1));
    let shared = Arc::new(Shared::default());
    let producer = Producer {
        guard,
        st: st.clone(),
        params,
        tx,
        shared: shared.clone(),
        lines: Lines::default(),
    };
    tokio::spawn(producer.run(start, snap, rx));
    Ok(ndjson(body(queue, shared), st.db.db_id()))
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

/// What the producer hands the HTTP body.
enum Msg {
    /// Snapshot or replay lines.
    Lines(Bytes),
    /// The live phase: from here on the body takes changes from the broadcast itself.
    Live(Box<live::Live>),
}

/// The HTTP body: every queued line, then the live changes (if the producer got that far), then
/// the reason the stream ended, if any.
fn body(queue: mpsc::Receiver<Msg>, shared: Arc<Shared>) -> Body {
    enum Feed {
        Queued(mpsc::Receiver<Msg>),
        Live(Box<live::Live>),
        Done,
    }
    let stream = futures_util::stream::unfold((Feed::Queued(queue), shared), |(mut feed, shared)| async move {
        loop {
            let chunk = match &mut feed {
                Feed::Queued(queue) => match queue.recv().await {
                    Some(Msg::Lines(chunk)) => Some(chunk),
                    Some(Msg::Live(live)) => {
                        feed = Feed::Live(live);
                        continue;
                    }
                    None => None,
                },
                Feed::Live(live) => live.next().await,
                Feed::Done => return None,
            };
            let (chunk, next) = match chunk {
                Some(chunk) => (chunk, feed),
                None => (shared.take_end()?, Feed::Done),
            };
            return Some((Ok::<_, std::convert::Infallible>(chunk), (next, shared)));
        }
    });
    Body::from_stream(stream)
}

/// What a stream's body and its producer (later its watchdog) share.
#[derive(Default)]
struct Shared {
    /// The last seq the live body has handed out or skipped.
    last: AtomicU64,
    /// Set when the stream must end with `end`.
    cut: AtomicBool,
    /// The line the stream ends with.
    end: Mutex<Option<Bytes>>,
}

impl Shared {
    /// Ends the stream with a reason line saying where to resume.
    fn cut(&self, st: &AppState, reason: &str, last: u64) {
        st.metrics.watch_cut.inc();
        tracing::info!(%reason, last, "watch stream cut");
        *self.end.lock() = Some(control(WatchControl::Error {
            reason: reason.to_string(),
            seq: last,
        }));
        self.cut.store(true, Relaxed);
    }

    fn take_end(&self) -> Option<Bytes> {
        self.end.lock().take()
    }
}

/// Who may hold the server's watch and `/poll` streams: half of `max_subscribers` for streams
/// with a token (admins, agents, sync clients with a token) or a signed `/poll`, half for
/// anonymous ones, of which one address holds at most `ANONYMOUS_PER_SOURCE` — an anonymous
/// client that opens stream after stream (heartbeats keep them from ever stalling) fills its own
/// share, never an admin's watch.
pub(crate) struct StreamSlots {
    authenticated: Arc<tokio::sync::Semaphore>,
    anonymous: Arc<tokio::sync::Semaphore>,
    by_source: parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// Anonymous streams one address may hold.
pub(crate) const ANONYMOUS_PER_SOURCE: usize = 16;

impl StreamSlots {
    pub(crate) fn new(max: usize) -> Self {
        let max = max.max(2);
        Self {
            authenticated: Arc::new(tokio::sync::Semaphore::new(max - max / 2)),
            anonymous: Arc::new(tokio::sync::Semaphore::new(max / 2)),
            by_source: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

/// An open stream: it holds one of the server's stream slots (and its source's count) and counts
/// in the metrics for as long as it lives.
struct Subscribed {
    st: AppState,
    _slot: tokio::sync::OwnedSemaphorePermit,
    anonymous_from: Option<std::net::IpAddr>,
}

impl Subscribed {
    /// A slot for a stream: `anonymous_from` is the client's address when it gave no credential.
    fn new(st: &AppState, anonymous_from: Option<Option<std::net::IpAddr>>) -> Result<Self, ApiError> {
        let slots = &st.stream_slots;
        let full = |what: &str| {
            keel_limits::refused!(WARN, max = st.config.watch.max_subscribers, %what, "watch or /poll stream refused: its share is held");
            ApiError::Unavailable(format!(
                "{what}: the streams this server keeps for them are open ([watch] max_subscribers)"
            ))
        };
        let (slot, source) = match anonymous_from {
            None => (
                slots
                    .authenticated
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| full("streams with a credential"))?,
                None,
            ),
            Some(source) => {
                if let Some(ip) = source {
                    let mut by = slots.by_source.lock();
                    let n = by.entry(ip).or_insert(0);
                    if *n >= ANONYMOUS_PER_SOURCE {
                        return Err(full("anonymous streams from this address"));
                    }
                    *n += 1;
                }
                match slots.anonymous.clone().try_acquire_owned() {
                    Ok(slot) => (slot, source),
                    Err(_) => {
                        release(st, source);
                        return Err(full("anonymous streams"));
                    }
                }
            }
        };
        st.metrics.watch_subscribers.inc();
        Ok(Self {
            st: st.clone(),
            _slot: slot,
            anonymous_from: source,
        })
    }
}

fn release(st: &AppState, source: Option<std::net::IpAddr>) {
    let Some(ip) = source else { return };
    let mut by = st.stream_slots.by_source.lock();
    if let Some(n) = by.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            by.remove(&ip);
        }
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.st.metrics.watch_subscribers.dec();
        release(&self.st, self.anonymous_from);
    }
}

/// Why a producer stopped.
enum Stop {
    /// The client went away.
    Gone,
    /// The stream must end with this reason; the client resumes from its last seq.
    Cut(String),
}

/// Lines on their way to the body, and the last seq they cover.
#[derive(Default)]
struct Lines {
    /// The last seq queued here (or skipped, for kinds the client did not ask for).
    last: u64,
    /// The last seq handed to the body: where the client resumes if the stream is cut.
    sent: u64,
    /// Lines not yet handed to the HTTP body: sent as one chunk, so a burst costs few writes.
    out: Vec<u8>,
    /// A single pending line, shared with the other subscribers (no copy); `out` takes over when
    /// a second line comes.
    one: Option<Bytes>,
    /// Lines taken since the last `take`, for the metrics.
    count: u64,
}

/// Lines are handed to the HTTP body in chunks of about this size.
const CHUNK: usize = 64 * 1024;

impl Lines {
    /// Bytes waiting to be handed to the body.
    fn pending(&self) -> usize {
        self.out.len() + self.one.as_ref().map_or(0, Bytes::len)
    }

    /// Queues a line that other subscribers share: alone, it is sent as is.
    fn push_shared(&mut self, line: Bytes) {
        if self.out.is_empty() && self.one.is_none() {
            self.one = Some(line);
            self.count += 1;
        } else {
            self.push(&line);
        }
    }

    fn push(&mut self, line: &[u8]) {
        if let Some(first) = self.one.take() {
            self.out.extend_from_slice(&first);
        }
        self.out.extend_from_slice(line);
        self.count += 1;
    }

    /// The pending lines as one chunk, counted in the metrics.
    fn take(&mut self, st: &AppState) -> Option<Bytes> {
        st.metrics.watch_events.inc_by(std::mem::take(&mut self.count));
        match self.one.take() {
            Some(line) => Some(line),
            None if self.out.is_empty() => None,
            None => Some(Bytes::from(std::mem::take(&mut self.out))),
        }
    }

    /// Queues one change, in order; a gap is never skipped silently.
    fn change(&mut self, st: &AppState, params: &Params, c: &Change) -> Result<(), String> {
        if c.seq <= self.last {
            return Ok(()); // already in the snapshot or the replay
        }
        if c.seq != self.last + 1 {
            return Err(format!(
                "changes {} to {} are no longer available; resume",
                self.last + 1,
                c.seq - 1
            ));
        }
        if params.wants(c.kind) {
            self.push_shared(st.watch_lines.line(c));
        }
        self.last = c.seq;
        Ok(())
    }
}

/// Sends the snapshot or the replay into the body's queue, then hands the live phase over and
/// watches that the client keeps reading.
struct Producer {
    st: AppState,
    params: Params,
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    lines: Lines,
    guard: Subscribed,
}

impl Producer {
    async fn run(mut self, start: Start, snap: Arc<Snapshot>, rx: broadcast::Receiver<Arc<Change>>) {
        let result = match start {
            Start::Snapshot => self.snapshot(&snap).await,
            Start::Resume(since) => self.replay(since, snap.seq()).await,
        };
        drop(snap); // an idle subscriber must not pin an old Snapshot in memory
        match result {
            Ok(()) => {}
            Err(Stop::Gone) => return,
            Err(Stop::Cut(reason)) => {
                // Lines queued before the trouble (a gap in the log) still go out if there is
                // room. After a stall there are none: the chunk that found no room is lost, and
                // `sent` stays before it.
                if self.lines.pending() > 0 {
                    let _ = self.flush().await;
                }
                return self.shared.cut(&self.st, &reason, self.lines.sent);
            }
        }
        let Self {
            st,
            params,
            tx,
            shared,
            lines,
            guard,
        } = self;
        shared.last.store(lines.last, Relaxed);
        let live = live::Live::new(st.clone(), params, rx, lines, shared.clone(), guard);
        // The queue is empty or has room by now, unless the client stalls: the usual stall rule.
        match send(&tx, Msg::Live(Box::new(live)), st.config.watch.stall_timeout).await {
            Ok(()) => {
                drop(tx);
                live::watchdog(st, shared).await;
            }
            Err(Stop::Gone) => {}
            Err(Stop::Cut(reason)) => shared.cut(&st, &reason, shared.last.load(Relaxed)),
        }
    }

    /// Hands the pending lines to the body, waiting at most the stall timeout for room.
    async fn flush(&mut self) -> Result<(), Stop> {
        let last = self.lines.last;
        if let Some(chunk) = self.lines.take(&self.st) {
            send(&self.tx, Msg::Lines(chunk), self.st.config.watch.stall_timeout).await?;
        }
        self.lines.sent = last;
        Ok(())
    }

    async fn push_flushing(&mut self, line: &[u8]) -> Result<(), Stop> {
        self.lines.push(line);
        if self.lines.pending() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn snapshot(&mut self, snap: &Snapshot) -> Result<(), Stop> {
        let seq = snap.seq();
        self.lines.push(&control(WatchControl::SnapshotBegin {
            seq,
            db_id: self.st.db.db_id().to_owned(),
        }));
        let kinds: Vec<Kind> = Kind::ALL.into_iter().filter(|k| self.params.wants(*k)).collect();
        for kind in kinds {
            for line in record_lines(snap, kind, seq) {
                self.push_flushing(&line).await?;
            }
        }
        self.lines.last = seq;
        self.lines.push(&control(WatchControl::SnapshotEnd { seq }));
        self.flush().await
    }

    /// Sends the logged changes after `since` up to `until` (the Snapshot's seq).
    async fn replay(&mut self, since: u64, until: u64) -> Result<(), Stop> {
        self.lines.last = since;
        while self.lines.last < until {
            let batch = self
                .st
                .db
                .store()
                .changes_since(self.lines.last, 1000)
                .await
                .map_err(|e| Stop::Cut(e.to_string()))?;
            if batch.is_empty() {
                return Err(Stop::Cut("the change log ended early".into()));
            }
            for c in batch.iter().filter(|c| c.seq <= until) {
                self.lines.change(&self.st, &self.params, c).map_err(Stop::Cut)?;
                if self.lines.pending() >= CHUNK {
                    self.flush().await?;
                }
            }
        }
        self.flush().await
    }
}

/// Each record of `kind` as a snapshot line, serialized straight from the Snapshot as the stream
/// goes: a subscriber of 120,000 records costs a chunk at a time, not a JSON tree of every record.
fn record_lines(snap: &Snapshot, kind: Kind, seq: u64) -> Box<dyn Iterator<Item = Vec<u8>> + Send + '_> {
    fn lines<'a, D: serde::Serialize + 'a>(
        kind: Kind,
        seq: u64,
        records: impl Iterator<Item = D> + Send + 'a,
    ) -> Box<dyn Iterator<Item = Vec<u8>> + Send + 'a> {
        let line = move |data| {
            WatchLine::Record(WatchRecord {
                seq,
                kind,
                op: Op::Put,
                data: Some(data),
            })
            .to_line()
        };
        Box::new(records.map(line))
    }
    match kind {
        Kind::Machine => lines(kind, seq, snap.machines()),
        Kind::Switch => lines(kind, seq, snap.switches()),
        Kind::Setting => lines(kind, seq, snap.settings().into_iter()),
        Kind::User => lines(kind, seq, snap.users()),
        Kind::Counter => lines(kind, seq, snap.counters()),
        Kind::Host => lines(kind, seq, snap.hosts()),
        Kind::Facility => lines(kind, seq, snap.facilities()),
        Kind::Destination => lines(kind, seq, snap.destinations()),
        Kind::Session => lines(kind, seq, snap.sessions()),
        Kind::Role => lines(kind, seq, snap.roles()),
    }
}

/// Queues `msg` for the body, waiting at most `timeout` for room.
async fn send(tx: &mpsc::Sender<Msg>, msg: Msg, timeout: Duration) -> Result<(), Stop> {
    let msg = match tx.try_send(msg) {
        Ok(()) => return Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop::Gone),
        Err(mpsc::error::TrySendError::Full(msg)) => msg,
    };
    match tokio::time::timeout(timeout, tx.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Stop::Gone),
        Err(_) => Err(Stop::Cut(format!(
            "too slow: accepted nothing for {} s",
            timeout.as_secs()
        ))),
    }
}

/// A control line of the watch stream.
pub(crate) fn control(c: WatchControl) -> Bytes {
    Bytes::from(WatchLine::<Value>::Control(c).to_line())
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
    /// The newest change's line: what a thousand live subscribers all ask for at once, so behind
    /// a lock they can hold together.
    latest: parking_lot::RwLock<Option<(u64, Bytes)>>,
    recent: Mutex<(std::collections::HashMap<u64, Bytes>, std::collections::VecDeque<u64>)>,
}

const LINE_CACHE: usize = 16_384;

impl LineCache {
    fn line(&self, c: &Change) -> Bytes {
        let latest = match &*self.latest.read() {
            Some((seq, b)) if *seq == c.seq => Some(b.clone()),
            _ => None,
        };
        if let Some(b) = latest {
            return b;
        }
        if let Some(b) = self.recent.lock().0.get(&c.seq).cloned() {
            return b;
        }
        let data = if c.op == Op::Put { &c.after } else { &c.before };
        let record = WatchLine::Record(WatchRecord {
            seq: c.seq,
            kind: c.kind,
            op: c.op,
            data: data.as_ref().map(|d| keel_model::wire::public_record(c.kind, d)),
        });
        let b = Bytes::from(record.to_line());
        {
            let mut latest = self.latest.write();
            if latest.as_ref().is_none_or(|(seq, _)| *seq < c.seq) {
                *latest = Some((c.seq, b.clone()));
            }
        }
        {
            let mut guard = self.recent.lock();
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
    crate::presence::Peer(peer): crate::presence::Peer,
    uri: axum::extract::OriginalUri,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(secret) = &st.config.watch.subscriber_secret {
        let hmac = crate::rpc::form_pairs(uri.query().unwrap_or(""))
            .into_iter()
            .find_map(|(k, v)| (k == "hmac").then_some(v))
            .unwrap_or_default();
        if !crate::rpc::check_timeauth(secret.expose(), &hmac, "None") {
            keel_limits::refused!(WARN, "/poll with a bad or expired hmac refused");
            return ApiError::Forbidden("BadToken: the hmac is wrong or has expired".into()).into_response();
        }
    }
    let kind = match crate::rpc::service_of(uri.path(), &headers) {
        crate::rpc::Service::Udb => Kind::User,
        crate::rpc::Service::Mdb => Kind::Machine,
    };
    // A signed /poll (its hmac checked above) is a sync client's, not anyone's.
    let anonymous = st
        .config
        .watch
        .subscriber_secret
        .is_none()
        .then(|| st.config.client_addr.client(peer, &headers));
    let guard = match Subscribed::new(&st, anonymous) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let mut rx = st.db.subscribe();
    let snap = st.db.snapshot();
    let (tx, lines) = mpsc::channel::<Msg>(st.config.watch.buffer.max(1));
    let stall = st.config.watch.stall_timeout;
    let task_st = st.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let st = task_st;
        let mut last = snap.seq();
        for chunk in poll_set(&snap, kind) {
            if send(&tx, Msg::Lines(chunk), stall).await.is_err() {
                return;
            }
        }
        drop(snap);
        let mut batch = Vec::new();
        loop {
            for events in batch.drain(..) {
                if send(&tx, Msg::Lines(line(&events)), stall).await.is_err() {
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
                // A client gone between changes gives its slot back now, not at the next change.
                () = tx.closed() => return,
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
    ndjson(body(lines, Arc::new(Shared::default())), st.db.db_id())
}

/// The first `/poll` line, the whole set as one JSON array of `{"type":"update","data":…}`, in
/// chunks of about 64 KiB serialized as the stream goes (never the whole set as a JSON tree).
fn poll_set(snap: &Snapshot, kind: Kind) -> impl Iterator<Item = Bytes> + Send + '_ {
    #[derive(serde::Serialize)]
    struct Update<D> {
        r#type: &'static str,
        data: D,
    }
    let mut events: Box<dyn Iterator<Item = Vec<u8>> + Send + '_> = match kind {
        Kind::User => Box::new(snap.users().map(|u| to_vec(&UserRecord::from(u)))),
        _ => Box::new(snap.machines().map(|m| to_vec(&MachineWire(m)))),
    };
    fn to_vec<D: serde::Serialize>(data: &D) -> Vec<u8> {
        serde_json::to_vec(&Update { r#type: "update", data }).unwrap_or_default()
    }
    let (mut started, mut done) = (false, false);
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut chunk = Vec::with_capacity(CHUNK + 1024);
        if !started {
            chunk.push(b'[');
        }
        while chunk.len() < CHUNK {
            let Some(event) = events.next() else {
                chunk.extend_from_slice(b"]\n");
                done = true;
                break;
            };
            if std::mem::replace(&mut started, true) {
                chunk.push(b',');
            }
            chunk.extend_from_slice(&event);
        }
        Some(Bytes::from(chunk))
    })
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

#[cfg(test)]
mod tests {
    use keel_model::{Group, Login, Snapshot, User};
    use serde_json::Value;

    /// The default queue was 1,024 chunks (64 MiB per subscriber that stops reading) while the
    /// docs and the config said 16: the code now says what they say.
    #[test]
    fn watch_buffer_default_is_the_documented_16_chunks() {
        assert_eq!(super::WatchConfig::default().buffer, 16);
    }

    fn snapshot_of(n: u32) -> Snapshot {
        let mut s = Snapshot::default();
        for i in 0..n {
            s.put_user(User {
                login: Login::parse("login", &format!("u{i:05}")).unwrap(),
                firstname: "A".into(),
                lastname: format!("User {i}"),
                group: Group::User,
                uid: 10_000 + i,
                shell: "/bin/bash".into(),
                ssh_keys: Vec::new(),
                password_hash: String::new(),
                password_changed: false,
                hfs: None,
                version: 1,
            });
        }
        s
    }

    /// The first `/poll` line, sent in chunks, is one JSON array of every record, whatever the
    /// chunk boundaries (a set many chunks long, one record, none).
    #[test]
    fn poll_set_is_one_array_line_across_chunks() {
        for n in [0, 1, 3000] {
            let snap = snapshot_of(n);
            let chunks: Vec<_> = super::poll_set(&snap, keel_model::Kind::User).collect();
            assert_eq!(chunks.len() > 1, n == 3000, "{n} records in {} chunks", chunks.len());
            let all: Vec<u8> = chunks.concat();
            assert_eq!(all.iter().filter(|b| **b == b'\n').count(), 1);
            assert_eq!(all.last(), Some(&b'\n'));
            let set: Vec<Value> = serde_json::from_slice(&all).unwrap();
            assert_eq!(set.len(), n as usize);
            assert!(set
                .iter()
                .all(|e| e["type"] == "update" && e["data"]["login"].is_string()));
        }
    }
}
