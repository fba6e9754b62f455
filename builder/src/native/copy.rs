//! `COPY` and `ADD`: picking sources from the context (or a `--from` stage or image) by
//! Docker's rules, keying the layer by what the sources hold, and writing the layer entries
//! (with `--chown`/`--chmod`, parent directories, and local archive extraction for `ADD`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::context::{self, Entry, EntryKind, relative_inside};
use crate::digest::KeyHasher;
use crate::dockerfile::{CopyFlags, CopySource, Step};
use crate::dockerignore::{IgnoreRules, glob_match, has_wildcards};
use crate::error::{Error, Result};
use crate::layer::{Content, LayerEntry};

use super::Build;
use super::stage::{StageState, missing_dirs};
use super::users;

/// Symlink hops allowed while resolving a source path.
const MAX_LINKS: usize = 40;

/// One path to write, relative to the destination.
struct Pick {
    /// Path under the destination directory; for a lone file, its base name.
    sub: String,
    content: Content,
    mode: u32,
    /// Kept owner (archives); `None` takes `--chown` or root.
    owner: Option<(u32, u32)>,
    digest: String,
}

/// A tree sources are read from.
struct Tree<'a> {
    root: PathBuf,
    entries: &'a BTreeMap<String, Entry>,
    digests: Option<&'a BTreeMap<String, String>>,
    keep_owner: bool,
}

impl Build<'_> {
    pub(super) async fn copy(
        &mut self,
        state: &mut StageState,
        step: &Step,
        sources: &[CopySource],
        dest: &str,
        flags: &CopyFlags,
        add: bool,
    ) -> Result<()> {
        let vars = state.vars();
        let dest = self.expand(dest, &vars, step)?;
        let joined = if dest.starts_with('/') { dest.clone() } else { format!("{}/{dest}", state.workdir()) };
        let dest_rel = relative_inside(&joined).unwrap_or_default();
        let chown = flags.chown.as_deref().map(|c| self.expand(c, &vars, step)).transpose()?;
        let mut dir_form = dest.ends_with('/') || dest.ends_with("/.") || dest == "." || sources.len() > 1;

        let from_root = match flags.from.as_deref() {
            Some(from) => Some(self.unpacked_source(&self.expand(from, &vars, step)?).await?),
            None => None,
        };
        let from_entries = match &from_root {
            Some(root) => Some(context::list(root, &IgnoreRules::default(), u64::MAX)?),
            None => None,
        };
        let digests = match from_root {
            Some(_) => None,
            None => Some(self.context_digests().await?.clone()),
        };
        let tree = match (&from_root, &from_entries) {
            (Some(root), Some(entries)) => {
                Tree { root: root.clone(), entries, digests: None, keep_owner: false }
            }
            _ => Tree {
                root: self.ctx.root.clone(),
                entries: &self.ctx.entries,
                digests: digests.as_ref(),
                keep_owner: false,
            },
        };

        let mut picks = Vec::new();
        let mut unpacked = Vec::new();
        for source in sources {
            let path = match source {
                CopySource::HereDoc { content, expand } => {
                    let content = if *expand { self.expand(content, &vars, step)? } else { content.clone() };
                    let digest = crate::digest::sha256_hex(content.as_bytes());
                    let sub = dest_rel.rsplit('/').next().unwrap_or("").to_string();
                    picks.push(Pick {
                        sub,
                        content: Content::Inline(Bytes::from(content)),
                        mode: 0o644,
                        owner: None,
                        digest,
                    });
                    continue;
                }
                CopySource::Path(p) => self.expand(p, &vars, step)?,
            };
            let bad = |reason: &str| Error::CopySource {
                file: self.df.file.clone(),
                line: step.line,
                source_path: path.clone(),
                reason: reason.into(),
            };
            if add
                && (path.starts_with("http://") || path.starts_with("https://") || path.starts_with("git@"))
            {
                return Err(Error::RemoteAdd { file: self.df.file.clone(), line: step.line, url: path });
            }
            let rel = relative_inside(&path).ok_or_else(|| bad("escapes the build context"))?;
            let matched: Vec<String> = if has_wildcards(&rel) {
                tree.entries.keys().filter(|k| glob_match(&rel, k)).cloned().collect()
            } else {
                vec![tree.resolve(&rel).map_err(|e| match e {
                    Error::SymlinkLoop(_) => e,
                    _ => bad("not found in the build context (or excluded by .dockerignore)"),
                })?]
            };
            if matched.is_empty() {
                return Err(bad("matches no file in the build context"));
            }
            dir_form |= matched.len() > 1;
            for rel in matched {
                let is_dir =
                    rel.is_empty() || tree.entries.get(&rel).is_some_and(|e| e.kind == EntryKind::Dir);
                if add && !is_dir && is_archive(&tree.root.join(&rel)) {
                    let archive = context::SourceSpec::TarGz(tree.root.join(&rel));
                    let listed =
                        context::BuildContext::open(&archive, &self.backend.settings.work_dir, u64::MAX)?;
                    let sub = Tree {
                        root: listed.root.clone(),
                        entries: &listed.entries,
                        digests: None,
                        keep_owner: true,
                    };
                    sub.pick_dir("", &mut picks)?;
                    dir_form = true;
                    // The unpacked files are read when the layer is written.
                    unpacked.push(listed);
                } else if is_dir {
                    tree.pick_dir(&rel, &mut picks)?;
                    dir_form = true;
                } else {
                    let name = rel.rsplit('/').next().unwrap_or(&rel).to_string();
                    picks.push(tree.pick(&rel, name)?);
                }
            }
        }
        if let Some(mode) = flags.mode() {
            picks.iter_mut().for_each(|p| p.mode = mode);
        }

        let mut key = KeyHasher::default();
        key.part(&state.chain).part(if add { "ADD" } else { "COPY" }).part(&dest_rel);
        key.part(format!("{dir_form}{chown:?}{:?}", flags.chmod));
        for p in &picks {
            key.part(&p.sub).part(p.mode.to_string()).part(format!("{:?}", p.owner)).part(&p.digest);
            if let Content::Symlink(t) = &p.content {
                key.part(t.as_os_str().as_encoded_bytes());
            }
        }
        let key = key.finish();
        let lone_file = !dir_form;
        if self.cache_hit(state, &key, step).await? {
            return Ok(());
        }
        let entries = {
            let build = &*self;
            let root = state.root(build).await?.to_path_buf();
            let owner = match &chown {
                Some(spec) => {
                    users::resolve(Some(&root), spec, true).map_err(|reason| Error::CopySource {
                        file: build.df.file.clone(),
                        line: step.line,
                        source_path: format!("--chown={spec}"),
                        reason,
                    })?
                }
                None => (0, 0),
            };
            let (base, lone_target) = if lone_file && !root.join(&dest_rel).is_dir() {
                let parent = dest_rel.rsplit_once('/').map_or("", |(p, _)| p).to_string();
                (parent, Some(dest_rel.rsplit('/').next().unwrap_or("").to_string()))
            } else {
                (dest_rel.clone(), None)
            };
            let mut entries: BTreeMap<String, LayerEntry> =
                missing_dirs(&root, &base, 0o755, owner).into_iter().map(|e| (e.path.clone(), e)).collect();
            for pick in picks {
                let sub = lone_target.clone().unwrap_or(pick.sub);
                let path = [base.as_str(), sub.as_str()]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join("/");
                if path.is_empty() {
                    continue;
                }
                let (uid, gid) = pick.owner.unwrap_or(owner);
                let content = match pick.content {
                    Content::Hardlink(target) => {
                        Content::Hardlink(format!("{base}/{target}").trim_start_matches('/').into())
                    }
                    other => other,
                };
                entries.insert(
                    path.clone(),
                    LayerEntry { path, content, mode: pick.mode, uid: uid.into(), gid: gid.into() },
                );
            }
            entries.into_values().collect()
        };
        self.commit_layer(state, key, step, entries, false).await?;
        drop(unpacked);
        Ok(())
    }

    /// The unpacked root of `--from=<stage or image>`.
    async fn unpacked_source(&mut self, from: &str) -> Result<PathBuf> {
        if let Some(index) = self.stage_index(from) {
            let mut stage = self.stages[index].take().expect("dependencies are built first");
            let root = stage.root(self).await.map(Path::to_path_buf);
            self.stages[index] = Some(stage);
            return root;
        }
        let mut image = self.pull_stage(from).await?;
        let root = image.root(self).await?.to_path_buf();
        self.images.push(image);
        Ok(root)
    }
}

