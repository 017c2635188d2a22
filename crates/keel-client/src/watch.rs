//! A watch stream that survives disconnects: it reconnects and resumes from the last seq it
//! delivered, so its caller sees one ordered stream — a snapshot, then every change once.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use keel_model::{Kind, Op};
use reqwest::Method;
use serde_json::Value;

use crate::{Client, ClientError};

/// One event of the watch stream.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// A full snapshot follows: forget what you had.
    SnapshotBegin { seq: u64, db_id: String },
    /// One record of the snapshot.
    Record { kind: Kind, data: Value },
    /// The snapshot is complete, at `seq`.
    SnapshotEnd { seq: u64 },
    /// One committed change (`data` is the record after a put, before a delete).
    Change { seq: u64, kind: Kind, op: Op, data: Value },
}

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Resume after this seq (with `db_id`, the database it belongs to); `None`: start with a snapshot.
    pub since: Option<u64>,
    pub db_id: Option<String>,
    /// Only these kinds (all when `None`).
    pub kinds: Option<Vec<Kind>>,
    /// Reconnect after a failure instead of returning it.
    pub reconnect: bool,
    /// A stream silent for this long is taken as dead and resumed (the server sends heartbeats);
    /// zero means the default, 35 s.
    pub idle_timeout: Duration,
}

type ByteStream = futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>;

/// A resumable watch. Call [`Watch::next`] in a loop.
pub struct Watch {
    client: Client,
    opts: WatchOptions,
    /// The last seq delivered (the resume point), and whether a snapshot is being delivered.
    last: Option<u64>,
    db_id: Option<String>,
    in_snapshot: bool,
    stream: Option<ByteStream>,
    buf: Vec<u8>,
    /// Where the next line starts in `buf` (consumed bytes are dropped once per chunk, not per line).
    pos: usize,
    backoff: Duration,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Client {
    /// Opens a watch stream; it connects on the first [`Watch::next`].
    pub fn watch(&self, opts: WatchOptions) -> Watch {
        Watch {
            client: self.clone(),
            last: opts.since,
            db_id: opts.db_id.clone(),
            opts,
            in_snapshot: false,
            stream: None,
            buf: Vec::new(),
            pos: 0,
            backoff: Duration::from_millis(50),
        }
    }
}

impl Watch {
    /// The seq of the last change (or snapshot) delivered.
    pub fn last_seq(&self) -> Option<u64> {
        self.last
    }

    pub fn db_id(&self) -> Option<&str> {
        self.db_id.as_deref()
    }

    /// Drops the connection; the next call to `next` reconnects and resumes.
    pub fn disconnect(&mut self) {
        self.stream = None;
        self.buf.clear();
        self.pos = 0;
    }

    /// The next event, in seq order, reconnecting as needed. Errors are returned only for what a
    /// retry cannot fix (a refused token, a bad request), or any failure when `reconnect` is off.
    pub async fn next(&mut self) -> Result<WatchEvent, ClientError> {
        loop {
            if self.stream.is_none() {
                if let Err(e) = self.connect().await {
                    self.fail(e).await?;
                    continue;
                }
            }
            match self.next_line().await {
                Ok(Some(line)) => {
                    if let Some(ev) = self.event(&line)? {
                        self.backoff = Duration::from_millis(50);
                        return Ok(ev);
                    }
                }
                Ok(None) => self.fail(ClientError::Decode("the watch stream ended".into())).await?,
                Err(e) => self.fail(e).await?,
            }
        }
    }

    /// After a failure: give up if it is final or reconnecting is off, else wait and go on.
    async fn fail(&mut self, e: ClientError) -> Result<(), ClientError> {
        self.disconnect();
        let final_error = matches!(e.status(), Some(s) if (400..500).contains(&s));
        if final_error || !self.opts.reconnect {
            return Err(e);
        }
        tracing::warn!(error = %e, retry_in = ?self.backoff, "watch interrupted; resuming");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let mut query = Vec::new();
        // A snapshot cut short is restarted whole: resuming mid-snapshot would leave holes.
        if let (Some(last), false) = (self.last, self.in_snapshot) {
            query.push(format!("since={last}"));
            if let Some(id) = &self.db_id {
                query.push(format!("db_id={id}"));
            }
        }
        if let Some(kinds) = &self.opts.kinds {
            query.push(format!(
                "kinds={}",
                kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")
            ));
        }
        let path = format!("/api/v1/watch?{}", query.join("&"));
        let resp = self.client.request_streaming(Method::GET, &path).await?;
        self.stream = Some(resp.bytes_stream().boxed());
        Ok(())
    }

    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let line = self.buf[self.pos..self.pos + i].to_vec();
                self.pos += i + 1;
                return Ok(Some(line));
            }
            self.buf.drain(..self.pos);
            self.pos = 0;
            let Some(stream) = self.stream.as_mut() else {
                return Ok(None);
            };
            let idle = if self.opts.idle_timeout.is_zero() {
                Duration::from_secs(35)
            } else {
                self.opts.idle_timeout
            };
            let Ok(next) = tokio::time::timeout(idle, stream.next()).await else {
                return Err(ClientError::Decode(format!(
                    "the watch stream was silent for {} s",
                    idle.as_secs()
                )));
            };
            match next {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Err(ClientError::Unreachable {
                        url: self.client.base().to_owned(),
                        source: e,
                    })
                }
                None => return Ok(None),
            }
        }
    }

    /// Turns a line into an event, or `None` for lines that are not one (heartbeats, duplicates).
    fn event(&mut self, line: &[u8]) -> Result<Option<WatchEvent>, ClientError> {
        let v: Value = serde_json::from_slice(line).map_err(|e| ClientError::Decode(format!("watch line: {e}")))?;
        let seq = v.get("seq").and_then(Value::as_u64);
        match v.get("type").and_then(Value::as_str) {
            Some("snapshot_begin") => {
                let db_id = v["db_id"].as_str().unwrap_or_default().to_owned();
                self.db_id = Some(db_id.clone());
                self.in_snapshot = true;
                return Ok(Some(WatchEvent::SnapshotBegin {
                    seq: seq.unwrap_or(0),
                    db_id,
                }));
            }
            Some("snapshot_end") => {
                self.in_snapshot = false;
                self.last = seq;
                return Ok(Some(WatchEvent::SnapshotEnd { seq: seq.unwrap_or(0) }));
            }
            Some("error") => {
                // The server cut the stream (too slow, log trimmed): resume, or report when not reconnecting.
                let reason = v["reason"].as_str().unwrap_or("cut off").to_owned();
                if !self.opts.reconnect {
                    return Err(ClientError::Decode(format!("server ended the stream: {reason}")));
                }
                tracing::info!(%reason, "watch stream cut by the server; resuming");
                self.disconnect();
                return Ok(None);
            }
            Some(_) => return Ok(None), // heartbeat, or a line type this client does not know
            None => {}
        }
        let kind = v.get("kind").and_then(Value::as_str).and_then(Kind::parse);
        let (Some(seq), Some(kind)) = (seq, kind) else {
            return Err(ClientError::Decode("watch line without seq or kind".into()));
        };
        let data = v.get("data").cloned().unwrap_or(Value::Null);
        if self.in_snapshot {
            return Ok(Some(WatchEvent::Record { kind, data }));
        }
        if self.last.is_some_and(|l| seq <= l) {
            return Ok(None); // already delivered before a reconnect
        }
        let op = if v["op"] == "delete" { Op::Delete } else { Op::Put };
        self.last = Some(seq);
        Ok(Some(WatchEvent::Change { seq, kind, op, data }))
    }
}
