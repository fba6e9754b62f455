//! Materialised root file systems: layers unpacked into a directory (whiteouts applied), and
//! the file-system change a `RUN` made to such a directory, captured as layer entries.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use crate::error::{Error, Result};
use crate::layer::{Content, LayerEntry};

/// Paths mounted during `RUN`, never part of a layer.
const VIRTUAL: &[&str] = &["proc", "sys", "dev"];

/// Unpacks one gzip (or plain) layer tar into `root`, applying OCI whiteouts.
pub fn apply_layer(root: &Path, blob: &[u8]) -> Result<()> {
    let mut tar = Vec::new();
    if blob.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(blob).read_to_end(&mut tar).map_err(Error::io(root))?;
    } else {
        tar.extend_from_slice(blob);
    }
    let mut archive = tar::Archive::new(&tar[..]);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    for entry in archive.entries().map_err(Error::io(root))? {
        let mut entry = entry.map_err(Error::io(root))?;
        let path = entry.path().map_err(Error::io(root))?.into_owned();
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(Error::ImageData(format!("layer entry `{}` leaves the root", path.display())));
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parent = root.join(path.parent().unwrap_or(Path::new("")));
        if name == ".wh..wh..opq" {
            if let Ok(children) = std::fs::read_dir(&parent) {
                for child in children.flatten() {
                    remove_any(&child.path())?;
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            remove_any(&parent.join(hidden))?;
            continue;
        }
        let target = root.join(&path);
        if let Ok(meta) = target.symlink_metadata()
            && !(meta.is_dir() && entry.header().entry_type().is_dir())
        {
            remove_any(&target)?;
        }
        entry.unpack_in(root).map_err(Error::io(&target))?;
    }
    Ok(())
}

fn remove_any(path: &Path) -> Result<()> {
    let result = match path.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return Ok(()),
    };
    result.map_err(Error::io(path))
}

/// What identifies a path's state before a `RUN`: inode, change time, size, mode.
type Stamp = (u64, i64, u64, u32);

/// The state of every path of a root before a `RUN`.
pub struct Snapshot(BTreeMap<String, Stamp>);

impl Snapshot {
    pub fn take(root: &Path) -> Result<Snapshot> {
        stamps(root).map(Snapshot)
    }

    /// The entries that differ from the snapshot: new or changed paths as they are now, and
    /// whiteouts for removed paths (only the topmost removed directory).
    pub fn diff(&self, root: &Path) -> Result<Vec<LayerEntry>> {
        let now = stamps(root)?;
        let mut entries = Vec::new();
        let mut removed_dir: Option<String> = None;
        for path in self.0.keys().filter(|p| !now.contains_key(*p)) {
            if removed_dir.as_ref().is_some_and(|d| path.starts_with(&format!("{d}/"))) {
                continue;
            }
            entries.push(LayerEntry {
                path: path.clone(),
                content: Content::Whiteout,
                mode: 0,
                uid: 0,
                gid: 0,
            });
            removed_dir = Some(path.clone());
        }
        let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
        for (path, stamp) in &now {
            if self.0.get(path) == Some(stamp) {
                continue;
            }
            entries.push(entry_for(root, path, &mut inodes)?);
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }
}

fn stamps(root: &Path) -> Result<BTreeMap<String, Stamp>> {
    let mut map = BTreeMap::new();
    walk(root, |rel, meta| {
        let ctime = meta.ctime() * 1_000_000_000 + meta.ctime_nsec();
        map.insert(rel.to_string(), (meta.ino(), ctime, meta.size(), meta.mode()));
    })?;
    Ok(map)
}

/// Describes the file at `rel` as a layer entry; a second path to an inode already written
/// becomes a hard link.
pub fn entry_for(root: &Path, rel: &str, inodes: &mut BTreeMap<u64, String>) -> Result<LayerEntry> {
    let full = root.join(rel);
    let meta = full.symlink_metadata().map_err(Error::io(&full))?;
    let ft = meta.file_type();
    let content = if ft.is_dir() {
        Content::Dir
    } else if ft.is_symlink() {
        Content::Symlink(std::fs::read_link(&full).map_err(Error::io(&full))?)
    } else if ft.is_file() {
        match inodes.get(&meta.ino()) {
            Some(first) if meta.nlink() > 1 => Content::Hardlink(first.clone()),
            _ => {
                inodes.insert(meta.ino(), rel.to_string());
                Content::File(full)
            }
        }
    } else {
        return Err(Error::Context {
            path: rel.into(),
            reason: "RUN created a device file, socket or pipe".into(),
        });
    };
    Ok(LayerEntry {
        path: rel.to_string(),
        content,
        mode: meta.mode() & 0o7777,
        uid: meta.uid().into(),
        gid: meta.gid().into(),
    })
}

fn walk(root: &Path, mut f: impl FnMut(&str, &std::fs::Metadata)) -> Result<()> {
    let walker = walkdir::WalkDir::new(root).follow_links(false).min_depth(1).sort_by_file_name().into_iter();
    let walker =
        walker.filter_entry(|e| !(e.depth() == 1 && VIRTUAL.contains(&e.file_name().to_str().unwrap_or(""))));
    for item in walker {
        let item = item.map_err(|e| Error::Io { path: root.into(), source: e.into() })?;
        let rel = item.path().strip_prefix(root).unwrap_or(item.path());
        let meta = item.metadata().map_err(|e| Error::Io { path: item.path().into(), source: e.into() })?;
        f(&rel.to_string_lossy(), &meta);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_reports_changes_and_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("keep/gone")).unwrap();
        std::fs::write(root.join("keep/gone/f"), "x").unwrap();
        std::fs::write(root.join("keep/same"), "s").unwrap();
        std::fs::write(root.join("keep/edit"), "1").unwrap();
        let before = Snapshot::take(root).unwrap();
        std::fs::remove_dir_all(root.join("keep/gone")).unwrap();
        std::fs::write(root.join("keep/edit"), "22").unwrap();
        std::fs::write(root.join("new"), "n").unwrap();
        let diff = before.diff(root).unwrap();
        let summary: Vec<(String, bool)> =
            diff.iter().map(|e| (e.path.clone(), matches!(e.content, Content::Whiteout))).collect();
        assert_eq!(
            summary,
            [
                ("keep".to_string(), false),
                ("keep/edit".to_string(), false),
                ("keep/gone".to_string(), true),
                ("new".to_string(), false)
            ]
        );
    }
}
