//! Running one build: each component is planned by its component type's plugin, built by
//! the builder, and packaged by the same plugin revision (or, when an earlier build had the
//! same inputs, its component package is reused: see `avoid`); when every component finished
//! the app package is published with its tags in one step, otherwise nothing is published.

use std::sync::Arc;

use serde_json::json;
use slipway_builder::inputs::host_architecture;
use slipway_builder::plan::plan_images;
use slipway_builder::{BuildBackend, BuildLog, BuildRequest, SourceSpec};
use slipway_plugins::{PluginTriple, ScriptKind};
use slipway_registry::manifest::{ImageRef, Source};
use slipway_registry::publish::{ComponentInput, PackageComponent, PublishRequest};
use slipway_registry::version::VersionSpec;
use tempfile::TempPath;

use super::model::{BuildState, BuildView, ComponentSpec, PublishedPackage, SourceRequest, allowed_dir};
use super::store::{BuiltComponent, ComponentResult};
use super::{Pipeline, PipelineError};

impl Pipeline {
    pub(super) async fn run_build(&self, id: &str) -> Result<(), PipelineError> {
        let build = self.inner.store.get(id).await?;
        let components = self.inner.store.components(id).await?;
        tracing::info!(app = %build.app, components = components.len(), "build started");

        let build_ref = &build;
        let runs = components.iter().map(|(component, kept)| async move {
            match kept {
                Some(built) => Ok(built.clone()),
                None => self.run_component(build_ref, component).await,
            }
        });
        let results = futures::future::join_all(runs).await;

        let mut finished = Vec::new();
        let mut failures = Vec::new();
        for ((component, _), result) in components.iter().zip(results) {
            match result {
                Ok(built) => {
                    let image = built.images.first();
                    let done = ComponentResult {
                        state: if built.skipped.is_some() {
                            BuildState::Skipped
                        } else {
                            BuildState::Succeeded
                        },
                        reason: built.skipped.as_deref(),
                        plugin: Some(&built.plugin),
                        image: image.map(|i| i.reference.as_str()),
                        digest: image.map(|i| i.digest.as_str()),
                        built: Some(&built),
                    };
                    self.inner.store.finish_component(id, &component.name, done).await?;
                    finished.push((component, built));
                }
                Err(reason) => {
                    let failed = ComponentResult {
                        state: BuildState::Failed,
                        reason: Some(&reason),
                        plugin: None,
                        image: None,
                        digest: None,
                        built: None,
                    };
                    self.inner.store.finish_component(id, &component.name, failed).await?;
                    failures.push(format!("{}: {reason}", component.name));
                }
            }
        }
        if !failures.is_empty() {
            let reason = format!(
                "{} of {} components failed — {}",
                failures.len(),
                components.len(),
                failures.join("; ")
            );
            tracing::warn!(%reason, "build failed; nothing published");
            return self.inner.store.finish(id, BuildState::Failed, Some(&reason), None).await;
        }
        let mut parts = Vec::new();
        for (component, built) in finished {
            match self.package_component(&build.app, component, built).await {
                Ok(part) => parts.push(part),
                Err(e) => {
                    let reason = format!("component {}: {e}", component.name);
                    return self.inner.store.finish(id, BuildState::Failed, Some(&reason), None).await;
                }
            }
        }
        // The publish key keeps a late publish from making a second package, but a replica
        // that lost the build must not publish at all: its new owner does.
        if !self.inner.store.holds(id).await? {
            tracing::warn!(build = %id, "lost the lease of the build before publishing; left to its new owner");
            return Ok(());
        }
        let request = PublishRequest {
            app: build.app.clone(),
            version: VersionSpec::parse(&build.version)?,
            tags: build.tags.clone(),
            creator: build.requested_by.clone(),
            source: source_of(components.iter().map(|(spec, _)| spec)),
            components: parts,
        };
        match self.inner.registry.publish_app_package_once(request, id).await {
            Ok(summary) => {
                let package = PublishedPackage { version: summary.version, digest: summary.digest };
                tracing::info!(version = %package.version, digest = %package.digest, "build published");
                self.inner.store.finish(id, BuildState::Succeeded, None, Some(&package)).await
            }
            // The database went away mid-publish: not the build's fault; it runs again.
            Err(slipway_registry::Error::Database(e)) => Err(PipelineError::Database(e)),
            Err(e) => {
                let reason = format!("publishing the app package failed: {e}");
                self.inner.store.finish(id, BuildState::Failed, Some(&reason), None).await
            }
        }
    }

    /// What the app package holds for a finished component: the reused package as it is, or
    /// a new one from the build's results.
    async fn package_component(
        &self,
        app: &str,
        component: &ComponentSpec,
        built: BuiltComponent,
    ) -> Result<PackageComponent, slipway_registry::Error> {
        if let Some(version) = &built.reused_version {
            let existing = self.inner.registry.component_package(app, &component.name, version).await?;
            return Ok(PackageComponent::Existing(existing));
        }
        Ok(PackageComponent::New(ComponentInput {
            component_type: component.component_type.clone(),
            component: component.name.clone(),
            version: None,
            images: built.images,
            parameters: built.parameters,
            plugin: built.plugin,
            files: Default::default(),
            inputs_digest: built.inputs_digest,
        }))
    }

