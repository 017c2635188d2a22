//! The privileged path on keel's own host: keel runs unprivileged, and its `local` destination is
//! `keel agent relay /run/keel-agent.sock`. The relay hands the bundle to a socket-activated
//! `keel-agent apply --framed` running as root (`keel-agent@.service`, the socket writable by
//! keel's group only), and turns the framed answer back into the stdout, stderr and exit code the
//! engine reads from any agent. The root side trusts nothing of the relay: the bundle's signature,
//! whitelist and serial are checked as for any other.
//!
//! Frames, one per line: `O text` (an output line), `E text` (an error line), `X code` (the exit
//! code, last).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::Code;

/// Writes each line given to it to `inner` behind `prefix` (`O `, `E `).
pub struct Framed<'a> {
    pub inner: &'a mut dyn Write,
    pub prefix: &'static str,
    pending: Vec<u8>,
}

impl<'a> Framed<'a> {
    pub fn new(inner: &'a mut dyn Write, prefix: &'static str) -> Self {
        Self {
            inner,
            prefix,
            pending: Vec::new(),
        }
    }
}

impl Write for Framed<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            self.inner.write_all(self.prefix.as_bytes())?;
            self.inner.write_all(&line)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `keel agent relay SOCKET`: stdin to the root agent behind `socket`, its frames back to stdout
/// and stderr; returns its exit code (8, I/O, when it could not be reached or said none).
pub fn relay(socket: &Path, input: &mut dyn std::io::Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let io = |err: &mut dyn Write, e: std::io::Error, what: &str| {
        let _ = writeln!(err, "keel agent relay: {what} {}: {e}", socket.display());
        Code::Io.as_i32()
    };
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => return io(err, e, "cannot reach the privileged agent at"),
    };
    if let Err(e) = std::io::copy(input, &mut stream).and_then(|_| stream.shutdown(std::net::Shutdown::Write)) {
        return io(err, e, "cannot send the bundle to");
    }
    for line in BufReader::new(stream).lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => return io(err, e, "lost the answer of"),
        };
        let (tag, text) = line.split_at(line.len().min(2));
        let _ = match tag {
            "O " => writeln!(out, "{text}"),
            "E " => writeln!(err, "{text}"),
            "X " => return text.trim().parse().unwrap_or(Code::Io.as_i32()),
            _ => writeln!(err, "keel agent relay: unexpected line from the agent: {line}"),
        };
    }
    let _ = writeln!(
        err,
        "keel agent relay: the agent at {} ended without an exit code",
        socket.display()
    );
    Code::Io.as_i32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_whole_lines_however_they_are_written() {
        let mut buf = Vec::new();
        {
            let mut f = Framed::new(&mut buf, "O ");
            f.write_all(b"one\ntw").unwrap();
            f.write_all(b"o\n").unwrap();
        }
        assert_eq!(buf, b"O one\nO two\n");
    }
}
