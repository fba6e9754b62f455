//! Registration of instances and clusters for the status scaler, app-instance health,
//! history, and deploy events.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use slipway_status::health::Health;
use slipway_status::model::{BulkRequest, ClusterInfo, ClusterSpec};
use slipway_status::{AppInstanceView, BulkOutcome};

use crate::error::{ApiError, Json, Query};
use crate::state::AppState;

const DEFAULT_HISTORY: i64 = 100;
const MAX_HISTORY: i64 = 10_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/instances", post(bulk))
        .route("/v1/instances/{id}/history", get(history))
        .route("/v1/instances/{id}/events", post(event))
        .route("/v1/apps/{app}/instances", get(app_instances))
        .route("/v1/clusters", get(clusters).post(register_cluster))
}

/// Bulk register, update and delete: all items or none.
async fn bulk(
    State(state): State<AppState>,
    Json(request): Json<BulkRequest>,
) -> Result<Json<BulkOutcome>, ApiError> {
    Ok(Json(state.status.apply(request).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusFilter {
    status: Option<String>,
}

async fn app_instances(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(filter): Query<StatusFilter>,
) -> Result<Json<Value>, ApiError> {
    let status = match filter.status {
        Some(s) => Some(s.parse::<Health>().map_err(|e| ApiError::InvalidRequest(e.to_string()))?),
        None => None,
    };
    let instances: Vec<AppInstanceView> = state.status.app_instances(&app, status);
    Ok(Json(json!({ "app": app, "appInstances": instances })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<i64>,
}

async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_HISTORY).clamp(1, MAX_HISTORY);
    let transitions = state.status.history(&id, limit).await?;
    Ok(Json(json!({ "id": id, "transitions": transitions })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeEvent {
    /// `deploy` or `trigger`; both count as a change.
    #[serde(rename = "type")]
    kind: EventKind,
    #[serde(default)]
    detail: Value,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EventKind {
    Deploy,
    Trigger,
}

/// A deploy or trigger for an app instance (or one component instance): checked now and
/// then tightly until confirmed healthy again.
async fn event(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(event): Json<ChangeEvent>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let instances = state.status.change_event(&id)?;
    tracing::info!(id = %id, kind = ?event.kind, detail = %event.detail, instances, "change event");
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "instances": instances }))))
}

async fn register_cluster(
    State(state): State<AppState>,
    Json(spec): Json<ClusterSpec>,
) -> Result<(StatusCode, Json<ClusterInfo>), ApiError> {
    let info = state.status.register_cluster(spec).await?;
    tracing::info!(cluster = %info.name, server = %info.server, "cluster registered");
    Ok((StatusCode::CREATED, Json(info)))
}

async fn clusters(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "clusters": state.status.clusters().await? })))
}
