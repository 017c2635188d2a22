//! Reading a bundle: the checks every destination relies on.

use std::collections::BTreeMap;
use std::io::Read;

use bytes::Bytes;

use crate::delta::DeltaError;
use crate::manifest::{check_rel_path, Manifest};
use crate::PublicKey;

/// Bounds on what a reader accepts (a bundle is held in memory while it is checked).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_files: usize,
    pub max_total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_files: 10_000,
            max_total_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The most bytes a tar within these limits can take (the files plus their tar framing).
    fn tar_bytes(self) -> u64 {
        self.max_total_bytes + 1024 * (self.max_files as u64 + 4)
    }

    fn too_large(self) -> BundleError {
        BundleError::TooLarge {
            limit: self.max_total_bytes,
            files: self.max_files,
        }
    }
}

/// What `read_from` sets aside before reading: more than a 10,000-user `passwd` bundle (2 MB).
const INITIAL_READ: usize = 4 << 20;

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Why a bundle was refused. Each maps to its own agent exit code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("not a readable tar: {0}")]
    Tar(String),
    #[error("not a readable zstd stream: {0}")]
    Zstd(String),
    #[error("member {name:?}: {reason}")]
    Member { name: String, reason: String },
    #[error("bundle larger than the limit ({limit} bytes or {files} files)")]
    TooLarge { limit: u64, files: usize },
    #[error("no {0} in the bundle")]
    Missing(&'static str),
    #[error("the signature does not verify against any trusted key")]
    BadSignature,
    #[error("MANIFEST.json: {0}")]
    Manifest(String),
    #[error("unsupported bundle format: {0}")]
    Format(String),
    #[error("file {path:?}: {reason}")]
    File { path: String, reason: String },
}

/// A bundle whose signature, names and contents all checked.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub manifest: Manifest,
    /// Path → contents, for exactly the files the manifest lists (slices of the bundle read) —
    /// but those of a delta's [`patches`](Self::patches) until it is [resolved](Self::resolve).
    pub files: BTreeMap<String, Bytes>,
    /// A delta's patches, by the path of the file each rebuilds; empty in a full bundle.
    pub patches: BTreeMap<String, Bytes>,
    /// Once a delta is resolved: for each file it patched, the byte ranges its patch added — the
    /// rest is the base, as the host held it. A reader may check only these (what changed).
    pub added: BTreeMap<String, Vec<std::ops::Range<usize>>>,
}

impl Bundle {
    /// Reads and checks a bundle (a tar, or a zstd-compressed one) from `r`, reading at most the
    /// limit (plus a little tar framing).
    pub fn read_from(r: impl Read, trusted: &[PublicKey], limits: Limits) -> Result<Self, BundleError> {
        let raw = read_bounded(r, limits.tar_bytes()).map_err(|e| BundleError::Tar(e.to_string()))?;
        Self::open_bytes(Bytes::from(raw.ok_or_else(|| limits.too_large())?), trusted, limits)
    }

    /// Checks a bundle held in memory.
    pub fn open(raw: &[u8], trusted: &[PublicKey], limits: Limits) -> Result<Self, BundleError> {
        Self::open_bytes(Bytes::copy_from_slice(raw), trusted, limits)
    }

    /// Checks a bundle held in memory; its files are slices of the tar, not copies.
    pub fn open_bytes(raw: Bytes, trusted: &[PublicKey], limits: Limits) -> Result<Self, BundleError> {
        let raw = decompressed(raw, limits)?;
        let mut members = members(&raw, limits)?;
        let json = members
            .remove("MANIFEST.json")
            .ok_or(BundleError::Missing("MANIFEST.json"))?;
        let sig = members
            .remove("MANIFEST.sig")
            .ok_or(BundleError::Missing("MANIFEST.sig"))?;
        // Nothing in the manifest is believed before this line.
        if !trusted.iter().any(|k| k.verify(&json, &sig)) {
            return Err(BundleError::BadSignature);
        }
        let manifest = parse_manifest(&json)?;
        let mut patches = BTreeMap::new();
        for f in &manifest.files {
            // A patched file's member is its patch (none when it is unchanged).
            let (size, sha256) = match manifest.patched(&f.path) {
                Some(p) => match &p.patch {
                    Some(r) => (r.size, &r.sha256),
                    None => continue,
                },
                None => (f.size, &f.sha256),
            };
            let Some(data) = members.get(&f.path) else {
                return Err(BundleError::File {
                    path: f.path.clone(),
                    reason: "listed in the manifest but missing".into(),
                });
            };
            if data.len() as u64 != size || crate::sha256_hex(data) != *sha256 {
                return Err(BundleError::File {
                    path: f.path.clone(),
                    reason: "contents do not match the manifest's size and sha256".into(),
                });
            }
            if manifest.patched(&f.path).is_some() {
                patches.insert(f.path.clone(), data.clone());
            }
        }
        let expected = |p: &String| {
            manifest
                .files
                .iter()
                .any(|f| &f.path == p && manifest.patched(p).is_none_or(|d| d.patch.is_some()))
        };
        if let Some(extra) = members.keys().find(|p| !expected(p)) {
            return Err(BundleError::File {
                path: extra.clone(),
                reason: "not listed in the manifest".into(),
            });
        }
        members.retain(|p, _| !patches.contains_key(p));
        Ok(Self {
            manifest,
            files: members,
            patches,
            added: BTreeMap::new(),
        })
    }

