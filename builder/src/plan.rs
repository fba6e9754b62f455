//! A component's build plan, asked of its `component/<kind>` plugin (`plan(component)`, e.g.
//! the built-in `component/microservice`): which images to build, from which context
//! directory and Dockerfile, with which build args, target and backend. The builder executes
//! plans; it never decides them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use slipway_plugins::{PluginHost, PluginTriple, ScriptKind};

use crate::backend::BuildRequest;
use crate::context::{SourceSpec, relative_inside};
use crate::error::{Error, Result};

/// One `image` step of a plan.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ImageStep {
    pub name: String,
    /// The context directory, relative to the component's source.
    #[serde(default)]
    pub context: String,
    /// The Dockerfile, relative to the source (inside `context`).
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    #[serde(default)]
    pub target: Option<String>,
    /// `native` or `docker`; the caller's default when absent.
    #[serde(default)]
    pub backend: Option<String>,
}

fn default_dockerfile() -> String {
    "Dockerfile".into()
}

/// Calls `plan(component)` of `component/<kind>` and returns its image steps, with the
/// script revision that planned them (its `package` must be asked of the same revision).
pub async fn plan_images(
    host: &PluginHost,
    kind: &str,
    component: &Value,
) -> Result<(PluginTriple, Vec<ImageStep>)> {
    let name = component["name"].as_str().unwrap_or_default().to_string();
    let bad = |reason: String| Error::Plan { component: name.clone(), reason };
    let output = host
        .call(ScriptKind::Component, kind, None, "plan", vec![component.clone()])
        .await
        .map_err(|e| bad(e.to_string()))?;
    let steps = output.result["steps"].as_array().cloned().unwrap_or_default();
    let images = steps
        .into_iter()
        .filter(|s| s["kind"] == "image")
        .map(|s| serde_json::from_value(s).map_err(|e| bad(format!("image step: {e}"))))
        .collect::<Result<_>>()?;
    Ok((output.triple, images))
}

impl ImageStep {
    /// The build request for this step over the component's source, pushed to `image`.
    pub fn request(&self, source: SourceSpec, image: &str) -> Result<BuildRequest> {
        let outside = |what: &str| Error::Plan {
            component: self.name.clone(),
            reason: format!("the {what} must stay inside the source and the Dockerfile inside the context"),
        };
        let context = relative_inside(&self.context).ok_or_else(|| outside("context"))?;
        let dockerfile = relative_inside(&self.dockerfile).ok_or_else(|| outside("Dockerfile"))?;
        let in_context = if context.is_empty() {
            dockerfile
        } else {
            dockerfile.strip_prefix(&format!("{context}/")).ok_or_else(|| outside("Dockerfile"))?.to_string()
        };
        let mut request = BuildRequest::new(source, image);
        request.context_dir = context;
        request.dockerfile = in_context;
        request.build_args = self.build_args.clone();
        request.target = self.target.clone();
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(context: &str, dockerfile: &str) -> ImageStep {
        serde_json::from_value(
            serde_json::json!({ "name": "web", "context": context, "dockerfile": dockerfile }),
        )
        .unwrap()
    }

    #[test]
    fn dockerfile_paths_become_context_relative() {
        let request = step("services/web", "services/web/build/Dockerfile")
            .request(SourceSpec::Dir("/s".into()), "r/i:t")
            .unwrap();
        assert_eq!(
            (request.context_dir.as_str(), request.dockerfile.as_str()),
            ("services/web", "build/Dockerfile")
        );
        assert!(
            step("services/web", "other/Dockerfile").request(SourceSpec::Dir("/s".into()), "r/i:t").is_err()
        );
        assert!(step("../up", "../up/Dockerfile").request(SourceSpec::Dir("/s".into()), "r/i:t").is_err());
    }
}
