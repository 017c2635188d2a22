//! The typed Python client, made from the OpenAPI description: a `TypedDict` per record schema,
//! a `Literal` per enumeration, and a `Client` with one method per operation (named by its
//! `operationId`), standard library only. contrib/python/keel_api.py is this output (a test holds
//! it to it; the Django integration's `keel_api.py` is a link to it); Python users run
//! `keel openapi --python`.

use std::fmt::Write as _;

use serde_json::Value;

/// The module, from the description `doc`.
pub fn client(doc: &Value) -> String {
    let mut out = String::new();
    let version = doc["info"]["version"].as_str().unwrap_or("?");
    let _ = write!(out, "{}", HEADER.replace("{version}", version));
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        // Aliases and enumerations first: the records name them.
        for (name, s) in schemas.iter().filter(|(_, s)| s["type"] != "object") {
            alias(&mut out, name, s);
        }
        for (name, s) in schemas.iter().filter(|(_, s)| s["type"] == "object") {
            record(&mut out, name, s);
        }
    }
    // The API's prefix is the description's server (`/api/v1`).
    let prefix = doc["servers"][0]["url"].as_str().unwrap_or_default();
    out.push_str(&CLIENT.replace("{prefix:?}", &format!("{prefix:?}")));
    let mut ops: Vec<(String, String, &Value)> = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in ["get", "post", "put", "patch", "delete"] {
                if let Some(op) = item.get(method) {
                    ops.push((path.clone(), method.to_owned(), op));
                }
            }
        }
    }
    ops.sort_by(|a, b| a.2["operationId"].as_str().cmp(&b.2["operationId"].as_str()));
    for (path, method, op) in ops {
        operation(&mut out, &path, &method, op);
    }
    out
}

const HEADER: &str = r#""""keel's REST API for Python, typed.

Made by ``keel openapi --python`` from the OpenAPI description of keel {version} (what
``GET /api/v1/openapi.json`` answers): do not edit, make it again. Standard library only.

    api = Client("https://keel.prolo", token=open("/etc/keel/app.token").read().strip(),
                 ca_file="/etc/keel/ca.pem")
    for m in api.list_machines(room="alt"):
        print(m["hostname"], m["ip"])

Every method raises ``KeelError`` when keel answers an error (its ``status``, and its ``body``:
an ``ErrorBody``) or cannot be reached. List methods take filters as keyword arguments
(``room="alt"``, ``hostname__startswith="pc"``; docs/api.md).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterator, List, Literal, Optional, TypedDict

"#;

const CLIENT: &str = r#"

class KeelError(Exception):
    """keel answered an error (``status``, ``body``: an ErrorBody when keel sent one), or could
    not be reached (``status`` None)."""

    def __init__(self, message: str, status: Optional[int] = None, body: Optional[ErrorBody] = None):
        super().__init__(message)
        self.status = status
        self.body = body


def _part(value: Any) -> str:
    return urllib.parse.quote(str(value), safe="")