    /// Whether some files are still patches (a delta not yet [resolved](Self::resolve)).
    pub fn is_delta(&self) -> bool {
        self.manifest.base.is_some()
    }

    /// Turns a delta into whole files: `base(path)` gives the file as this host holds it now
    /// (`None`: it cannot tell). Each must hash to the base the delta names, and each patched
    /// result to the signed sha256 — or nothing changes and the error says why. A full bundle is
    /// left as it is.
    pub fn resolve<E>(
        &mut self,
        mut base: impl FnMut(&str) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Result<(), DeltaError>, E> {
        let Some(delta) = &self.manifest.base else {
            return Ok(Ok(()));
        };
        let (mut whole, mut added) = (BTreeMap::new(), BTreeMap::new());
        for p in &delta.files {
            let Some(held) = base(&p.path)? else {
                return Ok(Err(DeltaError::Mismatch(format!("{}: not held here", p.path))));
            };
            if crate::sha256_hex(&held) != p.base_sha256 {
                return Ok(Err(DeltaError::Mismatch(format!("{}: differs from the base", p.path))));
            }
            let entry = self.manifest.files.iter().find(|f| f.path == p.path);
            let Some(entry) = entry else { continue }; // Manifest::check: every patched file is listed
            let data = match self.patches.get(&p.path) {
                Some(patch) => crate::delta::apply_marked(&held, patch, entry.size)
                    .map(|(data, ranges)| {
                        added.insert(p.path.clone(), ranges);
                        data
                    })
                    .map_err(|reason| DeltaError::Patch {
                        path: p.path.clone(),
                        reason,
                    }),
                None => {
                    added.insert(p.path.clone(), Vec::new());
                    Ok(held)
                }
            };
            let data = match data {
                Ok(d) if d.len() as u64 == entry.size && crate::sha256_hex(&d) == entry.sha256 => d,
                Ok(_) => {
                    return Ok(Err(DeltaError::Patch {
                        path: p.path.clone(),
                        reason: "the result does not match the manifest's size and sha256".into(),
                    }))
                }
                Err(e) => return Ok(Err(e)),
            };
            whole.insert(p.path.clone(), Bytes::from(data));
        }
        self.files.append(&mut whole);
        self.added = added;
        self.patches.clear();
        Ok(Ok(()))
    }
}

/// Everything `r` gives, or `None` if that is more than `cap` bytes.
fn read_bounded(r: impl Read, cap: u64) -> std::io::Result<Option<Vec<u8>>> {
    // Room for a typical bundle at once: growing by doubling copies and faults in every page again
    // (untouched capacity costs nothing).
    let mut out = Vec::with_capacity(INITIAL_READ.min(usize::try_from(cap).unwrap_or(usize::MAX)));
    r.take(cap + 1).read_to_end(&mut out)?;
    Ok((out.len() as u64 <= cap).then_some(out))
}

/// The tar in `raw`: `raw` itself, or what its zstd frames decompress to — never more than a tar
/// within `limits` can be, whatever the frames claim (a small stream can expand enormously).
fn decompressed(raw: Bytes, limits: Limits) -> Result<Bytes, BundleError> {
    if !raw.starts_with(&ZSTD_MAGIC) {
        return Ok(raw);
    }
    let cap = limits.tar_bytes();
    let bad = |e: std::io::Error| BundleError::Zstd(e.to_string());
    let tar = match zstd::zstd_safe::find_decompressed_size(&raw) {
        // Every frame records its size (keel's do): one exact allocation; more output fails.
        Ok(Some(n)) if n > cap => return Err(limits.too_large()),
        Ok(Some(n)) => {
            zstd::bulk::decompress(&raw, usize::try_from(n).map_err(|_| limits.too_large())?).map_err(bad)?
        }
        // A stream made by `zstd` from a pipe: decompressed in pieces, bounded.
        Ok(None) => {
            let decoder = zstd::stream::read::Decoder::with_buffer(&raw[..]).map_err(bad)?;
            read_bounded(decoder, cap)
                .map_err(bad)?
                .ok_or_else(|| limits.too_large())?
        }
        Err(_) => return Err(BundleError::Zstd("a frame header is invalid".into())),
    };
    Ok(Bytes::from(tar))
}

fn parse_manifest(json: &[u8]) -> Result<Manifest, BundleError> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| BundleError::Manifest(e.to_string()))?;
    // The format decides how to read the rest: a newer one is a protocol error, not garbage.
    match v.get("format").and_then(serde_json::Value::as_u64) {
        Some(f) if f == u64::from(crate::FORMAT) || f == u64::from(crate::FORMAT_DELTA) => {}
        Some(f) => {
            return Err(BundleError::Format(format!(
                "format {f}, this agent reads {} and {}",
                crate::FORMAT,
                crate::FORMAT_DELTA
            )))
        }
        None => return Err(BundleError::Manifest("no numeric \"format\" field".into())),
    }
    let m: Manifest = serde_json::from_value(v).map_err(|e| BundleError::Manifest(e.to_string()))?;
    m.check().map_err(BundleError::Manifest)?;
    Ok(m)
}

