//! ARCHITECTURE.md's rules about dependencies, checked from `cargo metadata` rather than by
//! review: only keel-store names sqlx; keel-model and keel-gen stay pure (no async runtime, no
//! network or database crate, even through another crate); keel's crates depend on each other
//! one way only, as the map says.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Each workspace crate and the keel crates it may use (its normal dependencies).
const MAP: &[(&str, &[&str])] = &[
    ("keel-model", &[]),
    ("keel-password", &[]),
    ("keel-limits", &[]),
    ("keel-probe", &[]),
    ("keel-tftp", &["keel-limits"]),
    ("keel-dns", &["keel-model", "keel-gen", "keel-limits"]),
    ("keel-testkit", &["keel-client"]),
    ("keel-bundle", &["keel-model"]),
    ("keel-gen", &["keel-model"]),
    ("keel-store", &["keel-model"]),
    ("keel-client", &["keel-model"]),
    ("keel-agent", &["keel-bundle", "keel-model", "keel-client"]),
    (
        "keel-propagate",
        &["keel-model", "keel-bundle", "keel-gen", "keel-store", "keel-limits"],
    ),
    (
        "keel-server",
        &[
            "keel-model",
            "keel-bundle",
            "keel-gen",
            "keel-password",
            "keel-propagate",
            "keel-store",
            "keel-limits",
        ],
    ),
    (
        "keel-web",
        &[
            "keel-model",
            "keel-gen",
            "keel-limits",
            "keel-password",
            "keel-propagate",
            "keel-server",
            "keel-store",
        ],
    ),
    (
        "keel",
        &[
            "keel-web",
            "keel-model",
            "keel-bundle",
            "keel-gen",
            "keel-password",
            "keel-propagate",
            "keel-store",
            "keel-server",
            "keel-client",
            "keel-agent",
            "keel-dns",
            "keel-tftp",
            "keel-limits",
        ],
    ),
    (
        "keel-bench",
        &[
            "keel-model",
            "keel-bundle",
            "keel-gen",
            "keel-password",
            "keel-propagate",
            "keel-store",
            "keel-client",
            "keel-testkit",
        ],
    ),
];

/// The platform keel is built and tested on (the only one CI has).
const HOST: &str = "x86_64-unknown-linux-gnu";

/// Crates that do I/O or run async: none may be under keel-model or keel-gen.
const IMPURE: &[&str] = &["tokio", "sqlx", "reqwest", "ureq", "hyper", "axum", "mio", "socket2"];

/// Crates of the bundle (compression, signatures, archives): not under the pure generators.
const BUNDLE_ONLY: &[&str] = &["zstd-sys", "ed25519-dalek", "tar"];

/// Crates for benchmarks and tests: never under a binary that ships.
const HARNESS: &[&str] = &["keel-bench", "keel-testkit", "nix", "proptest"];

struct Graph {
    /// Package id → (name, normal dependencies' ids).
    nodes: BTreeMap<String, (String, Vec<String>)>,
}

impl Graph {
    fn load() -> Self {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            // This platform only: the others' crates (Windows consoles…) are never downloaded.
            .args([
                "metadata",
                "--format-version",
                "1",
                "--offline",
                "--filter-platform",
                HOST,
            ])
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"))
            .output()
            .expect("cargo metadata");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let m: Value = serde_json::from_slice(&out.stdout).unwrap();
        let names: BTreeMap<String, String> = m["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_owned(),
                    p["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut nodes = BTreeMap::new();
        for n in m["resolve"]["nodes"].as_array().unwrap() {
            let id = n["id"].as_str().unwrap().to_owned();
            // Normal dependencies only: what a build of the crate itself pulls in.
            let deps = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null()))
                .map(|d| d["pkg"].as_str().unwrap().to_owned())
                .collect();
            nodes.insert(id.clone(), (names[&id].clone(), deps));
        }
        Self { nodes }
    }

    fn id(&self, name: &str) -> &str {
        let found = self.nodes.iter().find(|(_, (n, _))| n == name);
        found
            .map(|(id, _)| id.as_str())
            .unwrap_or_else(|| panic!("no crate {name}"))
    }

    fn direct(&self, name: &str) -> BTreeSet<&str> {
        self.nodes[self.id(name)]
            .1
            .iter()
            .map(|d| self.nodes[d].0.as_str())
            .collect()
    }

    fn transitive(&self, name: &str) -> BTreeSet<&str> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![self.id(name)];
        while let Some(id) = todo.pop() {
            for d in &self.nodes[id].1 {
                if seen.insert(self.nodes[d].0.as_str()) {
                    todo.push(d);
                }
            }
        }
        seen
    }
}