class Client:
    """keel's REST API at ``url`` (keel's address, without ``/api/v1``)."""

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 60.0,
                 ca_file: Optional[str] = None):
        # A watch stream's timeout must exceed keel's heartbeat interval (10 s): silence longer
        # than it means the connection is gone.
        self.base = url.rstrip("/")
        self.url = self.base + {prefix:?}
        self.token = token
        self.timeout = timeout
        # Over HTTPS, keel's site CA (DATA_DIR/tls/ca.pem) and nothing else, when given.
        self.context = ssl.create_default_context(cafile=ca_file) if ca_file else None

    def get_outside(self, path: str, **query: Any) -> Any:
        """GET one of keel's JSON routes outside the REST API (prologin's RPC, e.g.
        ``/udb/call/query_private``): ``path`` is from keel's root."""
        return self._json("GET", path, query, root=self.base)

    def _send(self, method: str, path: str, query: Dict[str, Any], body: Any = None,
              if_match: Optional[str] = None, root: Optional[str] = None):
        pairs = {k: v for k, v in query.items() if v is not None}
        url = (root or self.url) + path + ("?" + urllib.parse.urlencode(pairs) if pairs else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if if_match is not None:
            req.add_header("If-Match", if_match)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout, context=self.context)
        except urllib.error.HTTPError as e:
            text = e.read(65536).decode("utf-8", "replace")
            try:
                error = json.loads(text)
            except ValueError:
                error = None
            said = error.get("error") if isinstance(error, dict) else text
            raise KeelError(f"{method} {path}: HTTP {e.code}: {said}", e.code, error) from e
        except OSError as e:
            raise KeelError(f"{method} {path}: {e}") from e

    def _json(self, method: str, path: str, query: Dict[str, Any], body: Any = None,
              if_match: Optional[str] = None, root: Optional[str] = None) -> Any:
        with self._send(method, path, query, body, if_match, root) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else None

    def _bytes(self, method: str, path: str, query: Dict[str, Any]) -> bytes:
        with self._send(method, path, query) as resp:
            return resp.read()

    def _lines(self, method: str, path: str, query: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
        with self._send(method, path, query) as resp:
            for raw in resp:
                if raw.strip():
                    yield json.loads(raw)
"#;

/// A schema that is not a record: a string (`Hostname = str`) or an enumeration (`Literal`).
fn alias(out: &mut String, name: &str, s: &Value) {
    let ty = match s["enum"].as_array() {
        Some(values) => {
            let v: Vec<String> = values
                .iter()
                .map(|v| format!("{:?}", v.as_str().unwrap_or("")))
                .collect();
            format!("Literal[{}]", v.join(", "))
        }
        None => hint(s),
    };
    let _ = writeln!(out, "{name} = {ty}");
    if let Some(d) = s["description"].as_str() {
        let _ = writeln!(out, "{}", docstring(d, ""));
    }
    out.push('\n');
}

/// A record: a `TypedDict` whose keys are its properties (every key optional: a record a client
/// builds to send need not carry the fields keel fills in).
fn record(out: &mut String, name: &str, s: &Value) {
    let _ = writeln!(out, "\nclass {name}(TypedDict, total=False):");
    if let Some(d) = s["description"].as_str() {
        let _ = writeln!(out, "{}", docstring(d, "    "));
    }
    let required: Vec<&str> = s["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let props = s["properties"].as_object();
    for (key, p) in props.into_iter().flatten() {
        if !identifier(key) {
            let _ = writeln!(out, "    # {key:?} is not a Python name: read it with [{key:?}]");
            continue;
        }
        let mut doc = p["description"].as_str().unwrap_or_default().to_owned();
        if !required.contains(&key.as_str()) && !doc.is_empty() {
            doc.push_str(" (Not always present.)");
        }
        let _ = writeln!(out, "    {key}: {}", hint(p));
        if !doc.is_empty() {
            let _ = writeln!(out, "{}", docstring(&doc, "    "));
        }
    }
    if props.is_none_or(serde_json::Map::is_empty) {
        out.push_str("    pass\n");
    }
    out.push('\n');
}

/// The Python type of a schema.
fn hint(s: &Value) -> String {
    if let Some(r) = s["$ref"].as_str() {
        return r.rsplit('/').next().unwrap_or("Any").to_owned();
    }
    if let Some(variants) = s["oneOf"].as_array().or_else(|| s["anyOf"].as_array()) {
        let some: Vec<String> = variants.iter().filter(|v| v["type"] != "null").map(hint).collect();
        let nullable = variants.iter().any(|v| v["type"] == "null");
        let inner = if some.len() == 1 { some[0].clone() } else { "Any".into() };
        return if nullable { format!("Optional[{inner}]") } else { inner };
    }
    let (ty, nullable) = match &s["type"] {
        Value::String(t) => (t.as_str(), false),
        Value::Array(ts) => (
            ts.iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .unwrap_or("null"),
            ts.iter().any(|t| t == "null"),
        ),
        _ => ("any", false),
    };
    let inner = match ty {
        "string" => "str".to_owned(),
        "integer" => "int".to_owned(),
        "number" => "float".to_owned(),
        "boolean" => "bool".to_owned(),
        "array" => format!("List[{}]", hint(&s["items"])),
        "object" => "Dict[str, Any]".to_owned(),
        _ => "Any".to_owned(),
    };
    if nullable {
        format!("Optional[{inner}]")
    } else {
        inner
    }
}

/// One method: path parameters, then the body (operations that take one), `If-Match` (those
/// that change a record), and the query as keyword arguments.
fn operation(out: &mut String, path: &str, method: &str, op: &Value) {
    let Some(id) = op["operationId"].as_str().filter(|id| identifier(id)) else {
        return;
    };
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .filter(|n| identifier(n))
                .collect()
        })
        .unwrap_or_default();
    let mut args: Vec<String> = vec!["self".into()];
    args.extend(params.iter().map(|p| format!("{p}: str")));
    let takes_body = !op["requestBody"].is_null();
    if takes_body {
        args.push("body: Optional[Dict[str, Any]] = None".into());
    }
    let guarded = matches!(method, "put" | "patch" | "delete");
    if guarded {
        args.push("if_match: Optional[str] = None".into());
    }
    args.push("**query: Any".into());
    let (ret, how) = answer(op);
    let one_line = format!("\n    def {id}({}) -> {ret}:", args.join(", "));
    if one_line.len() <= 100 {
        let _ = writeln!(out, "{one_line}");
    } else {
        let _ = writeln!(
            out,
            "\n    def {id}(\n        {},\n    ) -> {ret}:",
            args.join(",\n        ")
        );
    }
    let doc = [op["summary"].as_str(), op["description"].as_str()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n\n");
    let doc = if doc.is_empty() {
        format!("{} {path}", method.to_uppercase())
    } else {
        format!("{} {path}: {doc}", method.to_uppercase())
    };
    let _ = writeln!(out, "{}", docstring(&doc, "        "));
    let mut url = format!("{path:?}");
    for p in &params {
        url = url.replace(&format!("{{{p}}}"), &format!("{{_part({p})}}"));
    }
    // An f-string only where the path has parameters.
    let url = if params.is_empty() { url } else { format!("f{url}") };
    let call = match how {
        Reads::Json => {
            let body = if takes_body { "body" } else { "None" };
            let if_match = if guarded { "if_match" } else { "None" };
            format!(
                "self._json({:?}, {url}, query, {body}, {if_match})",
                method.to_uppercase()
            )
        }
        Reads::Bytes => format!("self._bytes({:?}, {url}, query)", method.to_uppercase()),
        Reads::Lines => format!("self._lines({:?}, {url}, query)", method.to_uppercase()),
    };
    let _ = writeln!(out, "        return {call}");
}

enum Reads {
    Json,
    Bytes,
    Lines,
}

/// What a method returns: its success answer's type, and how it is read.
fn answer(op: &Value) -> (String, Reads) {
    let Some(responses) = op["responses"].as_object() else {
        return ("Any".into(), Reads::Json);
    };
    let Some((status, ok)) = responses.iter().find(|(s, _)| s.starts_with('2')) else {
        return ("Any".into(), Reads::Json);
    };
    if status == "204" {
        return ("None".into(), Reads::Json);
    }
    let content = ok["content"].as_object();
    let json = content.and_then(|c| c.get("application/json"));
    match (json, content.and_then(|c| c.keys().next())) {
        (Some(j), _) if !j["schema"].is_null() => (hint(&j["schema"]), Reads::Json),
        (Some(_), _) | (None, None) => ("Any".into(), Reads::Json),
        (None, Some(t)) if t == "application/x-ndjson" => ("Iterator[Dict[str, Any]]".into(), Reads::Lines),
        (None, Some(_)) => ("bytes".into(), Reads::Bytes),
    }
}

/// A docstring at `indent`, its text wrapped at 96 columns.
fn docstring(text: &str, indent: &str) -> String {
    let text = text.replace('\\', "\\\\").replace("\"\"\"", "\\\"\\\"\\\"");
    let mut lines = Vec::new();
    for para in text.split("\n\n") {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && indent.len() + line.len() + word.len() + 1 > 96 {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
        lines.push(String::new());
    }
    lines.pop();
    if lines.len() == 1 {
        return format!("{indent}\"\"\"{}\"\"\"", lines[0]);
    }
    let body: Vec<String> = lines
        .iter()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{indent}{l}")
            }
        })
        .collect();
    format!("{indent}\"\"\"{}\n{indent}\"\"\"", body.join("\n").trim_start())
}

