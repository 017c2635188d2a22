//! The generators' own refusal (invariant 10, second layer): a value the target format
//! cannot hold as one field of one record is a [`GenError`] naming the record and field, never
//! written, whatever the model let through (an old database, a bug, a value a later model change
//! forgot). The model refuses the same values first; the agent re-parses after.

use keel_model::{Hostname, Machine};

/// GENERROR: the file, the record and the field whose value the file cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GENERROR {file}: {record}: field {field} {why}")]
pub struct GenError {
    pub file: &'static str,
    pub record: String,
    pub field: &'static str,
    pub why: String,
}

impl GenError {
    pub(crate) fn new(file: &'static str, record: &str, field: &'static str, why: impl Into<String>) -> Self {
        // A record name is a login or a hostname (validated types), but it is cut all the same:
        // the error is logged and stored with the task's result.
        let record: String = record.chars().take(64).collect();
        Self {
            file,
            record,
            field,
            why: why.into(),
        }
    }
}

/// One field of a line-based file: no control character (no line break), none of `forbidden`.
pub(crate) fn field(
    file: &'static str,
    record: &str,
    name: &'static str,
    value: &str,
    forbidden: &[char],
) -> Result<(), GenError> {
    if let Some(c) = value.chars().find(|c| c.is_control() || forbidden.contains(c)) {
        return Err(GenError::new(
            file,
            record,
            name,
            format!("holds {c:?}, which this file cannot hold"),
        ));
    }
    Ok(())
}

/// Every name of a machine (hostname, aliases) is a host name by RFC 1123 (what hosts files, zones
/// and DHCP host declarations hold as one word).
pub(crate) fn machine_names(file: &'static str, m: &Machine) -> Result<(), GenError> {
    let record = m.hostname.as_str();
    Hostname::parse("hostname", m.hostname.as_str()).map_err(|e| GenError::new(file, record, "hostname", e.message))?;
    for a in &m.aliases {
        Hostname::parse("aliases", a.as_str()).map_err(|e| GenError::new(file, record, "aliases", e.message))?;
    }
    Ok(())
}

/// A site option written into a file (the zone, a path, a URL): the same rule as a record's field,
/// named after the option.
pub(crate) fn option(file: &'static str, name: &'static str, value: &str, forbidden: &[char]) -> Result<(), GenError> {
    field(file, "site options", name, value, forbidden)
}
