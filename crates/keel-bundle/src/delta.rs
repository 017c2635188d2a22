//! Deltas: a bundle that carries some of its files as patches against the files the destination
//! already holds (its *base*), so that one changed password is a few hundred bytes on the wire,
//! not the whole state.
//!
//! The manifest of a delta lists every file with the size and sha256 of its **new, whole**
//! contents, exactly as a full bundle does (so its digest is the full state's), and names its base:
//! the serial the destination last applied and, per patched file, the sha256 of the file as the
//! destination holds it. A reader rebuilds each patched file from its base and accepts the result
//! only if it hashes to the signed sha256 — a delta can only ever produce the state the server
//! signed, and only onto the exact base it names.
//!
//! A patch is a list of operations on the base's lines (pieces ending in `\n`, the last one
//! possibly without): `c N\n` copies the next N lines, `s N\n` skips them, `a L\n` followed by L
//! bytes adds those bytes, and `e P S L\n` followed by L bytes edits the next line: its first P
//! and last S bytes kept, what lies between replaced by those bytes (a long line that changes a
//! little: a group's member list gaining one login). Every base line is copied, skipped or edited
//! exactly once.

use serde::{Deserialize, Serialize};

/// What a delta is built on: the serial the destination last applied and its files as they were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// The serial the destination must hold now (its agent's last applied one).
    pub serial: u64,
    /// The files sent as patches; every other listed file travels whole.
    pub files: Vec<Patched>,
}

/// One file sent as a patch against its base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patched {
    pub path: String,
    /// Lower-case hex sha256 of the file as the destination must hold it.
    pub base_sha256: String,
    /// The patch member's size and sha256; absent: the file is its base, unchanged, and the bundle
    /// has no member for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchRef>,
}

/// Where a patch is: a member of the bundle under the file's own path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRef {
    pub size: u64,
    pub sha256: String,
}

/// Why a delta could not be turned into whole files.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    /// The destination does not hold the base the delta names (a reinstalled, restored or
    /// hand-edited host, or a skipped serial): it needs the full state.
    #[error("the delta's base is not what this host holds: {0}")]
    Mismatch(String),
    /// The patch itself is malformed or does not produce the signed contents.
    #[error("patch for {path:?}: {reason}")]
    Patch { path: String, reason: String },
}

/// The lines of `data`: pieces ending in `\n`, the last one possibly without.
fn lines(data: &[u8]) -> Vec<&[u8]> {
    data.split_inclusive(|&b| b == b'\n').collect()
}

/// How long the diff may search for the smallest patch before it settles for a larger one.
const DIFF_DEADLINE: std::time::Duration = std::time::Duration::from_millis(500);

/// The patch that turns `base` into `new`.
pub fn diff(base: &[u8], new: &[u8]) -> Vec<u8> {
    use similar::DiffOp;
    let (old, new_lines) = (lines(base), lines(new));
    let deadline = std::time::Instant::now() + DIFF_DEADLINE;
    let ops = similar::capture_diff_slices_deadline(similar::Algorithm::Myers, &old, &new_lines, Some(deadline));
    let mut out = Vec::new();
    let add = |out: &mut Vec<u8>, from: usize, len: usize| {
        let bytes: Vec<u8> = new_lines[from..from + len].concat();
        out.extend_from_slice(format!("a {}\n", bytes.len()).as_bytes());
        out.extend_from_slice(&bytes);
    };
    for op in ops {
        match op {
            DiffOp::Equal { len, .. } => out.extend_from_slice(format!("c {len}\n").as_bytes()),
            DiffOp::Delete { old_len, .. } => out.extend_from_slice(format!("s {old_len}\n").as_bytes()),
            DiffOp::Insert { new_index, new_len, .. } => add(&mut out, new_index, new_len),
            DiffOp::Replace {
                old_index,
                old_len: 1,
                new_index,
                new_len: 1,
            } if old[old_index].len() >= LONG_LINE => edit(&mut out, old[old_index], new_lines[new_index]),
            DiffOp::Replace {
                old_len,
                new_index,
                new_len,
                ..
            } => {
                out.extend_from_slice(format!("s {old_len}\n").as_bytes());
                add(&mut out, new_index, new_len);
            }
        }
    }
    out
}

