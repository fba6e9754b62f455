//! Status transitions: stored as history and streamed to subscribers.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::health::Health;
use crate::table::Instance;

/// One change of an instance's status. The strings are shared with the instance table, so
/// the recent events the stream keeps for its subscribers cost little more than pointers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Transition {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub instance_id: Arc<str>,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub app_instance: Arc<str>,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub component: Arc<str>,
    pub from: Health,
    pub to: Health,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub reason: Arc<str>,
    pub at_ms: i64,
}

impl Transition {
    pub(crate) fn of(instance: &Instance, from: Health, at_ms: i64) -> Self {
        Self {
            instance_id: instance.id.clone(),
            app_instance: instance.app_instance.clone(),
            component: instance.component.clone(),
            from,
            to: instance.health,
            reason: instance.reason.clone(),
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
    pub app: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Arc<str>>,
}
