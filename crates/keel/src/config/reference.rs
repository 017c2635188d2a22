//! keel.toml's reference, made from the config types themselves: each key's documentation is its
//! field's doc comment (through the types' JSON schema), each default is what the type's
//! `Default` gives. docs/keel.md's CONFIGURATION KEYS, keel.toml(5)'s KEYS and
//! `keel serve --print-defaults` are rendered from [`keys`], so a default changed in its type
//! changes all three (a test holds docs/keel.md to it, and contrib/keel.toml's values to the
//! defaults unless they are the example site's own).

use serde_json::{Map, Value};

use super::FileConfig;

/// One key of keel.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// Its table (`dns`, `propagation.generators.dhcp`; empty at the top level).
    pub section: String,
    pub name: String,
    /// Its default, as TOML; `None` when unset by default (the doc says what that means).
    pub default: Option<toml::Value>,
    /// What its value is: `integer`, `string`, `boolean`, `array`, `table`, or the values of
    /// an enumeration (`isc | kea`).
    pub kind: String,
    pub doc: String,
}

impl Key {
    /// `section.name`.
    pub fn path(&self) -> String {
        if self.section.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.section, self.name)
        }
    }

    /// The default as written in keel.toml (`4096`, `"prolo"`, `["127.0.0.1/32"]`).
    pub fn default_text(&self) -> Option<String> {
        self.default.as_ref().map(inline)
    }
}

/// A table of keel.toml and what it is for.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub name: String,
    pub doc: String,
    pub keys: Vec<Key>,
}

