//! The daemonless `native` backend: plans the Dockerfile's stages, executes each step against
//! an in-memory image config and a list of layers (materialising a root file system only when
//! a step needs to look at one), caches layers by content, and assembles a reproducible OCI
//! image in the blob store, then pushes it.

mod copy;
mod digests;
mod run;
mod stage;
mod users;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;

use crate::backend::{BuildBackend, BuildFuture, BuildOutcome, BuildRequest};
use crate::context::BuildContext;
use crate::dockerfile::{self, Dockerfile, Op};
use crate::error::{Error, Result};
use crate::image::{CONFIG_MEDIA_TYPE, Descriptor, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, Manifest, rfc3339};
use crate::layer_cache::LayerCache;
use crate::log::BuildLog;
use crate::registry::{ImageToPush, RegistryClient};
use crate::store::BlobStore;
use digests::ContentDigests;
use stage::StageState;

/// Settings of the native backend.
#[derive(Debug, Clone)]
pub struct NativeSettings {
    /// Scratch space for unpacked sources and root file systems.
    pub work_dir: PathBuf,
    pub max_context_bytes: u64,
    /// Registries spoken to over plain HTTP (`host:port`).
    pub insecure_registries: Vec<String>,
}

pub struct NativeBackend {
    store: BlobStore,
    cache: LayerCache,
    digests: ContentDigests,
    settings: NativeSettings,
}

/// The result of building without pushing: the image in the blob store.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest_digest: String,
    pub image: ImageToPush,
    pub layers_built: usize,
    pub layers_cached: usize,
}

impl NativeBackend {
    pub fn new(store: Arc<dyn ObjectStore>, settings: NativeSettings) -> Self {
        let store = BlobStore::new(store);
        NativeBackend {
            cache: LayerCache::new(store.clone()),
            store,
            digests: ContentDigests::default(),
            settings,
        }
    }

    fn registry(&self, request: &BuildRequest) -> RegistryClient {
        RegistryClient::new(self.settings.insecure_registries.clone(), request.credentials.clone())
    }

    /// Builds the image into the blob store without pushing it.
    pub async fn build_local(&self, request: &BuildRequest, log: &BuildLog) -> Result<BuiltImage> {
        let settings = &self.settings;
        let (source, subdir) = (request.source.clone(), request.context_dir.clone());
        let (scratch, max) = (settings.work_dir.clone(), settings.max_context_bytes);
        let ctx = tokio::task::spawn_blocking(move || BuildContext::open_at(&source, &subdir, &scratch, max))
            .await
            .map_err(|e| Error::ImageData(format!("context task failed: {e}")))??;
        let text = ctx.read_dockerfile(&request.dockerfile)?;
        let df = dockerfile::parse(&request.dockerfile, &text)?;
        let epoch = request.source_date_epoch.or(ctx.commit_time).unwrap_or(0);
        let target = target_index(&df, request.target.as_deref())?;
        let needed = needed_stages(&df, target);
        std::fs::create_dir_all(&settings.work_dir).map_err(Error::io(&settings.work_dir))?;
        let mut build = Build {
            backend: self,
            request,
            log,
            registry: self.registry(request),
            ctx,
            df,
            epoch,
            file_digests: None,
            stages: Vec::new(),
            images: Vec::new(),
            layers_built: 0,
            layers_cached: 0,
        };
        for index in 0..=target {
            let state = if needed.contains(&index) { Some(build.run_stage(index).await?) } else { None };
            build.stages.push(state);
        }
        let final_stage = build.stages.pop().flatten().expect("the target stage was built");
        let image = self.assemble(final_stage, &build).await?;
        let manifest_digest = crate::digest::sha256_digest(&image.manifest);
        log.line(format!(
            "image {manifest_digest} ({} layers built, {} cached)",
            build.layers_built, build.layers_cached
        ));
        Ok(BuiltImage {
            manifest_digest,
            image,
            layers_built: build.layers_built,
            layers_cached: build.layers_cached,
        })
    }

    async fn assemble(&self, state: StageState, build: &Build<'_>) -> Result<ImageToPush> {
        let mut config = state.config;
        let created = rfc3339(build.epoch);
        if !build.request.labels.is_empty() {
            let labels = config.config.labels.get_or_insert_with(BTreeMap::new);
            labels.extend(build.request.labels.clone());
        }
        config.created = Some(created.clone());
        for entry in &mut config.history {
            entry.created = Some(created.clone());
        }
        config.rootfs.kind = "layers".into();
        config.rootfs.diff_ids = state.layers.iter().map(|l| l.diff_id.clone()).collect();
        let config_bytes = serde_json::to_vec(&config).map_err(|e| Error::ImageData(e.to_string()))?;
        let config_desc = Descriptor {
            media_type: CONFIG_MEDIA_TYPE.into(),
            digest: crate::digest::sha256_digest(&config_bytes),
            size: config_bytes.len() as u64,
        };
        self.store.put_blob(&config_desc.digest, config_bytes.into()).await?;
        let layers: Vec<Descriptor> = state
            .layers
            .iter()
            .map(|l| Descriptor {
                media_type: LAYER_MEDIA_TYPE.into(),
                digest: l.digest.clone(),
                size: l.size,
            })
            .collect();
        let manifest = Manifest {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE.into(),
            config: config_desc.clone(),
            layers: layers.clone(),
        };
        let manifest = serde_json::to_vec(&manifest).map_err(|e| Error::ImageData(e.to_string()))?;
        Ok(ImageToPush { manifest, config: config_desc, layers })
    }
}

