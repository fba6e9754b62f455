//! A local source directory packed as the `.tar.gz` the server's `POST /v1/sources` takes.
//! Symlinks are kept as links (the server's context rules decide about them) and `.git` is
//! left out: builds read the working tree, not its history.

use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

/// Packs `dir` into memory; the server refuses it if it is larger than its context limit.
pub fn pack(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    archive.follow_symlinks(false);
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries.into_iter().filter(|e| e.file_name() != ".git") {
        let name = entry.file_name();
        if entry.file_type()?.is_dir() {
            archive.append_dir_all(&name, entry.path())?;
        } else {
            archive.append_path_with_name(entry.path(), &name)?;
        }
    }
    archive.into_inner()?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_the_tree_without_git() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("web/static")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join("web/static/index.html"), "<h1>hi</h1>").unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "ref: refs/heads/main").unwrap();
        std::fs::write(dir.path().join("slipway.app.toml"), "app = \"x\"").unwrap();
        std::os::unix::fs::symlink("static/index.html", dir.path().join("web/link")).unwrap();

        let packed = pack(dir.path()).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&packed[..]));
        let mut names: Vec<(String, bool)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().entry_type().is_symlink())
            })
            .collect();
        names.sort();
        let has = |name: &str| names.iter().any(|(n, _)| n.trim_end_matches('/') == name);
        assert!(has("web/static/index.html") && has("slipway.app.toml"), "{names:?}");
        assert!(names.iter().any(|(n, link)| n == "web/link" && *link), "{names:?}");
        assert!(!names.iter().any(|(n, _)| n.starts_with(".git")), "{names:?}");
    }
}