/// Every member of the tar, checked: regular files with safe names, each once, within the limits.
fn members(raw: &Bytes, limits: Limits) -> Result<BTreeMap<String, Bytes>, BundleError> {
    let mut archive = tar::Archive::new(&raw[..]);
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    let entries = archive.entries().map_err(|e| BundleError::Tar(e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| BundleError::Tar(e.to_string()))?;
        let name = String::from_utf8(entry.path_bytes().into_owned()).map_err(|_| BundleError::Member {
            name: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
            reason: "name is not UTF-8".into(),
        })?;
        let refuse = |reason: &str| BundleError::Member {
            name: name.clone(),
            reason: reason.into(),
        };
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(refuse(&format!("only regular files are accepted ({})", describe(kind))));
        }
        if name != "MANIFEST.json" && name != "MANIFEST.sig" {
            check_rel_path(&name).map_err(|e| refuse(&e))?;
        }
        let size = entry.header().size().map_err(|e| refuse(&e.to_string()))?;
        total += size;
        if total > limits.max_total_bytes || out.len() >= limits.max_files + 2 {
            return Err(BundleError::TooLarge {
                limit: limits.max_total_bytes,
                files: limits.max_files,
            });
        }
        // The member's bytes, sliced out of the archive in memory, not copied (reading the entry
        // would zero a buffer first, then copy).
        let start = usize::try_from(entry.raw_file_position()).map_err(|e| refuse(&e.to_string()))?;
        let end = usize::try_from(size)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|end| *end <= raw.len())
            .ok_or_else(|| refuse("truncated"))?;
        let data = raw.slice(start..end);
        if out.insert(name.clone(), data).is_some() {
            return Err(refuse("appears twice"));
        }
    }
    Ok(out)
}

