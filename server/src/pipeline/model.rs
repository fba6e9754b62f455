//! What a build request says, how it is checked before it is accepted, and what a build
//! looks like to a caller.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use slipway_registry::names;

use super::PipelineError;

/// `POST /v1/apps/{app}/builds`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildSubmission {
    /// `auto` (highest version, patch bumped) or an exact semantic version.
    #[serde(default = "auto")]
    pub version: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub components: Vec<ComponentSpec>,
}

fn auto() -> String {
    "auto".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    pub name: String,
    /// The component type: the `component/<type>` plugin plans and packages it.
    #[serde(rename = "type")]
    pub component_type: String,
    pub source: SourceRequest,
    /// The component's directory inside the source.
    #[serde(default = "dot")]
    pub path: String,
    /// Handed to the component type's plugin as `component.params`.
    #[serde(default)]
    pub params: Value,
}

fn dot() -> String {
    ".".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceRequest {
    /// A directory on the server, inside one of the configured source roots.
    Dir {
        #[schema(value_type = String)]
        path: PathBuf,
    },
    /// A git repository at a branch, tag or commit.
    Git { url: String, reference: String },
    /// A `.tar.gz` sent before with `POST /v1/sources`.
    Upload { id: String },
    /// An image an external CI already built and pushed: the component is packaged from it
    /// without building. It is looked up in its registry when the build is accepted (a
    /// missing image refuses the request) and stored pinned, `repo@sha256:…`.
    Image {
        reference: String,
        /// The repository it was built from, recorded as the package's source.
        #[serde(default)]
        repository: String,
        /// The commit it was built from.
        #[serde(default)]
        commit: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BuildState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Skipped,
}

impl BuildState {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Queued => "queued",
            BuildState::Running => "running",
            BuildState::Succeeded => "succeeded",
            BuildState::Failed => "failed",
            BuildState::Cancelled => "cancelled",
            BuildState::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<BuildState> {
        [Self::Queued, Self::Running, Self::Succeeded, Self::Failed, Self::Cancelled, Self::Skipped]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A build as callers see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BuildView {
    pub id: String,
    pub app: String,
    pub version: String,
    pub tags: Vec<String>,
    pub state: BuildState,
    pub reason: Option<String>,
    pub requested_by: String,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// The published app package, once the build succeeded.
    pub package: Option<PublishedPackage>,
    /// The replica holding the build's lease while it runs.
    pub replica: Option<String>,
    /// Times this run was claimed: 2 after it was interrupted (a replica stopped) and run
    /// again; a retry starts again from 0.
    pub attempts: i64,
    pub components: Vec<ComponentView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PublishedPackage {
    pub version: String,
    pub digest: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ComponentView {
    pub name: String,
    #[serde(rename = "type")]
    pub component_type: String,
    pub state: BuildState,
    pub reason: Option<String>,
    /// The plugin revision that planned and packaged it.
    pub plugin: Option<String>,
    pub image: Option<String>,
    pub digest: Option<String>,
}

impl BuildSubmission {
    /// Checks everything that can be checked before anything is stored, and reports every
    /// problem at once so a person fixes the request in one go.
    pub fn validate(&self, app: &str, source_roots: &[PathBuf]) -> Result<(), PipelineError> {
        let mut problems = Vec::new();
        let mut note = |what: String| problems.push(what);
        if let Err(e) = names::check_app(app) {
            note(e.to_string());
        }
        if let Err(e) = slipway_registry::version::VersionSpec::parse(&self.version) {
            note(e.to_string());
        }
        for tag in &self.tags {
            if let Err(e) = names::check_tag(tag) {
                note(e.to_string());
            }
        }
        if self.components.is_empty() {
            note("a build needs at least one component".into());
        }
        let mut seen = HashSet::new();
        for component in &self.components {
            let name = &component.name;
            if let Err(e) = names::check_component(name) {
                note(e.to_string());
            }
            if !seen.insert(name.as_str()) {
                note(format!("component `{name}` is listed twice"));
            }
            if component.path.split('/').any(|part| part == "..") || component.path.starts_with('/') {
                note(format!("component `{name}`: path `{}` must stay inside the source", component.path));
            }
            let source = match &component.source {
                SourceRequest::Dir { path } => allowed_dir(path, source_roots).map(|_| ()),
                SourceRequest::Upload { id } => super::upload::check_id(id),
                SourceRequest::Git { .. } => Ok(()),
                SourceRequest::Image { reference, .. } => {
                    slipway_builder::registry::check_reference(reference)
                }
            };
            if let Err(e) = source {
                note(format!("component `{name}`: {e}"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(PipelineError::InvalidRequest { problems }) }
    }
}

/// A local source directory must exist and lie inside a configured source root, so a build
/// request cannot read arbitrary files of the server.
pub fn allowed_dir(path: &Path, roots: &[PathBuf]) -> Result<PathBuf, String> {
    let real = path.canonicalize().map_err(|e| format!("source directory {}: {e}", path.display()))?;
    if !real.is_dir() {
        return Err(format!("source {} is not a directory", path.display()));
    }
    let inside = roots.iter().filter_map(|root| root.canonicalize().ok()).any(|root| real.starts_with(root));
    if inside {
        Ok(real)
    } else if roots.is_empty() {
        Err("local directory sources are disabled (configure pipeline.source_roots)".into())
    } else {
        Err(format!("source directory {} is outside the configured source roots", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(components: Value) -> BuildSubmission {
        serde_json::from_value(serde_json::json!({ "tags": ["stable"], "components": components })).unwrap()
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let s = submission(serde_json::json!([
            {"name": "web", "type": "microservice", "source": {"dir": {"path": outside.path()}}},
            {"name": "web", "type": "microservice", "source": {"dir": {"path": root.path()}}, "path": "../etc"},
        ]));
        let Err(PipelineError::InvalidRequest { problems }) = s.validate("Bad App!", &[root.path().into()])
        else {
            panic!("expected a refusal");
        };
        let text = problems.join("\n");
        assert!(text.contains("outside the configured source roots"), "{text}");
        assert!(text.contains("listed twice"), "{text}");
        assert!(text.contains("must stay inside the source"), "{text}");
        assert!(problems.len() >= 4, "{text}");
    }

    #[test]
    fn a_sound_request_passes() {
        let root = tempfile::tempdir().unwrap();
        let s = submission(serde_json::json!([
            {"name": "web", "type": "microservice", "source": {"dir": {"path": root.path()}}, "path": "web"},
            {"name": "api", "type": "microservice", "source": {"git": {"url": "file:///srv/repo", "reference": "main"}}},
        ]));
        s.validate("shop", &[root.path().into()]).unwrap();
        assert!(s.validate("shop", &[]).is_err(), "no roots: local directories are refused");
    }
}
