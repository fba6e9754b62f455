//! Deterministic `.tar.gz` archives and the streaming check of an app package.
//!
//! The same entries always give the same bytes, and so the same digest: `manifest.json`
//! first (so a reader meets it before anything else), the rest sorted by path; every header
//! has mode 0644, uid/gid 0, no owner names and mtime 0; the gzip header has mtime 0, no file
//! name and OS "unknown". Deflate is miniz_oxide at a fixed level, called directly so the
//! output does not depend on which flate2 backend the workspace's features select.

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::{AppManifest, ComponentManifest, MANIFEST_FILE, MAX_MANIFEST_BYTES};

const DEFLATE_LEVEL: u8 = 6;

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format_digest(Sha256::digest(bytes))
}

pub fn format_digest(hash: impl AsRef<[u8]>) -> String {
    format!("sha256:{}", hex::encode(hash))
}

/// Checks the `sha256:<64 hex>` shape, returning the hex part.
pub fn digest_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(Error::invalid_package(format!("`{digest}` is not a sha256:<64 lowercase hex> digest"))),
    }
}

/// Builds a deterministic `.tar.gz` of `entries` (path, content); `manifest.json` must be one.
pub fn write_tar_gz(entries: &[(String, &[u8])]) -> Vec<u8> {
    let mut ordered: Vec<&(String, &[u8])> = entries.iter().collect();
    ordered.sort_by(|a, b| (a.0 != MANIFEST_FILE, &a.0).cmp(&(b.0 != MANIFEST_FILE, &b.0)));
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in ordered {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(content.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        // Writing to a Vec cannot fail; a path tar cannot encode was refused by the caller.
        builder.append_data(&mut header, path, *content).expect("in-memory tar write");
    }
    let tar = builder.into_inner().expect("in-memory tar finish");
    gzip(&tar)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(data, DEFLATE_LEVEL);
    let mut out = Vec::with_capacity(deflated.len() + 18);
    // magic, deflate, no flags, mtime 0, no extra flags, OS 255 (unknown)
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// Reads every entry of a small in-memory `.tar.gz` (a component package).
pub fn read_tar_gz(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut content = Vec::new();
        entry.read_to_end(&mut content)?;
        out.push((path, content));
    }
    Ok(out)
}

/// Checks an app package read as a stream: `manifest.json` first and valid, then exactly
/// the component packages it lists, each with the listed size and digest and a component
/// manifest that agrees with its entry. Memory stays bounded whatever the archive's size;
/// returns the app manifest and the component manifests.
pub fn check_app_package(reader: impl Read) -> Result<(AppManifest, Vec<ComponentManifest>)> {
    let bad = |reason: String| Error::invalid_package(reason);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut entries = archive.entries().map_err(|e| bad(format!("not a tar.gz archive: {e}")))?;
    let first = entries
        .next()
        .ok_or_else(|| bad("empty archive".into()))?
        .map_err(|e| bad(format!("not a tar.gz archive: {e}")))?;
    let manifest = AppManifest::from_json(&read_manifest_entry(first)?)?;
    let mut components: Vec<ComponentManifest> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("truncated or corrupt archive: {e}")))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.to_string_lossy().into_owned();
        let listed = manifest
            .components
            .iter()
            .find(|c| c.file == path)
            .ok_or_else(|| bad(format!("entry {path} is not listed in {MANIFEST_FILE}")))?;
        let mut hashing = HashingReader::new(entry);
        let inner = {
            let mut nested = tar::Archive::new(flate2::read::GzDecoder::new(&mut hashing));
            let mut nested_entries = nested.entries().map_err(|e| bad(format!("{path}: {e}")))?;
            let first = nested_entries
                .next()
                .ok_or_else(|| bad(format!("{path}: empty component package")))?
                .map_err(|e| bad(format!("{path}: {e}")))?;
            read_manifest_entry(first).map_err(|e| bad(format!("{path}: {e}")))?
        };
        std::io::copy(&mut hashing, &mut std::io::sink())
            .map_err(|e| bad(format!("{path}: truncated or corrupt archive: {e}")))?;
        let (digest, size) = hashing.finish();
        if digest != listed.digest || size != listed.size_bytes {
            return Err(bad(format!(
                "{path} has digest {digest} ({size} bytes), manifest says {}",
                listed.digest
            )));
        }
        let component: ComponentManifest =
            serde_json::from_slice(&inner).map_err(|e| bad(format!("{path}: {MANIFEST_FILE}: {e}")))?;
        component.validate()?;
        if component.app != manifest.app
            || component.component != listed.component
            || component.version != listed.version
            || component.component_type != listed.component_type
        {
            return Err(bad(format!("{path}: its manifest does not match the app manifest's entry")));
        }
        components.push(component);
    }
    if let Some(missing) =
        manifest.components.iter().find(|c| !components.iter().any(|m| m.component == c.component))
    {
        return Err(bad(format!("{} is listed but missing", missing.file)));
    }
    Ok((manifest, components))
}

/// Reads a `manifest.json` entry, refusing any other first entry or an oversized one.
fn read_manifest_entry(mut entry: tar::Entry<'_, impl Read>) -> Result<Vec<u8>> {
    let path =
        entry.path().map_err(|e| Error::invalid_package(e.to_string()))?.to_string_lossy().into_owned();
    if path != MANIFEST_FILE || entry.size() > MAX_MANIFEST_BYTES {
        return Err(Error::invalid_package(format!(
            "the first entry must be {MANIFEST_FILE} of at most {MAX_MANIFEST_BYTES} bytes, found {path}"
        )));
    }
    let mut text = Vec::new();
    entry.read_to_end(&mut text).map_err(|e| Error::invalid_package(format!("{MANIFEST_FILE}: {e}")))?;
    Ok(text)
}

/// Hashes and counts every byte read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256::new(), size: 0 }
    }

    /// The digest and count of the bytes read so far.
    pub(crate) fn finish(self) -> (String, u64) {
        (format_digest(self.hasher.finalize()), self.size)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_entries_give_the_same_bytes_in_any_order() {
        let a = write_tar_gz(&[
            ("files/b.yaml".into(), b"b".as_slice()),
            (MANIFEST_FILE.into(), b"{}".as_slice()),
            ("files/a.yaml".into(), b"a".as_slice()),
        ]);
        let b = write_tar_gz(&[
            ("files/a.yaml".into(), b"a".as_slice()),
            ("files/b.yaml".into(), b"b".as_slice()),
            (MANIFEST_FILE.into(), b"{}".as_slice()),
        ]);
        assert_eq!(a, b);
        let read = read_tar_gz(&a).unwrap();
        let paths: Vec<&str> = read.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, [MANIFEST_FILE, "files/a.yaml", "files/b.yaml"]);
        assert_eq!(read[1].1, b"a");
        // The gzip stream is standard: flate2 reads it back, and the header carries no time.
        assert_eq!(&a[4..8], &[0, 0, 0, 0]);
    }

    #[test]
    fn long_paths_survive() {
        let long = format!("files/{}/values.yaml", "d".repeat(150));
        let bytes =
            write_tar_gz(&[(MANIFEST_FILE.into(), b"{}".as_slice()), (long.clone(), b"x".as_slice())]);
        assert_eq!(read_tar_gz(&bytes).unwrap()[1].0, long);
    }

    #[test]
    fn digests_have_one_shape() {
        let d = digest_of(b"hello");
        assert_eq!(d, "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert!(digest_hex(&d).is_ok());
        for bad in [
            "sha256:abc",
            "md5:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            &d.to_uppercase(),
        ] {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
    }
}
