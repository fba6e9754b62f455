//! The values the host's public API takes and returns.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::triple::{HealthStatus, PluginTriple, ScriptKind};
use crate::wire;
use crate::wire_value::WireValue;

/// What a script function returned, and which revision ran it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallOutput {
    pub result: Value,
    pub triple: PluginTriple,
}

/// One instance to judge with a status script. Its arguments come in the wire form, as
/// the caller built them (see [`WireValue`]); `WireValue::from_value` serves callers that
/// hold `serde_json::Value`s.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckInput {
    /// Stable id of the watched instance; keys the unchanged-observation shortcut.
    pub instance_id: Arc<str>,
    /// The instance as the status crate describes it (parameters of the check included).
    pub instance: WireValue,
    /// The observation, in the shape the script's kind documents (`http`, `tcp`, `object`).
    pub observation: WireValue,
    /// Whether an unchanged observation may reuse the last verdict. False where the
    /// observation never repeats (an HTTP answer carries its latency and `Date` header):
    /// the digest and the remembered verdict (a few hundred bytes per instance) would be
    /// spent for nothing.
    pub memo: bool,
}

/// A status script's verdict on one instance. Its parts are shared, not copied, between
/// the verdicts of a batch and the memo: the triple once per batch, the reason and the
/// details once per run of the script.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckVerdict {
    pub status: HealthStatus,
    pub reason: Arc<str>,
    pub details: Details,
    pub triple: Arc<PluginTriple>,
}

/// The `details` of a verdict, kept in the form the worker sent them: most callers never
/// read them (the status scaler keeps status and reason), so they become a `Value` only
/// when asked for with [`Details::value`].
#[derive(Clone)]
pub struct Details(Arc<[u8]>);

impl Details {
    /// Details already checked to be one value in the wire form.
    pub(crate) fn from_wire(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }

    pub(crate) fn from_value(value: &Value) -> Result<Self, wire::WireError> {
        let mut bytes = Vec::new();
        wire::encode(value, &mut bytes)?;
        Ok(Self(bytes.into()))
    }

    pub fn value(&self) -> Value {
        // Checked when the verdict was read, so this never fails.
        wire::decode(&self.0).unwrap_or(Value::Null)
    }
}

impl fmt::Debug for Details {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value().fmt(f)
    }
}

/// Equal when they hold the same value (an integral float and the integer read back alike).
impl PartialEq for Details {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0 || self.value() == other.value()
    }
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
