//! keel's own log lines (tracing), to stderr: one formatter for every line, in one of two shapes.
//!
//! - Under systemd, when stderr is the journal's stream (`$JOURNAL_STREAM` names stderr's device
//!   and inode), each line starts with sd-daemon's `<N>` priority prefix, so the journal stores
//!   warnings at priority 4 and errors at 3 (`journalctl -p warning` finds them) — without colour
//!   and without a timestamp of keel's own (the journal keeps one).
//! - Elsewhere (a terminal, a file, a test): an RFC 3339 timestamp and the level, coloured only when
//!   stderr is a terminal and `NO_COLOR` is unset.
//!
//! Every value in a line — the message and each field — goes through [`escape`]: a control
//! character becomes an escape, so one event is always one line. A TFTP file name or a web login
//! holding a newline cannot forge a line of its own.
//!
//! The level filter is `[logging] level` of keel.toml (an `EnvFilter` directive, default `info`
//! for the server) unless `RUST_LOG` is set, which wins; [`Logging::set_level`] changes it on a
//! reload.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The running subscriber's level filter, changeable on a reload.
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set at start: it stays in force over the config file.
    from_env: bool,
}

impl Logging {
    /// Replaces the level filter with `directives` (`[logging] level`), unless `RUST_LOG` set it.
    /// Returns whether the filter changed.
    pub fn set_level(&self, directives: &str) -> Result<bool, String> {
        if self.from_env {
            return Ok(false);
        }
        let filter = parse_level(directives)?;
        self.filter.reload(filter).map_err(|e| e.to_string())?;
        Ok(true)
    }
}

/// Parses an `EnvFilter` directive list (`info`, `warn,keel_store=debug`), naming what is wrong.
pub fn parse_level(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| format!("{directives:?} is not a log level or directive list ({e})"))
}

/// Installs the subscriber: `level` unless `RUST_LOG` is set.
pub fn init(level: &str) -> Logging {
    let from_env = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    let filter = if from_env {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level))
    } else {
        parse_level(level).unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let (filter, handle) = reload::Layer::new(filter);
    let shape = if journal_is_stderr() {
        Shape::Journal
    } else {
        Shape::Terminal {
            colour: std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none(),
        }
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .fmt_fields(EscapedFields)
        .event_format(Line { shape });
    // A second init (tests in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(filter).with(fmt).try_init();
    Logging {
        filter: handle,
        from_env,
    }
}

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM=DEV:INODE` for a
/// service's stdout/stderr stream, and only the same device and inode prove it is still ours
/// (a child whose stderr was redirected inherits the variable).
fn journal_is_stderr() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(stat.st_dev) && ino.parse::<u64>().ok() == Some(stat.st_ino)
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Journal,
    Terminal { colour: bool },
}

/// The one event formatter.
struct Line {
    shape: Shape,
}

/// sd-daemon's priority of a level (syslog's numbers: 3 err, 4 warning, 6 info, 7 debug).
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        match self.shape {
            Shape::Journal => write!(w, "<{}>", priority(*meta.level()))?,
            Shape::Terminal { colour } => {
                let now = time::OffsetDateTime::now_utc();
                let stamp = now
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                let (on, off) = match (colour, *meta.level()) {
                    (false, _) => ("", ""),
                    (true, Level::ERROR) => ("\x1b[31m", "\x1b[0m"),
                    (true, Level::WARN) => ("\x1b[33m", "\x1b[0m"),
                    (true, Level::INFO) => ("\x1b[32m", "\x1b[0m"),
                    (true, _) => ("\x1b[34m", "\x1b[0m"),
                };
                write!(w, "{stamp} {on}{:>5}{off} ", meta.level())?;
            }
        }
        write!(w, "{}: ", meta.target())?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(w, "{}", span.name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(w, "{{{}}}", fields.fields.trim_start())?;
                    }
                }
                w.write_str(": ")?;
            }
        }
        ctx.format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Formats fields as `message key=value …`, every value escaped.
struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(&self, mut w: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = Collect::default();
        fields.record(&mut v);
        if let Some(message) = &v.message {
            w.write_str(message)?;
            if !v.rest.is_empty() {
                w.write_char(' ')?;
            }
        }
        w.write_str(v.rest.trim_start())
    }
}

#[derive(Default)]
struct Collect {
    message: Option<String>,
    rest: String,
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, &format!("{value:?}"));
    }
}

impl Collect {
    fn put(&mut self, field: &Field, value: &str) {
        let value = escape(value);
        if field.name() == "message" {
            self.message = Some(value.into_owned());
        } else {
            // Fields of `log` records carry a `log.` prefix tracing-log adds: not ours, kept.
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}

/// `s` with every control character written as an escape (`\n`, `\r`, `\t`, `\e`, `\u{…}`), so
/// that a logged value can never start a line of its own or move a terminal's cursor. Also the
/// C1 controls and Unicode's line and paragraph separators, which some viewers break lines on.
pub fn escape(s: &str) -> Cow<'_, str> {
    let needs = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !s.chars().any(needs) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x1b' => out.push_str("\\e"),
            c if needs(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_plain_text_alone_and_escapes_every_control() {
        assert!(matches!(escape("root logged in é ✓"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\nFORGED root logged in\r\t\x1b[31m\u{7f}\u{85}\u{2028}"),
            "a\\nFORGED root logged in\\r\\t\\e[31m\\u{7f}\\u{85}\\u{2028}"
        );
    }

    proptest::proptest! {
        /// Whatever a value holds, its escaped form is one line with no control character.
        #[test]
        fn escaped_values_are_one_line(s in ".*") {
            let breaks = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
            let one_line = !escape(&s).chars().any(breaks);
            proptest::prop_assert!(one_line, "escaped {:?}", s);
        }
    }

    #[test]
    fn priorities_are_syslogs() {
        assert_eq!(
            [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG].map(priority),
            [3, 4, 6, 7]
        );
    }

    #[test]
    fn a_bad_level_is_named() {
        assert!(parse_level("warn,keel_store=debug").is_ok());
        let e = parse_level("keel=loud").unwrap_err();
        assert!(e.contains("keel=loud"), "{e}");
    }
}
