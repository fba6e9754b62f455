//! The app build file a source carries (`slipway.app.toml` or `slipway.app.yaml`): the app,
//! its components with their types, contexts, Dockerfiles and build arguments, and the tags a
//! build publishes by default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::exit::{CliError, CliResult};

pub const FILE_NAMES: [&str; 3] = ["slipway.app.toml", "slipway.app.yaml", "slipway.app.yml"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppBuildFile {
    pub app: String,
    /// `auto` (the default) or an exact semantic version.
    #[serde(default)]
    pub version: Option<String>,
    /// Tags every build of this file publishes (`--tag` adds to them).
    #[serde(default)]
    pub tags: Vec<String>,
    pub components: Vec<ComponentEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub component_type: String,
    /// The component's directory inside the source: its build context.
    #[serde(default = "dot")]
    pub path: String,
    /// Relative to `path`; `Dockerfile` when absent.
    #[serde(default)]
    pub dockerfile: Option<String>,
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    #[serde(default)]
    pub target: Option<String>,
    /// Further parameters for the component type's plugin (e.g. `port`).
    #[serde(default)]
    pub params: Map<String, Value>,
}

fn dot() -> String {
    ".".into()
}

impl AppBuildFile {
    /// Finds and reads the build file at the top of `dir`.
    pub fn find(dir: &Path) -> CliResult<(PathBuf, AppBuildFile)> {
        if !dir.is_dir() {
            return Err(CliError::Usage(format!("{} is not a directory", dir.display())));
        }
        let Some(path) = FILE_NAMES.iter().map(|name| dir.join(name)).find(|p| p.is_file()) else {
            return Err(CliError::Usage(format!(
                "no build file in {}: expected {} or {} describing the app and its components \
                 (see examples/hello/slipway.app.toml)",
                dir.display(),
                FILE_NAMES[0],
                FILE_NAMES[1]
            )));
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
        let parsed = Self::parse(&text, path.extension().is_some_and(|e| e == "toml"))
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        Ok((path, parsed))
    }

    pub fn parse(text: &str, toml: bool) -> Result<AppBuildFile, String> {
        let file: AppBuildFile = if toml {
            toml::from_str(text).map_err(|e| e.to_string())?
        } else {
            serde_norway::from_str(text).map_err(|e| e.to_string())?
        };
        if file.components.is_empty() {
            return Err("the build file lists no components".into());
        }
        Ok(file)
    }

    /// The components of a build request, each reading from `source`.
    pub fn components(&self, source: &Value) -> Vec<Value> {
        self.components
            .iter()
            .map(|c| {
                let mut params = c.params.clone();
                if let Some(dockerfile) = &c.dockerfile {
                    params.insert("dockerfile".into(), json!(dockerfile));
                }
                if !c.build_args.is_empty() {
                    params.insert("build_args".into(), json!(c.build_args));
                }
                if let Some(target) = &c.target {
                    params.insert("target".into(), json!(target));
                }
                json!({ "name": c.name, "type": c.component_type, "source": source, "path": c.path, "params": params })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
app = "hello"
tags = ["stable"]

[[components]]
name = "web"
type = "microservice"
path = "web"
build_args = { GREETING = "hi" }
params = { port = 8080 }

[[components]]
name = "migrate"
type = "job"
path = "jobs/migrate"
dockerfile = "build/Dockerfile"
"#;

    #[test]
    fn toml_and_yaml_say_the_same() {
        let from_toml = AppBuildFile::parse(TOML, true).unwrap();
        let yaml = "app: hello\ntags: [stable]\ncomponents:\n  - name: web\n    type: microservice\n    path: web\n    build_args: {GREETING: hi}\n    params: {port: 8080}\n  - name: migrate\n    type: job\n    path: jobs/migrate\n    dockerfile: build/Dockerfile\n";
        let from_yaml = AppBuildFile::parse(yaml, false).unwrap();
        let source = json!({"upload": {"id": "x"}});
        assert_eq!(from_toml.components(&source), from_yaml.components(&source));
        let components = from_toml.components(&source);
        assert_eq!(components[0]["params"], json!({"port": 8080, "build_args": {"GREETING": "hi"}}));
        assert_eq!(components[1]["params"], json!({"dockerfile": "build/Dockerfile"}));
        assert_eq!(components[1]["path"], "jobs/migrate");
        assert_eq!(from_toml.tags, ["stable"]);
    }

    #[test]
    fn mistakes_are_named() {
        let typo = TOML.replace("build_args", "buildargs");
        assert!(AppBuildFile::parse(&typo, true).unwrap_err().contains("buildargs"));
        assert!(
            AppBuildFile::parse("app = \"x\"\ncomponents = []\n", true)
                .unwrap_err()
                .contains("no components")
        );
        let dir = tempfile::tempdir().unwrap();
        let Err(CliError::Usage(text)) = AppBuildFile::find(dir.path()) else {
            panic!("expected a usage error")
        };
        assert!(text.contains("slipway.app.toml"), "{text}");
    }
}
