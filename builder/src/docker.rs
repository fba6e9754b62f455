//! The `docker` backend: sends the (`.dockerignore`-filtered) context to a Docker daemon
//! through `bollard`, streams the daemon's output into the build log, then pushes with the
//! daemon and records the digest the registry reported.

use std::path::PathBuf;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptions, BuilderVersion, PushImageOptions};
use futures::StreamExt;

use crate::backend::{BuildBackend, BuildFuture, BuildOutcome, BuildRequest};
use crate::context::{BuildContext, EntryKind};
use crate::error::{Error, Result};
use crate::layer::{Content, LayerEntry, write_tar};
use crate::log::BuildLog;
use crate::registry::PushReport;

/// Settings of the docker backend.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// Scratch space for unpacked archive and git sources.
    pub work_dir: PathBuf,
    pub max_context_bytes: u64,
}

pub struct DockerBackend {
    docker: Docker,
    settings: DockerSettings,
}

impl DockerBackend {
    /// Connects to the local daemon (`DOCKER_HOST` or `/var/run/docker.sock`).
    pub fn connect(settings: DockerSettings) -> Result<Self> {
        let docker = Docker::connect_with_local_defaults().map_err(|e| Error::Docker(e.to_string()))?;
        Ok(DockerBackend { docker, settings })
    }

    async fn run(&self, request: &BuildRequest, log: &BuildLog) -> Result<BuildOutcome> {
        let (source, subdir) = (request.source.clone(), request.context_dir.clone());
        let (scratch, max) = (self.settings.work_dir.clone(), self.settings.max_context_bytes);
        let body = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let ctx = BuildContext::open_at(&source, &subdir, &scratch, max)?;
            context_tar(&ctx)
        })
        .await
        .map_err(|e| Error::ImageData(format!("context task failed: {e}")))??;
        let options = BuildImageOptions {
            dockerfile: request.dockerfile.clone(),
            t: Some(request.image.clone()),
            buildargs: Some(request.build_args.clone().into_iter().collect()),
            labels: Some(request.labels.clone().into_iter().collect()),
            target: request.target.clone().unwrap_or_default(),
            rm: true,
            forcerm: true,
            version: BuilderVersion::BuilderV1,
            ..Default::default()
        };
        let mut stream = self.docker.build_image(options, None, Some(bollard::body_full(body.into())));
        let mut image_id = String::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| Error::Docker(e.to_string()))?;
            if let Some(detail) = info.error_detail {
                let message = detail.message.unwrap_or_default();
                log.line(format!("error: {message}"));
                return Err(Error::Docker(message));
            }
            if let Some(text) = info.stream {
                text.lines().filter(|l| !l.trim().is_empty()).for_each(|l| log.line(l.to_string()));
            }
            if let Some(id) = info.aux {
                image_id = id.id.unwrap_or_default();
            }
        }
        let mut outcome =
            BuildOutcome { image: request.image.clone(), digest: image_id, ..Default::default() };
        if request.push {
            let report = self.push(request, log).await?;
            outcome.digest = report.manifest_digest.clone();
            outcome.push = Some(report);
        }
        Ok(outcome)
    }

    async fn push(&self, request: &BuildRequest, log: &BuildLog) -> Result<PushReport> {
        let (name, tag) = split_tag(&request.image);
        let registry = name.split('/').next().unwrap_or_default().to_string();
        let credentials = request.credentials.as_ref().map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(registry.clone()),
            ..Default::default()
        });
        let options = PushImageOptions { tag: Some(tag.to_string()), ..Default::default() };
        let mut stream = self.docker.push_image(name, Some(options), credentials);
        let mut report = PushReport::default();
        while let Some(item) = stream.next().await {
            let info =
                item.map_err(|e| Error::Registry { registry: registry.clone(), reason: e.to_string() })?;
            if let Some(detail) = info.error_detail {
                let reason = detail.message.unwrap_or_default();
                log.line(format!("push error: {reason}"));
                return Err(Error::Registry { registry, reason });
            }
            let Some(status) = info.status else { continue };
            match status.as_str() {
                "Pushed" => report.uploaded_blobs += 1,
                "Layer already exists" => report.skipped_blobs += 1,
                "Pushing" | "Preparing" | "Waiting" => continue,
                _ => log.line(status.clone()),
            }
            if let Some(digest) = status.split("digest: ").nth(1).and_then(|r| r.split_whitespace().next()) {
                report.manifest_digest = digest.to_string();
            }
        }
        if report.manifest_digest.is_empty() {
            return Err(Error::Registry {
                registry,
                reason: "the daemon reported no manifest digest".into(),
            });
        }
        Ok(report)
    }
}

impl BuildBackend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn build<'a>(&'a self, request: &'a BuildRequest, log: &'a BuildLog) -> BuildFuture<'a> {
        Box::pin(self.run(request, log))
    }
}

/// `repo:tag` → (`repo`, `tag`); the tag defaults to `latest`.
fn split_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

/// The context as the tar the Docker API expects: ignored paths left out, the Dockerfile
/// and `.dockerignore` always in.
fn context_tar(ctx: &BuildContext) -> Result<Vec<u8>> {
    let entries: Vec<LayerEntry> = ctx
        .entries
        .iter()
        .map(|(rel, entry)| LayerEntry {
            path: rel.clone(),
            content: match &entry.kind {
                EntryKind::File => Content::File(ctx.path_of(rel)),
                EntryKind::Dir => Content::Dir,
                EntryKind::Symlink(target) => Content::Symlink(target.clone()),
            },
            mode: entry.mode,
            uid: 0,
            gid: 0,
        })
        .collect();
    let mut tar = write_tar(&entries, 0)?;
    // Docker reads the Dockerfile from the tar even when `.dockerignore` lists it.
    let extra: Vec<LayerEntry> = ["Dockerfile", ".dockerignore"]
        .iter()
        .filter(|name| !ctx.entries.contains_key(**name) && ctx.path_of(name).is_file())
        .map(|name| LayerEntry {
            path: name.to_string(),
            content: Content::File(ctx.path_of(name)),
            mode: 0o644,
            uid: 0,
            gid: 0,
        })
        .collect();
    if !extra.is_empty() {
        tar.truncate(tar.len().saturating_sub(1024));
        tar.extend(write_tar(&extra, 0)?);
    }
    Ok(tar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(split_tag("127.0.0.1:5000/a/b:v1"), ("127.0.0.1:5000/a/b", "v1"));
        assert_eq!(split_tag("127.0.0.1:5000/a/b"), ("127.0.0.1:5000/a/b", "latest"));
    }
}
