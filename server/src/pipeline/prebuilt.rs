//! Prebuilt images: an external CI built and pushed a component's image, and the pipeline
//! packages it without building. When the build is accepted each image is looked up in its
//! registry with `oci-client` and its reference pinned to the digest found, so the package
//! names exactly what was verified even if the tag moves later; a missing image refuses the
//! whole request and stores nothing. When the build runs the pinned image is looked up again
//! (it may have been deleted since) and packaged by the component type's plugin, and the
//! component ends `skipped` with the reason that nothing was built.

use serde_json::json;
use slipway_builder::BuildLog;
use slipway_builder::plan::plan_images;
use slipway_builder::registry::{ResolvedImage, pin};
use slipway_registry::manifest::ImageRef;

use super::model::{BuildSubmission, ComponentSpec, SourceRequest};
use super::store::BuiltComponent;
use super::{Pipeline, PipelineError};

impl Pipeline {
    /// Looks up every prebuilt image of `submission` in its registry (concurrently) and
    /// rewrites its reference to `repo@sha256:…`. Every missing image is named at once.
    pub(super) async fn pin_images(&self, submission: &mut BuildSubmission) -> Result<(), PipelineError> {
        let lookups = submission.components.iter_mut().filter_map(|component| match &mut component.source {
            SourceRequest::Image { reference, .. } => Some(async move {
                let found = self.resolve_image(reference).await?;
                Ok::<_, PipelineError>(match found {
                    Some(image) => {
                        *reference = pin(reference, &image.digest)
                            .map_err(|problem| PipelineError::InvalidRequest { problems: vec![problem] })?;
                        None
                    }
                    None => Some(reference.clone()),
                })
            }),
            _ => None,
        });
        let missing: Vec<String> =
            futures::future::try_join_all(lookups).await?.into_iter().flatten().collect();
        if missing.is_empty() { Ok(()) } else { Err(PipelineError::ImageNotFound { references: missing }) }
    }

    async fn resolve_image(&self, reference: &str) -> Result<Option<ResolvedImage>, PipelineError> {
        self.inner.images.resolve(reference).await.map_err(|e| PipelineError::ImageRegistry {
            reference: reference.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Packages a component from its pinned prebuilt image; the error is the reason a
    /// person reads.
    pub(super) async fn package_prebuilt(
        &self,
        component: &ComponentSpec,
        reference: &str,
        log: &BuildLog,
    ) -> Result<BuiltComponent, String> {
        let image = match self.resolve_image(reference).await {
            Ok(Some(image)) => image,
            Ok(None) => return Err(format!("prebuilt image {reference} is no longer in its registry")),
            Err(e) => return Err(e.to_string()),
        };
        log.line(format!("prebuilt image {reference} found ({})", image.architectures.join(", ")));
        let subject = json!({ "name": component.name, "path": component.path, "params": component.params });
        let (triple, plan) = plan_images(&self.inner.plugins, &component.component_type, &subject)
            .await
            .map_err(|e| e.to_string())?;
        let [step] = plan.as_slice() else {
            return Err(format!("{triple} plans {} images; a prebuilt component supplies one", plan.len()));
        };
        let steps = vec![
            json!({ "kind": "image", "name": step.name, "reference": reference, "digest": image.digest }),
        ];
        let parameters = self.package_steps(&triple, subject, steps, &component.params).await?;
        let reason = format!("prebuilt image {reference}; nothing built");
        log.line(format!("packaged by {triple}; {reason}"));
        Ok(BuiltComponent {
            images: vec![ImageRef {
                reference: reference.to_owned(),
                digest: image.digest,
                architectures: image.architectures,
            }],
            parameters,
            plugin: triple.to_string(),
            inputs_digest: None,
            skipped: Some(reason),
            reused_version: None,
        })
    }
}