/// A replaced line at least this long is sent as an edit inside it (`e`), not whole.
const LONG_LINE: usize = 256;

/// `e P S L` and the L bytes that turn `old` into `new`, keeping their common prefix and suffix.
fn edit(out: &mut Vec<u8>, old: &[u8], new: &[u8]) {
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let room = old.len().min(new.len()) - prefix;
    let suffix = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    let middle = &new[prefix..new.len() - suffix];
    out.extend_from_slice(format!("e {prefix} {suffix} {}\n", middle.len()).as_bytes());
    out.extend_from_slice(middle);
}

/// `base` with `patch` applied, never longer than `max` bytes.
pub fn apply(base: &[u8], patch: &[u8], max: u64) -> Result<Vec<u8>, String> {
    apply_marked(base, patch, max).map(|(out, _)| out)
}

/// [`apply`], with the ranges of the result its `a` operations added (the rest is the base's).
pub fn apply_marked(base: &[u8], patch: &[u8], max: u64) -> Result<(Vec<u8>, Vec<std::ops::Range<usize>>), String> {
    let mut added = Vec::new();
    let old = lines(base);
    let mut at = 0usize; // the next base line
    let mut rest = patch;
    let mut out = Vec::with_capacity(usize::try_from(max).unwrap_or(0).min(base.len() + patch.len()));
    while !rest.is_empty() {
        let end = rest
            .iter()
            .take(24)
            .position(|&b| b == b'\n')
            .ok_or("an operation is not a line of at most 24 bytes")?;
        let op = std::str::from_utf8(&rest[..end]).map_err(|_| "an operation is not text")?;
        rest = &rest[end + 1..];
        let (kind, n) = op.split_once(' ').ok_or_else(|| format!("{op:?}: not `c|s|a N`"))?;
        if kind == "e" {
            let line = old
                .get(at)
                .ok_or_else(|| format!("{op:?}: the base has no line left"))?;
            let (text, taken) = edited(line, n, rest).map_err(|e| format!("{op:?}: {e}"))?;
            added.push(out.len()..out.len() + text.len());
            out.extend_from_slice(&text);
            rest = &rest[taken..];
            at += 1;
            if out.len() as u64 > max {
                return Err(format!("the result is longer than the {max} bytes the manifest lists"));
            }
            continue;
        }
        let n: usize = n
            .parse()
            .map_err(|_| format!("{op:?}: not a number"))
            .and_then(|n: usize| if n == 0 { Err(format!("{op:?}: zero")) } else { Ok(n) })?;
        match kind {
            "c" | "s" => {
                let taken = old
                    .get(at..at.checked_add(n).ok_or("too many lines")?)
                    .ok_or_else(|| format!("{op:?}: the base has {} lines left", old.len() - at))?;
                if kind == "c" {
                    taken.iter().for_each(|l| out.extend_from_slice(l));
                }
                at += n;
            }
            "a" => {
                let bytes = rest.get(..n).ok_or_else(|| format!("{op:?}: the patch ends first"))?;
                added.push(out.len()..out.len() + n);
                out.extend_from_slice(bytes);
                rest = &rest[n..];
            }
            _ => return Err(format!("{op:?}: unknown operation")),
        }
        if out.len() as u64 > max {
            return Err(format!("the result is longer than the {max} bytes the manifest lists"));
        }
    }
    if at != old.len() {
        return Err(format!("{} base line(s) neither copied nor skipped", old.len() - at));
    }
    Ok((out, added))
}

