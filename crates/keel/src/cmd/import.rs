//! `keel machine import FILE`: read a CSV or JSON file of machines, name every bad line, and send
//! the rest to the server, which adds all of them or none.

use std::path::{Path, PathBuf};

use anyhow::Context;
use keel_client::{Client, ClientError};
use keel_model::ValidationError;
use serde_json::{json, Map, Value};

use crate::outln;
use crate::output::print_json;

/// Columns a CSV file may have (its first line names them, in any order).
const COLUMNS: &[&str] = &[
    "hostname",
    "mac",
    "mtype",
    "ip",
    "aliases",
    "room",
    "rfs",
    "hfs",
    "is_faulty",
    "faulty_reason",
];

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The file: CSV with a header row (hostname,mac,mtype,ip,aliases,room,rfs,hfs), a JSON array
    /// of objects, or JSON Lines (one object per line).
    pub file: PathBuf,
    /// csv or json; default: from the file's extension.
    #[arg(long)]
    pub format: Option<String>,
    /// Check the file as the import would — against the live database, by the server — and
    /// change nothing: every error the import would name, or what it would create.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(c: &Client, args: &ImportArgs, json: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let rows = match format_of(&args.file, args.format.as_deref())? {
        Format::Csv => parse_csv(&text),
        Format::Json => parse_json(&text),
    }
    .map_err(|errors| report(&args.file, errors))?;
    let what = if args.dry_run { "checking" } else { "importing" };
    let spinner = indicatif::ProgressBar::new_spinner().with_message(format!("{what} {} machines", rows.len()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let result = c.import_machines(rows, args.dry_run).await;
    spinner.finish_and_clear();
    let answer = match result {
        Ok(a) => a,
        Err(ClientError::Api { errors, .. }) if !errors.is_empty() => return Err(report(&args.file, errors)),
        Err(e) => return Err(e.into()),
    };
    if json {
        return print_json(&answer);
    }
    if args.dry_run {
        outln!(
            "{}: the import would create {} machines; nothing was changed (dry run)",
            args.file.display(),
            answer["created"]
        )?;
        return Ok(());
    }
    outln!("imported {} machines from {}", answer["created"], args.file.display())?;
    Ok(())
}

enum Format {
    Csv,
    Json,
}

fn format_of(path: &Path, given: Option<&str>) -> anyhow::Result<Format> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match given.unwrap_or(ext) {
        "csv" | "CSV" => Ok(Format::Csv),
        "json" | "jsonl" | "JSON" => Ok(Format::Json),
        other => {
            anyhow::bail!("unknown import format {other:?}: use --format csv or --format json")
        }
    }
}

/// Prints every bad line and returns the error that fails the command.
fn report(file: &Path, errors: Vec<ValidationError>) -> anyhow::Error {
    for e in &errors {
        eprintln!("{}:{e}", file.display());
    }
    anyhow::anyhow!("{} error(s) in {}: nothing was imported", errors.len(), file.display())
}

