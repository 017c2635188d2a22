//! `keel-agent apply` on a stream: many bundles over one process and one ssh session, so that a
//! change reaching a thousand hosts starts no process per send (issue 34). The engine opens the
//! stream with [`HELLO`]; an agent that knows streams answers [`READY`]. (An older one reads its
//! input whole before anything else and never answers: the engine, getting no `READY` within its
//! connect timeout, closes the stream — that agent refuses the line as a bundle — and sends one
//! bundle per process.) Then, for each bundle, one frame in and the run's frames out:
//!
//! ```text
//! engine: B <length>\n<length bytes: the bundle, as on stdin>
//! agent:  O <an output line>\n … E <an error line>\n … X <exit code>\n
//! ```
//!
//! The engine sends the next bundle only after the `X` of the last (backpressure is the
//! protocol's). Each bundle is a whole run of its own — the config read again, then every check
//! of `apply` in its order (signature, whitelist, version, lock, serial…) — so a stream gives a
//! bundle no right a lone bundle lacks. A length above the config's `max_bundle_bytes`, a frame
//! that is not `B`, or a stream cut inside a bundle ends the stream with an `E` line and an `X`.
//! End of input ends it with 0.

use std::io::{BufRead, Read, Write};
use std::path::Path;

use crate::relay::Framed;
use crate::{Code, Config, Out};

/// What the engine writes first on a stream.
pub const HELLO: &[u8] = b"KEEL-STREAM 1\n";
/// What the agent answers it.
pub const READY: &[u8] = b"KEEL-STREAM 1 ready\n";

/// Serves bundles from `input` (after [`HELLO`]) until it ends; the code the process exits with.
pub fn serve(config: &Path, input: &mut dyn BufRead, output: &mut dyn Write) -> Code {
    if output.write_all(READY).and_then(|()| output.flush()).is_err() {
        return Code::Io;
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        // A frame header is short: a longer line is not one.
        match input.take(64).read_until(b'\n', &mut line) {
            Ok(0) => return Code::Ok,
            Ok(_) => {}
            Err(_) => return Code::Io,
        }
        let cfg = Config::load(config);
        let max = cfg
            .as_ref()
            .map_or(crate::config::DEFAULT_MAX_BUNDLE_BYTES, |c| c.max_bundle_bytes);
        let len = match frame_length(&line, max) {
            Ok(len) => len,
            Err(why) => return end(output, Code::BadBundle, &why),
        };
        let mut bundle = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        match input.take(len).read_to_end(&mut bundle) {
            Ok(n) if n as u64 == len => {}
            _ => return end(output, Code::Io, "the stream ended inside a bundle"),
        }
        let code = run_one(cfg, &bundle, output);
        if writeln!(output, "X {}", code.as_i32())
            .and_then(|()| output.flush())
            .is_err()
        {
            return Code::Io;
        }
    }
}

/// `B <length>`, the length at most `max`.
fn frame_length(line: &[u8], max: u64) -> Result<u64, String> {
    let text = std::str::from_utf8(line).map_err(|_| "a frame that is not text".to_owned())?;
    let len: u64 = text
        .strip_prefix("B ")
        .and_then(|n| n.trim_end_matches('\n').parse().ok())
        .ok_or_else(|| format!("expected a frame `B <length>`, got {:?}", text.trim_end()))?;
    if len > max {
        return Err(format!("a bundle of {len} bytes, above max_bundle_bytes ({max})"));
    }
    Ok(len)
}

/// One bundle's run, its lines framed on `output` (output lines, then error lines).
fn run_one(cfg: Result<Config, crate::config::ConfigError>, bundle: &[u8], output: &mut dyn Write) -> Code {
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let code = {
        let (mut info, mut error) = (Framed::new(&mut o, "O "), Framed::new(&mut e, "E "));
        let mut out = Out {
            info: &mut info,
            error: &mut error,
            name: "keel-agent".into(),
        };
        match cfg {
            Ok(cfg) => crate::apply(&cfg, bundle, &mut out),
            Err(err) => {
                out.error(Code::Usage, &err.to_string());
                Code::Usage
            }
        }
    };
    let _ = output.write_all(&o).and_then(|()| output.write_all(&e));
    code
}

/// The stream's last frames: why it ends, and its code.
fn end(output: &mut dyn Write, code: Code, why: &str) -> Code {
    let _ = writeln!(output, "E keel-agent: {}", why.replace('\n', " "));
    let _ = writeln!(output, "X {}", code.as_i32());
    let _ = output.flush();
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_names_its_length_within_the_bound() {
        assert_eq!(frame_length(b"B 12\n", 100), Ok(12));
        assert!(frame_length(b"B 101\n", 100).unwrap_err().contains("max_bundle_bytes"));
        for bad in [&b"X 1\n"[..], b"B -1\n", b"B\n", b"B 1 2\n", b"\xff\n"] {
            assert!(frame_length(bad, 100).is_err(), "{bad:?}");
        }
    }
}
