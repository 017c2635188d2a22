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

pub fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints an error as `keel: error: …`, then every invalid field (with its line, for imports).
pub fn print_error(e: &anyhow::Error) {
    eprintln!("keel: error: {e}");
    if let Some(ClientError::Api { errors, .. }) = e.downcast_ref::<ClientError>() {
        if errors.len() > 1 {
            for err in errors {
                eprintln!("  {err}");
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
