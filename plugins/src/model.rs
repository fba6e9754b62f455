//! The values the host's public API takes and returns.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::triple::{HealthStatus, PluginTriple, ScriptKind};

/// What a script function returned, and which revision ran it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallOutput {
    pub result: Value,
    pub triple: PluginTriple,
}

/// One instance to judge with a status script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckInput {
    /// Stable id of the watched instance; keys the unchanged-observation shortcut.
    pub instance_id: String,
    /// The instance as the status crate describes it (parameters of the check included).
    pub instance: Value,
    /// The observation, in the shape the script's kind documents (`http`, `tcp`, `object`).
    pub observation: Value,
    /// Whether an unchanged observation may reuse the last verdict. False where the
    /// observation never repeats (an HTTP answer carries its latency and `Date` header):
    /// the digest and the remembered verdict (a few hundred bytes per instance) would be
    /// spent for nothing.
    pub memo: bool,
}

/// A status script's verdict on one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckVerdict {
    pub status: HealthStatus,
    pub reason: String,
    pub details: Value,
    pub triple: PluginTriple,
}

/// An installed plugin package with its scripts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    /// `sha256:<hex>` of the uploaded `.tar.gz`.
    pub digest: String,
    pub installed_at_ms: i64,
    pub scripts: Vec<ScriptInfo>,
}

/// One script revision of a package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScriptInfo {
    pub triple: PluginTriple,
    /// Path of the module inside the package.
    pub file: String,
    pub active: bool,
    /// JSON Schema of the script's parameters, when the manifest names one.
    pub params_schema: Option<Value>,
}

/// Every installed revision of one kind+name, and the active one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScriptRevisions {
    pub kind: ScriptKind,
    pub name: String,
    pub active: Option<u32>,
    pub revisions: Vec<RevisionInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevisionInfo {
    pub revision: u32,
    pub package: String,
    pub package_version: String,
    pub file: String,
    pub installed_at_ms: i64,
}
