//! How the CLI prints: tables for people, JSON for scripts, one-line errors with field details.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use keel_client::ClientError;
use serde::Serialize;

pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}

/// Standard output was closed by its reader (`keel machine list | head`): not an error — the
/// command stops and keel exits 0, as `ls | head` does.
#[derive(Debug, thiserror::Error)]
#[error("standard output closed")]
pub struct Closed;

/// Writes a line to standard output; a closed pipe is [`Closed`] (main exits 0 on it), never a
/// panic as `println!` gives.
pub fn write_line(args: std::fmt::Arguments<'_>) -> Result<(), Closed> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Closed),
        // Anything else (a full disk behind a redirection) is not the reader leaving: say so.
        Err(e) => {
            eprintln!("keel: error: cannot write to standard output: {e}");
            Err(Closed)
        }
    }
}

/// `println!` for command output: `outln!(…)?` stops the command quietly when stdout is closed.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write_line(format_args!("")) };
    ($($t:tt)*) => { $crate::output::write_line(format_args!($($t)*)) };
}

/// Whether an error is stdout closed by its reader (main then exits 0 without a word).
pub fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<Closed>()
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

pub fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

/// Prints an error as `keel: error: …`, then every invalid field (with its line, for imports).
pub fn print_error(e: &anyhow::Error) {
    eprintln!("keel: error: {e}");
    if let Some(ClientError::Api { errors, status, .. }) = e.downcast_ref::<ClientError>() {
        if errors.len() > 1 {
            for err in errors {
                eprintln!("  {err}");
            }
        }
        if *status == 401 {
            if let Some(hint) = crate::client_target::missing_token_hint() {
                eprintln!("  {hint}");
            }
        }
    }
    // Causes that only repeat the message above them (a wrapped error's own text) are left out.
    let mut previous = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !previous.contains(&text) {
            eprintln!("  caused by: {text}");
        }
        previous = text;
    }
}
