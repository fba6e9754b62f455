//! Registration of instances and clusters for the status scaler, app-instance health,
//! history, and deploy events.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use slipway_status::events::Transition;
use slipway_status::health::Health;
use slipway_status::model::{BulkRequest, ClusterInfo, ClusterSpec};
use slipway_status::{AppInstanceView, BulkOutcome};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody, Json, Query};
use crate::openapi::ApiRouter;
use crate::state::AppState;

const DEFAULT_HISTORY: i64 = 100;
const MAX_HISTORY: i64 = 10_000;

pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(bulk))
        .routes(routes!(history))
        .routes(routes!(event))
        .routes(routes!(app_instances))
        .routes(routes!(clusters, register_cluster))
}

/// Bulk register, update and delete: all items or none.
#[utoipa::path(post, path = "/v1/instances", tag = "instances", request_body = BulkRequest, responses(
    (status = 200, body = BulkOutcome),
    (status = 413, description = "`too_many_items`: more than the per-request limit", body = ErrorBody),
    (status = 422, description = "`invalid_instances`: `details.problems` lists every refused item", body = ErrorBody),
    (status = 503, description = "`database_failed`", body = ErrorBody)))]
async fn bulk(
    State(state): State<AppState>,
    Json(request): Json<BulkRequest>,
) -> Result<Json<BulkOutcome>, ApiError> {
    Ok(Json(state.status.apply(request).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct StatusFilter {
    /// Only app instances at this health status.
    status: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AppInstances<'a> {
    app: &'a str,
    app_instances: Vec<AppInstanceView<'a>>,
}

/// An app's instances with their aggregated health and components.
#[utoipa::path(get, path = "/v1/apps/{app}/instances", tag = "instances",
    params(("app" = String, Path), StatusFilter), responses(
    (status = 200, body = AppInstances),
    (status = 400, description = "`invalid_request`: unknown status", body = ErrorBody)))]
async fn app_instances(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(filter): Query<StatusFilter>,
) -> Result<Response, ApiError> {
    let status = match filter.status {
        Some(s) => Some(s.parse::<Health>().map_err(|e| ApiError::InvalidRequest(e.to_string()))?),
        None => None,
    };
    // Serialised while the views borrow from the instance table (under its lock).
    let body = state
        .status
        .app_instances(&app, status, |app_instances| {
            serde_json::to_vec(&AppInstances { app: &app, app_instances })
        })
        .map_err(|e| ApiError::Internal(format!("app instances answer: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// 1 to 10,000, default 100.
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct History {
    id: String,
    /// Newest first.
    transitions: Vec<Transition>,
}

/// The status transitions of a component instance.
#[utoipa::path(get, path = "/v1/instances/{id}/history", tag = "instances",
    params(("id" = String, Path), HistoryQuery), responses(
    (status = 200, body = History),
    (status = 404, description = "`instance_not_found`", body = ErrorBody),
    (status = 503, description = "`database_failed`", body = ErrorBody)))]
async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_HISTORY).clamp(1, MAX_HISTORY);
    let transitions = state.status.history(&id, limit).await?;
    Ok(Json(History { id, transitions }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ChangeEvent {
    /// `deploy` or `trigger`; both count as a change.
    #[serde(rename = "type")]
    kind: EventKind,
    #[serde(default)]
    detail: Value,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum EventKind {
    Deploy,
    Trigger,
}

#[derive(Serialize, ToSchema)]
struct EventAccepted {
    id: String,
    /// How many component instances will be checked now.
    instances: usize,
}

/// A deploy or trigger for an app instance (or one component instance): checked now and
/// then tightly until confirmed healthy again.
#[utoipa::path(post, path = "/v1/instances/{id}/events", tag = "instances",
    params(("id" = String, Path, description = "An app instance or component instance id")),
    request_body = ChangeEvent, responses(
    (status = 202, body = EventAccepted),
    (status = 404, description = "`instance_not_found`", body = ErrorBody)))]
async fn event(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(event): Json<ChangeEvent>,
) -> Result<(StatusCode, Json<EventAccepted>), ApiError> {
    let instances = state.status.change_event(&id).await?;
    tracing::info!(id = %id, kind = ?event.kind, detail = %event.detail, instances, "change event");
    Ok((StatusCode::ACCEPTED, Json(EventAccepted { id, instances })))
}

/// Registers a Kubernetes cluster by kubeconfig (stored, never returned).
#[utoipa::path(post, path = "/v1/clusters", tag = "instances", request_body = ClusterSpec, responses(
    (status = 201, body = ClusterInfo),
    (status = 422, description = "`invalid_cluster`: the kubeconfig is unusable", body = ErrorBody),
    (status = 503, description = "`database_failed`", body = ErrorBody)))]
async fn register_cluster(
    State(state): State<AppState>,
    Json(spec): Json<ClusterSpec>,
) -> Result<(StatusCode, Json<ClusterInfo>), ApiError> {
    let info = state.status.register_cluster(spec).await?;
    tracing::info!(cluster = %info.name, server = %info.server, "cluster registered");
    Ok((StatusCode::CREATED, Json(info)))
}

#[derive(Serialize, ToSchema)]
struct ClusterList {
    clusters: Vec<ClusterInfo>,
}

#[utoipa::path(get, path = "/v1/clusters", tag = "instances", responses((status = 200, body = ClusterList)))]
async fn clusters(State(state): State<AppState>) -> Result<Json<ClusterList>, ApiError> {
    Ok(Json(ClusterList { clusters: state.status.clusters().await? }))
}
