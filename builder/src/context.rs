//! Build contexts: a local directory, an uploaded `.tar.gz`, or a git repository at a ref,
//! reduced to a checked, sorted listing. Nothing outside the context root can be reached: the
//! listing refuses `..`, symlinks leading out, and device files, and enforces a size limit.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::dockerignore::IgnoreRules;
use crate::error::{Error, Result};

/// Where a component's source comes from.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    Dir(PathBuf),
    TarGz(PathBuf),
    /// A repository URL (`file://`, `git://`, a path) and a branch, tag or commit.
    Git {
        url: String,
        reference: String,
    },
}

/// What a context entry is; symlink targets are kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink(PathBuf),
}

/// One path of the context with what the cache needs to tell whether it changed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// (device, inode, mtime ns, ctime ns): a change of any means the content may differ;
    /// ctime cannot be set back by a user, so content rewritten under a restored mtime shows.
    pub stamp: (u64, u64, i64, i64),
}

/// A checked build context rooted at a directory.
#[derive(Debug)]
pub struct BuildContext {
    pub root: PathBuf,
    /// Relative `/`-separated path to entry, sorted; ignored paths are absent.
    pub entries: BTreeMap<String, Entry>,
    /// The commit time for git sources, used as the default `SOURCE_DATE_EPOCH`.
    pub commit_time: Option<i64>,
    /// Digest of the `.dockerignore` text: a changed ignore file changes what `COPY .` reads.
    pub ignore_digest: String,
    _temp: Option<tempfile::TempDir>,
}

impl BuildContext {
    /// Opens (and for archives and git, unpacks into `scratch`) a source and lists it.
    pub fn open(source: &SourceSpec, scratch: &Path, max_bytes: u64) -> Result<Self> {
        Self::open_at(source, "", scratch, max_bytes)
    }

    /// Like `open`, with the context rooted at `subdir` of the source (a component's path).
    pub fn open_at(source: &SourceSpec, subdir: &str, scratch: &Path, max_bytes: u64) -> Result<Self> {
        let (root, temp, commit_time) = match source {
            SourceSpec::Dir(dir) => (dir.clone(), None, None),
            SourceSpec::TarGz(file) => {
                let temp = tempdir_in(scratch)?;
                unpack_archive(file, temp.path())?;
                (temp.path().to_path_buf(), Some(temp), None)
            }
            SourceSpec::Git { url, reference } => {
                let temp = tempdir_in(scratch)?;
                let time = checkout_git(url, reference, temp.path())?;
                (temp.path().to_path_buf(), Some(temp), Some(time))
            }
        };
        let root = inside(&root, subdir)?;
        let ignore_text = std::fs::read_to_string(root.join(".dockerignore")).unwrap_or_default();
        let ignore = IgnoreRules::parse(&ignore_text);
        let entries = list(&root, &ignore, max_bytes)?;
        Ok(BuildContext {
            root,
            entries,
            commit_time,
            ignore_digest: crate::digest::sha256_hex(ignore_text.as_bytes()),
            _temp: temp,
        })
    }

    /// Reads the Dockerfile, which Docker sends even when `.dockerignore` names it.
    pub fn read_dockerfile(&self, name: &str) -> Result<String> {
        let rel = relative_inside(name).ok_or_else(|| Error::Context {
            path: name.into(),
            reason: "the Dockerfile path must stay inside the context".into(),
        })?;
        let path = self.root.join(rel);
        std::fs::read_to_string(&path).map_err(Error::io(path))
    }

    /// Absolute path of an entry inside the root.
    pub fn path_of(&self, rel: &str) -> PathBuf {
        if rel.is_empty() { self.root.clone() } else { self.root.join(rel) }
    }
}

/// Normalises a context-relative path: `..` that would leave the root is refused.
pub fn relative_inside(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(parts.join("/"))
}

/// `root/subdir`, refused when `..` or a symlink on the way leads out of `root`.
fn inside(root: &Path, subdir: &str) -> Result<PathBuf> {
    let bad = |reason: &str| Error::Context { path: subdir.into(), reason: reason.into() };
    let rel = relative_inside(subdir).ok_or_else(|| bad("the context directory leaves the source"))?;
    if rel.is_empty() {
        return Ok(root.to_path_buf());
    }
    let real_root = root.canonicalize().map_err(Error::io(root))?;
    let joined =
        root.join(&rel).canonicalize().map_err(|e| bad(&format!("not a directory of the source: {e}")))?;
    if !joined.starts_with(&real_root) || !joined.is_dir() {
        return Err(bad("the context directory leaves the source or is not a directory"));
    }
    Ok(joined)
}

fn tempdir_in(scratch: &Path) -> Result<tempfile::TempDir> {
    std::fs::create_dir_all(scratch).map_err(Error::io(scratch))?;
    tempfile::TempDir::new_in(scratch).map_err(Error::io(scratch))
}

