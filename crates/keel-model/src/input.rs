//! Reading fields out of a JSON object with errors that name the field.
//!
//! REST bodies are strict (unknown fields and wrong types are errors); RPC arguments are lenient
//! like the prologin original (numbers given as strings are accepted, unknown fields ignored).

use serde_json::{Map, Value};

use crate::ValidationError;

/// Strict (REST) or lenient (RPC, import files) reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    Strict,
    Lenient,
}

/// A JSON object whose fields are taken one by one; [`Fields::finish`] rejects leftovers in strict mode.
#[derive(Debug)]
pub struct Fields {
    map: Map<String, Value>,
    mode: Strictness,
}

impl Fields {
    pub fn new(value: Value, mode: Strictness) -> Result<Self, ValidationError> {
        match value {
            Value::Object(map) => Ok(Self { map, mode }),
            other => Err(ValidationError::new(
                "body",
                format!("must be a JSON object, got {}", type_name(&other)),
            )),
        }
    }

    pub fn from_map(map: Map<String, Value>, mode: Strictness) -> Self {
        Self { map, mode }
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        match self.map.remove(name) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// Takes a field's raw JSON value (for nested or free-form fields).
    pub fn take_value(&mut self, name: &str) -> Option<Value> {
        self.take(name)
    }

    pub fn opt_str(&mut self, name: &str) -> Result<Option<String>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) if self.mode == Strictness::Lenient => Ok(Some(n.to_string())),
            Some(v) => Err(wrong_type(name, "a string", &v)),
        }
    }

    pub fn opt_u32(&mut self, name: &str) -> Result<Option<u32>, ValidationError> {
        let v = match self.take(name) {
            None => return Ok(None),
            Some(v) => v,
        };
        let n = match &v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) if self.mode == Strictness::Lenient => s.trim().parse::<u64>().ok(),
            _ => return Err(wrong_type(name, "a non-negative integer", &v)),
        };
        n.and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| ValidationError::new(name, format!("must be an integer from 0 to {}, got {v}", u32::MAX)))
    }

    pub fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) if self.mode == Strictness::Lenient => match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Some(true)),
                "false" | "0" | "no" | "off" | "" => Ok(Some(false)),
                _ => Err(ValidationError::new(name, format!("must be true or false, got {s:?}"))),
            },
            Some(Value::Number(n)) if self.mode == Strictness::Lenient => Ok(Some(n.as_u64() != Some(0))),
            Some(v) => Err(wrong_type(name, "true or false", &v)),
        }
    }

    /// A list of strings: a JSON array, or (as prologin's `aliases`) a comma-separated string.
    pub fn opt_str_list(&mut self, name: &str) -> Result<Option<Vec<String>>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(split_list(&s))),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.trim().to_owned()),
                    v => Err(wrong_type(&format!("{name}[{i}]"), "a string", &v)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(wrong_type(name, "a list of strings", &v)),
        }
    }

    /// A list of lines: a JSON array, or a string with one item per line (SSH keys).
    pub fn opt_str_lines(&mut self, name: &str) -> Result<Option<Vec<String>>, ValidationError> {
        match self.take(name) {
            Some(Value::String(s)) => Ok(Some(
                s.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
            Some(v) => {
                self.map.insert(name.to_owned(), v);
                self.opt_str_list(name)
            }
            None => Ok(None),
        }
    }

    /// Ends reading: in strict mode, any field not taken is an error naming it.
    pub fn finish(self) -> Result<(), ValidationError> {
        match (self.mode, self.map.keys().next()) {
            (Strictness::Strict, Some(k)) => Err(ValidationError::new(k.as_str(), "unknown field")),
            _ => Ok(()),
        }
    }
}

/// Splits a comma-separated list, trimming spaces and dropping empty items.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn wrong_type(name: &str, want: &str, got: &Value) -> ValidationError {
    ValidationError::new(name, format!("must be {want}, got {}", type_name(got)))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks a free-text field: at most `max` characters, no control characters.
pub fn check_text(field: &str, s: &str, max: usize) -> Result<String, ValidationError> {
    if s.chars().count() > max {
        return Err(ValidationError::new(field, format!("is longer than {max} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "must not contain control characters"));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strict_rejects_unknown_and_wrong_types() {
        let mut f = Fields::new(json!({"rfs": "1", "zzz": 1}), Strictness::Strict).unwrap();
        assert_eq!(f.opt_u32("rfs").unwrap_err().field, "rfs");
        assert_eq!(f.finish().unwrap_err().field, "zzz");
    }

    #[test]
    fn lenient_accepts_strings_for_numbers() {
        let mut f = Fields::new(json!({"rfs": "1", "zzz": 1, "aliases": "a, b,,c"}), Strictness::Lenient).unwrap();
        assert_eq!(f.opt_u32("rfs").unwrap(), Some(1));
        assert_eq!(f.opt_str_list("aliases").unwrap().unwrap(), ["a", "b", "c"]);
        f.finish().unwrap();
    }

    #[test]
    fn overflow_is_named() {
        let mut f = Fields::new(json!({"hfs": 99999999999u64}), Strictness::Strict).unwrap();
        assert_eq!(f.opt_u32("hfs").unwrap_err().field, "hfs");
    }
}