/// Every table of keel.toml with its keys, in the order of the types (top level first).
pub fn sections() -> Vec<Section> {
    let schema = serde_json::to_value(schemars::schema_for!(FileConfig)).unwrap_or_default();
    let defaults = serde_json::to_value(FileConfig::default()).unwrap_or_default();
    let mut out = Vec::new();
    let walker = Walker {
        defs: schema
            .get("$defs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    };
    walker.section(&mut out, "", "keel's own settings.", &schema, &defaults);
    out
}

/// Every key of keel.toml, table by table.
pub fn keys() -> Vec<Key> {
    sections().into_iter().flat_map(|s| s.keys).collect()
}

struct Walker {
    defs: Map<String, Value>,
}

impl Walker {
    /// The schema `s` stands for (a `$ref` followed).
    fn resolve<'a>(&'a self, s: &'a Value) -> &'a Value {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => r
                .strip_prefix("#/$defs/")
                .and_then(|name| self.defs.get(name))
                .unwrap_or(s),
            None => s,
        }
    }

    /// A table: its keys, then its subtables as sections of their own.
    fn section(&self, out: &mut Vec<Section>, name: &str, doc: &str, schema: &Value, defaults: &Value) {
        let schema = self.resolve(schema);
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        let at = out.len();
        out.push(Section {
            name: name.to_owned(),
            doc: doc.to_owned(),
            keys: Vec::new(),
        });
        for (key, prop) in props {
            let target = self.resolve(prop);
            let doc = description(prop).or_else(|| description(target)).unwrap_or_default();
            let default = defaults.get(key).unwrap_or(&Value::Null);
            if target.get("properties").is_some() {
                let sub = if name.is_empty() {
                    key.clone()
                } else {
                    format!("{name}.{key}")
                };
                self.section(out, &sub, &doc, target, default);
                continue;
            }
            out[at].keys.push(Key {
                section: name.to_owned(),
                name: key.clone(),
                default: to_toml(default),
                kind: self.kind(prop),
                doc,
            });
        }
        if out[at].keys.is_empty() {
            out.remove(at);
        }
    }

    /// A key's kind, for the reference: JSON schema's type in keel.toml's words.
    fn kind(&self, prop: &Value) -> String {
        let any = prop
            .get("anyOf")
            .or_else(|| prop.get("oneOf"))
            .and_then(Value::as_array);
        if let Some(variants) = any {
            let kinds: Vec<String> = variants.iter().map(|v| self.kind(v)).filter(|k| k != "null").collect();
            return kinds.join(" | ");
        }
        let target = self.resolve(prop);
        if let Some(c) = target.get("const").and_then(Value::as_str) {
            return format!("\"{c}\"");
        }
        if let Some(values) = target.get("enum").and_then(Value::as_array) {
            return values
                .iter()
                .filter_map(Value::as_str)
                .map(|v| format!("\"{v}\""))
                .collect::<Vec<_>>()
                .join(" | ");
        }
        if target.get("oneOf").is_some() || target.get("anyOf").is_some() {
            return self.kind(target);
        }
        let types: Vec<&str> = match target.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let kind = types.into_iter().find(|t| *t != "null").unwrap_or("table");
        match kind {
            "object" => "table".into(),
            other => other.into(),
        }
    }
}

fn description(s: &Value) -> Option<String> {
    let d = s.get("description")?.as_str()?;
    // Doc comments wrap at 100 columns; the reference reflows them.
    Some(d.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn to_toml(v: &Value) -> Option<toml::Value> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(toml::Value::Boolean(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(toml::Value::Integer)
            .or_else(|| n.as_f64().map(toml::Value::Float)),
        Value::String(s) => Some(toml::Value::String(s.clone())),
        Value::Array(a) => Some(toml::Value::Array(a.iter().filter_map(to_toml).collect())),
        Value::Object(o) => Some(toml::Value::Table(
            o.iter().filter_map(|(k, v)| Some((k.clone(), to_toml(v)?))).collect(),
        )),
    }
}

/// A value as keel.toml writes it on one line.
fn inline(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(t) if t.is_empty() => "{}".into(),
        toml::Value::Table(t) => {
            let parts: Vec<String> = t.iter().map(|(k, v)| format!("{k} = {}", inline(v))).collect();
            format!("{{ {} }}", parts.join(", "))
        }
        // A basic string on one line (JSON's escapes are TOML's): never a multi-line string.
        toml::Value::String(s) => serde_json::Value::String(s.clone()).to_string(),
        toml::Value::Array(a) => format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// docs/keel.md's CONFIGURATION KEYS: a table per section (its test writes them there).
#[cfg(test)]
fn markdown() -> String {
    let mut out = String::new();
    for s in sections() {
        let title = if s.name.is_empty() {
            "top level".to_owned()
        } else {
            format!("`[{}]`", s.name)
        };
        out.push_str(&format!(
            "### {title}\n{}\n\n| key | default | |\n|---|---|---|\n",
            s.doc
        ));
        for k in &s.keys {
            let default = k.default_text().map_or_else(|| "—".to_owned(), |d| format!("`{d}`"));
            out.push_str(&format!(
                "| `{}` | {} | {} ({}) |\n",
                k.name,
                default.replace('|', "\\|"),
                k.doc.replace('|', "\\|"),
                k.kind.replace('|', "or")
            ));
        }
        out.push('\n');
    }
    out
}

/// keel.toml(5)'s KEYS section, in roff.
#[cfg(feature = "man")]
pub fn roff() -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('-', "\\-").replace('\n', " ");
    let mut out = String::from(".SH KEYS\n");
    for s in sections() {
        let title = if s.name.is_empty() {
            "Top level".to_owned()
        } else {
            format!("[{}]", s.name)
        };
        out.push_str(&format!(".SS {}\n{}\n", esc(&title), esc(&s.doc)));
        for k in &s.keys {
            let default = k.default_text().map_or_else(String::new, |d| format!(" = {d}"));
            out.push_str(&format!(
                ".TP\n\\fB{}\\fR{}\n{} ({})\n",
                esc(&k.name),
                esc(&default),
                esc(&k.doc),
                esc(&k.kind)
            ));
        }
    }
    out
}

/// A keel.toml with every key at its default, each under its documentation
/// (`keel serve --print-defaults`); keys unset by default are commented out.
pub fn default_toml() -> String {
    let mut out = String::from(
        "# keel.toml with every key at its default (keel serve --print-defaults). Every key is\n# optional: keep only those you change.\n",
    );
    for s in sections() {
        out.push('\n');
        for line in wrap(&s.doc, 98) {
            out.push_str(&format!("# {line}\n"));
        }
        if !s.name.is_empty() {
            out.push_str(&format!("[{}]\n", s.name));
        }
        for k in &s.keys {
            for line in wrap(&k.doc, 98) {
                out.push_str(&format!("# {line}\n"));
            }
            match k.default_text() {
                Some(d) => out.push_str(&format!("{} = {d}\n", k.name)),
                None => out.push_str(&format!("# {} =\n", k.name)),
            }
        }
    }
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn the_printed_defaults_are_the_defaults() {
        let printed: FileConfig = toml::from_str(&default_toml()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            serde_json::to_value(printed).unwrap(),
            serde_json::to_value(FileConfig::default()).unwrap()
        );
        let keys = keys();
        assert!(keys.len() > 100, "{} keys", keys.len());
        for k in &keys {
            assert!(!k.doc.is_empty(), "{} has no doc comment", k.path());
            assert!(!k.kind.is_empty(), "{} has no kind", k.path());
        }
        let max_forwards = keys.iter().find(|k| k.path() == "dns.max_forwards").unwrap();
        assert_eq!(max_forwards.default_text().as_deref(), Some("64"));
    }

    const BEGIN: &str = "<!-- Made by `cargo test -p keel reference` from the config types: edit their doc comments and defaults, then run it with KEEL_BLESS=1. -->\n";
    const END: &str = "<!-- end of the generated reference -->\n";

    /// docs/keel.md's key tables are `markdown()`: a changed default or doc comment fails here
    /// until the docs are made again (`KEEL_BLESS=1 cargo test -p keel reference`).
    #[test]
    fn docs_keel_md_holds_the_generated_reference() {
        let path = root().join("docs/keel.md");
        let docs = std::fs::read_to_string(&path).unwrap();
        let (before, rest) = docs
            .split_once(BEGIN)
            .expect("docs/keel.md has the reference's start marker");
        let (inside, after) = rest
            .split_once(END)
            .expect("docs/keel.md has the reference's end marker");
        let made = markdown();
        if inside != made {
            if std::env::var_os("KEEL_BLESS").is_some() {
                std::fs::write(&path, format!("{before}{BEGIN}{made}{END}{after}")).unwrap();
            } else {
                panic!("docs/keel.md's CONFIGURATION KEYS differ from the config types: run KEEL_BLESS=1 cargo test -p keel reference");
            }
        }
    }

    /// The keys a text lists, with their values, by section: `[section]` headers (also
    /// commented out) and `key = value` lines (also commented out) below them.
    fn listed(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut section = String::new();
        for line in text.lines() {
            let l = line.trim_start_matches('#').trim();
            if let Some(h) = l.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                section = h.to_owned();
                continue;
            }
            if let Some((k, v)) = l.split_once(" = ") {
                if !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    out.entry(section.clone())
                        .or_default()
                        .insert(k.to_owned(), v.to_owned());
                }
            }
        }
        out
    }

    /// A value written after `key = `, without its trailing comment.
    fn value(text: &str) -> Option<toml::Value> {
        let cuts = std::iter::once(text.len()).chain(text.match_indices('#').map(|(i, _)| i).rev());
        let mut cuts: Vec<usize> = cuts.collect();
        cuts.sort_unstable_by(|a, b| b.cmp(a));
        cuts.into_iter().find_map(|end| {
            toml::from_str::<toml::Table>(&format!("v = {}", &text[..end]))
                .ok()
                .and_then(|mut t| t.remove("v"))
        })
    }

    /// Sections shown in the example by one of their kind (every pool as `[pools.user]`).
    /// (`[propagation.generators.groups]` shows its groups as inline tables.)
    const SHOWN_BY_ONE: [&str; 8] = [
        "pools.orga",
        "pools.service",
        "pools.cluster",
        "pools.uids.orga",
        "pools.uids.root",
        "propagation.generators.groups.orga",
        "propagation.generators.groups.user",
        "propagation.generators.groups.root",
    ];

    /// Values contrib/keel.toml gives that are not the defaults: the example site's own (a
    /// production gateway), each chosen on purpose. Any other value there is a default, and
    /// must be the type's.
    const SITE_VALUES: [&str; 30] = [
        "listen",
        "data_dir",
        "database",
        "workers",
        "pools.uids.user.first",
        "pools.uids.user.last",
        "log.keep_days",
        "propagation.key_file",
        "propagation.local_command",
        "propagation.ssh.config_file",
        "propagation.ssh.known_hosts",
        "propagation.ssh.identity",
        "propagation.ssh.control_dir",
        "propagation.ssh.options",
        "propagation.generators.automount.server",
        "propagation.generators.dhcp.boot_url",
        "propagation.generators.dhcp.unknown_range",
        "propagation.generators.dhcp.site_network",
        "dns.listen",
        "dns.upstream",
        "dns.forward_clients",
        "tftp.listen",
        "web.sso_proxies",
        "netboot.base_url",
        "netboot.cmdline",
        "netboot.install",
        "netboot.templates",
        "presence.proof",
        "presence.recovery_secs",
        "presence.secret_file",
    ];

    /// Site values of the sections the example shows only commented out (paths, secrets, the
    /// HTTPS listener): every one is the site's, not a default.
    const SITE_SECTIONS: [&str; 4] = ["tls", "rpc", "sync", "homes"];

    /// contrib/keel.toml (shipped as the example, part of keel.toml(5)) names every key keel
    /// reads and nothing else, and every value it gives is the default unless it is the
    /// example site's own: a default changed in its type fails here until the example follows.
    #[test]
    fn the_example_config_lists_every_key_with_its_default() {
        let example = std::fs::read_to_string(root().join("contrib/keel.toml")).unwrap();
        let parsed: FileConfig = toml::from_str(&example).unwrap_or_else(|e| panic!("{e}"));
        keel_propagate::registry(&parsed.propagation.services).unwrap_or_else(|e| panic!("{e}"));
        let listed = listed(&example);
        let sections = sections();
        for s in &sections {
            if SHOWN_BY_ONE.contains(&s.name.as_str()) {
                continue;
            }
            let want: BTreeSet<&str> = s
                .keys
                .iter()
                .filter(|k| k.kind != "table")
                .map(|k| k.name.as_str())
                .collect();
            let shown: BTreeSet<&str> = listed
                .get(&s.name)
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            assert_eq!(shown, want, "contrib/keel.toml [{}] vs what keel reads", s.name);
        }
        let by_path: BTreeMap<String, &Key> = sections.iter().flat_map(|s| &s.keys).map(|k| (k.path(), k)).collect();
        let mut wrong = Vec::new();
        for (section, keys) in &listed {
            let site = SITE_SECTIONS
                .iter()
                .any(|s| section == s || section.starts_with(&format!("{s}.")));
            for (name, text) in keys {
                let path = if section.is_empty() {
                    name.clone()
                } else {
                    format!("{section}.{name}")
                };
                let Some(key) = by_path.get(&path) else {
                    // A table the site names (`[propagation.services.motd]`, `[sso.overrides]`).
                    continue;
                };
                let given = value(text).unwrap_or_else(|| panic!("contrib/keel.toml {path} = {text}: not a value"));
                if site || SITE_VALUES.contains(&path.as_str()) || key.default.as_ref() == Some(&given) {
                    continue;
                }
                wrong.push(format!(
                    "{path} = {text}, but its default is {}",
                    key.default_text().unwrap_or_else(|| "unset".into())
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "contrib/keel.toml gives values that are not the defaults: make the example follow the types (or, for the example site's own values, add them to SITE_VALUES):\n{}",
            wrong.join("\n")
        );
    }
}