/// Lists `root` without following symlinks, leaving out ignored paths.
pub fn list(root: &Path, ignore: &IgnoreRules, max_bytes: u64) -> Result<BTreeMap<String, Entry>> {
    let mut entries = BTreeMap::new();
    let mut total = 0u64;
    let walker = walkdir::WalkDir::new(root).follow_links(false).min_depth(1);
    for item in walker {
        let item = item.map_err(|e| Error::Context {
            path: e.path().map(Path::to_path_buf).unwrap_or_default(),
            reason: e.to_string(),
        })?;
        let rel = item.path().strip_prefix(root).unwrap_or(item.path());
        let rel = rel
            .to_str()
            .ok_or_else(|| Error::Context { path: rel.into(), reason: "name is not UTF-8".into() })?;
        if !ignore.is_empty() && ignore.is_ignored(rel) {
            continue;
        }
        let meta = item
            .metadata()
            .map_err(|e| Error::Context { path: item.path().into(), reason: e.to_string() })?;
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            total += meta.len();
            if total > max_bytes {
                return Err(Error::ContextTooLarge { limit: max_bytes });
            }
            EntryKind::File
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            let target = std::fs::read_link(item.path()).map_err(Error::io(item.path()))?;
            check_link(rel, &target)?;
            EntryKind::Symlink(target)
        } else {
            return Err(Error::Context {
                path: rel.into(),
                reason: "device files, sockets and pipes cannot be part of a build context".into(),
            });
        };
        let stamp = (
            meta.dev(),
            meta.ino(),
            meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        );
        let mode = meta.permissions().mode() & 0o7777;
        entries.insert(
            rel.to_string(),
            Entry { kind, mode, uid: meta.uid(), gid: meta.gid(), size: meta.len(), stamp },
        );
    }
    Ok(entries)
}

/// A symlink may point anywhere inside the context, never out of it (absolute targets are
/// read as context-absolute, as a build would see them, so only `..` can leave).
fn check_link(rel: &str, target: &Path) -> Result<()> {
    let base = Path::new(rel).parent().unwrap_or(Path::new(""));
    let joined = if target.is_absolute() { target.to_path_buf() } else { base.join(target) };
    let mut depth = 0i32;
    for c in joined.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return Err(Error::Context {
                path: rel.into(),
                reason: format!("symlink to `{}` leads outside the build context", target.display()),
            });
        }
    }
    Ok(())
}

fn unpack_archive(file: &Path, dest: &Path) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let mut reader = BufReader::new(std::fs::File::open(file).map_err(Error::io(file))?);
    let gzip = reader.fill_buf().map_err(Error::io(file))?.starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn std::io::Read> =
        if gzip { Box::new(flate2::read::MultiGzDecoder::new(reader)) } else { Box::new(reader) };
    let mut archive = tar::Archive::new(stream);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    let bad = |path: &Path, reason: &str| Error::Context { path: path.into(), reason: reason.into() };
    for entry in archive.entries().map_err(Error::io(file))? {
        let mut entry = entry.map_err(Error::io(file))?;
        let path = entry.path().map_err(Error::io(file))?.into_owned();
        if path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(bad(&path, "archive entry leaves the context (absolute or `..` path)"));
        }
        use tar::EntryType as T;
        match entry.header().entry_type() {
            T::Regular | T::Directory | T::Symlink | T::Link | T::Continuous => {}
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => continue,
            _ => return Err(bad(&path, "device files, sockets and pipes cannot be part of a build context")),
        }
        entry.unpack_in(dest).map_err(Error::io(dest.join(&path)))?;
    }
    Ok(())
}

/// Clones `url` and checks out `reference`; returns the commit time (seconds since epoch).
fn checkout_git(url: &str, reference: &str, dest: &Path) -> Result<i64> {
    let git = |args: &[&str]| -> Result<String> {
        let out = Command::new("git")
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(|e| Error::Git { url: url.into(), reason: format!("cannot run git: {e}") })?;
        if !out.status.success() {
            return Err(Error::Git {
                url: url.into(),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let dir = dest
        .to_str()
        .ok_or_else(|| Error::Git { url: url.into(), reason: "scratch path is not UTF-8".into() })?;
    git(&["clone", "--quiet", "--no-checkout", url, dir])?;
    git(&["-C", dir, "-c", "advice.detachedHead=false", "checkout", "--quiet", reference])?;
    let time = git(&["-C", dir, "log", "-1", "--format=%ct"])?;
    std::fs::remove_dir_all(dest.join(".git")).map_err(Error::io(dest.join(".git")))?;
    time.parse()
        .map_err(|_| Error::Git { url: url.into(), reason: format!("unreadable commit time `{time}`") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_cannot_leave_the_root() {
        assert_eq!(relative_inside("./a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(relative_inside("/abs/x").as_deref(), Some("abs/x"));
        assert_eq!(relative_inside("../x"), None);
    }

    #[test]
    fn listing_checks_links_ignores_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("src")).unwrap();
        std::fs::write(root.join("src/a.txt"), "hello").unwrap();
        std::fs::write(root.join("debug.log"), "x").unwrap();
        std::fs::write(root.join(".dockerignore"), "*.log\n").unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("src/inside")).unwrap();
        let ctx = BuildContext::open(&SourceSpec::Dir(root.into()), root, 1 << 20).unwrap();
        assert!(ctx.entries.contains_key("src/a.txt"));
        assert!(ctx.entries.contains_key("src/inside"));
        assert!(!ctx.entries.contains_key("debug.log"));
        assert!(matches!(
            BuildContext::open(&SourceSpec::Dir(root.into()), root, 3),
            Err(Error::ContextTooLarge { .. })
        ));
        std::os::unix::fs::symlink("../../etc/passwd", root.join("src/out")).unwrap();
        let err = BuildContext::open(&SourceSpec::Dir(root.into()), root, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("leads outside"), "{err}");
    }
}
