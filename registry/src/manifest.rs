//! The manifests inside component and app packages (format documented in README.md).
//!
//! The `format` field carries the version of the layout; a reader refuses formats it does
//! not know rather than guess, and unknown fields are refused so a typo is not silently lost.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::names;
use crate::version::parse_version;

pub const COMPONENT_FORMAT: &str = "slipway.component-package/v1";
pub const APP_FORMAT: &str = "slipway.app-package/v1";
/// The first entry of every package archive.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Largest manifest a reader accepts, so a hostile archive cannot make it allocate freely.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// An image a component runs, pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageRef {
    /// Where it was pushed, e.g. `registry.example:5000/shop/web:1.4.0`.
    pub reference: String,
    /// The manifest (or index) digest, `sha256:…`.
    pub digest: String,
    /// `amd64`, `arm64`, …
    pub architectures: Vec<String>,
}

/// Where a package was built from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Source {
    pub repository: String,
    pub commit: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ComponentManifest {
    pub format: String,
    pub app: String,
    pub component_type: String,
    pub component: String,
    pub version: String,
    pub images: Vec<ImageRef>,
    /// The component's parameters as the app definition gave them (a JSON object).
    pub parameters: Value,
    pub source: Source,
    /// The plugin that built it, as its `kind/name/revision` triple.
    pub plugin: String,
    pub created_at_ms: i64,
    pub creator: String,
    /// Digest of everything the build read (source tree, Dockerfile, build args, plugin
    /// revision, platform, base image digests): a later build with the same inputs reuses
    /// this package instead of building. Absent for packages not built by the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_digest: Option<String>,
}

/// One component package inside an app package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ComponentEntry {
    pub component_type: String,
    pub component: String,
    pub version: String,
    pub digest: String,
    pub size_bytes: u64,
    /// Path of the component package inside the app package: `components/<component>.tar.gz`.
    pub file: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppManifest {
    pub format: String,
    pub app: String,
    pub version: String,
    /// Tags given at publish time (tags change later; the package does not).
    pub tags: Vec<String>,
    pub creator: String,
    pub created_at_ms: i64,
    pub source: Source,
    pub components: Vec<ComponentEntry>,
}

impl ComponentManifest {
    pub fn validate(&self) -> Result<()> {
        expect_format(&self.format, COMPONENT_FORMAT)?;
        names::check_app(&self.app)?;
        names::check_component(&self.component)?;
        names::check_actor(&self.creator)?;
        parse_version(&self.version)?;
        if self.component_type.is_empty() || self.plugin.is_empty() {
            return Err(Error::invalid_package(format!(
                "component {}: component_type and plugin must be set",
                self.component
            )));
        }
        if !self.parameters.is_object() {
            return Err(Error::invalid_package(format!(
                "component {}: parameters must be a JSON object",
                self.component
            )));
        }
        Ok(())
    }
}

impl AppManifest {
    pub fn validate(&self) -> Result<()> {
        expect_format(&self.format, APP_FORMAT)?;
        names::check_app(&self.app)?;
        names::check_actor(&self.creator)?;
        parse_version(&self.version)?;
        for tag in &self.tags {
            names::check_tag(tag)?;
        }
        for (i, entry) in self.components.iter().enumerate() {
            names::check_component(&entry.component)?;
            parse_version(&entry.version)?;
            if entry.file != component_file(&entry.component) {
                return Err(Error::invalid_package(format!(
                    "component {} must be stored as {}",
                    entry.component,
                    component_file(&entry.component)
                )));
            }
            if self.components[..i].iter().any(|e| e.component == entry.component) {
                return Err(Error::invalid_package(format!("component {} listed twice", entry.component)));
            }
        }
        Ok(())
    }

    pub fn from_json(bytes: &[u8]) -> Result<AppManifest> {
        let manifest: AppManifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid_package(format!("{MANIFEST_FILE}: {e}")))?;
        manifest.validate()?;
        Ok(manifest)
    }
}

pub fn component_file(component: &str) -> String {
    format!("components/{component}.tar.gz")
}

fn expect_format(found: &str, expected: &str) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::invalid_package(format!(
            "unknown manifest format `{found}` (this registry reads {expected})"
        )))
    }
}
