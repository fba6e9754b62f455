//! Status transitions: stored as history and streamed to subscribers.

use serde::{Deserialize, Serialize};

use crate::health::Health;
use crate::table::Instance;

/// One change of an instance's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Transition {
    pub instance_id: String,
    pub app_instance: String,
    pub component: String,
    pub from: Health,
    pub to: Health,
    pub reason: String,
    pub at_ms: i64,
}

impl Transition {
    pub(crate) fn of(instance: &Instance, from: Health, at_ms: i64) -> Self {
        Self {
            instance_id: instance.id.to_string(),
            app_instance: instance.app_instance.to_string(),
            component: instance.component.to_string(),
            from,
            to: instance.health,
            reason: instance.reason.to_string(),
            at_ms,
        }
    }
}

/// A transition as streamed to subscribers: with the app and cluster it belongs to, so a
/// subscriber can filter without a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransitionEvent {
    #[serde(flatten)]
    pub transition: Transition,
    pub app: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}