#[test]
fn dependencies_follow_the_architecture() {
    let g = Graph::load();
    let mut problems = Vec::new();
    for (krate, allowed) in MAP {
        for dep in g.direct(krate).into_iter().filter(|d| d.starts_with("keel")) {
            if !allowed.contains(&dep) {
                problems.push(format!("{krate} depends on {dep}, against the map (ARCHITECTURE.md)"));
            }
        }
        if *krate != "keel-store" && g.direct(krate).contains("sqlx") {
            problems.push(format!("{krate} names sqlx: only keel-store may"));
        }
    }
    for pure in ["keel-model", "keel-gen"] {
        let all = g.transitive(pure);
        for bad in IMPURE.iter().filter(|b| all.contains(*b)) {
            problems.push(format!("{pure} pulls in {bad}: it must stay pure (no I/O, no async)"));
        }
    }
    let gen = g.transitive("keel-gen");
    for bad in BUNDLE_ONLY.iter().filter(|b| gen.contains(*b)) {
        problems.push(format!(
            "keel-gen pulls in {bad}: the bundle's business, not the generators'"
        ));
    }
    // What ships: the binaries carry no benchmark or test harness (a throwaway PostgreSQL, an
    // sshd launcher, epoll readers, property testing).
    for shipped in ["keel", "keel-agent"] {
        let all = g.transitive(shipped);
        for bad in HARNESS.iter().filter(|b| all.contains(*b)) {
            problems.push(format!("{shipped} pulls in {bad}: benchmarks and tests only"));
        }
    }
    let crates: BTreeSet<&str> = g
        .nodes
        .values()
        .map(|(n, _)| n.as_str())
        .filter(|n| n.starts_with("keel"))
        .collect();
    let mapped: BTreeSet<&str> = MAP.iter().map(|(k, _)| *k).collect();
    for unmapped in crates.difference(&mapped) {
        problems.push(format!(
            "{unmapped} is not on the map of this test (and ARCHITECTURE.md)"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The API's paths are written in keel-server (the router) and keel-client (`routes`, and a
/// method per route) only: every other crate's code calls those methods. Tests may name paths.
#[test]
fn api_paths_live_in_the_client_and_the_server() {
    let mut found = Vec::new();
    for krate in std::fs::read_dir(root().join("crates")).unwrap() {
        let krate = krate.unwrap().path();
        let name = krate.file_name().unwrap().to_string_lossy().into_owned();
        if name == "keel-server" || name == "keel-client" {
            continue;
        }
        let mut sources = Vec::new();
        files(&krate.join("src"), &mut sources);
        // (`tests*.rs` files are test modules: they may name paths.)
        let code_files = sources.iter().filter(|p| {
            p.extension().is_some_and(|x| x == "rs")
                && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("tests"))
        });
        for p in code_files {
            let text = std::fs::read_to_string(p).unwrap();
            // Unit tests at the end of a file may name paths; the code above them may not.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (i, line) in code.lines().enumerate() {
                if line.contains("\"/api/v1") {
                    found.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "API paths outside keel-client and keel-server (add a method to keel-client):\n{}",
        found.join("\n")
    );
}

/// The server binary has one HTTP client stack (reqwest, through keel-client): keel embeds the
/// agent without its presence client (ureq). Asked of `cargo tree -p keel`, which resolves keel's
/// features alone (`cargo metadata` unifies the whole workspace's).
#[test]
fn the_server_binary_has_one_http_client() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "-p",
            "keel",
        ])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"))
        .output()
        .expect("cargo tree");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.lines().any(|l| l.starts_with("reqwest ")),
        "keel's client stack is reqwest:\n{tree}"
    );
    let second: Vec<&str> = tree.lines().filter(|l| l.starts_with("ureq ")).collect();
    assert!(second.is_empty(), "keel links a second HTTP client: {second:?}");
}

/// The repository's root.
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file under `dir` (not `target`, `.git` or other hidden directories), recursively.
fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') || name == ".ci" || name == ".cargo" {
                files(&p, out);
            }
        } else {
            out.push(p);
        }
    }
}

/// The test code of a Rust file: all of it under `tests/`, in `tests*.rs` and in keel-testkit
/// (but its wait helpers); elsewhere what follows an inline `#[cfg(test)] mod … {`.
fn test_code(path: &std::path::Path, text: &str) -> Option<String> {
    let p = path.to_string_lossy();
    if p.contains("/keel-testkit/src/wait.rs") {
        return None;
    }
    let name = path.file_name()?.to_string_lossy();
    if p.contains("/tests/") || name.starts_with("tests") || p.contains("/keel-testkit/") {
        return Some(text.to_owned());
    }
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod ") && w[1].ends_with('{'))?;
    // Keep the line numbers: blank lines for what comes before.
    Some("\n".repeat(start) + &lines[start..].join("\n"))
}