    /// Builds one component, or reuses what an identical earlier build made; the error is
    /// the reason a person reads.
    async fn run_component(
        &self,
        build: &BuildView,
        component: &ComponentSpec,
    ) -> Result<BuiltComponent, String> {
        let _permit = self.inner.component_slots.acquire().await.map_err(|e| e.to_string())?;
        self.inner
            .store
            .set_component_state(&build.id, &component.name, BuildState::Running)
            .await
            .map_err(|e| e.to_string())?;
        let log = self.inner.logs.open(&build.id, &component.name).await;
        let result = match &component.source {
            SourceRequest::Image { reference, .. } => self.package_prebuilt(component, reference, &log).await,
            _ => self.build_component(build, component, &log).await,
        };
        if let Err(reason) = &result {
            log.line(format!("component failed: {reason}"));
        }
        self.inner.logs.close(&build.id, &component.name).await;
        result
    }

    async fn build_component(
        &self,
        build: &BuildView,
        component: &ComponentSpec,
        log: &BuildLog,
    ) -> Result<BuiltComponent, String> {
        let subject = json!({ "name": component.name, "path": component.path, "params": component.params });
        let (triple, plan) = plan_images(&self.inner.plugins, &component.component_type, &subject)
            .await
            .map_err(|e| e.to_string())?;
        log.line(format!("planned by {triple}"));
        if plan.is_empty() {
            return Err(format!("{triple} planned no image"));
        }
        // The fetched copy of an uploaded source lives until the component's images are built.
        let (root, _fetched) = self.source_root(&component.source).await?;
        let config = &self.inner.config;
        let reference = format!("{}/{}/{}:{}", config.registry, build.app, component.name, build.id);
        let requests = plan
            .iter()
            .map(|step| step.request(root.clone(), &reference).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let inputs = self.component_inputs(component, &triple, &requests).await?;
        if let Some(reused) = self.reusable(build, component, &inputs).await? {
            log.line(format!("{}; nothing built", reused.skipped.as_deref().unwrap_or_default()));
            return Ok(reused);
        }
        log.line(format!("inputs {inputs}: no package has them, building"));
        let mut steps = Vec::new();
        let mut images = Vec::new();
        for (step, request) in plan.iter().zip(requests) {
            let image = self.build_image(build, component, request, log).await?;
            steps.push(json!({ "kind": "image", "name": step.name, "reference": image.reference, "digest": image.digest }));
            images.push(image);
        }
        let parameters = self.package_steps(&triple, subject, steps, &component.params).await?;
        Ok(BuiltComponent {
            images,
            parameters,
            plugin: triple.to_string(),
            inputs_digest: Some(inputs),
            skipped: None,
            reused_version: None,
        })
    }

    /// The component package's parameters: what `package` of the plugin revision that
    /// planned the component makes of the finished steps.
    pub(super) async fn package_steps(
        &self,
        triple: &PluginTriple,
        subject: serde_json::Value,
        steps: Vec<serde_json::Value>,
        params: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let packaged = self
            .inner
            .plugins
            .call(
                ScriptKind::Component,
                &triple.name,
                Some(triple.revision),
                "package",
                vec![subject, json!({ "steps": steps }), json!({})],
            )
            .await
            .map_err(|e| format!("packaging with {triple}: {e}"))?;
        Ok(json!({ "params": params, "package": packaged.result }))
    }

    async fn build_image(
        &self,
        build: &BuildView,
        component: &ComponentSpec,
        mut request: BuildRequest,
        log: &BuildLog,
    ) -> Result<ImageRef, String> {
        request.labels.insert("dev.slipway.app".into(), build.app.clone());
        request.labels.insert("dev.slipway.component".into(), component.name.clone());
        log.line(format!("building {} with the {} backend", request.image, self.inner.backend.name()));
        let outcome = self.inner.backend.build(&request, log).await.map_err(|e| e.to_string())?;
        log.line(format!(
            "pushed {} ({} layers built, {} cached)",
            outcome.digest, outcome.layers_built, outcome.layers_cached
        ));
        Ok(ImageRef {
            reference: request.image,
            digest: outcome.digest,
            architectures: vec![host_architecture().into()],
        })
    }

    async fn source_root(&self, source: &SourceRequest) -> Result<(SourceSpec, Option<TempPath>), String> {
        match source {
            SourceRequest::Dir { path } => {
                allowed_dir(path, &self.inner.config.source_roots).map(|dir| (SourceSpec::Dir(dir), None))
            }
            SourceRequest::Git { url, reference } => {
                Ok((SourceSpec::Git { url: url.clone(), reference: reference.clone() }, None))
            }
            SourceRequest::Upload { id } => {
                let copy = self.inner.sources.fetch(id).await?;
                Ok((SourceSpec::TarGz(copy.to_path_buf()), Some(copy)))
            }
            SourceRequest::Image { reference, .. } => {
                Err(format!("prebuilt image {reference} has no source to build from"))
            }
        }
    }
}

fn source_of<'a>(mut components: impl Iterator<Item = &'a ComponentSpec>) -> Source {
    match components.next().map(|c| &c.source) {
        Some(SourceRequest::Git { url, reference }) => {
            Source { repository: url.clone(), commit: reference.clone() }
        }
        Some(SourceRequest::Dir { path }) => {
            Source { repository: path.display().to_string(), commit: String::new() }
        }
        Some(SourceRequest::Upload { id }) => {
            Source { repository: format!("upload:{id}"), commit: String::new() }
        }
        Some(SourceRequest::Image { repository, commit, .. }) => {
            Source { repository: repository.clone(), commit: commit.clone() }
        }
        None => Source::default(),
    }
}

pub(super) type SharedBackend = Arc<dyn BuildBackend>;