fn describe(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => "a symbolic link",
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Directory => "a directory",
        tar::EntryType::Char | tar::EntryType::Block => "a device",
        tar::EntryType::Fifo => "a FIFO",
        _ => "an unsupported member type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::{build, Header};
    use crate::SecretKey;
    use keel_model::service::{File, Version};

    fn header() -> Header<'static> {
        Header {
            service: "passwd",
            version: Version::new(1, 0),
            facility: "lan",
            destination: "host1.prolo",
            run_id: "r1",
            created: "2026-01-01T00:00:00Z",
            serial: 7,
        }
    }

    fn files() -> Vec<File> {
        vec![File {
            path: "passwd".into(),
            mode: 0o644,
            data: b"alice:x:10001:10000::/home/alice:/bin/bash\n".to_vec(),
        }]
    }

    /// A tar as an attacker writes it: any name (a name over 100 bytes through a GNU long-name
    /// member), any member type.
    pub(super) fn raw_tar(members: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        for (name, kind, data) in members {
            let bytes = name.as_bytes();
            if bytes.len() > 100 {
                let mut long = tar::Header::new_gnu();
                long.set_entry_type(tar::EntryType::GNULongName);
                long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
                long.set_size(bytes.len() as u64 + 1);
                long.set_cksum();
                t.append(&long, [bytes, b"\0"].concat().as_slice()).unwrap();
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if kind.is_symlink() || *kind == tar::EntryType::Link {
                h.as_old_mut().linkname[..11].copy_from_slice(b"/etc/shadow");
            }
            // set_path refuses "..": write the name bytes directly, as an attacker would.
            let short = &bytes[..bytes.len().min(100)];
            h.as_old_mut().name[..short.len()].copy_from_slice(short);
            h.set_cksum();
            t.append(&h, *data).unwrap();
        }
        t.into_inner().unwrap()
    }

    pub(super) fn signed(key: &SecretKey, m: &serde_json::Value) -> (Vec<u8>, [u8; 64]) {
        let json = serde_json::to_vec(m).unwrap();
        let sig = key.sign(&json);
        (json, sig)
    }

    #[test]
    fn roundtrip_and_determinism() {
        let k = SecretKey::generate().unwrap();
        let a = build(&k, &header(), &files()).unwrap();
        assert_eq!(a, build(&k, &header(), &files()).unwrap());
        let b = Bundle::open(&a, &[k.public()], Limits::default()).unwrap();
        assert_eq!(b.manifest.serial, 7);
        assert_eq!(b.files["passwd"], files()[0].data);
    }

    fn accounts(n: usize, changed: Option<usize>) -> Vec<File> {
        let text = |f: &str| -> Vec<u8> {
            (0..n)
                .map(|i| {
                    let pw = if Some(i) == changed { "new" } else { "old" };
                    format!("u{i}:{f}{pw}:{}:100::/home/u{i}:/bin/sh\n", 10_000 + i)
                })
                .collect::<String>()
                .into_bytes()
        };
        vec![
            File {
                path: "passwd".into(),
                mode: 0o644,
                data: text("x"),
            },
            File {
                path: "shadow".into(),
                mode: 0o640,
                data: text("h"),
            },
            File {
                path: "group-members".into(),
                mode: 0o644,
                data: b"sudo:u1\n".to_vec(),
            },
        ]
    }

    fn delta_bundle(k: &SecretKey, base: &[File], new: &[File], base_serial: u64) -> Vec<u8> {
        let prepared = crate::Prepared::new(new, crate::Encoding::Zstd).unwrap();
        let delta = prepared.delta(new, base, |p| p != "group-members").unwrap();
        let (head, tail) = delta.build_parts(k, &header(), base_serial).unwrap();
        [head, tail.to_vec()].concat()
    }

    fn held(files: &[File]) -> impl FnMut(&str) -> Result<Option<Vec<u8>>, ()> + '_ {
        |p| Ok(files.iter().find(|f| f.path == p).map(|f| f.data.clone()))
    }

    #[test]
    fn a_delta_rebuilds_the_full_state_onto_its_base_only() {
        let k = SecretKey::generate().unwrap();
        let (base, new) = (accounts(1000, None), accounts(1000, Some(500)));
        let raw = delta_bundle(&k, &base, &new, 6);
        let full = crate::Prepared::new(&new, crate::Encoding::Zstd).unwrap();
        assert!(raw.len() < 1500, "a one-line change is small: {} bytes", raw.len());
        let mut b = Bundle::open(&raw, &[k.public()], Limits::default()).unwrap();
        assert!(b.is_delta() && b.manifest.format == crate::FORMAT_DELTA);
        assert_eq!(b.manifest.base.as_ref().unwrap().serial, 6);
        assert_eq!(
            b.manifest.digest(),
            full.digest(b.manifest.version),
            "a delta's digest is its full state's"
        );
        assert_eq!(
            b.files.keys().collect::<Vec<_>>(),
            ["group-members"],
            "only what travels whole"
        );
        let mut same = b.clone();
        same.resolve(held(&base)).unwrap().unwrap();
        for f in &new {
            assert_eq!(same.files[&f.path], f.data, "{}", f.path);
        }
        // A host whose shadow is not the base (hand-edited, reinstalled): refused, unchanged.
        let mut edited = base.clone();
        edited[1].data.extend_from_slice(b"root:x:0:::::\n");
        assert!(matches!(
            b.resolve(held(&edited)).unwrap(),
            Err(DeltaError::Mismatch(_))
        ));
        assert!(
            b.patches.len() == 2 && !b.files.contains_key("passwd"),
            "nothing changed"
        );
        assert!(matches!(
            b.resolve(held(&base[..1])).unwrap(),
            Err(DeltaError::Mismatch(_))
        ));
        b.resolve(held(&base)).unwrap().unwrap();
        // An unchanged file has no member; a new one goes whole.
        let mut grown = new.clone();
        grown.push(File {
            path: "extra".into(),
            mode: 0o644,
            data: b"x\n".to_vec(),
        });
        let mut b = Bundle::open(&delta_bundle(&k, &new, &grown, 7), &[k.public()], Limits::default()).unwrap();
        assert!(b.patches.is_empty());
        b.resolve(held(&new)).unwrap().unwrap();
        assert_eq!(b.files.len(), 4);
    }

    #[test]
    fn a_tampered_or_mislisted_delta_is_refused() {
        let k = SecretKey::generate().unwrap();
        let (base, new) = (accounts(50, None), accounts(50, Some(5)));
        let prepared = crate::Prepared::new(&new, crate::Encoding::Tar).unwrap();
        let raw = {
            let (head, tail) = prepared
                .delta(&new, &base, |_| true)
                .unwrap()
                .build_parts(&k, &header(), 6)
                .unwrap();
            [head, tail.to_vec()].concat()
        };
        let mut t = raw.clone();
        let at = t.windows(6).position(|w| w == b"u5:hne").unwrap();
        t[at] = b'v'; // inside the patch; the signature still fine
        assert!(matches!(
            Bundle::open(&t, &[k.public()], Limits::default()),
            Err(BundleError::File { .. })
        ));
        // A base listing a path the manifest does not: refused before anything is read.
        let b = Bundle::open(&raw, &[k.public()], Limits::default()).unwrap();
        // So is a base in a format-1 manifest: format 1 means whole files.
        for (field, value) in [("/base/files/0/path", "elsewhere"), ("/format", "1")] {
            let mut m = serde_json::to_value(&b.manifest).unwrap();
            *m.pointer_mut(field).unwrap() = serde_json::from_str(value).unwrap_or_else(|_| value.into());
            let (json, sig) = signed(&k, &m);
            let bad = raw_tar(&[
                ("MANIFEST.json", tar::EntryType::Regular, &json),
                ("MANIFEST.sig", tar::EntryType::Regular, &sig),
            ]);
            assert!(
                matches!(
                    Bundle::open(&bad, &[k.public()], Limits::default()),
                    Err(BundleError::Manifest(_))
                ),
                "{field}"
            );
        }
    }

    #[test]
    fn untrusted_key_and_tampering_are_refused() {
        let k = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let a = build(&k, &header(), &files()).unwrap();
        assert_eq!(
            Bundle::open(&a, &[other.public()], Limits::default()).unwrap_err(),
            BundleError::BadSignature
        );
        let mut t = a.clone();
        let at = t.windows(5).position(|w| w == b"alice").unwrap();
        t[at] = b'A'; // the file's contents, the signature still fine
        assert!(matches!(
            Bundle::open(&t, &[k.public()], Limits::default()),
            Err(BundleError::File { .. })
        ));
    }

    #[test]
    fn links_dotdot_and_absolute_members_are_refused() {
        let k = SecretKey::generate().unwrap();
        for (name, kind) in [
            ("passwd", tar::EntryType::Symlink),
            ("../passwd", tar::EntryType::Regular),
            ("/etc/passwd", tar::EntryType::Regular),
            ("$(touch x)", tar::EntryType::Regular),
            ("dev", tar::EntryType::Char),
        ] {
            let (json, sig) = signed(&k, &serde_json::json!({}));
            let t = raw_tar(&[
                ("MANIFEST.json", tar::EntryType::Regular, &json),
                ("MANIFEST.sig", tar::EntryType::Regular, &sig),
                (name, kind, b"x"),
            ]);
            let e = Bundle::open(&t, &[k.public()], Limits::default()).unwrap_err();
            assert!(matches!(e, BundleError::Member { .. }), "{name}: {e}");
        }
    }

    #[test]
    fn duplicates_unlisted_and_other_formats_are_refused() {
        let k = SecretKey::generate().unwrap();
        let good = build(&k, &header(), &files()).unwrap();
        let b = Bundle::open(&good, &[k.public()], Limits::default()).unwrap();
        let json = serde_json::to_vec(&b.manifest).unwrap();
        let sig = k.sign(&json);
        let dup = raw_tar(&[
            ("MANIFEST.json", tar::EntryType::Regular, &json),
            ("MANIFEST.sig", tar::EntryType::Regular, &sig),
            ("passwd", tar::EntryType::Regular, &b.files["passwd"]),
            ("passwd", tar::EntryType::Regular, &b.files["passwd"]),
        ]);
        assert!(matches!(
            Bundle::open(&dup, &[k.public()], Limits::default()),
            Err(BundleError::Member { .. })
        ));
        let extra = raw_tar(&[
            ("MANIFEST.json", tar::EntryType::Regular, &json),
            ("MANIFEST.sig", tar::EntryType::Regular, &sig),
            ("passwd", tar::EntryType::Regular, &b.files["passwd"]),
            ("shadow", tar::EntryType::Regular, b"x"),
        ]);
        assert!(matches!(
            Bundle::open(&extra, &[k.public()], Limits::default()),
            Err(BundleError::File { .. })
        ));
        let mut v = serde_json::to_value(&b.manifest).unwrap();
        v["format"] = 3.into();
        let (json, sig) = signed(&k, &v);
        let newer = raw_tar(&[
            ("MANIFEST.json", tar::EntryType::Regular, &json),
            ("MANIFEST.sig", tar::EntryType::Regular, &sig),
        ]);
        assert!(matches!(
            Bundle::open(&newer, &[k.public()], Limits::default()),
            Err(BundleError::Format(_))
        ));
    }

    #[test]
    fn a_zstd_bundle_reads_like_its_tar() {
        let k = SecretKey::generate().unwrap();
        let plain = build(&k, &header(), &files()).unwrap();
        let prepared = crate::Prepared::new(&files(), crate::Encoding::Zstd).unwrap();
        let (head, tail) = prepared.build_parts(&k, &header()).unwrap();
        let zst = prepared.build(&k, &header()).unwrap();
        assert_eq!(
            zst,
            [head, tail.to_vec()].concat(),
            "two frames, sent one after the other"
        );
        assert_eq!(zstd::decode_all(&zst[..]).unwrap(), plain);
        let a = Bundle::read_from(&zst[..], &[k.public()], Limits::default()).unwrap();
        assert_eq!(
            a.files,
            Bundle::open(&plain, &[k.public()], Limits::default()).unwrap().files
        );
        // A stream that does not record its size (as `zstd` writes from a pipe) reads too.
        let mut streamed = Vec::new();
        let mut enc = zstd::stream::write::Encoder::new(&mut streamed, 3).unwrap();
        std::io::Write::write_all(&mut enc, &plain).unwrap();
        enc.finish().unwrap();
        assert_eq!(zstd::zstd_safe::find_decompressed_size(&streamed).unwrap(), None);
        assert!(Bundle::open(&streamed, &[k.public()], Limits::default()).is_ok());
    }

    #[test]
    fn a_zstd_bomb_or_garbage_is_refused_before_it_is_inflated() {
        let k = SecretKey::generate().unwrap();
        let limits = Limits {
            max_files: 10,
            max_total_bytes: 1 << 20,
        };
        // 64 MiB of zeros in a few KiB, with and without its size in the header.
        let zeros = vec![0u8; 64 << 20];
        let sized = zstd::bulk::compress(&zeros, 19).unwrap();
        assert!(sized.len() < 64 << 10);
        assert!(matches!(
            Bundle::open(&sized, &[k.public()], limits),
            Err(BundleError::TooLarge { .. })
        ));
        let mut unsized_ = Vec::new();
        let mut enc = zstd::stream::write::Encoder::new(&mut unsized_, 19).unwrap();
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
        enc.finish().unwrap();
        assert!(matches!(
            Bundle::open(&unsized_, &[k.public()], limits),
            Err(BundleError::TooLarge { .. })
        ));
        // A frame that lies about its size: decompressing fails, it is not believed.
        let mut liar = zstd::bulk::compress(b"0123456789abcdef", 1).unwrap();
        let frame_content_size = 5; // magic (4) + frame header descriptor (1), then the size
        liar[frame_content_size] = 4;
        assert!(Bundle::open(&liar, &[k.public()], limits).is_err());
        let mut garbage = super::ZSTD_MAGIC.to_vec();
        garbage.extend_from_slice(b"definitely not zstd");
        assert!(matches!(
            Bundle::open(&garbage, &[k.public()], limits),
            Err(BundleError::Zstd(_))
        ));
        // Tampering inside the compressed stream is caught like tampering in a tar.
        let prepared = crate::Prepared::new(&files(), crate::Encoding::Zstd).unwrap();
        let mut zst = prepared.build(&k, &header()).unwrap();
        let last = zst.len() - 20;
        zst[last] ^= 0x55;
        assert!(Bundle::open(&zst, &[k.public()], Limits::default()).is_err());
    }

    #[test]
    fn limits_hold() {
        let k = SecretKey::generate().unwrap();
        let a = build(&k, &header(), &files()).unwrap();
        let tiny = Limits {
            max_files: 10,
            max_total_bytes: 16,
        };
        assert!(matches!(
            Bundle::read_from(&a[..], &[k.public()], tiny),
            Err(BundleError::TooLarge { .. })
        ));
        assert!(matches!(
            Bundle::open(b"garbage", &[k.public()], Limits::default()),
            Err(BundleError::Tar(_) | BundleError::Missing(_))
        ));
    }
}

