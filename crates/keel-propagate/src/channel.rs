//! One long-lived agent session per ssh destination (issue 34): the ssh client is started once
//! and `keel-agent apply` serves a stream of bundles over it (keel-agent's `stream` module), so a
//! send starts no process. The command is the one a single send runs (`Senders::ssh_command`:
//! the site's ssh_config, known_hosts, identity and checked address apply alike); only what
//! travels on stdin differs.
//!
//! An agent older than streams reads its input whole and never answers the hello: after the
//! connect timeout the session is closed and that destination gets one process per send
//! ([`Sent::Plain`]) for an hour, after which a stream is tried again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::send::Outcome;

/// The stream's opening line, and the agent's answer (keel-agent's `stream::{HELLO, READY}`).
const HELLO: &[u8] = b"KEEL-STREAM 1\n";
const READY: &str = "KEEL-STREAM 1 ready";

/// What [`Channels::send`] did.
pub enum Sent {
    /// The bundle went over the destination's session (or the session could not be opened:
    /// the outcome says why, as a single send's would).
    Done(Outcome),
    /// This destination's agent does not serve streams: send it one process per bundle.
    Plain,
}

/// The open sessions, at most `max_open`.
pub struct Channels {
    open: parking_lot::Mutex<HashMap<String, Slot>>,
    /// Destinations whose agent did not answer the hello: one process per bundle for an hour.
    plain: crate::older::OlderAgents,
    max_open: usize,
    hello_timeout: Duration,
}

type Slot = Arc<tokio::sync::Mutex<Option<Channel>>>;

/// One session: the ssh client and its pipes.
struct Channel {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The end of ssh's own stderr (a lost connection says why there).
    stderr: Arc<parking_lot::Mutex<Vec<u8>>>,
}

/// ssh's exit code when it could not connect or lost the connection.
const SSH_FAILED: i32 = 255;

/// Keeps at most this much of ssh's own stderr.
const STDERR_TAIL: usize = 4096;

impl Channels {
    pub fn new(max_open: usize, hello_timeout: Duration) -> Self {
        Self {
            open: parking_lot::Mutex::new(HashMap::new()),
            plain: crate::older::OlderAgents::default(),
            max_open: max_open.max(1),
            hello_timeout,
        }
    }

    /// Sends `head` then `tail` (one bundle) to the destination `key` names, over its session,
    /// opened with `command` when there is none; within `timeout` once the session is open.
    pub async fn send(
        &self,
        key: &str,
        command: impl Fn() -> Option<Command>,
        head: &[u8],
        tail: &[u8],
        timeout: Duration,
    ) -> Sent {
        if self.plain.holds(key) {
            return Sent::Plain;
        }
        let slot = self.slot(key);
        let mut guard = slot.lock().await;
        let start = Instant::now();
        // A session kept open may have died while idle (a dropped TCP connection): one more try
        // on a fresh one before the send counts as failed.
        for fresh in [guard.is_none(), true] {
            if guard.is_none() {
                let Some(command) = command() else {
                    return Sent::Done(failed("no way to send there".into()));
                };
                match self.open(command).await {
                    Opened::Ready(c) => *guard = Some(*c),
                    Opened::Failed(out) => return Sent::Done(out),
                    Opened::Plain => {
                        self.plain.note(key);
                        self.open.lock().remove(key);
                        return Sent::Plain;
                    }
                }
            }
            let Some(channel) = guard.as_mut() else { continue };
            match channel.send(head, tail, timeout).await {
                Ok(mut out) => {
                    out.duration = start.elapsed();
                    return Sent::Done(out);
                }
                Err(broken) => {
                    let out = guard.take().map(Channel::close);
                    if fresh || broken.answered {
                        let mut out = match out {
                            Some(o) => o.await,
                            None => failed(String::new()),
                        };
                        out.stderr = format!("{}{}", out.stderr, broken.why);
                        out.duration = start.elapsed();
                        return Sent::Done(out);
                    }
                }
            }
        }
        Sent::Done(failed("the agent's session could not be opened".into()))
    }