impl Tree<'_> {
    /// Resolves `rel` to an entry, following symlinks inside the tree.
    fn resolve(&self, rel: &str) -> Result<String> {
        let mut current = rel.to_string();
        for _ in 0..MAX_LINKS {
            if current.is_empty() {
                return Ok(current);
            }
            match self.entries.get(&current).map(|e| &e.kind) {
                Some(EntryKind::Symlink(target)) => {
                    let base = current.rsplit_once('/').map_or("", |(p, _)| p);
                    let joined = if target.is_absolute() {
                        target.to_string_lossy().into_owned()
                    } else {
                        format!("{base}/{}", target.to_string_lossy())
                    };
                    current = relative_inside(&joined).ok_or_else(|| Error::SymlinkLoop(rel.into()))?;
                }
                Some(_) => return Ok(current),
                None => return Err(Error::Context { path: rel.into(), reason: "not found".into() }),
            }
        }
        Err(Error::SymlinkLoop(rel.into()))
    }

    fn pick(&self, rel: &str, sub: String) -> Result<Pick> {
        let entry = &self.entries[rel];
        let full = self.root.join(rel);
        let (content, digest) = match &entry.kind {
            EntryKind::File => {
                let digest = match self.digests.and_then(|d| d.get(rel)) {
                    Some(d) => d.clone(),
                    None => crate::digest::sha256_file(&full).map_err(Error::io(&full))?,
                };
                (Content::File(full), digest)
            }
            EntryKind::Dir => (Content::Dir, String::new()),
            EntryKind::Symlink(target) => (Content::Symlink(target.clone()), String::new()),
        };
        let owner = self.keep_owner.then_some((entry.uid, entry.gid));
        Ok(Pick { sub, content, mode: entry.mode, owner, digest })
    }

    /// The directory itself (as the destination) and everything under it.
    fn pick_dir(&self, rel: &str, picks: &mut Vec<Pick>) -> Result<()> {
        if !rel.is_empty() {
            picks.push(self.pick(rel, String::new())?);
        }
        let prefix = if rel.is_empty() { String::new() } else { format!("{rel}/") };
        for key in self.entries.range(prefix.clone()..).map(|(k, _)| k).take_while(|k| k.starts_with(&prefix))
        {
            picks.push(self.pick(key, key[prefix.len()..].to_string())?);
        }
        Ok(())
    }
}

/// A local tar or gzip-compressed tar, which `ADD` unpacks.
fn is_archive(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 262];
    let Ok(mut file) = std::fs::File::open(path) else { return false };
    let n = file.read(&mut head).unwrap_or(0);
    (n >= 2 && head[..2] == [0x1f, 0x8b]) || (n >= 262 && &head[257..262] == b"ustar")
}
