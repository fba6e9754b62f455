//! What the API registers: app instances, the component instances they hold, and what to
//! observe for each. These are the wire and storage shapes; the in-memory form is the
//! compact [`crate::table::InstanceTable`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A deployed app: one package version of an app in one unit, cluster, namespace and stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppInstanceSpec {
    pub id: String,
    pub app: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub unit: String,
    /// The cluster it runs in, if any (also the group for sibling tightening).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub stage: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One component of an app instance and how its health is pulled and judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ComponentInstanceSpec {
    pub id: String,
    pub app_instance: String,
    pub component: String,
    pub status: StatusCheckSpec,
    pub observe: Observe,
}

/// The `status/<plugin>` script that judges the observation, with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusCheckSpec {
    pub plugin: String,
    #[serde(default = "empty_object")]
    pub parameters: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// What the host observes for an instance (the script itself never opens a socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Observe {
    Http { url: String },
    Tcp { address: String },
    Kubernetes(KubeObjectRef),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KubeObjectRef {
    pub cluster: String,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// One bulk request: upserts and deletes, applied all together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkRequest {
    #[serde(default)]
    pub app_instances: Vec<AppInstanceSpec>,
    #[serde(default)]
    pub instances: Vec<ComponentInstanceSpec>,
    /// Component instance ids to remove; an app instance left without components goes too.
    #[serde(default)]
    pub delete: Vec<String>,
}

impl BulkRequest {
    /// The size the per-request limit applies to: component instances upserted plus ids
    /// deleted, or the app instances, whichever is larger (10,000 instances of 1,000 app
    /// instances fit in one request).
    pub fn size(&self) -> usize {
        (self.instances.len() + self.delete.len()).max(self.app_instances.len())
    }
}

/// A Kubernetes cluster, registered by kubeconfig. The kubeconfig is a secret: it is
/// stored, never logged, and never returned (only [`ClusterInfo`] is).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterSpec {
    pub name: String,
    pub kubeconfig: String,
}

impl std::fmt::Debug for ClusterSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSpec").field("name", &self.name).field("kubeconfig", &"********").finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterInfo {
    pub name: String,
    pub server: String,
    pub registered_at_ms: i64,
}