    /// Closes the sessions whose key `keep` refuses (a destination removed or blocked).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.open.lock().retain(|k, _| keep(k));
    }

    /// Open sessions (for metrics and the benchmark); one busy opening counts.
    pub fn open_count(&self) -> usize {
        self.open
            .lock()
            .values()
            .filter(|s| s.try_lock().map_or(true, |c| c.is_some()))
            .count()
    }

    /// The slot of `key`; at `max_open`, an idle session is closed first.
    fn slot(&self, key: &str) -> Slot {
        let mut open = self.open.lock();
        if let Some(s) = open.get(key) {
            return s.clone();
        }
        if open.len() >= self.max_open {
            // An empty slot (its session failed) first, else an idle session.
            let empty = open
                .iter()
                .find(|(_, s)| s.try_lock().is_ok_and(|c| c.is_none()))
                .map(|(k, _)| k.clone());
            let idle = empty.or_else(|| open.iter().find(|(_, s)| s.try_lock().is_ok()).map(|(k, _)| k.clone()));
            if let Some(k) = idle {
                open.remove(&k);
            }
        }
        open.entry(key.to_owned()).or_default().clone()
    }

    async fn open(&self, mut command: Command) -> Opened {
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => return Opened::Failed(failed(format!("cannot start ssh: {e}"))),
        };
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Opened::Failed(failed("ssh's pipes are missing".into()));
        };
        let tail = Arc::new(parking_lot::Mutex::new(Vec::new()));
        tokio::spawn(drain(stderr, tail.clone()));
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let hello = async {
            stdin.write_all(HELLO).await?;
            stdin.flush().await?;
            stdout.read_line(&mut line).await
        };
        match tokio::time::timeout(self.hello_timeout, hello).await {
            Ok(Ok(_)) if line.trim_end() == READY => Opened::Ready(Box::new(Channel {
                child,
                stdin,
                stdout,
                stderr: tail,
            })),
            // ssh itself failed (no route, refused, host key): a failed send, as a single one.
            // Anything else that is not `ready` (a line a shell's rc file printed, an agent that
            // exited) is no stream: its process is given a moment to end, then killed.
            Ok(_) => match {
                drop(stdin);
                tokio::time::timeout(Duration::from_secs(1), child.wait()).await
            }
            .ok()
            .and_then(Result::ok)
            .and_then(|s| s.code())
            {
                Some(SSH_FAILED) => Opened::Failed(Outcome {
                    exit_code: Some(SSH_FAILED),
                    stdout: String::new(),
                    stderr: String::from_utf8_lossy(&tail.lock()).into_owned(),
                    duration: Duration::ZERO,
                }),
                _ => Opened::Plain,
            },
            // No answer: an agent older than streams, still reading. Closing stdin (dropping the
            // child) ends it; it refuses the line as a bundle.
            Err(_) => Opened::Plain,
        }
    }
}

enum Opened {
    Ready(Box<Channel>),
    Failed(Outcome),
    Plain,
}

/// Why a session broke during a send; `answered`: the agent had begun its answer (the bundle
/// was read: the send is not repeated).
struct Broken {
    why: String,
    answered: bool,
}

impl Channel {
    async fn send(&mut self, head: &[u8], tail: &[u8], timeout: Duration) -> Result<Outcome, Broken> {
        let frame = format!("B {}\n", head.len() + tail.len());
        let mut answered = false;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let exchange = async {
            self.stdin.write_all(frame.as_bytes()).await?;
            self.stdin.write_all(head).await?;
            self.stdin.write_all(tail).await?;
            self.stdin.flush().await?;
            let mut line = Vec::new();
            loop {
                line.clear();
                if self.stdout.read_until(b'\n', &mut line).await? == 0 {
                    return Ok::<_, std::io::Error>(None);
                }
                answered = true;
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                match text.split_first_chunk::<2>() {
                    Some((b"O ", rest)) => keep(&mut stdout, rest),
                    Some((b"E ", rest)) => keep(&mut stderr, rest),
                    Some((b"X ", code)) => {
                        return Ok(Some(std::str::from_utf8(code).ok().and_then(|c| c.parse().ok())))
                    }
                    _ => keep(&mut stderr, text),
                }
            }
        };
        let code: Option<i32> = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(Some(code))) => code,
            Ok(Ok(None)) => {
                return Err(Broken {
                    why: "the agent's session ended before its answer".into(),
                    answered,
                })
            }
            Ok(Err(e)) => {
                return Err(Broken {
                    why: format!("the agent's session broke: {e}"),
                    answered,
                })
            }
            Err(_) => {
                return Err(Broken {
                    why: format!("timed out after {} s; the session was closed", timeout.as_secs()),
                    // A send that timed out is never repeated at once.
                    answered: true,
                });
            }
        };
        Ok(Outcome {
            exit_code: code,
            stdout: crate::send::text(&stdout),
            stderr: crate::send::text(&stderr),
            duration: Duration::ZERO,
        })
    }

    /// Ends the session: what ssh said, and its exit code when it has one.
    async fn close(mut self) -> Outcome {
        drop(self.stdin);
        let code = match tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        };
        let said = String::from_utf8_lossy(&self.stderr.lock()).into_owned();
        Outcome {
            exit_code: code.filter(|c| *c == SSH_FAILED),
            stdout: String::new(),
            stderr: if said.is_empty() { said } else { format!("{said}\n") },
            duration: Duration::ZERO,
        }
    }
}

/// A line of the agent's answer, kept (bounded as a single send's output is).
fn keep(into: &mut Vec<u8>, line: &[u8]) {
    if into.len() < 4 * crate::send::KEEP {
        into.extend_from_slice(line);
        into.push(b'\n');
    }
}

fn failed(stderr: String) -> Outcome {
    Outcome {
        exit_code: None,
        stdout: String::new(),
        stderr,
        duration: Duration::ZERO,
    }
}

/// Keeps the end of ssh's own stderr for as long as the session lives.
async fn drain(mut stderr: tokio::process::ChildStderr, tail: Arc<parking_lot::Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut t = tail.lock();
        t.extend_from_slice(&buf[..n]);
        if t.len() > STDERR_TAIL {
            let cut = t.len() - STDERR_TAIL;
            t.drain(..cut);
        }
    }
}