fn parse_csv(text: &str) -> Result<Vec<Value>, Vec<ValidationError>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_owned).collect(),
        Err(e) => return Err(vec![ValidationError::new("header", e.to_string()).at_line(1)]),
    };
    let mut errors: Vec<ValidationError> = header
        .iter()
        .filter(|h| !COLUMNS.contains(&h.as_str()))
        .map(|h| ValidationError::new(h.as_str(), format!("unknown column; known: {}", COLUMNS.join(", "))).at_line(1))
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        match record {
            Ok(r) => {
                let line = r.position().map_or(0, |p| line_at(text, p.byte()));
                let mut obj = Map::new();
                obj.insert("line".into(), json!(line));
                for (col, val) in header.iter().zip(r.iter()).filter(|(_, v)| !v.is_empty()) {
                    obj.insert(col.clone(), cell(col, val));
                }
                rows.push(Value::Object(obj));
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| line_at(text, p.byte()));
                errors.push(ValidationError::new("row", csv_message(&e)).at_line(line));
            }
        }
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// The 1-based line at a byte offset. (The csv crate's own line count skips blank lines, which
/// would name the wrong line to the user.)
fn line_at(text: &str, byte: u64) -> usize {
    let bytes = text.as_bytes();
    let mut end = usize::try_from(byte).unwrap_or(usize::MAX).min(bytes.len());
    // A record's position may point at the blank lines before it.
    while end < bytes.len() && (bytes[end] == b'\n' || bytes[end] == b'\r') {
        end += 1;
    }
    bytes[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("has {len} fields, the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".to_owned(),
        _ => e.to_string(),
    }
}

/// Numbers stay numbers so the server's strict check sees what the file meant; a bad number is
/// sent as text, and the server names its field and line.
fn cell(col: &str, val: &str) -> Value {
    match col {
        "rfs" | "hfs" => val.parse::<u64>().map_or_else(|_| json!(val), |n| json!(n)),
        "is_faulty" => match val {
            "true" | "yes" | "1" => json!(true),
            "false" | "no" | "0" => json!(false),
            other => json!(other),
        },
        "aliases" => json!(val.split([',', ';', ' ']).filter(|a| !a.is_empty()).collect::<Vec<_>>()),
        _ => json!(val),
    }
}

/// A JSON array (entries numbered from 1) or JSON Lines (numbered by line).
fn parse_json(text: &str) -> Result<Vec<Value>, Vec<ValidationError>> {
    if text.trim_start().starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(text)
            .map_err(|e| vec![ValidationError::new("file", format!("is not a JSON array: {e}")).at_line(e.line())])?;
        return number_rows(items.into_iter().enumerate().map(|(i, v)| (i + 1, Ok(v))).collect());
    }
    let parsed = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            (
                i + 1,
                serde_json::from_str(l).map_err(|e| ValidationError::new("line", format!("is not JSON: {e}"))),
            )
        })
        .collect();
    number_rows(parsed)
}

fn number_rows(items: Vec<(usize, Result<Value, ValidationError>)>) -> Result<Vec<Value>, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let mut rows = Vec::new();
    for (line, item) in items {
        match item {
            Ok(Value::Object(mut obj)) => {
                obj.insert("line".into(), json!(line));
                rows.push(Value::Object(obj));
            }
            Ok(_) => errors.push(ValidationError::new("entry", "must be a JSON object").at_line(line)),
            Err(e) => errors.push(e.at_line(line)),
        }
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_names_every_bad_line() {
        let text = "hostname,mac,mtype,bogus\na,aa:bb:cc:dd:ee:01,user,x\nb,aa:bb:cc:dd:ee:02\n";
        let errs = parse_csv(text).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!((errs[0].line, errs[0].field.as_str()), (Some(1), "bogus"));
        assert_eq!(errs[1].line, Some(3));
    }

    #[test]
    fn csv_rows_carry_lines_and_types() {
        let rows = parse_csv("hostname,mac,mtype,rfs,aliases\na,m,user,2,x;y\n\nb,m2,user,z,\n").unwrap();
        assert_eq!(rows[0]["line"], 2);
        assert_eq!(rows[0]["rfs"], 2);
        assert_eq!(rows[0]["aliases"], json!(["x", "y"]));
        assert_eq!(rows[1]["line"], 4);
        assert_eq!(rows[1]["rfs"], "z");
    }

    #[test]
    fn json_lines_and_arrays() {
        let rows = parse_json("{\"hostname\":\"a\"}\n\n{\"hostname\":\"b\"}\n").unwrap();
        assert_eq!(rows[1]["line"], 3);
        let errs = parse_json("{\"a\":1}\n[1]\nnot json\n").unwrap_err();
        assert_eq!(errs.iter().map(|e| e.line).collect::<Vec<_>>(), [Some(2), Some(3)]);
        assert_eq!(parse_json("[{\"a\":1},{\"b\":2}]").unwrap()[1]["line"], 2);
    }
}

/// Issue 19: generative tests of the import parsers (`fuzz_*`: `PROPTEST_CASES=100000 cargo test
/// --workspace fuzz_` runs them longer). Any text: no panic, and every error names a line.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-z0-9,;:\"\\n\\r\\[\\]{} ]{0,200}",
            "(hostname,mac,mtype\n)?([a-z0-9:,\"]{0,30}\n){0,8}",
        ]
    }

    proptest! {
        #[test]
        fn fuzz_machine_import_parsers(t in text()) {
            for parsed in [parse_csv(&t), parse_json(&t)] {
                if let Err(errors) = parsed {
                    prop_assert!(!errors.is_empty());
                    prop_assert!(errors.iter().all(|e| e.line.is_some()), "{errors:?}");
                }
            }
        }
    }
}