/// A name Python accepts for a key, a parameter or a method.
fn identifier(s: &str) -> bool {
    const KEYWORDS: [&str; 35] = [
        "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
        "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
        "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
    ];
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&s)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn made() -> String {
        let doc: Value = serde_json::from_str(keel_server::openapi_description()).unwrap();
        client(&doc)
    }

    /// contrib/python/keel_api.py (the Django integration's `keel_api.py` links to it) is this
    /// generator's output for today's API: a route or record changed without it fails here
    /// (`KEEL_BLESS=1 cargo test -p keel python` writes it).
    #[test]
    fn the_shipped_python_client_is_made_from_the_description() {
        let made = made();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for file in ["contrib/python/keel_api.py", "contrib/django/keel_django/keel_api.py"] {
            let path = root.join(file);
            let shipped = std::fs::read_to_string(&path).unwrap_or_default();
            if shipped != made {
                if std::env::var_os("KEEL_BLESS").is_some() {
                    std::fs::write(&path, &made).unwrap();
                } else {
                    panic!(
                        "{file} is not `keel openapi --python`'s output: run KEEL_BLESS=1 cargo test -p keel python"
                    );
                }
            }
        }
    }

    #[test]
    fn every_operation_and_record_is_in_the_client() {
        let made = made();
        let doc: Value = serde_json::from_str(keel_server::openapi_description()).unwrap();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().unwrap();
                assert!(made.contains(&format!("    def {id}(")), "{id}");
            }
        }
        assert!(made.contains("class Machine(TypedDict, total=False):"));
        assert!(made.contains("    def get_machine(self, name: str, **query: Any) -> Machine:"));
        assert!(made.contains("    def list_users(self, **query: Any) -> List[PublicUser]:"));
        assert!(made.contains("MachineType = Literal[\"user\", \"orga\", \"cluster\", \"service\"]"));
        assert_eq!(hint(&serde_json::json!({"type": ["integer", "null"]})), "Optional[int]");
        assert!(!identifier("from") && !identifier("1a") && identifier("is_faulty"));
    }
}
