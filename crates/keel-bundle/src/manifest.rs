//! MANIFEST.json: what a bundle claims to be, and the checks on every name in it.

use keel_model::service::Version;
use serde::{Deserialize, Serialize};

/// The format of a bundle that carries every file whole; every agent reads it.
pub const FORMAT: u32 = 1;

/// The format of a delta (a manifest with a `base`): an agent older than deltas refuses it as an
/// unknown format (exit 201), and the engine then sends it the full state.
pub const FORMAT_DELTA: u32 = 2;

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative, `/`-separated; see [`check_rel_path`].
    pub path: String,
    /// Permission bits only (at most 0o777: no setuid, setgid or sticky bit from a bundle).
    pub mode: u32,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// MANIFEST.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub service: String,
    pub version: Version,
    pub facility: String,
    pub destination: String,
    pub run_id: String,
    /// RFC 3339, informational.
    pub created: String,
    /// Increases per (facility, service); an agent refuses a serial not above the last it applied.
    pub serial: u64,
    /// Every file of the new state, whole: what the destination holds once this is applied.
    pub files: Vec<FileEntry>,
    /// For a delta: the base its patched files apply onto (see [`crate::delta`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<crate::delta::Base>,
}

impl Manifest {
    /// The skip digest: sha256 over the version and the sorted (path, mode, sha256) list. Two runs
    /// that would write the same files have the same digest whatever their run id, time, serial or
    /// destination.
    pub fn digest(&self) -> String {
        digest(self.version, &self.files)
    }

    /// Checks every name and number; signature and file contents are checked by the reader.
    pub fn check(&self) -> Result<(), String> {
        let want = if self.base.is_some() { FORMAT_DELTA } else { FORMAT };
        if self.format != want {
            return Err(format!(
                "format {} with{} a base (expected {want})",
                self.format,
                if self.base.is_some() { "" } else { "out" }
            ));
        }
        check_name("service", &self.service)?;
        check_name("facility", &self.facility)?;
        check_destination(&self.destination)?;
        if self.run_id.is_empty() || self.run_id.len() > 64 || !self.run_id.bytes().all(is_name_byte) {
            return Err("run_id: must be 1 to 64 of a-z, 0-9, '.', '_' and '-'".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.files {
            check_rel_path(&f.path).map_err(|e| format!("file {:?}: {e}", f.path))?;
            if f.mode > 0o777 {
                return Err(format!("file {:?}: mode {:o} has bits beyond 0777", f.path, f.mode));
            }
            if !is_sha256(&f.sha256) {
                return Err(format!("file {:?}: sha256 must be 64 lower-case hex digits", f.path));
            }
            if !seen.insert(f.path.as_str()) {
                return Err(format!("file {:?} is listed twice", f.path));
            }
        }
        if let Some(base) = &self.base {
            let mut patched = std::collections::BTreeSet::new();
            for p in &base.files {
                if !seen.contains(p.path.as_str()) || !patched.insert(p.path.as_str()) {
                    return Err(format!("base: {:?} is not a listed file, or is patched twice", p.path));
                }
                let shas = std::iter::once(&p.base_sha256).chain(p.patch.as_ref().map(|r| &r.sha256));
                if shas.into_iter().any(|s| !is_sha256(s)) {
                    return Err(format!("base: {:?}: sha256 must be 64 lower-case hex digits", p.path));
                }
            }
        }
        Ok(())
    }

    /// The patch of `path`, if this is a delta that sends `path` as one.
    pub fn patched(&self, path: &str) -> Option<&crate::delta::Patched> {
        self.base.as_ref()?.files.iter().find(|p| p.path == path)
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// See [`Manifest::digest`].
pub(crate) fn digest(version: Version, files: &[FileEntry]) -> String {
    let mut list: Vec<_> = files.iter().map(|f| (&f.path, f.mode, &f.sha256)).collect();
    list.sort();
    let mut text = format!("{version}\n");
    for (path, mode, sha) in list {
        text.push_str(&format!("{path}\0{mode:o}\0{sha}\n"));
    }
    crate::sha256_hex(text.as_bytes())
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
}

/// A service or facility name (the model's rule).
pub(crate) fn check_name(field: &str, s: &str) -> Result<(), String> {
    keel_model::propagation::check_name(field, s).map_err(|e| e.to_string())
}

/// A destination as written by an admin: `host`, `user@host`, `host:port`, `[v6]:port`, `local`.
fn check_destination(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'@' | b':' | b'[' | b']'));
    if ok {
        Ok(())
    } else {
        Err(format!("destination: unexpected characters in {s:?}"))
    }
}

/// A file's path inside a bundle: relative, `/`-separated, 1 to 16 components of
/// `A-Z a-z 0-9 . _ - + @`, none empty, `.` or `..`, at most 255 bytes, and not `MANIFEST.*`.
pub fn check_rel_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > 255 {
        return Err("must be 1 to 255 bytes".into());
    }
    if p.starts_with('/') {
        return Err("absolute paths are refused".into());
    }
    let parts: Vec<&str> = p.split('/').collect();
    if parts.len() > 16 {
        return Err("more than 16 components".into());
    }
    for c in &parts {
        if c.is_empty() || *c == "." || *c == ".." {
            return Err("empty, '.' and '..' components are refused".into());
        }
        if !c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'@'))
        {
            return Err("characters outside A-Z a-z 0-9 . _ - + @".into());
        }
    }
    if parts.len() == 1 && parts[0].starts_with("MANIFEST.") {
        return Err("MANIFEST.* names are reserved".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for ok in ["passwd", "etc/hosts", "zones/db.prolo", "a+b@c-d_e.f"] {
            assert!(check_rel_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "$(reboot)",
            "a b",
            "a\0b",
            "MANIFEST.json",
            "é",
        ] {
            assert!(check_rel_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn destination_hosts() {
        use crate::destination_host;
        for (d, want) in [
            ("Host1.Prolo.", "host1.prolo"),
            ("root@host1.prolo:2222", "host1.prolo"),
            ("[::1]:22", "::1"),
            ("0:0::1", "::1"),
            ("a@b@c", "c"),
            ("127.0.0.1:22", "127.0.0.1"),
        ] {
            assert_eq!(destination_host(d), want, "{d}");
        }
    }

    #[test]
    fn versions() {
        assert_eq!("1.2".parse::<Version>(), Ok(Version::new(1, 2)));
        for bad in ["1", "1.", ".2", "a.b", "1.2.3", "-1.2", "+1.2", " 1.2"] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
    }

    #[test]
    fn digest_ignores_order_and_identity() {
        let f = |p: &str| FileEntry {
            path: p.into(),
            mode: 0o644,
            size: 1,
            sha256: "0".repeat(64),
        };
        let a = digest(Version::new(1, 0), &[f("a"), f("b")]);
        assert_eq!(a, digest(Version::new(1, 0), &[f("b"), f("a")]));
        assert_ne!(a, digest(Version::new(1, 1), &[f("a"), f("b")]));
    }
}