impl BuildBackend for NativeBackend {
    fn name(&self) -> &'static str {
        "native"
    }

    fn build<'a>(&'a self, request: &'a BuildRequest, log: &'a BuildLog) -> BuildFuture<'a> {
        Box::pin(async move {
            let built = self.build_local(request, log).await?;
            let mut outcome = BuildOutcome {
                image: request.image.clone(),
                digest: built.manifest_digest.clone(),
                layers_built: built.layers_built,
                layers_cached: built.layers_cached,
                push: None,
            };
            if request.push {
                log.line(format!("pushing {}", request.image));
                let report = self.registry(request).push(&request.image, &built.image, &self.store).await?;
                log.line(format!(
                    "pushed {} ({} blobs, {} bytes uploaded; {} already present)",
                    report.manifest_digest,
                    report.uploaded_blobs,
                    report.uploaded_bytes,
                    report.skipped_blobs
                ));
                outcome.digest = report.manifest_digest.clone();
                outcome.push = Some(report);
            }
            Ok(outcome)
        })
    }
}

/// State shared by the stages of one build.
struct Build<'a> {
    backend: &'a NativeBackend,
    request: &'a BuildRequest,
    log: &'a BuildLog,
    registry: RegistryClient,
    ctx: BuildContext,
    df: Dockerfile,
    epoch: i64,
    /// Context file digests, computed the first time a step reads the context.
    file_digests: Option<BTreeMap<String, String>>,
    stages: Vec<Option<StageState>>,
    /// Images named by `COPY --from`, unpacked for the rest of the build.
    images: Vec<StageState>,
    layers_built: usize,
    layers_cached: usize,
}

impl Build<'_> {
    fn stage_index(&self, name: &str) -> Option<usize> {
        stage_by_name(&self.df, name, self.stages.len())
    }

    async fn context_digests(&mut self) -> Result<&BTreeMap<String, String>> {
        if self.file_digests.is_none() {
            let digests = self.backend.digests.of_context(&self.ctx, &self.backend.store).await?;
            self.file_digests = Some(digests);
        }
        Ok(self.file_digests.as_ref().expect("just filled"))
    }
}

/// A stage named `name` (or numbered) among the first `before` stages.
fn stage_by_name(df: &Dockerfile, name: &str, before: usize) -> Option<usize> {
    let lower = name.to_lowercase();
    df.stages[..before.min(df.stages.len())]
        .iter()
        .position(|s| s.name.as_deref() == Some(&lower))
        .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
}

fn target_index(df: &Dockerfile, target: Option<&str>) -> Result<usize> {
    match target {
        None => Ok(df.stages.len() - 1),
        Some(name) => {
            stage_by_name(df, name, df.stages.len()).ok_or_else(|| Error::UnknownTarget(name.into()))
        }
    }
}

/// The stages the target needs (itself, its bases, its `COPY --from` sources), transitively.
fn needed_stages(df: &Dockerfile, target: usize) -> Vec<usize> {
    let mut needed = vec![target];
    let mut i = 0;
    while i < needed.len() {
        let index = needed[i];
        let stage = &df.stages[index];
        let refs =
            std::iter::once(stage.base.as_str()).chain(stage.steps.iter().filter_map(|s| match &s.op {
                Op::Copy { flags, .. } => flags.from.as_deref(),
                _ => None,
            }));
        for name in refs {
            if let Some(dep) = stage_by_name(df, name, index)
                && !needed.contains(&dep)
            {
                needed.push(dep);
            }
        }
        i += 1;
    }
    needed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_needed_stages_are_built() {
        let df = dockerfile::parse(
            "Dockerfile",
            "FROM scratch AS a\nFROM scratch AS unused\nFROM a AS b\nFROM scratch\nCOPY --from=b /x /x\n",
        )
        .unwrap();
        let mut needed = needed_stages(&df, 3);
        needed.sort();
        assert_eq!(needed, [0, 2, 3]);
        assert_eq!(target_index(&df, Some("B")).unwrap(), 2);
        assert!(matches!(target_index(&df, Some("nope")), Err(Error::UnknownTarget(_))));
    }
}
