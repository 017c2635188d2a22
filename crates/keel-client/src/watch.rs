//! A watch stream that survives disconnects: it reconnects and resumes from the last seq it
//! delivered, so its caller sees one ordered stream — a snapshot, then every change once.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use keel_model::wire::{WatchControl, WatchLine, WatchRecord};
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
        let parsed: WatchLine =
            serde_json::from_slice(line).map_err(|e| ClientError::Decode(format!("watch line: {e}")))?;
        let record = match parsed {
            WatchLine::Control(control) => return self.control(control),
            WatchLine::Record(record) => record,
        };
        let WatchRecord { seq, kind, op, data } = record;
        let data = data.unwrap_or(Value::Null);
        if self.in_snapshot {
            return Ok(Some(WatchEvent::Record { kind, data }));
        }
        if self.last.is_some_and(|l| seq <= l) {
            return Ok(None); // already delivered before a reconnect
        }
        self.last = Some(seq);
        Ok(Some(WatchEvent::Change { seq, kind, op, data }))
    }

    fn control(&mut self, control: WatchControl) -> Result<Option<WatchEvent>, ClientError> {
        match control {
            WatchControl::SnapshotBegin { seq, db_id } => {
                self.db_id = Some(db_id.clone());
                self.in_snapshot = true;
                Ok(Some(WatchEvent::SnapshotBegin { seq, db_id }))
            }
            WatchControl::SnapshotEnd { seq } => {
                self.in_snapshot = false;
                self.last = Some(seq);
                Ok(Some(WatchEvent::SnapshotEnd { seq }))
            }
            WatchControl::Error { reason, .. } => {
                // The server cut the stream (too slow, log trimmed): resume, or report when not reconnecting.
                if !self.opts.reconnect {
                    return Err(ClientError::Decode(format!("server ended the stream: {reason}")));
                }
                tracing::info!(%reason, "watch stream cut by the server; resuming");
                self.disconnect();
                Ok(None)
            }
            WatchControl::Heartbeat { .. } | WatchControl::Unknown => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use futures_util::StreamExt as _;

    use super::*;

    /// A watch reading `text` from a stream cut into `chunk`-byte pieces (lines arrive split).
    fn watch_of(text: &str, chunk: usize, since: Option<u64>) -> Watch {
        let client = Client::new("http://127.0.0.1:9", None).unwrap();
        let mut w = client.watch(WatchOptions {
            since,
            ..WatchOptions::default()
        });
        let pieces: Vec<reqwest::Result<Bytes>> = text
            .as_bytes()
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        w.stream = Some(futures_util::stream::iter(pieces).boxed());
        w
    }

    #[tokio::test]
    async fn events_come_in_order_without_duplicates_or_heartbeats() {
        let text = concat!(
            "{\"type\":\"snapshot_begin\",\"seq\":2,\"db_id\":\"d\"}\n",
            "{\"seq\":2,\"kind\":\"machine\",\"op\":\"put\",\"data\":{\"hostname\":\"a\"}}\n",
            "{\"type\":\"snapshot_end\",\"seq\":2}\n",
            "{\"type\":\"heartbeat\",\"seq\":2}\n",
            "{\"type\":\"from_a_newer_server\"}\n",
            "{\"seq\":2,\"kind\":\"machine\",\"op\":\"put\",\"data\":{\"hostname\":\"old\"}}\n",
            "{\"seq\":3,\"kind\":\"machine\",\"op\":\"delete\",\"data\":{\"hostname\":\"a\"}}\n",
            "{\"type\":\"error\",\"reason\":\"too slow\",\"seq\":3}\n",
        );
        for chunk in [1, 7, text.len()] {
            let mut w = watch_of(text, chunk, None);
            assert!(matches!(
                w.next().await.unwrap(),
                WatchEvent::SnapshotBegin { seq: 2, .. }
            ));
            assert_eq!(w.db_id(), Some("d"));
            assert!(matches!(
                w.next().await.unwrap(),
                WatchEvent::Record {
                    kind: Kind::Machine,
                    ..
                }
            ));
            assert!(matches!(w.next().await.unwrap(), WatchEvent::SnapshotEnd { seq: 2 }));
            // The heartbeat, the unknown line and the change already covered by the snapshot
            // are skipped: the next event is seq 3.
            let WatchEvent::Change { seq, op, data, .. } = w.next().await.unwrap() else {
                panic!("a change")
            };
            assert_eq!((seq, op, data["hostname"].as_str()), (3, Op::Delete, Some("a")));
            assert_eq!(w.last_seq(), Some(3));
            // Not reconnecting: the server's reason is the error.
            let e = w.next().await.unwrap_err().to_string();
            assert!(e.contains("too slow"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_line_that_is_not_a_watch_line_is_an_error() {
        let mut w = watch_of("{\"seq\":4,\"op\":\"put\"}\n", 64, Some(3));
        assert!(w.next().await.is_err());
    }
}
