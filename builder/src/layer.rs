//! Reproducible layer blobs: tar entries in the order given (callers sort), owners and times
//! normalised, then gzip in independent members compressed on all cores (a concatenation of
//! gzip members is a valid gzip stream for every OCI client).

use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;

use crate::digest::sha256_digest;
use crate::error::{Error, Result};
use crate::image::LayerRef;

/// What one tar entry holds.
#[derive(Debug, Clone)]
pub enum Content {
    File(PathBuf),
    Inline(Bytes),
    Dir,
    Symlink(PathBuf),
    /// A hard link to another path of the same layer.
    Hardlink(String),
    /// Deletes the path from lower layers (`.wh.<name>`).
    Whiteout,
}

/// One path of a layer; `path` is relative to the image root, without a leading `/`.
#[derive(Debug, Clone)]
pub struct LayerEntry {
    pub path: String,
    pub content: Content,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// Pieces classified on their own: random-looking data (already compressed files, keys) is
/// stored rather than deflated, which costs a copy instead of a futile match search.
const PIECE: usize = 32 << 10;
/// Largest gzip member: large enough to keep the ratio, small enough to spread over cores.
const MEMBER_MAX: usize = 4 << 20;
/// Estimated bits per byte above which deflate cannot win anything worth its time.
const STORE_ENTROPY: f64 = 7.5;

/// A built layer: the compressed blob and its digests.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub blob: Bytes,
    pub layer: LayerRef,
}

/// Writes `entries` as a tar with every mtime set to `mtime`.
pub fn write_tar(entries: &[LayerEntry], mtime: u64) -> Result<Vec<u8>> {
    // Sizing the buffer once avoids re-copying a large layer while it grows.
    let data: u64 = entries
        .iter()
        .map(|e| match &e.content {
            Content::File(path) => {
                std::fs::symlink_metadata(path).map_or(0, |m| m.len().next_multiple_of(512))
            }
            Content::Inline(bytes) => (bytes.len() as u64).next_multiple_of(512),
            _ => 0,
        })
        .sum();
    let capacity = data as usize + entries.len() * 1536 + 1024;
    let mut builder = tar::Builder::new(Vec::with_capacity(capacity));
    for entry in entries {
        append(&mut builder, entry, mtime)?;
    }
    builder.into_inner().map_err(Error::io("<layer tar>"))
}

fn append(builder: &mut tar::Builder<Vec<u8>>, entry: &LayerEntry, mtime: u64) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mode(entry.mode & 0o7777);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(mtime);
    let io = |e| Error::Io { path: entry.path.clone().into(), source: e };
    match &entry.content {
        Content::File(source) => {
            let file = std::fs::File::open(source).map_err(Error::io(source))?;
            let len = file.metadata().map_err(Error::io(source))?.len();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(len);
            let reader = std::io::BufReader::with_capacity(1 << 20, file);
            builder.append_data(&mut header, &entry.path, reader).map_err(io)
        }
        Content::Inline(data) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, &entry.path, &data[..]).map_err(io)
        }
        Content::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, format!("{}/", entry.path), std::io::empty()).map_err(io)
        }
        Content::Symlink(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, &entry.path, target).map_err(io)
        }
        Content::Hardlink(target) => {
            header.set_entry_type(tar::EntryType::Link);
            header.set_size(0);
            builder.append_link(&mut header, &entry.path, target).map_err(io)
        }
        Content::Whiteout => {
            let (dir, name) = entry.path.rsplit_once('/').map_or(("", entry.path.as_str()), |(d, n)| (d, n));
            let path = if dir.is_empty() { format!(".wh.{name}") } else { format!("{dir}/.wh.{name}") };
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(0);
            header.set_mode(0);
            builder.append_data(&mut header, path, std::io::empty()).map_err(io)
        }
    }
}

/// Compresses a tar into a layer blob, hashing the tar and the blob alongside. Pieces are
/// classified by content only, so the blob stays a pure function of the tar.
pub fn compress(tar: &[u8]) -> LayerBlob {
    let members = plan_members(tar);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(members.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut pieces: Vec<Vec<u8>> = vec![Vec::new(); members.len()];
    let diff_id = std::thread::scope(|scope| {
        let hasher = scope.spawn(|| sha256_digest(tar));
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((range, store)) = members.get(i) else { break done };
                        done.push((i, gzip_member(&tar[range.clone()], *store)));
                    }
                })
            })
            .collect();
        for handle in handles {
            for (i, piece) in handle.join().expect("compression worker panicked") {
                pieces[i] = piece;
            }
        }
        hasher.join().expect("hash worker panicked")
    });
    let blob = Bytes::from(if pieces.is_empty() { gzip_member(&[], false) } else { pieces.concat() });
    let digest = sha256_digest(&blob);
    LayerBlob { layer: LayerRef { digest, diff_id, size: blob.len() as u64 }, blob }
}

/// Splits the tar into gzip members of one class each (store or deflate).
fn plan_members(tar: &[u8]) -> Vec<(std::ops::Range<usize>, bool)> {
    let mut members = Vec::new();
    let mut start = 0;
    let mut class = None;
    for (i, piece) in tar.chunks(PIECE).enumerate() {
        let offset = i * PIECE;
        let store = entropy(piece) > STORE_ENTROPY;
        if class != Some(store) || offset - start >= MEMBER_MAX {
            if let Some(previous) = class {
                members.push((start..offset, previous));
            }
            (start, class) = (offset, Some(store));
        }
    }
    if let Some(previous) = class {
        members.push((start..tar.len(), previous));
    }
    members
}

/// Shannon entropy (bits per byte) of a sample of every fourth byte.
fn entropy(piece: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for b in piece.iter().step_by(4) {
        counts[*b as usize] += 1;
        n += 1;
    }
    let n = f64::from(n.max(1));
    counts.iter().filter(|c| **c > 0).map(|c| f64::from(*c) / n).map(|p| -p * p.log2()).sum()
}

fn gzip_member(data: &[u8], store: bool) -> Vec<u8> {
    let level = if store { flate2::Compression::none() } else { flate2::Compression::fast() };
    let capacity = if store { data.len() + data.len() / 1000 + 64 } else { data.len() / 2 + 64 };
    let mut encoder =
        flate2::GzBuilder::new().operating_system(255).write(Vec::with_capacity(capacity), level);
    encoder.write_all(data).expect("writing to memory cannot fail");
    encoder.finish().expect("writing to memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn layers_are_reproducible_and_readable() {
        let entries = vec![
            LayerEntry { path: "app".into(), content: Content::Dir, mode: 0o755, uid: 0, gid: 0 },
            LayerEntry {
                path: "app/big".into(),
                content: Content::Inline(Bytes::from(
                    (0..9u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<u8>>(),
                )),
                mode: 0o644,
                uid: 1,
                gid: 2,
            },
            LayerEntry { path: "app/gone".into(), content: Content::Whiteout, mode: 0, uid: 0, gid: 0 },
        ];
        let a = compress(&write_tar(&entries, 0).unwrap());
        let b = compress(&write_tar(&entries, 0).unwrap());
        assert_eq!(a.layer, b.layer);
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(&a.blob[..]).read_to_end(&mut tar).unwrap();
        assert_eq!(sha256_digest(&tar), a.layer.diff_id);
        let names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["app/", "app/big", "app/.wh.gone"]);
    }
}
