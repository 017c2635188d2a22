//! Django-style filters (`field`, `field__in`, `field__contains`, `field__startswith`, …) as the
//! prologin RPC clients send them.

use serde_json::Value;

use crate::input::split_list;
use crate::wire::Queryable;
use crate::ValidationError;

/// The longest value a filter compares with (no field of a record is longer).
pub const MAX_VALUE: usize = 256;
/// The most values of one `__in`.
pub const MAX_IN: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Exact,
    IExact,
    In,
    Contains,
    IContains,
    StartsWith,
    EndsWith,
}

/// One filter: a field, a lookup and the value(s) to compare with, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub field: String,
    pub lookup: Lookup,
    pub values: Vec<String>,
}

impl Filter {
    /// Parses `name` (with its optional `__lookup`) and its value, for records of type `R`.
    pub fn parse<R: Queryable>(name: &str, value: &Value) -> Result<Self, ValidationError> {
        let (field, lookup) = match name.split_once("__") {
            None => (name, Lookup::Exact),
            Some((f, l)) => (
                f,
                match l {
                    "exact" => Lookup::Exact,
                    "iexact" => Lookup::IExact,
                    "in" => Lookup::In,
                    "contains" => Lookup::Contains,
                    "icontains" => Lookup::IContains,
                    "startswith" => Lookup::StartsWith,
                    "endswith" => Lookup::EndsWith,
                    _ => return Err(ValidationError::new(name, format!("unknown lookup {l:?}"))),
                },
            ),
        };
        if !R::FIELDS.contains(&field) {
            return Err(ValidationError::new(
                name,
                format!("unknown field; known: {}", R::FIELDS.join(", ")),
            ));
        }
        let values: Vec<String> = match (lookup, value) {
            (Lookup::In, Value::Array(items)) => items.iter().map(|v| scalar(name, v)).collect::<Result<_, _>>()?,
            (Lookup::In, Value::String(s)) => split_list(s),
            (_, v) => vec![scalar(name, v)?],
        };
        // Bounded before any record is looked at: no field of a record is longer, and a list
        // longer than this is no query a client of a site needs.
        if values.len() > MAX_IN {
            return Err(ValidationError::new(name, format!("at most {MAX_IN} values")));
        }
        if values.iter().any(|v| v.len() > MAX_VALUE) {
            return Err(ValidationError::new(
                name,
                format!("a value is at most {MAX_VALUE} bytes"),
            ));
        }
        let values = match field {
            // Canonicalise so `mac=AA-BB-…` finds `aa:bb:…` as the original did with its normalised rows.
            "mac" if matches!(lookup, Lookup::Exact | Lookup::In) => values
                .into_iter()
                .map(|v| crate::Mac::parse("mac", &v).map(|m| m.to_string()).unwrap_or(v))
                .collect(),
            _ => values,
        };
        Ok(Self {
            field: field.to_owned(),
            lookup,
            values,
        })
    }

    pub fn matches<R: Queryable>(&self, r: &R) -> bool {
        let Some(got) = r.field(&self.field) else {
            return false;
        };
        let got = got.as_ref();
        let want = || self.values.first().map(String::as_str).unwrap_or("");
        match self.lookup {
            Lookup::Exact => got == want(),
            Lookup::IExact => got.eq_ignore_ascii_case(want()),
            Lookup::In => self.values.iter().any(|v| v == got),
            Lookup::Contains => got.contains(want()),
            Lookup::IContains => got.to_lowercase().contains(&want().to_lowercase()),
            Lookup::StartsWith => got.starts_with(want()),
            Lookup::EndsWith => got.ends_with(want()),
        }
    }

    /// The exact value asked for, if this filter pins `field` to one value (lets callers use an index).
    pub fn exact(&self, field: &str) -> Option<&str> {
        match (self.lookup, self.values.as_slice()) {
            (Lookup::Exact, [v]) if self.field == field => Some(v),
            _ => None,
        }
    }
}

fn scalar(name: &str, v: &Value) -> Result<String, ValidationError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ValidationError::new(name, "must be a string, a number or a boolean")),
    }
}

/// Parses every filter of a JSON object.
pub fn parse_filters<R: Queryable>(
    pairs: impl IntoIterator<Item = (String, Value)>,
) -> Result<Vec<Filter>, ValidationError> {
    pairs.into_iter().map(|(k, v)| Filter::parse::<R>(&k, &v)).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{Machine, MachineType};

    fn machine() -> Machine {
        Machine {
            id: 1,
            hostname: "r00p01".to_owned().try_into().unwrap(),
            aliases: vec!["rfs1".to_owned().try_into().unwrap()],
            ip: "192.168.0.3".parse().unwrap(),
            mac: "aa:bb:cc:dd:ee:ff".to_owned().try_into().unwrap(),
            mtype: MachineType::User,
            room: "pasteur".into(),
            rfs: 1,
            hfs: 0,
            is_faulty: false,
            faulty_reason: String::new(),
            boot: None,
            version: 1,
        }
    }

    fn check(name: &str, value: Value, expect: bool) {
        let f = Filter::parse::<Machine>(name, &value).unwrap();
        assert_eq!(f.matches(&machine()), expect, "{name}={value}");
    }

    #[test]
    fn lookups() {
        check("hostname", json!("r00p01"), true);
        check("hostname__startswith", json!("r00"), true);
        check("hostname__in", json!(["x", "r00p01"]), true);
        check("hostname__in", json!("x,r00p01"), true);
        check("aliases__contains", json!("rfs"), true);
        check("mac", json!("AA-BB-CC-DD-EE-FF"), true);
        check("rfs", json!(1), true);
        check("rfs", json!("2"), false);
        check("mtype", json!("orga"), false);
        check("is_faulty", json!(false), true);
    }

    /// Issue 19: a megabyte needle or a huge `__in` is refused before any record is looked at;
    /// the same filters at their bounds are fine.
    #[test]
    fn values_are_bounded() {
        let at = |n: usize| json!("a".repeat(n));
        assert!(Filter::parse::<Machine>("hostname__icontains", &at(MAX_VALUE)).is_ok());
        assert_eq!(
            Filter::parse::<Machine>("hostname__icontains", &at(1 << 20))
                .unwrap_err()
                .field,
            "hostname__icontains"
        );
        let list = |n: usize| json!((0..n).map(|i| format!("h{i}")).collect::<Vec<_>>());
        assert!(Filter::parse::<Machine>("hostname__in", &list(MAX_IN)).is_ok());
        assert!(Filter::parse::<Machine>("hostname__in", &list(MAX_IN + 1)).is_err());
        let csv = vec!["x"; MAX_IN + 1].join(",");
        assert!(Filter::parse::<Machine>("hostname__in", &json!(csv)).is_err());
    }

    #[test]
    fn unknown_field_is_named() {
        assert_eq!(
            Filter::parse::<Machine>("nope__in", &json!([])).unwrap_err().field,
            "nope__in"
        );
        assert!(Filter::parse::<Machine>("hostname__regex", &json!("x")).is_err());
    }
}
