//! Exit codes and the output lines the engine records (`HH:MM:SS Info|Warning|Error NAME
//! (code=N): text`).
//!
//! Codes follow Perun's families: 0 ok; 1–15 generic errors; 50+ service errors; 100–199
//! applied but not whole (a post hook failed); 200+ protocol and version errors. Info lines go to
//! stdout, Error lines to stderr. keel counts only exit 0 as applied (with remarks when stderr has
//! lines); every other code is a failure it retries (docs/propagation.md, the exit-code table).

use std::io::Write;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    /// Bad command line or configuration.
    Usage = 1,
    /// Neither the destination nor the facility is whitelisted here (the engine shows DENIED).
    NotWhitelisted = 2,
    /// Another run of this service holds the lock.
    Locked = 3,
    /// Not a well-formed bundle: tar, member, manifest or file contents.
    BadBundle = 4,
    /// The signature does not verify against a trusted key.
    BadSignature = 5,
    /// The serial is not above the last one applied: a replay or an older bundle.
    Replay = 6,
    /// A pre or mid hook failed; nothing stays changed.
    HookFailed = 7,
    /// Reading or writing the host's files failed; rolled back.
    Io = 8,
    /// The files were applied, but a home (or its skeleton, or its owner) could not be made:
    /// the run is not complete, and the next one (even of the same serial) makes them again.
    HomesFailed = 9,
    /// The service's data is refused by this host's policy (uid 0, duplicate uid, a clash with a
    /// local account, a symlinked target…).
    ServiceData = 50,
    /// The files were applied, but a post hook failed (a reload, a restart): the run is not
    /// complete, and the next one (even of the same serial) runs the post hooks again.
    PostHookFailed = 100,
    /// The service's major version is not the one this host implements.
    WrongMajor = 200,
    /// A bundle format this agent does not read.
    UnknownFormat = 201,
    /// A delta whose base is not what this host holds (another serial, or files that differ:
    /// a reinstalled, restored or hand-edited host). Nothing changed; the engine sends the full
    /// state in the same run.
    BaseMismatch = 202,
}

impl Code {
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

/// An error that ends a run with its code.
#[derive(Debug)]
pub struct Fail {
    pub code: Code,
    pub message: String,
}

impl Fail {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Where lines go (real stdout/stderr for the binary; buffers in tests).
pub struct Out<'a> {
    pub info: &'a mut dyn Write,
    pub error: &'a mut dyn Write,
    pub name: String,
}

impl Out<'_> {
    pub fn info(&mut self, text: &str) {
        // A dropped ssh connection must not stop an apply: write errors are ignored.
        let _ = writeln!(self.info, "{} Info {} (code=0): {text}", clock(), self.name);
    }

    /// A remark on a run that succeeded (a hook's stderr): on stderr, so keel shows WARNING, with
    /// code 0 since nothing failed.
    pub fn warning(&mut self, text: &str) {
        let _ = writeln!(self.error, "{} Warning {} (code=0): {text}", clock(), self.name);
    }

    pub fn error(&mut self, code: Code, text: &str) {
        let _ = writeln!(
            self.error,
            "{} Error {} (code={}): {text}",
            clock(),
            self.name,
            code.as_i32()
        );
    }
}

/// HH:MM:SS, UTC.
fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}
