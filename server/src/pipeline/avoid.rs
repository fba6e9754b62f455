//! Build avoidance: a component whose inputs match a component package already published
//! for the same app and component is not built again. The inputs are the plugin triple that
//! planned it, its type and parameters, the backend, and for each image its build inputs
//! (source tree, Dockerfile, build args, target, platform, base image digests; see
//! [`slipway_builder::inputs`]). The reused package goes into the new app package byte for
//! byte, and only while the registry still serves every image it names.

use slipway_builder::BuildRequest;
use slipway_builder::digest::KeyHasher;
use slipway_builder::inputs::inputs_digest;
use slipway_builder::registry::RegistryClient;
use slipway_plugins::PluginTriple;

use super::Pipeline;
use super::model::{BuildView, ComponentSpec};
use super::store::BuiltComponent;

/// Bumped when what goes into a component's inputs digest changes.
const SCHEME: &str = "slipway-component-inputs/v1";

impl Pipeline {
    /// The digest of everything building `component` with `requests` would read.
    pub(super) async fn component_inputs(
        &self,
        component: &ComponentSpec,
        triple: &PluginTriple,
        requests: &[BuildRequest],
    ) -> Result<String, String> {
        let mut key = KeyHasher::default();
        key.part(SCHEME)
            .part(triple.to_string())
            .part(&component.component_type)
            .part(component.params.to_string())
            .part(self.inner.backend.name());
        for request in requests {
            let image = inputs_digest(request, &self.inner.inputs).await.map_err(|e| e.to_string())?;
            key.part(image);
        }
        Ok(format!("sha256:{}", key.finish()))
    }

    /// The component package built from `inputs` earlier, as this build's result, when the
    /// registry still serves its images; `None` means build.
    pub(super) async fn reusable(
        &self,
        build: &BuildView,
        component: &ComponentSpec,
        inputs: &str,
    ) -> Result<Option<BuiltComponent>, String> {
        let found = self
            .inner
            .registry
            .component_by_inputs(&build.app, &component.name, inputs)
            .await
            .map_err(|e| format!("looking up a package with the same inputs: {e}"))?;
        let Some(found) = found else { return Ok(None) };
        let registry = RegistryClient::new(self.inner.config.insecure_registries.clone(), None);
        for image in &found.images {
            if !registry.has_manifest(&image.reference, &image.digest).await.unwrap_or(false) {
                tracing::info!(image = %image.reference, "the registry no longer serves a reusable image; building");
                return Ok(None);
            }
        }
        let reason = format!(
            "reused component package {}/{} {} (same inputs {inputs})",
            found.app, found.component, found.version
        );
        Ok(Some(BuiltComponent {
            images: found.images,
            parameters: found.parameters,
            plugin: found.plugin,
            inputs_digest: Some(inputs.to_owned()),
            skipped: Some(reason),
            reused_version: Some(found.version),
        }))
    }
}
