//! A build's inputs reduced to one digest: the context tree (paths, kinds, modes, file
//! contents, symlink targets, `.dockerignore`), the Dockerfile, build args, target stage,
//! platform and the digests of the base images a registry knows. Two builds with the same
//! inputs digest make the same image, so a pipeline may reuse the first result instead of
//! running the second. Base images a registry cannot resolve (a daemon's local image) count
//! by reference only: their content is not known here.

use std::path::PathBuf;
use std::time::Duration;

use crate::backend::BuildRequest;
use crate::context::{BuildContext, EntryKind};
use crate::digest::{KeyHasher, sha256_file};
use crate::dockerfile::{self, expand::expand_word};
use crate::error::{Error, Result};
use crate::registry::RegistryClient;

/// Bumped when what goes into the digest changes, so old digests never match new ones.
const SCHEME: &str = "slipway-build-inputs/v1";
/// How long one base image lookup may take before the base counts as unknown.
const BASE_LOOKUP: Duration = Duration::from_secs(10);

/// The OCI architecture name of this machine, the platform builds here target.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Where contexts are unpacked and how large they may be, as for a build.
#[derive(Debug, Clone)]
pub struct InputsSettings {
    pub work_dir: PathBuf,
    pub max_context_bytes: u64,
    /// Registries spoken to over plain HTTP (`host:port`), for base image lookups.
    pub insecure_registries: Vec<String>,
}

/// `sha256:<hex>` over everything `request` would read to build its image (its labels and
/// destination excepted: they name the result, they do not shape it).
pub async fn inputs_digest(request: &BuildRequest, settings: &InputsSettings) -> Result<String> {
    let (source, subdir) = (request.source.clone(), request.context_dir.clone());
    let (scratch, max, dockerfile) =
        (settings.work_dir.clone(), settings.max_context_bytes, request.dockerfile.clone());
    let (tree, text) = tokio::task::spawn_blocking(move || -> Result<(String, String)> {
        let ctx = BuildContext::open_at(&source, &subdir, &scratch, max)?;
        Ok((tree_digest(&ctx)?, ctx.read_dockerfile(&dockerfile)?))
    })
    .await
    .map_err(|e| Error::ImageData(format!("inputs task failed: {e}")))??;

    let mut key = KeyHasher::default();
    key.part(SCHEME).part(&tree).part(&request.dockerfile).part(&text);
    for (name, value) in &request.build_args {
        key.part("arg").part(name).part(value);
    }
    key.part("target").part(request.target.as_deref().unwrap_or(""));
    key.part("platform").part(format!("linux/{}", host_architecture()));
    let registry = RegistryClient::new(settings.insecure_registries.clone(), request.credentials.clone());
    for base in base_images(request, &text)? {
        let digest = match tokio::time::timeout(BASE_LOOKUP, registry.manifest_digest(&base)).await {
            Ok(Ok(digest)) => digest,
            Ok(Err(_)) | Err(_) => "unknown".into(),
        };
        key.part("base").part(&base).part(&digest);
    }
    Ok(format!("sha256:{}", key.finish()))
}

/// The images the Dockerfile's stages start from, with build args expanded; `scratch` and
/// earlier stages are not images.
fn base_images(request: &BuildRequest, text: &str) -> Result<Vec<String>> {
    let df = dockerfile::parse(&request.dockerfile, text)?;
    let globals = df
        .global_args
        .iter()
        .filter_map(|(name, default)| {
            let value = request.build_args.get(name).cloned().or_else(|| default.clone())?;
            Some((name.clone(), value))
        })
        .collect();
    let mut bases = Vec::new();
    for (index, stage) in df.stages.iter().enumerate() {
        let base = expand_word(&stage.base, &globals, df.escape).map_err(|message| Error::Expansion {
            file: df.file.clone(),
            line: stage.line,
            message,
        })?;
        let earlier = df.stages[..index].iter().any(|s| s.name.as_deref() == Some(&base.to_lowercase()));
        if base != "scratch" && !earlier && !bases.contains(&base) {
            bases.push(base);
        }
    }
    Ok(bases)
}

/// Digest of the context as a build sees it: what is there, not when or by whom it was
/// written (owners and timestamps are left out, COPY does not keep them).
fn tree_digest(ctx: &BuildContext) -> Result<String> {
    let mut key = KeyHasher::default();
    key.part(&ctx.ignore_digest);
    for (rel, entry) in &ctx.entries {
        key.part(rel).part(format!("{:o}", entry.mode));
        match &entry.kind {
            EntryKind::Dir => key.part("dir"),
            EntryKind::Symlink(target) => key.part("link").part(target.to_string_lossy().as_bytes()),
            EntryKind::File => {
                let path = ctx.path_of(rel);
                key.part("file").part(sha256_file(&path).map_err(Error::io(&path))?)
            }
        };
    }
    Ok(key.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::context::SourceSpec;

    fn settings(dir: &Path) -> InputsSettings {
        InputsSettings {
            work_dir: dir.join("work"),
            max_context_bytes: 1 << 20,
            insecure_registries: Vec::new(),
        }
    }

    #[tokio::test]
    async fn the_digest_follows_content_args_and_dockerfile_not_timestamps() {
        let scratch = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("Dockerfile"), "FROM scratch\nCOPY a.txt /a.txt\n").unwrap();
        std::fs::write(src.path().join("a.txt"), "one").unwrap();
        let settings = settings(scratch.path());
        let mut request = BuildRequest::new(SourceSpec::Dir(src.path().into()), "r/i:t");
        let first = inputs_digest(&request, &settings).await.unwrap();
        assert!(first.starts_with("sha256:"), "{first}");

        // Rewriting the same bytes (new mtime and inode) changes nothing.
        std::fs::remove_file(src.path().join("a.txt")).unwrap();
        std::fs::write(src.path().join("a.txt"), "one").unwrap();
        request.labels.insert("dev.slipway.app".into(), "other".into());
        request.image = "r/other:t".into();
        assert_eq!(inputs_digest(&request, &settings).await.unwrap(), first);

        std::fs::write(src.path().join("a.txt"), "two").unwrap();
        let changed_file = inputs_digest(&request, &settings).await.unwrap();
        assert_ne!(changed_file, first);

        request.build_args.insert("MODE".into(), "fast".into());
        let changed_arg = inputs_digest(&request, &settings).await.unwrap();
        assert_ne!(changed_arg, changed_file);

        std::fs::write(src.path().join("Dockerfile"), "FROM scratch\nCOPY a.txt /b.txt\n").unwrap();
        assert_ne!(inputs_digest(&request, &settings).await.unwrap(), changed_arg);
    }

    #[test]
    fn bases_are_expanded_and_stages_are_not_images() {
        let mut request = BuildRequest::new(SourceSpec::Dir("/s".into()), "r/i:t");
        request.build_args.insert("BASE".into(), "registry.test/busybox:1".into());
        let text = "ARG BASE=alpine\nFROM ${BASE} AS build\nRUN true\nFROM build\nFROM scratch\nCOPY --from=build / /\n";
        assert_eq!(base_images(&request, text).unwrap(), ["registry.test/busybox:1"]);
    }
}