/// The line `line` edited by `e P S L` (`args` is `P S L`) and the L bytes at the start of
/// `rest`; and how many bytes of `rest` that took.
fn edited(line: &[u8], args: &str, rest: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let numbers: Vec<usize> = args
        .split(' ')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| "not `e P S L`")?;
    let [prefix, suffix, len] = numbers[..] else {
        return Err("not `e P S L`".into());
    };
    if prefix.checked_add(suffix).is_none_or(|kept| kept > line.len()) {
        return Err(format!("keeps more than the line's {} bytes", line.len()));
    }
    let middle = rest.get(..len).ok_or("the patch ends first")?;
    let text = [&line[..prefix], middle, &line[line.len() - suffix..]].concat();
    Ok((text, len))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn one_changed_line_is_a_small_patch() {
        let base: String = (0..10_000)
            .map(|i| format!("user{i}:x:{i}:100::/home/u:/bin/sh\n"))
            .collect();
        let new = base.replace("user5000:x:5000:", "user5000:y:5000:");
        let p = diff(base.as_bytes(), new.as_bytes());
        assert!(p.len() < 100, "{}", String::from_utf8_lossy(&p));
        assert_eq!(apply(base.as_bytes(), &p, new.len() as u64).unwrap(), new.as_bytes());
    }

    #[test]
    fn a_long_line_that_changes_a_little_is_an_edit_inside_it() {
        let members: Vec<String> = (0..1000).map(|i| format!("user{i}")).collect();
        let base = format!("root:x:0:\nuser:x:10000:{}\n", members.join(","));
        let new = base.replace("user500,", "user500,newcomer,");
        let p = diff(base.as_bytes(), new.as_bytes());
        assert!(p.len() < 40, "{}", String::from_utf8_lossy(&p));
        let (out, added) = apply_marked(base.as_bytes(), &p, new.len() as u64).unwrap();
        assert_eq!(out, new.as_bytes());
        assert_eq!(
            (added.len(), &added[0]),
            (1, &(10..new.len())),
            "the whole edited line is new"
        );
        for bad in [
            "c 1\ne 5 5\n",
            "c 1\ne 9999 0 0\n",
            "c 1\ne 0 0 9\nab",
            "e 0 0 0\ne 0 0 0\ne 0 0 0\n",
        ] {
            assert!(apply(base.as_bytes(), bad.as_bytes(), 1 << 20).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn malformed_patches_are_refused() {
        let base = b"a\nb\nc\n";
        assert_eq!(apply(base, b"c 3\n", 100).unwrap(), base);
        for bad in [
            &b"c 2\n"[..],    // a line left over
            b"c 4\n",         // past the end
            b"c 0\nc 3\n",    // zero
            b"x 3\n",         // unknown
            b"c 3\na 10\nab", // the patch ends first
            b"c 3",           // no newline
            b"c 18446744073709551616\n",
            b"c 3\na 200\n",
        ] {
            assert!(apply(base, bad, 100).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // The result may not outgrow what the manifest says.
        assert!(apply(base, b"c 3\na 3\nxyz", 8).is_err());
    }

    proptest! {
        #[test]
        fn a_patch_rebuilds_the_new_file_exactly(
            base in proptest::collection::vec("[a-c]{0,3}\n?|[a-c]{250,300}\n", 0..30),
            new in proptest::collection::vec("[a-c]{0,3}\n?|[a-c]{250,300}\n", 0..30),
        ) {
            let (base, new) = (base.concat(), new.concat());
            let p = diff(base.as_bytes(), new.as_bytes());
            prop_assert_eq!(apply(base.as_bytes(), &p, new.len() as u64).unwrap(), new.as_bytes());
        }

        #[test]
        fn fuzz_patch_reader(base in any::<Vec<u8>>(), patch in any::<Vec<u8>>()) {
            if let Ok(out) = apply(&base, &patch, 1 << 16) {
                prop_assert!(out.len() <= 1 << 16);
            }
        }
    }
}