/// Tests wait on conditions (keel-testkit's `eventually`, `wait_until`), never on a guessed
/// duration: a sleep elsewhere in test code needs a `// sleep-ok: why` just above it.
#[test]
fn tests_sleep_only_in_the_wait_helpers_or_say_why() {
    let mut all = Vec::new();
    files(&root().join("crates"), &mut all);
    let mut problems = Vec::new();
    for path in all.iter().filter(|p| p.extension().is_some_and(|e| e == "rs")) {
        let text = std::fs::read_to_string(path).unwrap();
        let Some(code) = test_code(path, &text) else { continue };
        let lines: Vec<&str> = code.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            // Spelled in parts so that this line is not one of them.
            let sleeps = ["thread::", "time::", ""]
                .iter()
                .map(|m| [m, "sleep("].concat())
                .any(|s| line.contains(&s) && (s.len() > 6 || line.contains("(Duration")));
            if !sleeps || line.trim_start().starts_with("//") {
                continue;
            }
            let said = lines[i.saturating_sub(4)..i].iter().any(|l| l.contains("// sleep-ok:"));
            if !said {
                problems.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "a test sleeps for a guessed time: wait on a condition (keel_testkit::eventually / wait_until), \
         or say why time itself must pass with `// sleep-ok: why` above it:\n{}",
        problems.join("\n")
    );
}

/// Nothing in the project refers to a file outside the repository (the first design and the
/// style guide lived beside it once; what the code relies on is in ARCHITECTURE.md and docs/).
#[test]
fn nothing_refers_to_a_file_outside_the_repository() {
    // Spelled in two parts so that this file does not name them itself.
    let outside = [
        ["..", "/shared"].concat(),
        ["DESIGN", ".md"].concat(),
        ["STYLE", ".md"].concat(),
    ];
    let mut all = Vec::new();
    files(&root(), &mut all);
    let mut problems = Vec::new();
    for path in &all {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            if let Some(o) = outside.iter().find(|o| line.contains(o.as_str())) {
                problems.push(format!("{}:{}: names {o}", path.display(), i + 1));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every keel.toml default is written once, in its config type's `Default` (issue 33): a config
/// type (one deriving `JsonSchema` with `#[serde(default…)]`) has its `Default` in its own file
/// and nowhere else, and the code that loads keel.toml (`crates/keel/src/config/`) merges no
/// default of its own (a literal in `unwrap_or`/`map_or`). docs/keel.md, keel.toml(5) and
/// `keel serve --print-defaults` are made from those types (keel's `config::reference`).
#[test]
fn keel_toml_defaults_live_in_their_config_types() {
    let mut all = Vec::new();
    files(&root().join("crates"), &mut all);
    let sources: Vec<(std::path::PathBuf, String)> = all
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    let mut types = Vec::new();
    for (path, text) in &sources {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let l = line.trim();
            if !(l.starts_with("#[derive(") && l.contains("JsonSchema")) {
                continue;
            }
            let attrs = lines[i + 1..].iter().take_while(|l| l.trim_start().starts_with("#["));
            let defaulted = attrs.clone().any(|a| a.contains("#[serde(default"));
            let name = lines[i + 1..]
                .iter()
                .find_map(|l| l.trim().strip_prefix("pub struct "))
                .and_then(|rest| rest.split([' ', '{', '<']).next());
            if let (true, Some(name)) = (defaulted, name) {
                types.push((path.clone(), name.to_owned(), l.contains("Default")));
            }
        }
    }
    assert!(types.len() > 20, "found {} config types", types.len());
    let mut problems = Vec::new();
    for (home, name, derived) in &types {
        let needle = format!("impl Default for {name} {{");
        let impls: Vec<&std::path::PathBuf> = sources
            .iter()
            .filter(|(_, text)| text.contains(&needle))
            .map(|(p, _)| p)
            .collect();
        match (derived, impls.as_slice()) {
            (true, []) => {}
            (false, [only]) if *only == home => {}
            _ => problems.push(format!(
                "{name} ({}): its Default must be beside it, once; found in {impls:?}",
                home.display()
            )),
        }
    }
    let merge = ["unwrap_or(", "map_or(", "unwrap_or_else(||"];
    // (reference.rs renders the defaults; it decides none.)
    let loading = |p: &std::path::Path| {
        let p = p.to_string_lossy();
        p.contains("crates/keel/src/config/") && !p.ends_with("reference.rs")
    };
    for (path, text) in sources.iter().filter(|(p, _)| loading(p)) {
        let code = match test_code(path, text) {
            Some(tests) => &text[..text.len() - tests.trim_start_matches('\n').len()],
            None => text.as_str(),
        };
        for (i, line) in code.lines().enumerate() {
            let literal = merge.iter().any(|m| {
                line.split(m).skip(1).map(str::trim_start).any(|rest| {
                    !rest.starts_with("\"\")") && rest.starts_with(|c: char| c.is_ascii_digit() || c == '"')
                })
            });
            if literal {
                problems.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "a keel.toml default is written outside its config type's Default:\n{}",
        problems.join("\n")
    );
}
