//! Building a signed bundle. The tar is deterministic: fixed owner and time, files in path order.

use crate::manifest::{FileEntry, Manifest, FORMAT};
use crate::{SecretKey, Version};

/// A generated file, before it goes into a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid bundle: {0}")]
    Invalid(String),
    #[error("writing the tar: {0}")]
    Io(#[from] std::io::Error),
}

/// What identifies one send of a service's files.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    pub service: &'a str,
    pub version: Version,
    pub facility: &'a str,
    pub destination: &'a str,
    pub run_id: &'a str,
    pub created: &'a str,
    pub serial: u64,
}

/// The manifest for `files` (sorted by path) under `h`.
pub fn manifest(h: &Header<'_>, files: &[File]) -> Manifest {
    let mut entries: Vec<FileEntry> = files
        .iter()
        .map(|f| FileEntry {
            path: f.path.clone(),
            mode: f.mode,
            size: f.data.len() as u64,
            sha256: crate::sha256_hex(&f.data),
        })
        .collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Manifest {
        format: FORMAT,
        service: h.service.to_owned(),
        version: h.version,
        facility: h.facility.to_owned(),
        destination: h.destination.to_owned(),
        run_id: h.run_id.to_owned(),
        created: h.created.to_owned(),
        serial: h.serial,
        files: entries,
    }
}

/// Builds and signs a bundle. Refuses what an agent would refuse, so a bad generator fails on the
/// server, not on a thousand hosts.
pub fn build(key: &SecretKey, h: &Header<'_>, files: &[File]) -> Result<Vec<u8>, BuildError> {
    let m = manifest(h, files);
    m.check().map_err(BuildError::Invalid)?;
    let json = serde_json::to_vec_pretty(&m).map_err(|e| BuildError::Invalid(e.to_string()))?;
    let sig = key.sign(&json);
    let mut sorted: Vec<&File> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut tar = tar::Builder::new(Vec::with_capacity(files.iter().map(|f| f.data.len() + 1024).sum()));
    append(&mut tar, "MANIFEST.json", 0o644, &json)?;
    append(&mut tar, "MANIFEST.sig", 0o644, &sig)?;
    for f in sorted {
        append(&mut tar, &f.path, f.mode, &f.data)?;
    }
    Ok(tar.into_inner()?)
}

fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    tar.append_data(&mut h, path, data)
}