/// Issue 19: the reader every agent relies on, on any bytes and on a valid bundle with bytes
/// flipped or cut (`fuzz_*`, see docs/security.md): no panic, and nothing but the untouched
/// bundle opens.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::{build, Header, SecretKey};
    use keel_model::service::{File, Version};

    fn valid(key: &SecretKey) -> Vec<u8> {
        let h = Header {
            service: "passwd",
            version: Version::new(1, 0),
            facility: "lan",
            destination: "h.prolo",
            run_id: "r",
            created: "now",
            serial: 1,
        };
        let files = [File {
            path: "passwd".into(),
            mode: 0o644,
            data: b"alice:x:10001:10000::/home/alice:/bin/sh\n".to_vec(),
        }];
        build(key, &h, &files).unwrap()
    }

    proptest! {
        #[test]
        fn fuzz_bundle_reader(junk in any::<Vec<u8>>(), at in any::<usize>(), flip in 1u8..=255, cut in any::<bool>()) {
            let key = SecretKey::generate().unwrap();
            let trusted = [key.public()];
            prop_assert!(Bundle::open(&junk, &trusted, Limits::default()).is_err() || junk == valid(&key));
            let mut b = valid(&key);
            let i = at % b.len();
            if cut { b.truncate(i) } else { b[i] ^= flip }
            if let Ok(opened) = Bundle::open(&b, &trusted, Limits::default()) {
                // A flip in tar padding or an unused header byte may leave the content intact:
                // then it must be exactly the bundle that was signed.
                prop_assert_eq!(opened.files.get("passwd").map(|d| d.to_vec()), Some(b"alice:x:10001:10000::/home/alice:/bin/sh\n".to_vec()));
                prop_assert_eq!(opened.manifest.serial, 1);
            }
        }
    }

    /// A member of a hostile archive: its name, type, contents, and how the manifest lists it.
    #[derive(Debug, Clone)]
    struct Member {
        name: String,
        kind: u8,
        data: Vec<u8>,
        listed: bool,
        size_lie: bool,
    }

    fn member() -> impl Strategy<Value = Member> {
        let name = prop_oneof![
            4 => "[a-z]{1,6}(/[a-z]{1,6}){0,24}",
            1 => "(\\.\\./)+[a-z]{1,4}",
            1 => "/[a-z]{1,6}(/[a-z]{1,6}){0,3}",
            1 => "[a-z]{1,4}//[a-z]{1,4}|\\.|[a-z]/\\./[a-z]",
            1 => "MANIFEST\\.(json|sig|x)",
            1 => any::<String>().prop_map(|s| s.chars().take(120).collect()),
        ];
        let data = prop_oneof![
            8 => proptest::collection::vec(any::<u8>(), 0..256),
            // A member as big as the limit allows, and bigger (a tar bomb, once compressed).
            1 => (0usize..(96 << 10)).prop_map(|n| vec![0u8; n]),
        ];
        (name, 0u8..8, data, any::<bool>(), proptest::bool::weighted(0.05)).prop_map(
            |(name, kind, data, listed, size_lie)| Member {
                name,
                kind,
                data,
                listed,
                size_lie,
            },
        )
    }

    fn kind_of(k: u8) -> tar::EntryType {
        match k {
            0 => tar::EntryType::Symlink,
            1 => tar::EntryType::Link,
            2 => tar::EntryType::Directory,
            3 => tar::EntryType::Fifo,
            _ => tar::EntryType::Regular,
        }
    }

    /// The manifest a signer would write for `members` (those listed), with `padding` more
    /// entries naming nothing (a huge manifest), signed by `key`.
    fn manifest_for(key: &SecretKey, members: &[Member], padding: usize) -> (Vec<u8>, [u8; 64]) {
        let mut files: Vec<serde_json::Value> = members
            .iter()
            .filter(|m| m.listed)
            .map(|m| {
                let size = m.data.len() as u64 + u64::from(m.size_lie);
                serde_json::json!({"path": m.name, "mode": 0o644, "size": size, "sha256": crate::sha256_hex(&m.data)})
            })
            .collect();
        files.extend(
            (0..padding)
                .map(|i| serde_json::json!({"path": format!("p/{i}"), "mode": 0o644, "size": 0, "sha256": "00"})),
        );
        let m = serde_json::json!({
            "format": crate::FORMAT, "service": "passwd", "version": Version::new(1, 0),
            "facility": "lan", "destination": "h.prolo", "run_id": "r", "created": "now",
            "serial": 1, "files": files,
        });
        super::tests::signed(key, &m)
    }

    /// The generator is not vacuous: without anything hostile, what it builds opens, plain or
    /// compressed.
    #[test]
    fn the_hostile_archive_builder_makes_a_bundle_that_opens_when_nothing_is_hostile() {
        let key = SecretKey::generate().unwrap();
        let good = Member {
            name: "etc/passwd".into(),
            kind: 7,
            data: b"alice:x:10001:10000::/home/alice:/bin/sh\n".to_vec(),
            listed: true,
            size_lie: false,
        };
        let (json, sig) = manifest_for(&key, std::slice::from_ref(&good), 0);
        let tar = super::tests::raw_tar(&[
            ("MANIFEST.json", tar::EntryType::Regular, &json),
            ("MANIFEST.sig", tar::EntryType::Regular, &sig),
            (&good.name, kind_of(good.kind), &good.data),
        ]);
        let b = Bundle::open(&tar, &[key.public()], Limits::default()).unwrap();
        assert_eq!(&b.files["etc/passwd"][..], &good.data[..]);
        let zst = zstd::stream::encode_all(&tar[..], 1).unwrap();
        assert!(Bundle::open(&zst, &[key.public()], Limits::default()).is_ok());
    }

    proptest! {
        /// Issue 31: signed archives an attacker with the key's trust could never make keel
        /// send, but a compromised path could deliver — deep and escaping paths, links, devices,
        /// duplicate and unlisted members, lying sizes, huge manifests, tar and zstd bombs — are
        /// refused or open within the limits, never past them.
        #[test]
        fn fuzz_hostile_bundle_archives(
            members in proptest::collection::vec(member(), 0..20),
            padding in prop_oneof![8 => Just(0usize), 1 => 0usize..5_000],
            encoding in 0u8..4,
        ) {
            let key = SecretKey::generate().unwrap();
            let limits = Limits { max_files: 16, max_total_bytes: 64 << 10 };
            let (json, sig) = manifest_for(&key, &members, padding);
            let mut entries: Vec<(&str, tar::EntryType, &[u8])> = vec![
                ("MANIFEST.json", tar::EntryType::Regular, &json),
                ("MANIFEST.sig", tar::EntryType::Regular, &sig),
            ];
            entries.extend(members.iter().map(|m| (m.name.as_str(), kind_of(m.kind), m.data.as_slice())));
            let tar = super::tests::raw_tar(&entries);
            let raw = match encoding {
                0 => tar,
                1 => zstd::bulk::compress(&tar, 1).unwrap(),
                2 => zstd::stream::encode_all(&tar[..], 1).unwrap(),
                // A bomb: the archive, then megabytes of zeros in the same stream.
                _ => zstd::stream::encode_all(&[tar, vec![0u8; 1 << 20]].concat()[..], 1).unwrap(),
            };
            if let Ok(b) = Bundle::open(&raw, &[key.public()], limits) {
                prop_assert!(b.files.len() <= limits.max_files);
                prop_assert!(b.files.values().map(|d| d.len() as u64).sum::<u64>() <= limits.max_total_bytes);
                for (path, data) in &b.files {
                    prop_assert!(check_rel_path(path).is_ok(), "{:?} opened", path);
                    let m = members.iter().find(|m| &m.name == path).unwrap();
                    prop_assert!(m.listed && !m.size_lie && kind_of(m.kind).is_file());
                    prop_assert_eq!(&data[..], &m.data[..]);
                }
            }
        }
    }
}
